"""The one exception the signature verifiers raise when a signature is not good and trusted.

Owns the short reason codes reports and the CLI's `--json` output show. It must not carry
payload bytes or key material, only fingerprints and reasons.
"""

from __future__ import annotations

# Reason codes, stable for `--json` consumers.
UNSIGNED = "unsigned"
MALFORMED_OBJECT = "malformed-object"
MALFORMED_SIGNATURE = "malformed-signature"
UNSUPPORTED_SIGNATURE = "unsupported-signature"
UNTRUSTED_KEY = "untrusted-key"
BAD_SIGNATURE = "bad-signature"
WRONG_NAMESPACE = "wrong-namespace"
KEY_NOT_VALID_AT_TIME = "key-not-valid-at-time"
REVOKED_KEY = "revoked-key"
EXPIRED_KEY = "expired-key"
TAG_NAME_MISMATCH = "tag-name-mismatch"


class SignatureRejected(Exception):
    """The signature does not verify or is not trusted; `reason` is one of the codes above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
