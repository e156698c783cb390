"""Errors of the decrypt stage: they name the object, the data key and the reason, nothing else.

Owns `DecryptionError` (one SealedSecret could not be opened) and `RevisionRejected` (the stage's
verdict: one or more objects failed, so the whole revision stalls until it changes). Messages are
built only from names and fixed reasons; ciphertext and plaintext never enter them.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler import errors


@dataclass(frozen=True)
class Failure:
    """Why one value (or the whole object, when `key` is None) could not be decrypted."""

    key: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}" if self.key is not None else self.reason


class DecryptionError(errors.Stalled):
    """A SealedSecret could not be turned into a Secret; `failures` lists every reason."""

    def __init__(self, obj: str, failures: tuple[Failure, ...], source: str = "") -> None:
        self.obj = obj
        self.failures = failures
        self.source = source  # the file in Git (and document) it was read from, if known
        where = f" (in {source})" if source else ""
        super().__init__(f"SealedSecret {obj}: " + "; ".join(str(f) for f in failures) + where)


class RevisionRejected(errors.Stalled):
    """At least one SealedSecret of a revision failed; nothing of the revision may be applied.

    The loop should stall until the revision or the key ring changes; retrying cannot help.
    """

    def __init__(self, revision: str, problems: tuple[DecryptionError, ...]) -> None:
        self.revision = revision
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        count = len(problems)
        super().__init__(f"revision {revision} rejected: {count} SealedSecret(s) failed\n{lines}")
