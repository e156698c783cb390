"""Secret values leave the apply stage only for the API server; the dry run changes nothing."""

from __future__ import annotations

import base64
import logging
import traceback

import pytest
from kubernetes import client as k8s

from reconciler import apply, changeset, cluster, objectdiff, status
from tests.engine.conftest import SETTINGS, Counted
from tests.engine_plans import configmap, plan_of, planned, planned_secret

pytestmark = pytest.mark.cluster
Action = changeset.Action
PLAINTEXT = b"hunter2-plaintext-value"
NEW_PLAINTEXT = b"correct-horse-battery"


def forms(value: bytes) -> list[str]:
    """The plaintext as it could appear: raw, and base64 as the API carries it."""
    return [value.decode(), base64.b64encode(value).decode()]


def chained_text(exc: BaseException) -> str:
    return (
        "".join(traceback.format_exception(exc))
        + repr(exc)
        + "".join(repr(a) for e in (exc, exc.__cause__) if e is not None for a in e.args)
    )


def frame_locals(exc: BaseException) -> str:
    """Every local variable of every frame in the error chain, as a crash reporter records them."""
    seen, out, pending = set(), [], [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename != __file__:  # the test's own locals are its own
                out.append(repr(tb.tb_frame.f_locals))
            tb = tb.tb_next
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return "".join(out)


def test_a_secret_is_applied_with_its_values_and_they_appear_in_no_log_or_error(
    target: cluster.Cluster,
    counted: Counted,
    namespace: str,
    applyset: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = planned_secret(namespace, "db", {"password": PLAINTEXT}, applyset=applyset)
    apply.run(plan_of([secret], applyset=applyset), target, SETTINGS)
    live = k8s.CoreV1Api(counted.plane.admin()).read_namespaced_secret("db", namespace)
    assert base64.b64decode(live.data["password"]) == PLAINTEXT

    # Make the next apply of the Secret fail in the API server: it is immutable now.
    k8s.CoreV1Api(counted.plane.admin()).patch_namespaced_secret(
        "db", namespace, {"immutable": True}
    )
    changed = planned_secret(namespace, "db", {"password": NEW_PLAINTEXT}, applyset=applyset)
    with pytest.raises(apply.ApplyStalled) as caught:
        apply.run(plan_of([changed], applyset=applyset), target, SETTINGS)
    text = chained_text(caught.value) + caplog.text + frame_locals(caught.value)
    assert f"Secret {namespace}/db" in str(caught.value)
    for value in (*forms(PLAINTEXT), *forms(NEW_PLAINTEXT)):
        assert value not in text


def test_dry_run_diff_masks_every_secret_value_and_changes_nothing(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    core = k8s.CoreV1Api(counted.plane.admin())
    # A Secret once written by client-side `kubectl apply`: its annotation holds the values.
    last_applied = '{"data":{"password":"' + base64.b64encode(PLAINTEXT).decode() + '"}}'
    first = plan_of(
        [
            planned(configmap(namespace, "cm", {"level": "1"}), applyset=applyset),
            planned_secret(
                namespace, "db", {"password": PLAINTEXT, "user": b"app"}, applyset=applyset
            ),
        ],
        applyset=applyset,
    )
    apply.run(first, target, SETTINGS)
    core.patch_namespaced_secret(
        "db", namespace, {"metadata": {"annotations": {objectdiff.LAST_APPLIED: last_applied}}}
    )
    versions = {
        o.metadata.name: o.metadata.resource_version
        for o in (
            core.read_namespaced_config_map("cm", namespace),
            core.read_namespaced_secret("db", namespace),
        )
    }

    second = plan_of(
        [
            planned(configmap(namespace, "cm", {"level": "2"}), applyset=applyset),
            planned_secret(
                namespace, "db", {"password": NEW_PLAINTEXT, "user": b"app"}, applyset=applyset
            ),
            planned(configmap(namespace, "new", {"x": "y"}), applyset=applyset),
        ],
        applyset=applyset,
    )
    diffs = {d.ref.name: d for d in apply.diff(second, target)}
    assert {n: d.action for n, d in diffs.items()} == {
        "cm": Action.CONFIGURED,
        "db": Action.CONFIGURED,
        "new": Action.CREATED,
    }
    assert "-  level: '1'" in diffs["cm"].diff
    assert "+  level: '2'" in diffs["cm"].diff
    secret_diff = diffs["db"].diff
    assert "password: '*** (changed)'" in secret_diff
    assert "user: '***'" in secret_diff
    everything = "".join(d.diff for d in diffs.values())
    for value in (*forms(PLAINTEXT), *forms(NEW_PLAINTEXT), "YXBw"):
        assert value not in everything
    # A dry-run ChangeSet from `run` agrees, and nothing was written.
    dry = apply.run(second, target, SETTINGS, dry_run=True)
    assert {c.ref.name: c.action for c in dry.changes} == {
        "cm": Action.CONFIGURED,
        "db": Action.CONFIGURED,
        "new": Action.CREATED,
    }
    after = {
        o.metadata.name: o.metadata.resource_version
        for o in (
            core.read_namespaced_config_map("cm", namespace),
            core.read_namespaced_secret("db", namespace),
        )
    }
    assert after == versions
    assert "new" not in {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
    assert objectdiff.changes_of(tuple(diffs.values())).summary() == "1 created, 2 configured"


def test_status_and_changes_never_carry_secret_values(
    target: cluster.Cluster, namespace: str, applyset: str
) -> None:
    plan = plan_of(
        [planned_secret(namespace, "db", {"password": PLAINTEXT}, applyset=applyset)],
        applyset=applyset,
    )
    done = apply.run(plan, target, SETTINGS)
    import datetime

    rendered = status.render(
        status.succeeded(plan, done), None, datetime.datetime.now(datetime.UTC)
    )
    assert all(v not in repr(rendered) + repr(done) for v in forms(PLAINTEXT))
