"""The session's secret plaintexts, and texts that vanish before the suite ends, for one scan.

Owns one registry per test process: every secret value a test hands to the product (sealed
into Git, written into a Secret, patched in as drift) is registered here, and endpoint bodies
that die with their process (a loop's or the webhook's /metrics) are kept here when the
process stops. `tests/e2e/test_zz_secret_hygiene.py` scans them, every log file and the
cluster's Events and Sync statuses for every registered value. It must not read anything
itself, nor ever print a registered value (a failure names where, never what).
"""

from __future__ import annotations

import base64
import uuid

# Values shorter than this would be found by chance in any log (a "v" is in every word).
MIN_LENGTH = 10

_values: set[str] = set()
_texts: list[tuple[str, str]] = []


def value(label: str) -> str:
    """A fresh distinctive plaintext, already registered."""
    made = f"gw-canary-{label}-{uuid.uuid4().hex[:10]}"
    register(made)
    return made


def register(*plaintexts: str) -> None:
    """Record plaintexts a test used; too short a value fails at once (use `value()`)."""
    for plaintext in plaintexts:
        assert len(plaintext) >= MIN_LENGTH, (
            f"a secret value of {len(plaintext)} characters cannot be scanned for: "
            "use tests.harness.canaries.value()"
        )
        _values.add(plaintext)


def keep(where: str, text: str) -> None:
    """Keep a text whose source goes away before the scan (named by `where`)."""
    _texts.append((where, text))


def values() -> frozenset[str]:
    return frozenset(_values)


def kept() -> list[tuple[str, str]]:
    return list(_texts)


def forms(plaintext: str) -> tuple[str, ...]:
    """How a value may leak: as is, and base64-encoded as in a Secret's `data`."""
    return (plaintext, base64.b64encode(plaintext.encode()).decode())


def found_in(text: str) -> list[str]:
    """Which registered values (as their index, never the value) occur in `text`."""
    return [
        f"canary #{i}"
        for i, plaintext in enumerate(sorted(_values))
        if any(form in text for form in forms(plaintext))
    ]
