"""The decrypt stage: `Manifests` in, `DecryptedManifests` out, or the revision is rejected.

Owns the all-or-nothing rule: every SealedSecret of a revision must open, otherwise
`RevisionRejected` names each failed object and why, and nothing of the revision moves on.
SealedSecrets are replaced by the Secrets they stand for; every other manifest passes unchanged.
Also owns `OpenedCache`, the in-process memory of opened values that makes a pass over unchanged
SealedSecrets cost no RSA operation; the caller creates it and hands it in (like the key hints).
No logging, no retries, no cluster access; the format rules live in `reconciler.sealed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from reconciler import manifests, secret_value
from reconciler.sealed import errors, keys, objects

NO_HINTS = manifests.KeyHints()
DEFAULT_SETTINGS = objects.Settings()


class OpenedCache:
    """Plaintext of values opened in this process, filed under `objects.value_digest`.

    Lives in memory only (values stay wrapped in `SecretValue`, which refuses to be printed or
    pickled). After each run it keeps only that run's values, so it never outgrows one
    revision and a value that left Git is forgotten at the next pass.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, secret_value.SecretValue]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"OpenedCache({len(self._entries)} values)"

    def get(self, digest: str) -> tuple[str, secret_value.SecretValue] | None:
        return self._entries.get(digest)

    def put(self, digest: str, fingerprint: str, value: secret_value.SecretValue) -> None:
        self._entries[digest] = (fingerprint, value)

    def retain(self, digests: Iterable[str]) -> None:
        """Forget every value not in `digests`."""
        keep = set(digests)
        self._entries = {d: entry for d, entry in self._entries.items() if d in keep}


def run(
    loaded: manifests.Manifests,
    ring: keys.KeyRing,
    hints: manifests.KeyHints = NO_HINTS,
    opened: OpenedCache | None = None,
    settings: objects.Settings = DEFAULT_SETTINGS,
) -> manifests.DecryptedManifests:
    """Open every SealedSecret in `loaded` with `ring`; pass the result's hints to the next run."""
    chooser = objects.KeyChooser(ring, hints, opened)
    passed: list[manifests.Manifest] = []
    secrets: list[manifests.DecryptedSecret] = []
    problems: list[errors.DecryptionError] = []
    for manifest in loaded.items:
        if not manifest.is_sealed_secret:
            passed.append(manifest)
            continue
        try:
            secrets.append(objects.unseal(manifest.body, chooser, settings, manifest.source))
        except errors.DecryptionError as exc:
            # Name the file too: a copy of a SealedSecret is found by where it sits in Git.
            problems.append(errors.DecryptionError(exc.obj, exc.failures, manifest.source))
    if opened is not None:
        # Failed or not, only this run's values stay: the cache never outgrows one revision.
        opened.retain(chooser.used)
    if problems:
        raise errors.RevisionRejected(loaded.revision, tuple(problems))
    return manifests.DecryptedManifests(
        verified=loaded.verified,
        manifests=tuple(passed),
        secrets=tuple(secrets),
        # Only this revision's values are remembered, so the hints never outgrow the repository.
        key_hints=manifests.KeyHints(MappingProxyType(dict(chooser.used))),
        rsa_operations=chooser.rsa_operations,
        empty_paths=loaded.empty_paths,
    )
