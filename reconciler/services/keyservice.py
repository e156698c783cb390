"""The sealing-key service: keep a current key in the cluster and serve its certificate.

Composes `kube_keys` (the labelled key Secrets) with `certserver` (`/v1/cert.pem`) on one
schedule: on start and every `check_every` it reads the ring and, while `leading()` says so,
makes a key when none exists or the newest is a renewal period old (old keys stay, for
decryption); the endpoint always serves the newest certificate of the last ring read. Every
replica serves; only the Lease holder makes keys, so two replicas do not both make one (a
leader that loses the Lease during a pass may still finish its one write; an extra key is
harmless, as every key is kept). A standby only reads, at least every STANDBY_CHECK seconds so
it soon serves a key the leader made, and at once when it becomes the leader. `gitwarden keys
serve` runs one replica, which always leads. One pass failing (API server unreachable, a broken
key Secret) is logged and tried again at the next tick; the last good ring keeps being served.
Never logs key material: only fingerprints and Secret names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client as k8s
from urllib3.exceptions import HTTPError

from reconciler import errors
from reconciler.sealed import keys
from reconciler.services import certserver, kube_keys

log = logging.getLogger("gitwarden.keys")

STANDBY_CHECK = 30.0
# How often a waiting service looks whether it became the leader (cheap: an Event).
_LEADERSHIP_POLL = 0.5


def always() -> bool:
    """The leadership of a service that runs alone (`gitwarden keys serve`)."""
    return True


@dataclass(frozen=True)
class Settings:
    """What the service manages and how often it looks."""

    namespace: str = "gitwarden"
    listen: certserver.Settings = field(default_factory=certserver.Settings)
    check_every: float = 3600.0
    policy: keys.KeyPolicy = field(default_factory=keys.KeyPolicy)


class KeyService:
    """Ensures a current key and serves the newest certificate."""

    def __init__(
        self,
        api: k8s.ApiClient,
        settings: Settings,
        clock: keys.Clock | None = None,
        factory: keys.KeyFactory = keys.generate,
        leading: Callable[[], bool] = always,
    ) -> None:
        self._api, self._settings = api, settings
        self._leading = leading
        self._clock = clock or keys.SystemClock()
        self._factory = factory
        self._ring = keys.KeyRing()
        self._lock = threading.Lock()

    def refresh(self) -> keys.KeyRing:
        """One pass: make a key if due (leader only), then remember the ring. Raises on failure."""
        before = {k.fingerprint for k in self._ring.keys}
        namespace = self._settings.namespace
        if self._leading():
            ring = kube_keys.ensure_current(
                self._api, namespace, self._settings.policy, self._clock, self._factory
            )
        else:
            ring = kube_keys.read_ring(self._api, namespace)
        with self._lock:
            self._ring = ring
        if not ring.keys:
            return ring  # a standby before the leader made the first key
        newest = ring.newest()
        if newest.fingerprint not in before:
            log.info(
                "sealing certificate %s is now served (%d keys kept for decryption)",
                newest.fingerprint,
                len(ring.keys),
            )
        return ring

    def certificate(self) -> bytes:
        """The newest certificate (PEM); `KeyMaterialError` while there is none."""
        with self._lock:
            ring = self._ring
        return ring.newest().certificate_pem()

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Serve until `stop` is set, refreshing every `check_every` seconds."""
        with certserver.CertServer(self._settings.listen, self.certificate) as server:
            log.info(
                "serving %s on %s:%d", certserver.CERT_PATH, self._settings.listen.host, server.port
            )
            while True:
                try:
                    self.refresh()
                except (errors.ReconcileError, k8s.ApiException, HTTPError, OSError) as exc:
                    # Our errors name the namespace or Secret and the reason, never key bytes;
                    # for transport errors the type is enough.
                    detail = str(exc) if isinstance(exc, errors.ReconcileError) else repr(type(exc))
                    log.error(  # noqa: TRY400 - no traceback: it would add nothing at 3 a.m.
                        "sealing keys not refreshed, retrying in %.0fs: %s",
                        self._settings.check_every,
                        detail,
                    )
                if ready is not None:
                    ready.set()
                if self._wait(stop):
                    return

    def _wait(self, stop: threading.Event) -> bool:
        """Wait for the next pass; True when `stop` was set.

        The leader waits `check_every`; a standby at most STANDBY_CHECK. Either wakes early
        when it becomes the leader, so a new leader makes a due key at once.
        """
        led = self._leading()
        span = self._settings.check_every if led else min(self._settings.check_every, STANDBY_CHECK)
        until = time.monotonic() + span
        while (left := until - time.monotonic()) > 0:
            if stop.wait(min(left, _LEADERSHIP_POLL)):
                return True
            if not led and self._leading():
                return False
        return stop.is_set()
