"""The reconciler's small error hierarchy, classified by what the loop should do next.

Owns the exception types the pipeline stages raise. Library errors are chained as `__cause__`
where they are translated. Messages name the object (commit, file, line) and the reason; they
never carry secret material or object contents.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error a reconciler stage raises on purpose."""


class TransientError(ReconcilerError):
    """Worth retrying soon: the network or a helper process failed, the input may be fine."""


class StalledError(ReconcilerError):
    """Retrying the same revision with the same configuration cannot succeed."""


class ConfigurationError(StalledError):
    """The trust or policy configuration is unusable (bad allowed_signers line, bad key file)."""


class SourceError(StalledError):
    """The requested revision or history is not available in the source repository."""


class FetchError(TransientError):
    """`git fetch` failed (network, authentication, host key)."""


class PolicyUnavailable(TransientError):
    """The commit policy engine could not be asked or gave no usable answer."""


class VerificationFailed(StalledError):
    """At least one object in the range did not verify; `failures` names each one and why."""

    def __init__(self, message: str, failures: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.failures = failures


class ForcePushRefused(VerificationFailed):
    """The new tip does not descend from the last applied commit."""
