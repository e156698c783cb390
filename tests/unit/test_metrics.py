"""The reconciler's metrics, read back through prometheus_client's own text parser."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client import parser

from reconciler import changeset, metrics, objectref

COMMIT_A = "a" * 40
COMMIT_B = "0123456789abcdef" * 4  # a SHA-256 repository's id


def samples(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, by name and sorted labels."""
    found = {}
    for family in parser.text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(m: metrics.Metrics, name: str, **labels: str) -> float:
    return samples(m)[(name, tuple(sorted(labels.items())))]


def names(m: metrics.Metrics) -> set[str]:
    return {name for name, _ in samples(m)}


def change(action: changeset.Action, name: str) -> changeset.Change:
    return changeset.Change(objectref.ObjectRef("", "ConfigMap", "app", name), action, "main")


def test_a_pass_is_timed_and_counted_by_result() -> None:
    m = metrics.Metrics()
    m.pass_finished(0.3, "applied")
    m.pass_finished(7.0, "applied")
    m.pass_finished(1.2, "stalled")
    duration = "gitwarden_reconcile_duration_seconds"
    assert value(m, f"{duration}_count", result="applied") == 2
    assert value(m, f"{duration}_sum", result="applied") == 7.3
    assert value(m, f"{duration}_bucket", result="applied", le="0.5") == 1
    assert value(m, f"{duration}_bucket", result="applied", le="+Inf") == 2
    assert value(m, f"{duration}_count", result="transient") == 0  # present before any
    assert value(m, "gitwarden_reconcile_passes_total", result="stalled") == 1


def test_an_unknown_result_is_a_programming_error() -> None:
    m = metrics.Metrics()
    with pytest.raises(ValueError, match="applied"):
        m.pass_finished(1.0, "maybe")


def test_applied_objects_are_counted_by_action() -> None:
    m = metrics.Metrics()
    m.applied(
        changeset.ChangeSet(
            (
                change(changeset.Action.CREATED, "a"),
                change(changeset.Action.CREATED, "b"),
                change(changeset.Action.UNCHANGED, "c"),
            )
        )
    )
    m.applied(changeset.ChangeSet((change(changeset.Action.DELETED, "d"),)))
    total = "gitwarden_objects_applied_total"
    assert value(m, total, action="created") == 2
    assert value(m, total, action="unchanged") == 1
    assert value(m, total, action="deleted") == 1
    assert value(m, total, action="configured") == 0
    # No object name in any label.
    assert not any(v in ("a", "b", "c", "d") for _, labels in samples(m) for _, v in labels)


def test_drift_repairs_and_watch_restarts_count_by_kind() -> None:
    m = metrics.Metrics()
    m.drift_repaired("Deployment")
    m.drift_repaired("Deployment")
    m.watch_restarted("ConfigMap")
    assert value(m, "gitwarden_drift_repairs_total", kind="Deployment") == 2
    assert value(m, "gitwarden_watch_restarts_total", kind="ConfigMap") == 1


def test_kind_labels_are_bounded_in_shape_and_number() -> None:
    m = metrics.Metrics()
    m.drift_repaired("not a kind; DROP")
    for i in range(metrics.MAX_KINDS + 50):
        m.drift_repaired(f"Kind{i}")
    kinds = {
        dict(labels)["kind"] for name, labels in samples(m) if name.startswith("gitwarden_drift")
    }
    assert len(kinds) == metrics.MAX_KINDS + 1  # the first MAX_KINDS, then `other`
    assert metrics.OTHER in kinds
    assert "not a kind; DROP" not in kinds
    assert value(m, "gitwarden_drift_repairs_total", kind=metrics.OTHER) == 51


def test_verification_failures_map_free_text_onto_a_fixed_set_of_reasons() -> None:
    m = metrics.Metrics()
    sha = "f" * 40
    m.verification_failed("bad-signature: key SHA256:abc by alice@example.com")
    m.verification_failed("untrusted-key")
    m.verification_failed(f"the last applied commit {sha} is not in the history of the source")
    m.verification_failed("policy-denied: path secrets/ needs two reviewers")
    m.verification_failed(f"something new about {sha} and a password hunter2")
    total = "gitwarden_verification_failures_total"
    assert value(m, total, reason="bad-signature") == 1
    assert value(m, total, reason="untrusted-key") == 1
    assert value(m, total, reason="force-push") == 1
    assert value(m, total, reason="policy-denied") == 1
    assert value(m, total, reason="other") == 1
    reasons = {dict(labels).get("reason") for name, labels in samples(m) if "verification" in name}
    assert reasons <= set(metrics.VERIFY_REASONS)
    text = m.render().decode()
    assert sha not in text
    assert "hunter2" not in text
    assert "alice" not in text


def test_only_the_current_revision_is_reported_and_success_is_timestamped() -> None:
    now = [1_700_000_000.0]
    m = metrics.Metrics(wall=lambda: now[0])
    assert value(m, "gitwarden_last_apply_success_timestamp_seconds") == 0
    m.revision(COMMIT_A)
    assert value(m, "gitwarden_revision_info", commit=COMMIT_A) == 1
    now[0] += 60
    m.revision(COMMIT_B)
    info = [labels for name, labels in samples(m) if name == "gitwarden_revision_info"]
    assert info == [(("commit", COMMIT_B),)]
    assert value(m, "gitwarden_last_apply_success_timestamp_seconds") == now[0]
    m.revision("not-a-commit\n{evil}")
    info = [labels for name, labels in samples(m) if name == "gitwarden_revision_info"]
    assert info == [(("commit", metrics.OTHER),)]


def test_leadership_is_a_zero_or_one_gauge() -> None:
    m = metrics.Metrics()
    assert value(m, "gitwarden_leader") == 0
    m.leading(True)
    assert value(m, "gitwarden_leader") == 1
    m.leading(False)
    assert value(m, "gitwarden_leader") == 0


def test_each_instance_has_its_own_registry_and_the_global_one_is_untouched() -> None:
    before = prometheus_client.generate_latest(prometheus_client.REGISTRY)
    one, two = metrics.Metrics(), metrics.Metrics()
    one.leading(True)
    assert value(one, "gitwarden_leader") == 1
    assert value(two, "gitwarden_leader") == 0
    after = prometheus_client.generate_latest(prometheus_client.REGISTRY)
    assert b"gitwarden_" not in after
    assert before.count(b"\n# HELP") == after.count(b"\n# HELP")


def test_every_metric_the_issue_names_is_exposed() -> None:
    exposed = names(metrics.Metrics())
    for wanted in (
        "gitwarden_reconcile_duration_seconds_bucket",
        "gitwarden_reconcile_passes_total",
        "gitwarden_objects_applied_total",
        "gitwarden_verification_failures_total",
        "gitwarden_last_apply_success_timestamp_seconds",
        "gitwarden_leader",
    ):
        assert wanted in exposed
    # The kind-labelled counters have no series until a kind is seen; their HELP is there.
    text = metrics.Metrics().render().decode()
    for family in (
        "gitwarden_drift_repairs",
        "gitwarden_watch_restarts",
        "gitwarden_revision_info",
    ):
        assert f"# HELP {family}" in text
