"""Split raw git commit and tag objects into the signed payload and the signature, as git does.

Owns the byte-level rules of git's signature format (commit.c `parse_buffer_signed_by_header`,
gpg-interface.c `parse_signed_buffer`) and the few header fields verification needs (the
committer or tagger time). It must never re-encode an object: the payload is cut from the raw
bytes. It is stricter than git on ambiguous objects (duplicate signature or singleton headers),
which it rejects as malformed rather than guessing which copy git would use.
"""

from __future__ import annotations

import dataclasses
import enum
import re

# The header that carries the signature in a SHA-1 repository; `gpgsig-sha256` belongs to
# SHA-256 repositories and, like every other `gpgsig*` header, is left out of the payload.
_SIG_HEADER = b"gpgsig"
_SINGLETON_HEADERS = (b"tree", b"author", b"committer", b"encoding", b"object", b"type", b"tag")
_IDENT_TIME = re.compile(rb"^.* (\d+) ([+-]\d{4})$")


class SignatureFormat(enum.Enum):
    """Which verifier a signature needs, chosen from its armor like git does."""

    OPENPGP = "openpgp"
    SSH = "ssh"
    X509 = "x509"


_ARMOR_STARTS: tuple[tuple[bytes, SignatureFormat], ...] = (
    (b"-----BEGIN PGP SIGNATURE-----", SignatureFormat.OPENPGP),
    (b"-----BEGIN PGP MESSAGE-----", SignatureFormat.OPENPGP),
    (b"-----BEGIN SIGNED MESSAGE-----", SignatureFormat.X509),
    (b"-----BEGIN SSH SIGNATURE-----", SignatureFormat.SSH),
)


class MalformedObject(ValueError):
    """The raw object cannot be split unambiguously; the message says why."""


@dataclasses.dataclass(frozen=True)
class SignedObject:
    """A raw object cut into what was signed and the signature (None when unsigned)."""

    payload: bytes
    signature: bytes | None
    # Seconds since the epoch from the committer (commit) or tagger (tag) line; git hands
    # this self-asserted time to ssh-keygen as the verification time.
    signed_at: int | None
    # The `tag` header of a tag object (the name its signer gave it); None for commits.
    tag_name: str | None = None

    @property
    def signature_format(self) -> SignatureFormat | None:
        """The armor kind of the signature, or None for an unsigned object or unknown armor."""
        if self.signature is None:
            return None
        return format_of(self.signature)


def format_of(signature: bytes) -> SignatureFormat | None:
    """The signature format named by the armor line `signature` starts with."""
    for start, kind in _ARMOR_STARTS:
        if signature.startswith(start):
            return kind
    return None


def split_commit(raw: bytes) -> SignedObject:
    """Split a raw commit body (without the `commit <len>\\0` prefix) the way git does.

    The payload keeps every byte except the `gpgsig` header with its continuation lines and
    any other `gpgsig*` header with its continuation lines; each continuation line of the
    signature loses exactly one leading space.
    """
    header_end = raw.find(b"\n\n")
    headers = raw if header_end < 0 else raw[: header_end + 1]
    body = b"" if header_end < 0 else raw[header_end + 1 :]
    payload = bytearray()
    signature = bytearray()
    signatures_seen = 0
    seen_singletons: set[bytes] = set()
    in_signature = False
    in_other_signature = False
    signed_at: int | None = None
    for line in _lines(headers):
        if line.startswith(b" "):
            if in_signature:
                signature += line[1:]
            elif not in_other_signature:
                payload += line
            continue
        in_signature = in_other_signature = False
        name, _, value = line.partition(b" ")
        if name == _SIG_HEADER:
            signatures_seen += 1
            if signatures_seen > 1:
                # git keeps the first and verifies it; the second copy would still be hashed
                # into the object id, so we refuse the ambiguity instead.
                raise MalformedObject("duplicate gpgsig header")
            signature += value
            in_signature = True
            continue
        if name.startswith(_SIG_HEADER):
            in_other_signature = True
            continue
        if name in _SINGLETON_HEADERS:
            if name in seen_singletons:
                raise MalformedObject(f"duplicate {name.decode()} header")
            seen_singletons.add(name)
        if name == b"committer":
            signed_at = _ident_time(value)
        payload += line
    if b"tree" not in seen_singletons or b"committer" not in seen_singletons:
        raise MalformedObject("not a commit: tree or committer header missing")
    payload += body
    return SignedObject(
        payload=bytes(payload),
        signature=bytes(signature) if signatures_seen else None,
        signed_at=signed_at,
    )


def split_tag(raw: bytes) -> SignedObject:
    """Split a raw tag body: the signature starts at the last line that opens an armor block."""
    header_end = raw.find(b"\n\n")
    headers = raw if header_end < 0 else raw[:header_end]
    signed_at: int | None = None
    tag_name: str | None = None
    seen: set[bytes] = set()
    for line in headers.split(b"\n"):
        name, _, value = line.partition(b" ")
        if name == b"tag" and b"tag" not in seen:
            tag_name = value.decode(errors="replace")
        if name in _SINGLETON_HEADERS:
            if name in seen:
                raise MalformedObject(f"duplicate {name.decode()} header")
            seen.add(name)
        if name == b"tagger":
            if signed_at is not None:
                raise MalformedObject("duplicate tagger header")
            signed_at = _ident_time(value)
    if b"object" not in seen:
        raise MalformedObject("not a tag: object header missing")
    start = len(raw)
    offset = 0
    for line in _lines(raw):
        if format_of(line) is not None:
            start = offset
        offset += len(line)
    if start == len(raw):
        return SignedObject(payload=raw, signature=None, signed_at=signed_at, tag_name=tag_name)
    return SignedObject(
        payload=raw[:start], signature=raw[start:], signed_at=signed_at, tag_name=tag_name
    )


def _lines(data: bytes) -> list[bytes]:
    """Lines ending in LF only, each keeping its LF (bytes.splitlines would also split at CR)."""
    lines = data.split(b"\n")
    last = lines.pop()
    return [line + b"\n" for line in lines] + ([last] if last else [])


def _ident_time(value: bytes) -> int:
    match = _IDENT_TIME.match(value.rstrip(b"\n"))
    if match is None:
        raise MalformedObject("identity line without a timestamp")
    return int(match.group(1))
