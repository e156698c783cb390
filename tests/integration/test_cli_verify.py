"""`gitwarden verify` end to end: exit codes, text and JSON output, fetching, the policy."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from gitwarden_cli import main
from tests.harness import gitcorpus


def _run(corpus: gitcorpus.Corpus, *args: str) -> int:
    trust = ["--allowed-signers", str(corpus.allowed_signers), "--gpg-keys", str(corpus.gpg_keys)]
    return main.main(["verify", *trust, *args])


def test_signed_range_exits_0(corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(corpus, "--repo", str(corpus.repo), "--rev", "refs/cases/signed-gus",
                "--since", corpus.objects["root"])  # fmt: skip
    assert code == main.EXIT_OK
    assert "OK: 5 objects verified (all)" in capsys.readouterr().out


def test_failing_commit_exits_1_and_is_printed_with_its_reason(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(corpus, "--repo", str(corpus.repo), "--rev", "merged",
                "--since", corpus.objects["range-base"])  # fmt: skip
    assert code == main.EXIT_FAILED
    out = capsys.readouterr().out
    assert f"FAIL {corpus.objects['feature-unsigned']} (commit): unsigned" in out
    assert out.count("FAIL") == 1


def test_json_gives_one_record_per_commit(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(corpus, "--repo", str(corpus.repo), "--rev", "merged",
                "--since", corpus.objects["range-base"], "--json")  # fmt: skip
    assert code == main.EXIT_FAILED
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 4
    by_sha = {r["sha"]: r for r in records}
    bad = by_sha[corpus.objects["feature-unsigned"]]
    assert (bad["verdict"], bad["reason"], bad["signer"]) == ("bad", "unsigned", None)
    good = by_sha[corpus.objects["main-side"]]
    assert good["verdict"] == "good"
    assert good["signer"]["principals"] == ["carol@example.com"]
    assert good["signer"]["fingerprint"].startswith("SHA256:")


def test_force_push_exits_1_with_a_refusal(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(corpus, "--repo", str(corpus.repo), "--rev", "rewritten",
                "--since", corpus.objects["main-side"], "--json")  # fmt: skip
    assert code == main.EXIT_FAILED
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["verdict"], record["reason"]) == ("refused", "force-push")


def test_tag_mode_verifies_the_tag_object(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(corpus, "--repo", str(corpus.repo), "--rev", "tag-gpg", "--mode", "tag") == 0
    assert _run(corpus, "--repo", str(corpus.repo), "--rev", "tag-unsigned", "--mode", "tag") == 1
    assert "unsigned" in capsys.readouterr().out


def test_url_source_is_fetched_into_a_cache(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    code = _run(corpus, "--repo", corpus.repo.as_uri(), "--rev", "main", "--mode", "head",
                "--cache-dir", str(tmp_path))  # fmt: skip
    assert code == main.EXIT_OK
    assert list(tmp_path.glob("*.git"))


def test_bad_allowed_signers_line_exits_2_naming_file_and_line(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "allowed_signers"
    bad.write_text("# ok\nalice@example.com ssh-ed25519\n")
    code = main.main(["verify", "--repo", str(corpus.repo), "--rev", "main",
                      "--allowed-signers", str(bad)])  # fmt: skip
    assert code == main.EXIT_USAGE
    assert f"{bad}:2:" in capsys.readouterr().err


def test_gpg_key_directory_with_a_secret_key_exits_2(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    armored = subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--armor",
         "--export-secret-keys", corpus.fingerprints["gus"]],
        env=corpus.env(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "gus.asc").write_bytes(armored)
    code = main.main(["verify", "--repo", str(corpus.repo), "--rev", "main",
                      "--gpg-keys", str(keys)])  # fmt: skip
    assert code == main.EXIT_USAGE
    assert "secret key material" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rev", "no-such-branch"], "not a branch or tag"),
        (["--rev", "main", "--policy-dir", "policies/commits"], "go together"),
    ],
    ids=["unknown-revision", "policy-dir-without-data"],
)
def test_usage_and_configuration_errors_exit_2(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _run(corpus, "--repo", str(corpus.repo), *args) == main.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_url_source_needs_a_full_commit_id_for_since(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(corpus, "--repo", corpus.repo.as_uri(), "--rev", "main", "--since", "main~1")
    assert code == main.EXIT_USAGE
    assert "full commit id" in capsys.readouterr().err


def test_no_trust_configuration_exits_2(
    corpus: gitcorpus.Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main.main(["verify", "--repo", str(corpus.repo), "--rev", "main"]) == main.EXIT_USAGE
    assert "nothing is trusted" in capsys.readouterr().err


def test_commit_policy_runs_through_opa(
    corpus: gitcorpus.Corpus,
    opa: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    policy_repo: dict[str, str],
) -> None:
    shas = policy_repo
    data = tmp_path / "commits.json"
    settings = {
        "policy_admins": ["alice@example.com", "bob@example.com"],
        "require_two_signers": True,
    }
    data.write_text(json.dumps({"commits": {"settings": settings}}))
    policy = ["--policy-dir", "policies/commits", "--policy-data", str(data), "--opa", opa]
    ok = _run(corpus, "--repo", shas["path"], "--rev", shas["p2"], "--since", shas["p0"], *policy)
    assert ok == main.EXIT_OK
    lone = _run(corpus, "--repo", shas["path"], "--rev", shas["p1"], "--since", shas["p0"], *policy)
    assert lone == main.EXIT_FAILED
    assert "policy-denied" in capsys.readouterr().out
