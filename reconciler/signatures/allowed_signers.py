"""Parse git's SSH `allowed_signers` file (ssh-keygen(1), ALLOWED SIGNERS) into trust entries.

Owns the file format: principals, the `cert-authority`, `namespaces=`, `valid-after=` and
`valid-before=` options, key types and base64 key blobs, and the window and namespace checks an
entry applies. It must not verify signatures (sshsig does) and must not read the file itself:
callers pass the text and a name for error messages. A line it cannot parse is an error naming
the file and line, never silently skipped: a typo in a trust file must not quietly drop a rule.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import fnmatch
import re

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    }
)
_TIME = re.compile(r"^(\d{8})(\d{4}(\d{2})?)?(Z?)$")


class AllowedSignersError(ValueError):
    """A line of an allowed_signers file is invalid; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One trusted key with the principals and limits its line gives it."""

    principals: tuple[str, ...]
    key_type: str
    key_blob: bytes
    cert_authority: bool
    namespaces: tuple[str, ...] | None
    valid_after: int | None
    valid_before: int | None
    source: str

    def allows_namespace(self, namespace: str) -> bool:
        """Whether the `namespaces=` option (absent means any) admits `namespace`."""
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)

    def valid_at(self, when: int) -> bool:
        """Whether `when` (epoch seconds) lies inside the entry's validity window, inclusive."""
        if self.valid_after is not None and when < self.valid_after:
            return False
        return self.valid_before is None or when <= self.valid_before


@dataclasses.dataclass(frozen=True)
class AllowedSigners:
    """Every entry of one allowed_signers file, in file order."""

    entries: tuple[Entry, ...]

    def for_key(self, key_blob: bytes) -> tuple[Entry, ...]:
        """The plain-key entries whose key is exactly `key_blob`."""
        return tuple(e for e in self.entries if not e.cert_authority and e.key_blob == key_blob)

    def for_authority(self, key_blob: bytes) -> tuple[Entry, ...]:
        """The `cert-authority` entries whose CA key is exactly `key_blob`."""
        return tuple(e for e in self.entries if e.cert_authority and e.key_blob == key_blob)


def parse(text: str, name: str) -> AllowedSigners:
    """Parse the whole file; `name` is used in error messages."""
    entries = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(_parse_line(line, f"{name}:{number}"))
        except AllowedSignersError as exc:
            raise AllowedSignersError(f"{name}:{number}: {exc}") from None
    return AllowedSigners(entries=tuple(entries))


def match_pattern_list(value: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH pattern-list matching: `*` and `?` wildcards, a `!` pattern vetoes a match."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(value, pattern[1:]):
                return False
        elif fnmatch.fnmatchcase(value, pattern):
            matched = True
    return matched


def _parse_line(line: str, source: str) -> Entry:
    principals_text, rest = _take_token(line)
    principals = tuple(p for p in principals_text.split(",") if p)
    if not principals:
        raise AllowedSignersError("no principals")
    rest = rest.lstrip()
    options_text = ""
    first, _ = _take_token(rest)
    if first not in KEY_TYPES:
        options_text, rest = _take_token(rest)
        rest = rest.lstrip()
    key_type, rest = _take_token(rest)
    if key_type not in KEY_TYPES:
        raise AllowedSignersError(f"unsupported or missing key type {key_type or first!r}")
    options = _parse_options(options_text) if options_text else {}
    encoded, _comment = _take_token(rest.lstrip())
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AllowedSignersError("key is not valid base64") from exc
    if not blob.startswith(len(key_type).to_bytes(4, "big") + key_type.encode()):
        raise AllowedSignersError(f"key blob does not match its type {key_type}")
    namespaces = options.get("namespaces")
    return Entry(
        principals=principals,
        key_type=key_type,
        key_blob=blob,
        cert_authority="cert-authority" in options,
        namespaces=None if namespaces is None else tuple(namespaces.split(",")),
        valid_after=_parse_time(options.get("valid-after")),
        valid_before=_parse_time(options.get("valid-before")),
        source=source,
    )


def _take_token(text: str) -> tuple[str, str]:
    """Split off the first whitespace-delimited token; double quotes protect spaces."""
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return text[:index], text[index:]
    if quoted:
        raise AllowedSignersError("unterminated quote")
    return text, ""


def _parse_options(text: str) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for item in _split_unquoted_commas(text):
        name, sep, value = item.partition("=")
        name = name.lower()
        if name in options:
            raise AllowedSignersError(f"option {name} given twice")
        if name == "cert-authority" and not sep:
            options[name] = None
        elif name in {"namespaces", "valid-after", "valid-before"} and sep:
            if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
                raise AllowedSignersError(f"option {name} needs a quoted value")
            options[name] = value[1:-1]
        else:
            raise AllowedSignersError(f"unknown or malformed option {item!r}")
    return options


def _split_unquoted_commas(text: str) -> list[str]:
    items, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return items


def _parse_time(value: str | None) -> int | None:
    """`YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]`; without `Z` it is local time, as in ssh-keygen."""
    if value is None:
        return None
    match = _TIME.match(value)
    if match is None:
        raise AllowedSignersError(f"invalid time {value!r}")
    digits = match.group(1) + (match.group(2) or "0000")
    if len(digits) == 12:
        digits += "00"
    try:
        naive = datetime.datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise AllowedSignersError(f"invalid time {value!r}") from exc
    moment = naive.replace(tzinfo=datetime.UTC) if match.group(4) else naive.astimezone()
    return int(moment.timestamp())
