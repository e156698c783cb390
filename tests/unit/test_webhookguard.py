"""The loop's self-guard over fakes of its own ports: what it reports, when, and never values."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import cluster_errors, config, events, webhookguard
from tests.unit.test_selfguard import HOOK, FakeCluster, _expected, _stored, _tampered


class Recorder:
    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def record(self, event: events.Event, now: datetime.datetime) -> None:
        self.events.append(event)


class Metrics:
    def __init__(self) -> None:
        self.seen: list[tuple[bool, str | None]] = []

    def webhook_configuration(self, intact: bool, result: str | None) -> None:
        self.seen.append((intact, result))


class NoCreate(FakeCluster):
    """RBAC without `create`: applying a configuration that does not exist is Forbidden."""

    def apply_webhook_configuration(self, document: Any) -> None:
        if self.live is None:
            raise cluster_errors.Forbidden("restore ValidatingWebhookConfiguration: HTTP 403")
        super().apply_webhook_configuration(document)


@pytest.fixture
def expected_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook-configuration.yaml"
    path.write_text(yaml.safe_dump(_expected()))
    return path


def _guard(
    port: FakeCluster, path: Path
) -> tuple[webhookguard.Guard, Recorder, Metrics, list[webhookguard.Condition]]:
    recorder, metrics = Recorder(), Metrics()
    written: list[webhookguard.Condition] = []
    guard = webhookguard.Guard(port, path, "gitwarden", recorder, metrics, written.append)
    return guard, recorder, metrics, written


def test_a_clean_configuration_is_reported_once_and_costs_no_write(expected_file: Path) -> None:
    guard, recorder, metrics, written = _guard(FakeCluster(_stored(_expected(), [])), expected_file)
    for _ in range(3):
        report = guard.run()
        assert report is not None
        assert report.clean
    assert [(c.status, c.reason) for c in written] == [("True", "AsExpected")]
    assert recorder.events == []
    assert metrics.seen == [(True, None)] * 3


def test_an_exempting_match_condition_is_restored_and_the_event_names_the_manager_not_values(
    expected_file: Path,
) -> None:
    port = FakeCluster(_tampered(), apply_keeps_extras=True)
    guard, recorder, metrics, written = _guard(port, expected_file)
    report = guard.run()
    assert report is not None
    assert report.restored
    [event] = recorder.events
    assert (event.type, event.reason) == (events.Type.WARNING, "WebhookConfigurationRestored")
    assert f"webhooks[{HOOK}].matchConditions[x] changed by kubectl-patch (Update" in event.message
    assert "false" not in event.message  # the attacker's expression is not repeated
    assert metrics.seen == [(True, "restored")]
    assert [(c.status, c.reason) for c in written] == [("True", "Restored")]
    # The restore's own watch event: clean now, the condition still says who did it.
    guard.run()
    assert len(written) == 1
    assert len(recorder.events) == 1


def test_a_deleted_configuration_without_create_is_loud_on_every_look(expected_file: Path) -> None:
    guard, recorder, metrics, written = _guard(NoCreate(None), expected_file)
    guard.run()
    guard.run()
    assert [e.reason for e in recorder.events] == ["WebhookConfigurationNotRestored"] * 2
    message = recorder.events[0].message
    assert "ValidatingWebhookConfiguration gitwarden was deleted; NOT restored" in message
    assert "no create" in message
    assert "helm upgrade" in message
    assert [(c.status, c.reason) for c in written] == [("False", "Missing")] * 2
    assert metrics.seen == [(False, "failed")] * 2


def test_an_unreachable_cluster_is_logged_and_reports_nothing(expected_file: Path) -> None:
    class Away(FakeCluster):
        def read_webhook_configuration(self, name: str) -> Any:
            raise cluster_errors.Unreachable("read ValidatingWebhookConfiguration: no answer")

    guard, recorder, metrics, written = _guard(Away(None), expected_file)
    assert guard.run() is None
    assert (recorder.events, metrics.seen, written) == ([], [], [])


def test_the_expected_file_is_read_again_when_it_changes_and_a_broken_one_keeps_the_last(
    expected_file: Path,
) -> None:
    port = FakeCluster(_stored(_expected(), []))
    guard, _, _, _ = _guard(port, expected_file)
    assert guard.run() is not None
    changed = _expected()
    changed["webhooks"][0]["timeoutSeconds"] = 5
    expected_file.write_text(yaml.safe_dump(changed))  # a chart upgrade
    guard.run()
    assert port.live is not None
    assert port.live["webhooks"][0]["timeoutSeconds"] == 5
    expected_file.write_text("kind: ConfigMap\n")
    report = guard.run()
    assert report is not None
    assert report.clean  # the previous document stays


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kind: ConfigMap\n", "not a ValidatingWebhookConfiguration"),
        ("kind: ValidatingWebhookConfiguration\nmetadata: {}\n", "metadata.name"),
        ("kind: ValidatingWebhookConfiguration\nmetadata: {name: g}\nwebhooks: []\n", "empty"),
        (
            "kind: ValidatingWebhookConfiguration\nmetadata: {name: g}\nwebhooks: [{name: a}]\n",
            "no clientConfig",
        ),
        ("{", "not valid YAML"),
    ],
)
def test_a_file_that_is_not_a_webhook_configuration_stops_the_start(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "expected.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=problem):
        webhookguard.load_expected(path)
    with pytest.raises(config.ConfigError, match="cannot read"):
        webhookguard.load_expected(tmp_path / "absent.yaml")


def test_a_document_without_a_ca_bundle_leaves_the_injected_one_alone() -> None:
    bundled = _expected()
    assert webhookguard.target_for(bundled, "gitwarden").compare_ca_bundle
    del bundled["webhooks"][0]["clientConfig"]["caBundle"]
    assert not webhookguard.target_for(bundled, "gitwarden").compare_ca_bundle


def test_a_configuration_rbac_does_not_let_it_read_is_a_false_condition_not_silence(
    expected_file: Path,
) -> None:
    class Forbidden(FakeCluster):
        def read_webhook_configuration(self, name: str) -> Any:
            raise cluster_errors.Forbidden("read ValidatingWebhookConfiguration gitwarden: 403")

    guard, recorder, metrics, written = _guard(Forbidden(None), expected_file)
    assert guard.run() is None
    assert [(c.status, c.reason) for c in written] == [("False", "NotChecked")]
    assert "403" in written[0].message
    assert metrics.seen == [(False, None)]
    assert recorder.events == []
