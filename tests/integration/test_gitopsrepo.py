"""The test GitOps repository builder, checked by `gitwarden verify` with its own trust files.

The reconcile end-to-end tests lean on this builder to make good, unsigned and wrongly signed
commits and a two-admin policy change; these tests show each is what it claims, so an e2e
failure is the reconciler's and not the harness's.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest
import yaml

from gitwarden_cli import main
from tests.harness import gitopsrepo
from tests.harness.controlplane import tool


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gitopsrepo.Keys]:
    made = gitopsrepo.make_keys(tmp_path_factory.mktemp("gitops") / "keys")
    yield made
    made.stop_agents()


def _verify(
    repo: gitopsrepo.GitOpsRepo, rev: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, dict[str, object]]]:
    keys = repo.keys
    code = main.main(
        ["verify", "--repo", str(repo.path), "--rev", rev, "--since", repo.anchor, "--json",
         "--allowed-signers", str(keys.allowed_signers), "--gpg-keys", str(keys.openpgp_keys),
         "--policy-dir", str(gitopsrepo.POLICY_DIR), "--policy-data", str(keys.policy_data),
         "--opa", str(tool("opa"))]
    )  # fmt: skip
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, {str(r["sha"]): r for r in records}


def test_each_signer_signs_as_claimed(
    keys: gitopsrepo.Keys, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = gitopsrepo.create(tmp_path / "repo", keys)
    shas = {}
    for signer in ("alice", "bob", "carol", "gus", "mallory", None):
        repo.write(f"clusters/test/{signer}.yaml", [{"signer": str(signer)}])
        shas[signer] = repo.commit(f"by {signer}", signer)
    code, records = _verify(repo, "main", capsys)
    assert code == main.EXIT_FAILED
    for signer in ("alice", "bob", "carol", "gus"):
        record = records[shas[signer]]
        assert record["verdict"] == "good", record
        assert record["signer"]["principals"] == [gitopsrepo.email(signer)]
    assert records[shas["mallory"]]["reason"] == "untrusted-key"
    assert records[shas[None]]["reason"] == "unsigned"
    assert repo.anchor not in records  # the range is (anchor, tip]


def test_a_policy_change_needs_a_second_admins_merge(
    keys: gitopsrepo.Keys, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = gitopsrepo.create(tmp_path / "repo", keys)
    repo.checkout("change", new_at="main")
    repo.write("policies/commits/extra.rego", "package extra\n")
    change = repo.commit("policy change", "alice")
    code, records = _verify(repo, "change", capsys)
    assert code == main.EXIT_FAILED
    assert records[change]["reason"] == "policy-denied"
    repo.checkout("main")
    merge = repo.merge("change", "merge the policy change", "bob")
    code, records = _verify(repo, "main", capsys)
    assert code == main.EXIT_OK, records
    assert {records[change]["verdict"], records[merge]["verdict"]} == {"good"}


def test_the_config_names_every_trust_file(keys: gitopsrepo.Keys, tmp_path: pathlib.Path) -> None:
    repo = gitopsrepo.create(tmp_path / "repo", keys)
    path = gitopsrepo.write_config(
        tmp_path / "config.yaml", repo, name="demo", kubeconfig=tmp_path / "kc",
        cache_dir=tmp_path / "cache", opa=tool("opa"), apply={"prune": True},
    )  # fmt: skip
    document = yaml.safe_load(path.read_text())
    assert document["trust"]["anchor"] == repo.anchor
    assert document["source"]["url"] == repo.path.as_uri()
    for key in ("allowed_signers", "openpgp_keys", "commit_policy_dir", "commit_policy_data"):
        assert pathlib.Path(document["trust"][key]).exists(), key
    assert document["identity"] == {"namespace": "gitwarden", "kubeconfig": str(tmp_path / "kc"),
                                    "name": "demo"}  # fmt: skip
