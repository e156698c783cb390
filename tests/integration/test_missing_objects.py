"""Repositories with objects missing, and ones we cannot read: clear errors, never a traceback.

A treeless clone (`git clone --filter=tree:0`) has every commit but no tree: signatures can be
verified from commit objects alone, and only the commit policy (changed paths) needs trees.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from gitwarden_cli import main
from reconciler import gitsource, verify
from tests.harness import gitcorpus
from tests.integration import conftest


def _verify(corpus: gitcorpus.Corpus, repo: str, *args: str) -> int:
    trust = ["--allowed-signers", str(corpus.allowed_signers), "--gpg-keys", str(corpus.gpg_keys)]
    return main.main(["verify", *trust, "--repo", repo, *args])


@pytest.fixture(scope="module")
def treeless(corpus: gitcorpus.Corpus, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A `--filter=tree:0` clone of the corpus: commits and tags, no trees or blobs."""
    root = tmp_path_factory.mktemp("treeless")
    source = root / "source.git"
    env = corpus.env()
    subprocess.run(["git", "clone", "-q", "--mirror", str(corpus.repo), str(source)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["git", "--git-dir", str(source), "config", "uploadpack.allowFilter", "true"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    clone = root / "treeless.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--filter=tree:0", source.as_uri(),
                    str(clone)], env=env, check=True, capture_output=True)  # fmt: skip
    # Take the promisor away, so nothing can be fetched lazily behind our back.
    shutil.rmtree(source)
    return clone


@pytest.mark.parametrize(
    ("rev", "mode"),
    [("main", "head"), ("tag-gpg", "tag"), ("tag-ssh", "all")],
    ids=["head", "tag", "all"],
)
def test_a_treeless_clone_verifies_without_a_commit_policy(
    corpus: gitcorpus.Corpus,
    treeless: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    rev: str,
    mode: str,
) -> None:
    since = ["--since", corpus.objects["root"]] if mode == "all" else []
    code = _verify(corpus, str(treeless), "--rev", rev, "--mode", mode, *since)
    captured = capsys.readouterr()
    assert code == main.EXIT_OK, captured.err
    assert "OK: 1 object verified" in captured.out


def test_a_treeless_clone_with_a_commit_policy_is_a_clear_error(
    corpus: gitcorpus.Corpus,
    treeless: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "commits.json"
    data.write_text(json.dumps({"commits": {"settings": {"policy_admins": []}}}))
    code = _verify(corpus, str(treeless), "--rev", "main", "--mode", "head",
                   "--policy-dir", "policies/commits", "--policy-data", str(data))  # fmt: skip
    assert code == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "the commit policy needs them" in err
    assert "is missing from the repository" in err


@pytest.fixture
def holed(corpus: gitcorpus.Corpus, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the corpus whose root commit (an ancestor of range-base) was deleted."""
    copy = tmp_path / "holed"
    shutil.copytree(corpus.repo, copy)
    root = corpus.objects["root"]
    loose = copy / ".git" / "objects" / root[:2] / root[2:]
    assert loose.exists(), "the corpus is expected to keep loose objects"
    loose.unlink()
    return copy


def test_a_range_whose_base_lacks_its_ancestors_is_a_clear_error(
    corpus: gitcorpus.Corpus, holed: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _verify(corpus, str(holed), "--rev", "merged", "--since", corpus.objects["range-base"])
    assert code == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"object {corpus.objects['root']} is missing from the repository" in err


def test_missing_objects_are_a_source_error_from_the_verify_stage(
    corpus: gitcorpus.Corpus, holed: pathlib.Path, inspect: conftest.Inspect
) -> None:
    """What the reconciler's pipeline sees: our error type, not pygit2's."""
    checkout = gitsource.open_local(holed, "merged", corpus.objects["range-base"])
    with pytest.raises(gitsource.SourceError, match="missing from the repository"):
        inspect(checkout, verify.Mode.ALL)
    whole = gitsource.open_local(holed, "merged", None)
    with pytest.raises(gitsource.SourceError, match="missing from the repository"):
        inspect(whole, verify.Mode.ALL)


@pytest.fixture(scope="module")
def sha256_repo(corpus: gitcorpus.Corpus, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("sha256") / "repo"
    env = corpus.env()
    subprocess.run(["git", "init", "-q", "-b", "main", "--object-format=sha256", str(repo)],
                   env=env, check=True, capture_output=True)  # fmt: skip
    (repo / "file").write_text("x\n")
    for args in (["add", "file"], ["-c", "user.name=A", "-c", "user.email=a@example.com",
                                   "commit", "-q", "-m", "one"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return repo


@pytest.mark.parametrize("where", ["path", "file-url"])
def test_a_sha256_repository_is_reported_as_unsupported(
    corpus: gitcorpus.Corpus,
    sha256_repo: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    repo = str(sha256_repo) if where == "path" else sha256_repo.as_uri()
    code = _verify(corpus, repo, "--rev", "main", "--mode", "head", "--cache-dir", str(tmp_path))
    assert code == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "SHA-256 object format is not supported" in err
    assert "not a git repository" not in err
