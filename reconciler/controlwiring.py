"""The real parts of the long-running reconciler, built once from its configuration.

Owns composing `reconciler.controller.Parts`: the ports (`reconciler.wiring`, with the stop
event apply honours), the pass runner, the Event recorder, metrics, the Lease elector, the
drift repairer and its watches, and the sealing-key service. Used by `gitwarden reconcile`
without `--once`. Must not run anything: `Controller.run` does.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import secrets
import socket
import threading

from reconciler import config, controlconfig, controller, events, kube_client, passes, wiring
from reconciler.sealed import keys
from reconciler.services import certserver, keyservice


@dataclasses.dataclass(frozen=True)
class Built:
    """The controller and the process it drives (closed by the entry point)."""

    controller: controller.Controller
    process: wiring.Process


class _NoMetrics:
    """Until the metrics module is wired: every report is dropped."""

    def pass_finished(self, seconds: float, result: str) -> None: ...
    def applied(self, changes: object) -> None: ...
    def verification_failed(self, reason: str) -> None: ...
    def revision(self, commit: str) -> None: ...
    def drift_repaired(self, kind: str) -> None: ...
    def leading(self, is_leader: bool) -> None: ...


def holder_identity() -> str:
    """This replica's name in the Lease and on its Events: host name and a random suffix."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


@dataclasses.dataclass(frozen=True)
class _KeyService:
    """The sealing-key service as a leader service (it makes keys, so one replica only)."""

    kubeconfig: pathlib.Path | None
    settings: keyservice.Settings

    def run(self, stop: threading.Event) -> None:
        keyservice.KeyService(kube_client.api_client(self.kubeconfig), self.settings).run(stop)


def build(
    settings: config.ReconcilerConfig,
    config_path: pathlib.Path,
    kubeconfig: pathlib.Path | None,
) -> Built:
    """Every part for `settings`; configuration errors raise here, before anything runs."""
    stop = threading.Event()
    process = wiring.build(settings, kubeconfig, stop)
    holder = holder_identity()
    recorder = events.Recorder(process.target, settings.identity.name, holder)
    metrics = _NoMetrics()
    runner = passes.Runner(process, settings, recorder, metrics)
    services: list[controller.Service] = []
    if settings.keys.serve:
        host, port = _address(settings.keys.listen)
        services.append(
            _KeyService(
                kubeconfig or settings.identity.kubeconfig,
                keyservice.Settings(
                    namespace=settings.identity.namespace,
                    listen=certserver.Settings(host=host, port=port),
                    check_every=settings.keys.check_every,
                    policy=keys.KeyPolicy(
                        renew_period=datetime.timedelta(days=settings.keys.renew_days)
                    ),
                ),
            )
        )
    parts = controller.Parts(
        runner=runner,
        recorder=recorder,
        metrics=metrics,
        tip=runner.tip,
        digest=lambda: controller.files_digest(config_path, runner.settings),
        reload=controller.reloader(config_path, process),
        leader_services=tuple(services),
    )
    return Built(controller.Controller(settings, parts, stop), process)


def _address(listen: str) -> tuple[str, int]:
    found = controlconfig.listen_address(listen)
    if found is None:  # checked when the configuration was loaded
        raise config.ConfigError(f"{listen!r} is not HOST:PORT")
    return found
