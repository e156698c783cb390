"""Splitting raw commit and tag objects into payload and signature, byte for byte like git."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.signatures import commits
from tests.harness import signing

PAYLOAD = (
    b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"
    b"parent 1111111111111111111111111111111111111111\n"
    b"author A <a@example.com> 1700000000 +0100\n"
    b"committer C <c@example.com> 1700000123 +0100\n"
    b"\n"
    b"message\n\nbody line\n"
)
SIGNATURE = b"-----BEGIN SSH SIGNATURE-----\nAAAA\n\nBBBB\n-----END SSH SIGNATURE-----\n"


def test_signature_header_and_continuations_are_cut_out_of_the_payload() -> None:
    signed = commits.split_commit(signing.insert_signature(PAYLOAD, SIGNATURE))
    assert signed.payload == PAYLOAD
    assert signed.signature == SIGNATURE
    assert signed.signature_format is commits.SignatureFormat.SSH


def test_committer_time_is_read_from_the_raw_bytes() -> None:
    assert commits.split_commit(PAYLOAD).signed_at == 1700000123


def test_unsigned_commit_has_no_signature() -> None:
    signed = commits.split_commit(PAYLOAD)
    assert signed.signature is None
    assert signed.signature_format is None
    assert signed.payload == PAYLOAD


def test_other_gpgsig_headers_are_dropped_from_the_payload_like_git() -> None:
    other = b"gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n xyz\n -----END PGP SIGNATURE-----\n"
    raw = signing.insert_signature(PAYLOAD, SIGNATURE)
    position = raw.index(b"\n\n") + 1
    signed = commits.split_commit(raw[:position] + other + raw[position:])
    assert signed.payload == PAYLOAD
    assert signed.signature == SIGNATURE


def test_mergetag_continuations_stay_in_the_payload() -> None:
    mergetag = b"mergetag object 2222222222222222222222222222222222222222\n type commit\n"
    position = PAYLOAD.index(b"\n\n") + 1
    payload = PAYLOAD[:position] + mergetag + PAYLOAD[position:]
    assert commits.split_commit(signing.insert_signature(payload, SIGNATURE)).payload == payload


def test_duplicate_signature_header_is_refused_although_git_accepts_it() -> None:
    raw = signing.insert_signature(signing.insert_signature(PAYLOAD, SIGNATURE), SIGNATURE)
    with pytest.raises(commits.MalformedObject, match="duplicate gpgsig"):
        commits.split_commit(raw)


def test_duplicate_committer_is_refused() -> None:
    position = PAYLOAD.index(b"\n\n") + 1
    raw = PAYLOAD[:position] + b"committer X <x@example.com> 1 +0000\n" + PAYLOAD[position:]
    with pytest.raises(commits.MalformedObject, match="duplicate committer"):
        commits.split_commit(raw)


def test_object_without_tree_is_not_a_commit() -> None:
    with pytest.raises(commits.MalformedObject, match="tree or committer"):
        commits.split_commit(b"author A <a@example.com> 1 +0000\n\nmsg\n")


def test_tag_signature_starts_at_the_last_armor_line() -> None:
    header = (
        b"object 1111111111111111111111111111111111111111\ntype commit\ntag v1\n"
        b"tagger T <t@example.com> 1700000456 +0000\n\n"
    )
    message = b"release\n-----BEGIN PGP SIGNATURE----- quoted in the message\n"
    signature = b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    signed = commits.split_tag(header + message + signature)
    assert signed.payload == header + message
    assert signed.signature == signature
    assert signed.signed_at == 1700000456
    assert signed.signature_format is commits.SignatureFormat.OPENPGP


def test_unsigned_tag_has_no_signature() -> None:
    raw = b"object 1111111111111111111111111111111111111111\ntype commit\ntag v1\n\nrelease\n"
    assert commits.split_tag(raw).signature is None


def test_a_tag_carries_its_own_name_and_a_commit_none() -> None:
    raw = b"object 1111111111111111111111111111111111111111\ntype commit\ntag v1.0\n\nrelease\n"
    assert commits.split_tag(raw).tag_name == "v1.0"
    commit = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ncommitter C <c@e> 1 +0000\n\nm\n"
    assert commits.split_commit(commit).tag_name is None


def test_a_tag_with_two_names_is_refused() -> None:
    raw = b"object 1111111111111111111111111111111111111111\ntype commit\ntag v1\ntag v2\n\nr\n"
    with pytest.raises(commits.MalformedObject, match="duplicate tag header"):
        commits.split_tag(raw)


@given(
    message=st.binary(max_size=200).filter(lambda m: not m.startswith(b"\n")),
    armor_lines=st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=8),
)
def test_splitting_inverts_inserting_for_any_message_and_signature_lines(
    message: bytes, armor_lines: list[bytes]
) -> None:
    payload = PAYLOAD[: PAYLOAD.index(b"\n\n") + 2] + message
    body = b"".join(line + b"\n" for line in armor_lines)
    signature = b"-----BEGIN SSH SIGNATURE-----\n" + body + b"-----END SSH SIGNATURE-----\n"
    signed = commits.split_commit(signing.insert_signature(payload, signature))
    assert signed.payload == payload
    assert signed.signature == signature
