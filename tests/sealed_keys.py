"""RSA keys for the SealedSecret tests, generated once per test session (4096-bit is slow).

Keys are numbered; the same (bits, index) is the same key for the whole run. Certificates are
made on demand for a given time, so tests can order keys as they need.
"""

from __future__ import annotations

import datetime as dt
import functools

from cryptography.hazmat.primitives.asymmetric import rsa

from reconciler.sealed import keys

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def private_key(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    return _private_key(bits, index)


def sealing_key(bits: int = 2048, index: int = 0, days: int | None = None) -> keys.SealingKey:
    """Key `index`, certified `days` (default: `index`) days after EPOCH, so higher is newer."""
    return _sealing_key(bits, index, index if days is None else days)


# The caches take positional arguments only, so `f(2048, 0)` and `f(index=0)` are one entry.
@functools.cache
def _private_key(bits: int, index: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def _sealing_key(bits: int, index: int, days: int) -> keys.SealingKey:
    when = EPOCH + dt.timedelta(days=days)
    return keys.certify(_private_key(bits, index), when, keys.KeyPolicy())


def ring(*indexes: int, bits: int = 2048) -> keys.KeyRing:
    return keys.KeyRing.of(sealing_key(bits, i) for i in indexes)
