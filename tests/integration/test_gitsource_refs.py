"""Revisions resolve to exact refs: a tag named like a branch and a re-used tag are refused."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from gitwarden_cli import main
from reconciler import gitsource, verify
from reconciler.signatures import rejections
from tests.harness import gitcorpus
from tests.integration import conftest


@pytest.fixture(scope="module")
def twisted(corpus: gitcorpus.Corpus, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A copy of the corpus with a tag `main` on a signed, never-merged commit, and the signed
    tag object `tag-gpg` pushed again as `refs/tags/v2.0` and as the branch `release`."""
    copy = tmp_path_factory.mktemp("twisted") / "repo.git"
    env = corpus.env()
    subprocess.run(["git", "clone", "-q", "--mirror", str(corpus.repo), str(copy)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    # git refuses a tag object under refs/heads/; a server would not.
    (copy / "refs" / "heads" / "release").write_text(corpus.objects["tag-gpg"] + "\n")
    for ref, target in (
        ("refs/tags/main", corpus.objects["rewritten"]),
        ("refs/tags/v2.0", corpus.objects["tag-gpg"]),
    ):
        subprocess.run(["git", "--git-dir", str(copy), "update-ref", ref, target], env=env,
                       check=True, capture_output=True)  # fmt: skip
    return copy


def _verify(corpus: gitcorpus.Corpus, repo: str, *args: str) -> int:
    trust = ["--allowed-signers", str(corpus.allowed_signers), "--gpg-keys", str(corpus.gpg_keys)]
    return main.main(["verify", *trust, "--repo", repo, *args])


@pytest.mark.parametrize("where", ["path", "file-url"])
def test_a_name_that_is_both_a_branch_and_a_tag_is_refused(
    corpus: gitcorpus.Corpus,
    twisted: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """The tag `main` names a commit alice signed that was never merged; git's rules pick it."""
    repo = str(twisted) if where == "path" else twisted.as_uri()
    code = _verify(corpus, repo, "--rev", "main", "--mode", "head", "--cache-dir", str(tmp_path))
    assert code == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "'main' is ambiguous" in err
    assert "refs/heads/main and refs/tags/main" in err


@pytest.mark.parametrize(
    "case",
    [
        (where, ref)
        for where in ("path", "file-url")
        for ref in ("refs/heads/main", "refs/tags/main")
    ],
)
def test_full_ref_names_pick_the_branch_or_the_tag(
    corpus: gitcorpus.Corpus,
    twisted: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, str],
) -> None:
    where, ref = case
    repo = str(twisted) if where == "path" else twisted.as_uri()
    code = _verify(corpus, repo, "--rev", ref, "--mode", "head", "--json",
                   "--cache-dir", str(tmp_path))  # fmt: skip
    assert code == main.EXIT_OK
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = (
        corpus.objects["rewritten"]
        if ref == "refs/tags/main"
        else corpus.git("rev-parse", "refs/heads/main")
    )
    assert record["sha"] == expected


def test_fetch_records_the_exact_ref_it_fetched(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    source = gitsource.Source(corpus.repo.as_uri())
    checkout = gitsource.fetch(source, tmp_path, "tag-ssh", None, full=False)
    assert checkout.ref == "refs/tags/tag-ssh"
    assert checkout.tip_object == corpus.objects["tag-ssh"]
    branch = gitsource.fetch(source, tmp_path, "merged", None, full=False)
    assert (branch.ref, branch.tip_commit) == (
        "refs/heads/merged",
        corpus.objects["merge-of-unsigned"],
    )


@pytest.mark.parametrize("rev", ["main~1", "HEAD^", "tag-gpg^{}", "abc1234"])
def test_revision_expressions_and_short_ids_are_refused(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str], rev: str
) -> None:
    """Only names that cannot mean two things: a branch, a tag, refs/..., a full commit id."""
    assert _verify(corpus, str(corpus.repo), "--rev", rev, "--mode", "head") == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "is not a branch or tag" in err
    assert "Traceback" not in err


def test_an_ambiguous_last_applied_revision_is_refused(twisted: pathlib.Path) -> None:
    """`--since main` must not quietly become the tag and shorten the range."""
    with pytest.raises(gitsource.SourceError, match="last applied revision 'main' is ambiguous"):
        gitsource.open_local(twisted, "refs/heads/main", "main")


@pytest.mark.parametrize("where", ["path", "file-url"])
def test_a_signed_tag_re_used_under_another_tag_name_is_refused(
    corpus: gitcorpus.Corpus,
    twisted: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """gus signed `tag-gpg`; the same object as `v2.0` would vouch for a release never named."""
    repo = str(twisted) if where == "path" else twisted.as_uri()
    code = _verify(corpus, repo, "--rev", "v2.0", "--mode", "tag", "--json",
                   "--cache-dir", str(tmp_path))  # fmt: skip
    assert code == main.EXIT_FAILED
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["verdict"], record["reason"]) == ("bad", rejections.TAG_NAME_MISMATCH)
    assert "named 'tag-gpg' but was reached through refs/tags/v2.0" in record["detail"]


def test_a_signed_tag_under_a_branch_name_is_refused(
    corpus: gitcorpus.Corpus, twisted: pathlib.Path, inspect: conftest.Inspect
) -> None:
    checkout = gitsource.open_local(twisted, "release", None)
    (verdict,) = inspect(checkout, verify.Mode.TAG).verdicts
    assert (verdict.ok, verdict.reason) == (False, rejections.TAG_NAME_MISMATCH)


def test_a_tag_named_by_its_object_id_claims_no_name(
    corpus: gitcorpus.Corpus, twisted: pathlib.Path, inspect: conftest.Inspect
) -> None:
    checkout = gitsource.open_local(twisted, corpus.objects["tag-gpg"], None)
    assert checkout.ref is None
    assert inspect(checkout, verify.Mode.TAG).ok
    under_its_name = gitsource.open_local(twisted, "tag-gpg", None)
    assert under_its_name.ref == "refs/tags/tag-gpg"
    assert inspect(under_its_name, verify.Mode.TAG).ok


def test_head_names_the_checked_out_branch_locally_and_the_remote_default(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    main_tip = corpus.git("rev-parse", "refs/heads/main")
    local = gitsource.open_local(corpus.repo, "HEAD", None)
    assert (local.ref, local.tip_commit) == ("refs/heads/main", main_tip)
    fetched = gitsource.fetch(gitsource.Source(corpus.repo.as_uri()), tmp_path, "HEAD", None,
                              full=False)  # fmt: skip
    assert fetched.tip_commit == main_tip
