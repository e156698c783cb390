"""`SecretValue`: decrypted Secret bytes that cannot leak through repr, str, format or pickling.

Owns the one wrapper plaintext travels in between the decrypt and apply stages. It must never
grow a method that renders the value as text; `reveal()` is the only way out and its callers are
the apply stage and the command line, which hand the bytes to the API server or to stdout.
"""

from __future__ import annotations

import hmac
from typing import NoReturn


class SecretValue:
    """Bytes of a Secret value; shown as `SecretValue(<redacted>)` everywhere."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("SecretValue holds bytes")
        self._value = value

    def reveal(self) -> bytes:
        """The plaintext; only for handing it to the API server or to the user's stdout."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        # Constant time, so comparing values in plan/diff code reveals nothing through timing.
        return hmac.compare_digest(self._value, other._value)

    __hash__ = None  # type: ignore[assignment]  # equal values must not be usable as dict keys

    def __reduce__(self) -> NoReturn:
        # Pickling would write the plaintext to wherever the pickle goes (caches, queues).
        raise TypeError("SecretValue cannot be pickled")
