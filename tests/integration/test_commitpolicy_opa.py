"""The commit policy through the real opa binary: golden inputs shared with the Rego tests."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest

from reconciler import commitpolicy, gitsource, verify

GOLDEN = pathlib.Path("policies/testdata/commits")
POLICY = pathlib.Path("policies/commits")
ALICE = commitpolicy.Signer("ssh", ("alice@example.com",), "SHA256:alice")
BOB = commitpolicy.Signer("openpgp", ("bob@example.com",), "b0b")
ZERO = "0" * 40


def _data(tmp_path: pathlib.Path, *, two: bool) -> pathlib.Path:
    settings = {
        "policy_admins": ["alice@example.com", "bob@example.com"],
        "protected_paths": ["policies/"],
        "require_two_signers": two,
    }
    path = tmp_path / "commits.json"
    path.write_text(json.dumps({"commits": {"settings": settings}}))
    return path


def _merge_by_second_admin() -> list[commitpolicy.PolicyCommit]:
    first = commitpolicy.PolicyCommit(
        "1" * 40, (ZERO,), ALICE, ("policies/admission/rules.rego",), (BOB,)
    )
    merge = commitpolicy.PolicyCommit("2" * 40, (ZERO, "1" * 40), BOB, (), ())
    return [first, merge]


def test_python_input_matches_the_golden_input_the_rego_tests_use() -> None:
    golden = json.loads((GOLDEN / "merge_by_second_admin" / "data.json").read_text())
    assert commitpolicy.input_document(_merge_by_second_admin()) == golden


def test_merge_signed_by_a_second_admin_satisfies_the_two_signer_rule(
    opa: str, tmp_path: pathlib.Path
) -> None:
    policy = commitpolicy.OpaEval(opa, POLICY, _data(tmp_path, two=True))
    assert policy.evaluate(_merge_by_second_admin()) == ()


def test_lone_admin_change_is_denied_when_two_signers_are_required(
    opa: str, tmp_path: pathlib.Path
) -> None:
    first, _merge = _merge_by_second_admin()
    lone = commitpolicy.PolicyCommit(first.sha, first.parents, ALICE, first.changed_paths, ())
    (denial,) = commitpolicy.OpaEval(opa, POLICY, _data(tmp_path, two=True)).evaluate([lone])
    assert denial.sha == "1" * 40
    assert "second, distinct policy-admin" in denial.reason
    assert commitpolicy.OpaEval(opa, POLICY, _data(tmp_path, two=False)).evaluate([lone]) == ()


def test_policy_directory_without_the_rule_is_unavailable_not_an_allow(
    opa: str, tmp_path: pathlib.Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    policy = commitpolicy.OpaEval(opa, empty, _data(tmp_path, two=False))
    with pytest.raises(commitpolicy.PolicyUnavailable, match="undefined"):
        policy.evaluate(_merge_by_second_admin())


def test_missing_opa_binary_is_unavailable(tmp_path: pathlib.Path) -> None:
    policy = commitpolicy.OpaEval(str(tmp_path / "no-opa"), POLICY, _data(tmp_path, two=False))
    with pytest.raises(commitpolicy.PolicyUnavailable, match="not found"):
        policy.evaluate(_merge_by_second_admin())


def test_an_opa_that_cannot_be_run_is_unavailable_not_a_crash(tmp_path: pathlib.Path) -> None:
    # Attack: swap the opa binary for a file that is not executable (or a directory). The
    # PermissionError escaped the port as no ReconcileError: the CLI reported an "internal
    # error" and no Stalled/Reconciling status was written.
    for name, make in (
        ("not-executable", lambda p: p.write_text("x")),
        ("a-dir", pathlib.Path.mkdir),
    ):
        binary = tmp_path / name
        make(binary)
        policy = commitpolicy.OpaEval(str(binary), POLICY, _data(tmp_path, two=False))
        with pytest.raises(commitpolicy.PolicyUnavailable, match="cannot run"):
            policy.evaluate(_merge_by_second_admin())


def test_real_history_with_a_second_admin_merge_passes_and_a_lone_change_fails(
    trust: verify.Trust,
    now: datetime.datetime,
    opa: str,
    tmp_path: pathlib.Path,
    policy_repo: dict[str, str],
) -> None:
    shas = policy_repo
    repo = pathlib.Path(shas["path"])
    policy = commitpolicy.OpaEval(opa, POLICY, _data(tmp_path, two=True))
    merged = gitsource.open_local(repo, shas["p2"], shas["p0"])
    assert verify.inspect(merged, trust, verify.Mode.ALL, policy, now).ok
    lone = gitsource.open_local(repo, shas["p1"], shas["p0"])
    (verdict,) = verify.inspect(lone, trust, verify.Mode.ALL, policy, now).verdicts
    assert (verdict.ok, verdict.reason) == (False, "policy-denied")
    outsider = gitsource.open_local(repo, shas["p3"], shas["p0"])
    (verdict,) = verify.inspect(outsider, trust, verify.Mode.HEAD, policy, now).verdicts
    assert "carol@example.com is not a policy admin" in verdict.detail
