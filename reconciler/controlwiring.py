"""The real parts of the long-running reconciler, built once from its configuration.

Owns composing `reconciler.controller.Parts`: the ports (`reconciler.wiring`, with the stop
event apply honours), the pass runner, the Event recorder, metrics, the Lease elector, the
drift repairer and its watches, the self-guard of the webhook configuration and its watch, and
the sealing-key service. Used by `gitwarden reconcile` without `--once`. Must not run anything:
`Controller.run` does.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import threading
import time
from collections.abc import Callable

from reconciler import (
    cluster,
    config,
    configfiles,
    controlconfig,
    controller,
    drift,
    endpoints,
    errors,
    events,
    kube_client,
    leader,
    metrics,
    passes,
    pushauth,
    watches,
    webhookguard,
    wiring,
)
from reconciler.sealed import keys
from reconciler.services import certserver, keyservice

READY_CACHE = 5.0  # seconds a standby's "the API server answers" is trusted


@dataclasses.dataclass(frozen=True)
class Built:
    """The controller and the process it drives (closed by the entry point)."""

    controller: controller.Controller
    process: wiring.Process


@dataclasses.dataclass(frozen=True)
class _KeyService:
    """The sealing-key service: every replica serves the certificate, the leader makes keys."""

    kubeconfig: pathlib.Path | None
    settings: keyservice.Settings
    leading: Callable[[], bool]

    def run(self, stop: threading.Event) -> None:
        api = kube_client.api_client(self.kubeconfig)
        keyservice.KeyService(api, self.settings, leading=self.leading).run(stop)


class _Reachable:
    """Whether the API server answers (a standby's readiness), asked at most every few seconds."""

    def __init__(self, target: cluster.Cluster) -> None:
        self._target = target
        self._checked = -READY_CACHE
        self._ok = False
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked < READY_CACHE:
                return self._ok
            try:
                self._target.request("GET", "/version", what="read the API server version")
                self._ok = True
            except errors.ReconcileError:
                self._ok = False
            self._checked = time.monotonic()
            return self._ok


def build(
    settings: config.ReconcilerConfig,
    config_path: pathlib.Path,
    kubeconfig: pathlib.Path | None,
) -> Built:
    """Every part for `settings`; configuration errors raise here, before anything runs."""
    stop = threading.Event()
    # Read before anything connects: a missing push secret file is a configuration error.
    secrets = pushauth.load_secrets(settings.push) if settings.push.listen else None
    process = wiring.build(settings, kubeconfig, stop)
    holder = leader.holder_identity()
    recorder = events.Recorder(process.target, settings.identity.name, holder)
    gauges = metrics.Metrics()
    runner = passes.Runner(process, settings, recorder, gauges)
    elector = None
    if settings.leader.enabled:
        elector = leader.Elector(
            leader.KubeLeases(process.target),
            settings.identity.namespace,
            settings.leader.lease_name,
            holder,
            settings.leader,
        )
    leads = elector.leading.is_set if elector is not None else keyservice.always
    services: list[controller.Service] = []
    if settings.keys.serve:
        services.append(_key_service(settings, kubeconfig, leads))
    repairer = drift.Repairer(process.target, settings.apply, settings.identity.name)
    guard = _guard(settings, process, recorder, gauges)
    reachable = _Reachable(process.target)

    def serve(running: controller.Controller) -> controller.Endpoints:
        def health() -> endpoints.Health:
            if not running.alive:
                return endpoints.Health(live=False, ready=False, detail="the worker stopped")
            if running.leading:
                return endpoints.Health(live=True, ready=True, detail="leading")
            ok = reachable()
            detail = "standby" if ok else "standby: the API server does not answer"
            return endpoints.Health(live=True, ready=ok, detail=detail)

        return endpoints.Endpoints(
            settings.server, settings.push, secrets, gauges, health, running.push
        )

    parts = controller.Parts(
        runner=runner,
        recorder=recorder,
        metrics=gauges,
        tip=runner.tip,
        digest=lambda: configfiles.digest(config_path, runner.settings),
        reload=configfiles.reloader(config_path, process),
        elector=elector,
        repairer=repairer if settings.loop.drift_repair else None,
        watches=lambda sink: watches.Watches(
            process.target, drift.selector(settings.apply), sink, gauges.watch_restarted
        ),
        watched_kinds=repairer.kinds,
        event_key=lambda event: event.ref,
        guard=guard,
        guard_watch=(
            (lambda wake: webhookguard.Watch(process.target, guard.name, wake))
            if guard is not None and settings.guard.watch
            else None
        ),
        services=tuple(services),
        endpoints=serve,
    )
    return Built(controller.Controller(settings, parts, stop), process)


def _guard(
    settings: config.ReconcilerConfig,
    process: wiring.Process,
    recorder: events.Recorder,
    gauges: metrics.Metrics,
) -> webhookguard.Guard | None:
    """The self-guard, when the configuration names the expected document (read here: a file
    that does not read or is not a webhook configuration stops the start)."""
    path = settings.guard.webhook_configuration_file
    if path is None:
        return None
    name = settings.identity.name
    return webhookguard.Guard(
        webhookguard.KubePort(process.target),
        path,
        settings.identity.namespace,
        recorder,
        gauges,
        webhookguard.condition_writer(
            process.target, name, lambda: datetime.datetime.now(datetime.UTC)
        ),
    )


def _key_service(
    settings: config.ReconcilerConfig, kubeconfig: pathlib.Path | None, leads: Callable[[], bool]
) -> _KeyService:
    host, port = _address(settings.keys.listen)
    return _KeyService(
        kubeconfig or settings.identity.kubeconfig,
        keyservice.Settings(
            namespace=settings.identity.namespace,
            listen=certserver.Settings(host=host, port=port),
            check_every=settings.keys.check_every,
            policy=keys.KeyPolicy(renew_period=datetime.timedelta(days=settings.keys.renew_days)),
        ),
        leads,
    )


def _address(listen: str) -> tuple[str, int]:
    found = controlconfig.listen_address(listen)
    if found is None:  # checked when the configuration was loaded
        raise config.ConfigError(f"{listen!r} is not HOST:PORT")
    return found
