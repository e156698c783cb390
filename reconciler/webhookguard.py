"""The loop's self-guard: GitWarden's own ValidatingWebhookConfiguration, kept as configured.

The API server never sends a webhook configuration to a webhook, so a person allowed to patch
it can switch GitWarden off (a matchCondition that exempts them, a rule removed, failurePolicy
Ignore) and no denial will say so. The leader's worker therefore compares the live object with
the expected document on every pass and on every change of that one object (a watch by name
wakes it, so an edit is undone within seconds, as drift is), and puts it back with
`selfguard.restore_webhook` (server-side apply as `gitwarden`, then a replace if a foreign
manager still owns a field). The comparison and the restore are `reconciler.guard.selfguard`'s,
the same code `gitwarden audit --restore` runs.

Owns: reading the expected document from `guard.webhook_configuration_file` (the chart renders
it from the same values and in the same template as the registration; `gitwarden webhook
configuration` prints it), re-read when the file changes; the port over the cluster adapter
(GET, apply and PUT of that one object by name); the watch; and turning each outcome into a log
line, an Event, a metric and the Sync's `WebhookConfiguration` condition (written with a field
manager of its own, so a pass's status write and this one never remove each other's). A
deleted configuration that RBAC does not let the reconciler create again (the chart grants no
`create`) is reported the same four ways on every pass until someone recreates it.

Reports name the fields that differed and the field managers that own them (from
managedFields), never values. Must not import the webhook (the document is plain data).
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import yaml

from reconciler import (
    cluster,
    cluster_errors,
    config,
    errors,
    events,
    logs,
    status,
    syncstore,
    yamlstrict,
)
from reconciler.guard import selfguard

log = logs.get("selfguard")

PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
CONDITION = "WebhookConfiguration"
CONDITION_MANAGER = "gitwarden-selfguard"
WATCH_SECONDS = 300.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
RESTORED, FAILED = "restored", "failed"


class Metrics(Protocol):
    """What the guard reports to `reconciler.metrics.Metrics`."""

    def webhook_configuration(self, intact: bool, result: str | None) -> None: ...


class Recorder(Protocol):
    """`reconciler.events.Recorder`: Events about the Sync object."""

    def record(self, event: events.Event, now: datetime.datetime) -> None: ...


@dataclasses.dataclass(frozen=True)
class Condition:
    """The Sync's `WebhookConfiguration` condition."""

    status: str  # "True" or "False"
    reason: str
    message: str


def load_expected(path: pathlib.Path) -> Mapping[str, Any]:
    """The expected ValidatingWebhookConfiguration in `path` (YAML or JSON), checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise config.ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise config.ConfigError(f"{path}: not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=yamlstrict.Loader)  # noqa: S506  # a safe loader
    except yaml.YAMLError:
        raise config.ConfigError(f"{path}: not valid YAML or JSON") from None
    problem = _problem(document)
    if problem:
        raise config.ConfigError(f"{path}: {problem}")
    expected: Mapping[str, Any] = document
    return expected


def _problem(document: object) -> str:
    if not isinstance(document, dict) or document.get("kind") != "ValidatingWebhookConfiguration":
        return "not a ValidatingWebhookConfiguration"
    name = (document.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        return "metadata.name is missing"
    hooks = document.get("webhooks")
    if not isinstance(hooks, list) or not hooks:
        return "webhooks is empty"
    for hook in hooks:
        if not isinstance(hook, dict) or not isinstance(hook.get("name"), str):
            return "every webhook needs a name"
        if not isinstance(hook.get("clientConfig"), dict):
            return f"webhook {hook['name']} has no clientConfig"
    return ""


def target_for(expected: Mapping[str, Any], namespace: str) -> selfguard.Target:
    """The guard's target; without any caBundle in the document, another controller injects it
    (cert-manager), and the live one is neither compared nor replaced."""
    bundled = any((w.get("clientConfig") or {}).get("caBundle") for w in expected["webhooks"])
    return selfguard.Target(
        webhook_configuration=expected, namespace=namespace, compare_ca_bundle=bundled
    )


@dataclasses.dataclass(frozen=True)
class KubePort:
    """`selfguard.WebhookPort` over the cluster adapter: that one object, by name."""

    target: cluster.Cluster

    def read_webhook_configuration(self, name: str) -> Mapping[str, Any] | None:
        try:
            body = self.target.request(
                "GET", f"{PATH}/{name}", what=f"read ValidatingWebhookConfiguration {name}"
            ).body
        except cluster_errors.NotFound:
            return None
        return body if isinstance(body, dict) else None

    def apply_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        name = document["metadata"]["name"]
        self.target.request(
            "PATCH",
            f"{PATH}/{name}",
            query=[("fieldManager", selfguard.FIELD_MANAGER), ("force", "true")],
            body=dict(document),
            content_type="application/apply-patch+yaml",
            what=f"restore ValidatingWebhookConfiguration {name}",
        )

    def replace_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        name = document["metadata"]["name"]
        self.target.request(
            "PUT",
            f"{PATH}/{name}",
            query=[("fieldManager", selfguard.FIELD_MANAGER)],
            body=dict(document),
            content_type="application/json",
            what=f"replace ValidatingWebhookConfiguration {name}",
        )


def describe(report: selfguard.GuardReport) -> str:
    """What changed and who changed it: field paths and managers, never values."""
    if report.missing:
        return f"ValidatingWebhookConfiguration {report.webhook_configuration} was deleted"
    changes = "; ".join(
        f"{d.path} changed by {', '.join(d.managers) or 'an unknown manager'}" for d in report.drift
    )
    return f"ValidatingWebhookConfiguration {report.webhook_configuration}: {changes}"


def managers(report: selfguard.GuardReport) -> list[str]:
    """The field managers named by `report`'s differences, each once."""
    return list(dict.fromkeys(m.split(" (", 1)[0] for d in report.drift for m in d.managers))


class Guard:
    """Checks and restores the webhook configuration; `run` is called on the worker thread."""

    def __init__(  # noqa: PLR0917  # seven distinct parts, each named at the one call
        self,
        port: selfguard.WebhookPort,
        expected_file: pathlib.Path,
        namespace: str,
        recorder: Recorder,
        metrics: Metrics,
        condition: Callable[[Condition], None],
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._port, self._file, self._namespace = port, expected_file, namespace
        self._recorder, self._metrics, self._condition, self._now = (
            recorder,
            metrics,
            condition,
            now,
        )
        self._read: bytes | None = None
        self._target = target_for(load_expected(expected_file), namespace)
        self._written: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return self._target.name

    def run(self) -> selfguard.GuardReport | None:
        """One look (and repair); reported, never raised. None: the cluster did not answer."""
        target = self._expected()
        try:
            report = selfguard.check_webhook(self._port, target)
        except errors.Transient as exc:
            log.warning(f"webhook configuration not checked (the next pass retries): {exc}")
            return None
        except errors.ReconcileError as exc:  # e.g. RBAC without `get` on it: say so loudly
            message = f"ValidatingWebhookConfiguration {self.name} cannot be checked: {exc}"
            log.error(message)  # noqa: TRY400  # ours: the message says it all
            self._metrics.webhook_configuration(False, None)
            self._set(Condition("False", "NotChecked", message))
            return None
        if report.clean:
            self._metrics.webhook_configuration(True, None)
            # After a restore the condition keeps saying who changed what (Restored, True)
            # until something else happens; our own restore's watch event lands here.
            if self._written is None or self._written[0] != "True":
                self._set(Condition("True", "AsExpected", f"{self.name} is as configured"))
            return report
        what = describe(report)
        try:
            restored = selfguard.restore_webhook(self._port, target)
        except errors.ReconcileError as exc:
            return self._not_restored(report, what, exc)
        who = managers(report)
        message = f"{what}; restored (server-side apply as {selfguard.FIELD_MANAGER})"
        self._metrics.webhook_configuration(True, RESTORED)
        log.warning(message, extra={"object": self.name, "managers": who})
        self._event(events.Event(events.Type.WARNING, "WebhookConfigurationRestored", message))
        self._set(Condition("True", "Restored", message))
        return restored

    def _not_restored(
        self, report: selfguard.GuardReport, what: str, exc: errors.ReconcileError
    ) -> selfguard.GuardReport:
        if report.missing and isinstance(exc, cluster_errors.Forbidden):
            why = (
                "RBAC does not let the reconciler create it (the chart grants get, watch, patch"
                " and update by name, no create): `helm upgrade`, or `gitwarden audit --restore`"
                " by someone who may create it, puts it back"
            )
        else:
            why = str(exc)
        message = f"{what}; NOT restored: {why}"
        self._metrics.webhook_configuration(False, FAILED)
        log.error(message, extra={"object": self.name, "managers": managers(report)})
        self._event(events.Event(events.Type.WARNING, "WebhookConfigurationNotRestored", message))
        reason = "Missing" if report.missing else "NotRestored"
        # Written every time it is not restored: the state is loud until it is fixed.
        self._written = None
        self._set(Condition("False", reason, message))
        return report

    def _expected(self) -> selfguard.Target:
        """The expected document, re-read when the file changed (a chart upgrade); a file that
        no longer reads is reported and the previous document stays."""
        try:
            raw = self._file.read_bytes()
        except OSError as exc:
            log.error(f"{self._file}: cannot read ({exc.strerror}); the previous document stays")  # noqa: TRY400
            return self._target
        if raw == self._read:
            return self._target
        try:
            self._target = target_for(load_expected(self._file), self._namespace)
        except config.ConfigError as exc:
            log.error(f"{exc}; the previous document stays")  # noqa: TRY400
        self._read = raw
        return self._target

    def _set(self, condition: Condition) -> None:
        key = (condition.status, condition.reason)
        if key == self._written:
            return
        try:
            self._condition(condition)
        except errors.ReconcileError as exc:
            log.warning(f"condition {CONDITION} not written: {exc}")
            return
        self._written = key

    def _event(self, event: events.Event) -> None:
        try:
            self._recorder.record(event, self._now())
        except errors.ReconcileError as exc:
            log.warning(f"Event {event.reason} not recorded: {exc}")


def condition_writer(
    target: cluster.Cluster, sync: str, now: Callable[[], datetime.datetime]
) -> Callable[[Condition], None]:
    """Writes the condition into Sync `sync`'s status as `CONDITION_MANAGER` (server-side
    apply: the conditions are a map by type, so a pass's write keeps this one). Before the
    first pass wrote the Sync there is nothing to write to: NotFound, retried next time."""

    def write(condition: Condition) -> None:
        stamp = now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": f"{status.GROUP}/{status.VERSION}",
            "kind": status.KIND,
            "metadata": {"name": sync},
            "status": {
                "conditions": [
                    {
                        "type": CONDITION,
                        "status": condition.status,
                        "reason": condition.reason,
                        "message": condition.message[: status.MAX_MESSAGE],
                        "lastTransitionTime": stamp,
                    }
                ]
            },
        }
        target.request(
            "PATCH",
            syncstore.sync_path(sync, "status"),
            query=[("fieldManager", CONDITION_MANAGER), ("force", "true")],
            body=body,
            content_type="application/apply-patch+yaml",
            what=f"write Sync {sync} condition {CONDITION}",
        )

    return write


class Watch:
    """Watches the one webhook configuration by name; any change calls `wake` (which must
    return at once: it puts a wake-up in the worker's inbox). Restarts after the server ends
    the stream, after errors with a bounded backoff."""

    def __init__(self, target: cluster.Cluster, name: str, wake: Callable[[], None]) -> None:
        self._target, self._name, self._wake = target, name, wake
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="selfguard-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(5.0)

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        query = [("fieldSelector", f"metadata.name={self._name}")]
        while not self._stop.is_set():
            try:
                stream = self._target.watch(PATH, query, WATCH_SECONDS)
                with self._lock:
                    self._stream = stream
                if self._stop.is_set():
                    stream.close()
                    return
                for event in stream:
                    backoff = BACKOFF_MIN
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._wake()
            except errors.ReconcileError as exc:
                if self._stop.is_set():
                    return
                log.warning(f"watch of the webhook configuration restarts: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception as exc:  # the thread must outlive a bug; the pass is the net
                log.warning(
                    "watch of the webhook configuration", extra={"error": type(exc).__name__}
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
