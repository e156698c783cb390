"""`gitwarden reconcile --once` refuses what is not trusted, and nothing it refuses is applied.

Unsigned and wrongly signed commits, a good commit on top of a bad one and both of the README's
recoveries, a policy change signed by one admin against one with a second admin's merge, a
forged last-applied commit in the stored status, a rewritten branch, and a signed commit that
tries to grant more than the reconciler holds. The real CLI runs as the GitOps service account
against the real API server with the webhook enforcing; each test has its own repository,
namespace and Sync name.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.e2e import reconcile_manifests as m
from tests.e2e import reconcile_stack
from tests.e2e.reconcile_stack import Env, ok, refused, unique
from tests.harness import canaries, gitopsrepo

pytestmark = pytest.mark.cluster

APP_FILE = "clusters/test/app.yaml"
# The one refusal of the GitOps identity this module provokes on purpose (RBAC escalation).
ESCALATION_PREFIX = "escalate-"


def applied(env: Env, ns: str, mode: str) -> gitopsrepo.GitOpsRepo:
    """A repository whose first real commit (ConfigMap settings: mode) is applied as `ns`."""
    repo = env.repo()
    sealed = env.seal(ns, "creds", {"k": canaries.value("trust")})
    repo.write(APP_FILE, m.small_app(ns, {"mode": mode}, sealed))
    repo.commit("initial", "alice")
    return repo


def set_mode(repo: gitopsrepo.GitOpsRepo, mode: str) -> None:
    """Change only the ConfigMap in the work tree (the SealedSecret stays byte for byte)."""
    docs = [dict(d) for d in _documents(repo)]
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"] = {"mode": mode}
    repo.write(APP_FILE, docs)


def _documents(repo: gitopsrepo.GitOpsRepo) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((repo.path / APP_FILE).read_text()))


def mode(env: Env, ns: str) -> str:
    data = k8s.CoreV1Api(env.admin).read_namespaced_config_map("settings", ns).data
    return str(data["mode"])


def assert_stalled_on(env: Env, name: str, sha: str, reason: str) -> None:
    stalled = env.condition(name, "Stalled")
    assert stalled["status"] == "True", stalled
    assert sha[:12] in stalled["message"], stalled
    assert reason in stalled["message"], stalled
    assert env.condition(name, "Ready")["status"] == "False"


@pytest.mark.parametrize(("signer", "reason"), [(None, "unsigned"), ("mallory", "untrusted-key")])
def test_a_bad_commit_on_top_changes_nothing_until_the_documented_recovery(
    env: Env, signer: str | None, reason: str
) -> None:
    ns, name = unique("bad"), unique("sync")
    repo = applied(env, ns, "good")
    config = env.config(repo, name)
    ok(env.reconcile(config))
    last_good = repo.head()

    set_mode(repo, "evil")
    bad = repo.commit("evil", signer)
    output = refused(env.reconcile(config))
    assert bad[:12] in output
    assert reason in output
    assert mode(env, ns) == "good"
    assert_stalled_on(env, name, bad, reason)
    assert env.sync(name)["status"]["lastAppliedCommit"] == last_good
    # The refused tip is what the status says was attempted.
    assert env.sync(name)["status"]["lastAttemptedCommit"] == bad

    # A good commit on top does not launder the bad one: every commit since the anchor counts.
    set_mode(repo, "after")
    repo.commit("good on top", "alice")
    refused(env.reconcile(config))
    assert mode(env, ns) == "good"
    assert_stalled_on(env, name, bad, reason)

    # The README's recovery: move the branch back to the last applied commit (a descendant of
    # it is not a force-push) and make the change again as a signed commit.
    repo.reset(last_good)
    set_mode(repo, "after")
    fixed = repo.commit("redo, signed", "bob")
    ok(env.reconcile(config))
    assert mode(env, ns) == "after"
    assert env.condition(name, "Ready")["status"] == "True"
    assert fixed in str(env.sync(name)["status"])


def test_a_policy_change_applies_only_with_a_second_admins_merge(env: Env) -> None:
    ns, name = unique("policy"), unique("sync")
    repo = applied(env, ns, "before")
    config = env.config(repo, name)
    ok(env.reconcile(config))
    base = repo.head()

    repo.checkout("change", new_at="main")
    repo.write("policies/commits/team.rego", "package team\n")
    set_mode(repo, "with-policy")
    alone = repo.commit("policy and config, one admin", "alice")
    # Pushed straight to main: one admin's signature is not enough for policies/.
    repo.checkout("main")
    repo.git("merge", "-q", "--ff-only", "change")
    output = refused(env.reconcile(config))
    assert alone[:12] in output
    assert "policy-denied" in output
    assert mode(env, ns) == "before"

    repo.reset(base)
    merge = repo.merge("change", "second admin merges", "bob")
    ok(env.reconcile(config))
    assert mode(env, ns) == "with-policy"
    assert merge in str(env.sync(name)["status"])


def test_an_attacker_chosen_commit_in_the_status_lets_nothing_unsigned_through(env: Env) -> None:
    """The stored last-applied commit only shortens a pass; it never sets the range's base."""
    ns, name = unique("forged"), unique("sync")
    repo = applied(env, ns, "good")
    config = env.config(repo, name)
    ok(env.reconcile(config))
    set_mode(repo, "evil")
    unsigned = repo.commit("unsigned", None)
    other = env.repo()  # a commit that does not descend from this repository's anchor
    g, v, p = reconcile_stack.SYNC_GROUP, reconcile_stack.SYNC_VERSION, reconcile_stack.SYNC_PLURAL
    # The attacker holds break-glass (allowed, warned, audited): the status write gets through
    # admission, which is exactly the case where the reconciler must not believe it.
    with reconcile_stack.allowed_everything(env.admin, "oncall"):
        oncall = k8s.CustomObjectsApi(env.stack.plane.client_for(env.stack.oncall_creds))
        for forged in (unsigned, other.anchor):
            status = env.sync(name)["status"]
            oncall.patch_cluster_custom_object_status(
                g, v, p, name, {"status": _forge(status, forged)}
            )
            assert forged in str(env.sync(name)["status"])
            output = refused(env.reconcile(config))
            assert unsigned[:12] in output
            assert "unsigned" in output
            assert mode(env, ns) == "good"
            assert_stalled_on(env, name, unsigned, "unsigned")


def _forge(status: dict[str, Any], sha: str) -> dict[str, Any]:
    """`status` with every field that holds a commit id replaced by `sha`."""
    forged: dict[str, Any] = {}
    for key, value in status.items():
        if (
            isinstance(value, str)
            and len(value) == 40
            and all(c in "0123456789abcdef" for c in value)
        ):
            forged[key] = sha
        elif isinstance(value, dict):
            forged[key] = _forge(value, sha)
        else:
            forged[key] = value
    return forged


def test_moving_the_anchor_past_a_signed_revert_recovers_and_keeps_history(env: Env) -> None:
    """The README's second way out: revert the bad commit, signed, and anchor there."""
    ns, name = unique("anchor"), unique("sync")
    repo = applied(env, ns, "good")
    ok(env.reconcile(env.config(repo, name)))
    applied_commit = repo.head()
    set_mode(repo, "evil")
    bad = repo.commit("unsigned", None)
    refused(env.reconcile(env.config(repo, name)))

    repo.git(*repo.keys.sign_args("alice"), "revert", "--no-edit", bad)
    revert = repo.head()
    assert repo.git("diff", applied_commit, revert) == ""  # reviewed: it vouches for nothing new
    set_mode(repo, "later")
    later = repo.commit("a later change", "bob")
    repo.anchor = revert  # the operator's configuration change
    out = ok(env.reconcile(env.config(repo, name)))
    assert m.change("ConfigMap", ns, "settings", "configured") in out
    assert mode(env, ns) == "later"
    status = env.sync(name)["status"]
    assert status["lastAppliedCommit"] == later
    # The stored commit is older than the new anchor: ignored, and said so.
    assert any(applied_commit in w and "ignored" in w for w in status.get("warnings", [])), status


def test_a_branch_rewritten_under_applied_history_is_refused(env: Env) -> None:
    """A force-push that drops an applied commit, even with every new commit signed."""
    ns, name = unique("rewrite"), unique("sync")
    repo = applied(env, ns, "one")
    config = env.config(repo, name)
    first = repo.head()
    set_mode(repo, "two")
    applied_two = repo.commit("two", "alice")
    ok(env.reconcile(config))
    assert mode(env, ns) == "two"

    repo.reset(first)
    set_mode(repo, "rewritten")
    rewritten = repo.commit("rewritten, signed", "bob")
    output = refused(env.reconcile(config))
    assert applied_two[:12] in output
    assert mode(env, ns) == "two"
    stalled = env.condition(name, "Stalled")
    assert stalled["status"] == "True", stalled
    assert rewritten[:12] in str(env.sync(name)["status"])
    assert env.sync(name)["status"]["lastAppliedCommit"] == applied_two


def test_a_signed_commit_cannot_lift_the_reconciler_above_its_own_role(env: Env) -> None:
    """The GitOps role holds no `escalate`: a ClusterRole granting more is refused by RBAC."""
    ns, name = unique("escalate"), unique("sync")
    repo = applied(env, ns, "safe")
    ok(env.reconcile(env.config(repo, name)))
    greedy = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": ESCALATION_PREFIX + name},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }
    repo.write("clusters/test/greedy.yaml", [greedy])
    commit = repo.commit("grant everything", "alice")
    output = refused(env.reconcile(env.config(repo, name)))
    assert f"ClusterRole.rbac.authorization.k8s.io {greedy['metadata']['name']}" in output
    assert "Forbidden" in output
    stalled = env.condition(name, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Forbidden"), stalled
    assert commit[:12] in str(env.sync(name)["status"])
    with pytest.raises(k8s.ApiException) as absent:
        k8s.RbacAuthorizationV1Api(env.admin).read_cluster_role(greedy["metadata"]["name"])
    assert absent.value.status == 404


def test_the_reconcilers_requests_are_never_denied(env: Env, started: dt.datetime) -> None:
    """Runs last in the module: every request the GitOps identity made, refused passes too."""
    reconcile_stack.assert_never_denied(env, started, provoked=ESCALATION_PREFIX)
