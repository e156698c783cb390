"""Each corpus object gets the verdict `git verify-commit`/`verify-tag` gives, or a stricter one.

The corpus is signed by the real git with ssh-keygen and gpg; git is asked with the same
allowed_signers file and a GnuPG home holding exactly the trusted *.asc keys.
"""

from __future__ import annotations

import base64
import datetime

import pytest

from reconciler import gitsource, verify
from reconciler.signatures import rejections, sshsig
from tests.harness import gitcorpus
from tests.integration import conftest

# name: (expected reason, or "" for good)
SAME_AS_GIT = {
    "signed-alice": "",  # ssh ed25519
    "signed-bob": "",  # ssh ecdsa p256
    "signed-erin": "",  # ssh ecdsa p384
    "signed-carol": "",  # ssh rsa, rsa-sha2-512
    "signed-gus": "",  # OpenPGP, signing subkey
    "unsigned": rejections.UNSIGNED,
    "tampered-alice": rejections.BAD_SIGNATURE,
    "tampered-gus": rejections.BAD_SIGNATURE,
    "signed-mallory": rejections.UNTRUSTED_KEY,
    "signed-ursula": rejections.UNTRUSTED_KEY,
    "wrong-namespace": rejections.WRONG_NAMESPACE,
    "nina-namespace-restricted": rejections.WRONG_NAMESPACE,
    "signed-rita": rejections.REVOKED_KEY,
    "signed-olga": rejections.EXPIRED_KEY,
    "dave-outside-window": rejections.KEY_NOT_VALID_AT_TIME,
    "frank-not-yet-valid": rejections.KEY_NOT_VALID_AT_TIME,
    "certificate-ivy": "",  # ecdsa key certified by a cert-authority line's CA
    "certificate-expired": rejections.KEY_NOT_VALID_AT_TIME,
    "certificate-other-principal": rejections.UNTRUSTED_KEY,
    "certificate-untrusted-ca": rejections.UNTRUSTED_KEY,
}

TAGS_SAME_AS_GIT = {
    "tag-ssh": "",
    "tag-gpg": "",
    "tag-untrusted": rejections.UNTRUSTED_KEY,
    "tag-unsigned": rejections.UNSIGNED,
}


def _public_blob(corpus: gitcorpus.Corpus, name: str) -> bytes:
    return base64.b64decode((corpus.root / f"ssh-{name}.pub").read_text().split()[1])


def _verdict(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect, name: str, mode: verify.Mode
) -> verify.Verdict:
    # A signed tag counts only under its own name, so tags are named through refs/tags/.
    ref = f"refs/tags/{name}" if mode is verify.Mode.TAG else f"refs/cases/{name}"
    checkout = gitsource.open_local(corpus.repo, ref, None)
    (verdict,) = inspect(checkout, mode).verdicts
    return verdict


CASES = [(name, reason, verify.Mode.HEAD) for name, reason in SAME_AS_GIT.items()] + [
    (name, reason, verify.Mode.TAG) for name, reason in TAGS_SAME_AS_GIT.items()
]


@pytest.mark.parametrize(("name", "reason", "mode"), CASES)
def test_verdict_matches_git_verify_commit_or_verify_tag(
    corpus: gitcorpus.Corpus,
    inspect: conftest.Inspect,
    name: str,
    reason: str,
    mode: verify.Mode,
) -> None:
    verdict = _verdict(corpus, inspect, name, mode)
    assert (verdict.reason, verdict.ok) == (reason, not reason), verdict.detail
    assert verdict.ok == corpus.git_accepts(name, tag=mode is verify.Mode.TAG)


def test_duplicate_signature_header_is_refused_where_git_accepts(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    # Stricter on purpose: git verifies the first gpgsig and ignores the second, but both are
    # hashed into the object id; an object that two parsers may read differently is refused.
    assert corpus.git_accepts("duplicate-signature-header")
    verdict = _verdict(corpus, inspect, "duplicate-signature-header", verify.Mode.HEAD)
    assert not verdict.ok
    assert verdict.reason == rejections.MALFORMED_OBJECT


def test_back_dated_commit_by_retired_ssh_key_is_refused_where_git_accepts(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    # Stricter on purpose: git checks valid-before only at the committer date, which the
    # signer writes; we also check it now, so a retired key cannot sign by back-dating.
    assert corpus.git_accepts("dave-backdated")
    verdict = _verdict(corpus, inspect, "dave-backdated", verify.Mode.HEAD)
    assert verdict.reason == rejections.KEY_NOT_VALID_AT_TIME


def test_certificate_with_a_critical_option_is_refused_where_git_accepts(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    # Stricter on purpose: ssh-keygen ignores critical options (force-command here) when it
    # verifies a signature; none has a meaning for signatures, so we refuse the certificate.
    assert corpus.git_accepts("certificate-critical-option")
    verdict = _verdict(corpus, inspect, "certificate-critical-option", verify.Mode.HEAD)
    assert verdict.reason == rejections.UNTRUSTED_KEY
    assert "critical options" in verdict.detail


def test_back_dated_commit_verifies_when_checked_inside_the_window(
    corpus: gitcorpus.Corpus, trust: verify.Trust
) -> None:
    inside = datetime.datetime(2019, 7, 1, tzinfo=datetime.UTC)
    checkout = gitsource.open_local(corpus.repo, "refs/cases/dave-backdated", None)
    assert verify.inspect(checkout, trust, verify.Mode.HEAD, None, inside).ok


def test_lightweight_tag_fails_tag_mode(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    checkout = gitsource.open_local(corpus.repo, "tag-lightweight", None)
    (verdict,) = inspect(checkout, verify.Mode.TAG).verdicts
    assert not verdict.ok
    assert "not an annotated tag" in verdict.detail


def test_signers_carry_principal_and_fingerprint(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    gus = _verdict(corpus, inspect, "signed-gus", verify.Mode.HEAD).signer
    alice = _verdict(corpus, inspect, "signed-alice", verify.Mode.HEAD).signer
    assert gus is not None
    assert alice is not None
    # The primary key's fingerprint, although a subkey made the signature.
    assert (gus.kind, gus.principals) == ("openpgp", ("gus@example.com",))
    assert gus.fingerprint == corpus.fingerprints["gus"].lower()
    assert (alice.kind, alice.principals) == ("ssh", ("alice@example.com",))
    assert alice.fingerprint.startswith("SHA256:")
    ivy = _verdict(corpus, inspect, "certificate-ivy", verify.Mode.HEAD).signer
    assert ivy is not None
    # The certificate's principal, and the fingerprint of the certified key, not of the CA.
    assert ivy.principals == ("ivy@example.com",)
    assert ivy.fingerprint == sshsig.fingerprint(_public_blob(corpus, "ivy"))
