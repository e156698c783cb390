"""The decrypt stage: `Manifests` in, `DecryptedManifests` out, or the revision is rejected.

Owns the all-or-nothing rule: every SealedSecret of a revision must open, otherwise
`RevisionRejected` names each failed object and why, and nothing of the revision moves on.
SealedSecrets are replaced by the Secrets they stand for; every other manifest passes unchanged.
No logging, no retries, no cluster access: the key ring and the hints come from the caller.
"""

from __future__ import annotations

from types import MappingProxyType

from reconciler import manifests
from reconciler.sealed import errors, keys, objects

NO_HINTS = manifests.KeyHints()
DEFAULT_SETTINGS = objects.Settings()


def run(
    loaded: manifests.Manifests,
    ring: keys.KeyRing,
    hints: manifests.KeyHints = NO_HINTS,
    settings: objects.Settings = DEFAULT_SETTINGS,
) -> manifests.DecryptedManifests:
    """Open every SealedSecret in `loaded` with `ring`; pass the result's hints to the next run."""
    chooser = objects.KeyChooser(ring, hints)
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
            problems.append(exc)
    if problems:
        raise errors.RevisionRejected(loaded.revision, tuple(problems))
    return manifests.DecryptedManifests(
        revision=loaded.revision,
        manifests=tuple(passed),
        secrets=tuple(secrets),
        # Only this revision's values are remembered, so the hints never outgrow the repository.
        key_hints=manifests.KeyHints(MappingProxyType(dict(chooser.used))),
        rsa_operations=chooser.rsa_operations,
    )
