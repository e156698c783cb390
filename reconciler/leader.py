"""Leader election on a `coordination.k8s.io/v1` Lease, so only one replica applies.

Owns the election: `LeaseStore`, the port (read a Lease with its resourceVersion, create one,
update one only if it is unchanged), `KubeLeases`, that port over the cluster adapter's
`Cluster.request` (no kubernetes client here), and `Elector`, which follows client-go's
algorithm. A replica takes a Lease that is free (no holder) or expired, leads while it renews
every `retry_period`, and stops leading (`lost`) when it could not renew for `renew_deadline`
(a watchdog timer enforces that even while a renewal hangs in its request).
Expiry is judged by this process's monotonic clock from the moment it last saw the record change,
never from the timestamps another host wrote (its clock may be wrong, or forged). A lost race (a
409 on create or update) is an answer, not an error. `release` hands the Lease back on shutdown.

Must not decide what leading allows (the loop checks `leading` before each write) and must not
import the pipeline or a stage.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler import cluster, cluster_errors, controlconfig, errors

GROUP_VERSION = "coordination.k8s.io/v1"
_log = logging.getLogger("gitwarden.leader")


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec as election reads it; times are informative, for people only."""

    holder: str
    lease_duration: int
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0


class LeaseStore(Protocol):
    """Where Leases live. Failures raise `errors.Transient` or `errors.Stalled`."""

    def get(self, namespace: str, name: str) -> tuple[LeaseRecord, str] | None:
        """The record and its resourceVersion, or None when there is no Lease."""
        ...

    def create(self, namespace: str, name: str, record: LeaseRecord) -> str | None:
        """Create the Lease; its resourceVersion, or None when it already exists (lost race)."""
        ...

    def update(
        self, namespace: str, name: str, record: LeaseRecord, resource_version: str
    ) -> str | None:
        """Replace the record if still at `resource_version`; the new one, or None (lost race)."""
        ...


def holder_identity() -> str:
    """This process's identity in a Lease: the host name and a random suffix.

    The suffix keeps a restarted pod (same name) from taking its predecessor's Lease as its own
    before that one has expired.
    """
    return f"{socket.gethostname()}_{secrets.token_hex(5)}"


class KubeLeases:
    """`LeaseStore` on the API server, through the cluster adapter (its rate limit, errors)."""

    def __init__(self, target: cluster.Cluster) -> None:
        self._cluster = target

    def get(self, namespace: str, name: str) -> tuple[LeaseRecord, str] | None:
        try:
            found = self._cluster.request(
                "GET", _path(namespace, name), what=f"read Lease {namespace}/{name}"
            ).body
        except cluster_errors.NotFound:
            return None
        return _record(found), str(_meta(found).get("resourceVersion") or "")

    def create(self, namespace: str, name: str, record: LeaseRecord) -> str | None:
        try:
            made = self._cluster.request(
                "POST",
                _path(namespace, ""),
                body=_object(namespace, name, record, ""),
                content_type=cluster.JSON,
                what=f"create Lease {namespace}/{name}",
            ).body
        except cluster_errors.Conflict:  # 409 AlreadyExists: another replica was first
            return None
        return str(_meta(made).get("resourceVersion") or "")

    def update(
        self, namespace: str, name: str, record: LeaseRecord, resource_version: str
    ) -> str | None:
        try:
            done = self._cluster.request(
                "PUT",
                _path(namespace, name),
                body=_object(namespace, name, record, resource_version),
                content_type=cluster.JSON,
                what=f"update Lease {namespace}/{name}",
            ).body
        except cluster_errors.Conflict:  # the resourceVersion moved on: someone else wrote
            return None
        return str(_meta(done).get("resourceVersion") or "")


def _path(namespace: str, name: str) -> str:
    base = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def _meta(obj: Any) -> Mapping[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def _record(obj: Any) -> LeaseRecord:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_duration=duration if isinstance(duration, int) and duration > 0 else 1,
        acquire_time=str(spec.get("acquireTime") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        transitions=transitions if isinstance(transitions, int) else 0,
    )


def _object(namespace: str, name: str, record: LeaseRecord, version: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if version:
        metadata["resourceVersion"] = version  # the precondition: 409 if it moved on
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.lease_duration,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    if record.renew_time:
        spec["renewTime"] = record.renew_time
    return {"apiVersion": GROUP_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}


def _micro_time() -> str:
    # The Lease's MicroTime format; written for `kubectl get lease -o yaml`, never read back.
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Acquires and keeps one Lease; `leading` is set while this process holds it."""

    def __init__(  # noqa: PLR0917 - the loop's contract names these in order
        self,
        leases: LeaseStore,
        namespace: str,
        name: str,
        holder: str,
        settings: controlconfig.LeaderConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases, self._namespace, self._name = leases, namespace, name
        self._holder, self._settings, self._clock = holder, settings, clock
        self.leading = threading.Event()
        self.lost = threading.Event()
        self._lock = threading.Lock()  # one Lease request at a time: run() and release()
        self._state = threading.Lock()  # leading, lost, renewed_at: also the watchdog's
        self._observed: tuple[LeaseRecord, str] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._released = False
        self._watchdog: threading.Timer | None = None

    @property
    def holder(self) -> str:
        return self._holder

    def run(self, stop: threading.Event) -> None:
        """Try every `retry_period` until `stop` is set or leadership is lost (`lost` set).

        After `stop`, `leading` stays set while the Lease is still ours: call `release()`.
        """
        announced = False
        while True:
            held = self.try_once()
            if held and not announced:
                announced = True
                _log.info(
                    "leading: holding Lease %s/%s as %s", self._namespace, self._name, self._holder
                )
            if self.lost.is_set() or self._released:
                return
            if stop.wait(self._settings.retry_period):
                return

    def try_once(self) -> bool:
        """One try to acquire or renew; True while this process holds the Lease.

        A leader that has not renewed for `renew_deadline` (or sees another holder) stops
        leading here: `leading` is cleared and `lost` set.
        """
        with self._lock:
            if self._released or self.lost.is_set():
                return False
            try:
                held = self._try_acquire_or_renew()
            except errors.ReconcileError as exc:
                # Transient or not, the answer is the same: try again next period; a leader
                # gives up when the renew deadline passes.
                _log.warning("Lease %s/%s: %s", self._namespace, self._name, exc)
                held = False
            overdue = self._clock() - self._renewed_at >= self._settings.renew_deadline
            if not held and self.leading.is_set() and overdue:
                self._lose(f"not renewed for {self._settings.renew_deadline:g}s")
            return held

    def release(self) -> None:
        """Hand the Lease back while leading, so a standby takes it at its next try.

        Best effort on shutdown: a failure is logged and the Lease then expires on its own.
        """
        with self._lock:
            if not self.leading.is_set() or self._observed is None:
                return
            self._released = True
            with self._state:
                self.leading.clear()
                self._disarm()
            record, version = self._observed
            # Duration 1: a standby that does not read the empty holder (an older client)
            # still sees it expire at once.
            freed = dataclasses.replace(
                record, holder="", lease_duration=1, renew_time=_micro_time()
            )
            try:
                done = self._leases.update(self._namespace, self._name, freed, version)
                if done is None:
                    # Our last renewal may have been written though its answer was lost: if
                    # the Lease is still ours, release that version (once; no loop).
                    found = self._leases.get(self._namespace, self._name)
                    if found is not None and found[0].holder == self._holder:
                        done = self._leases.update(self._namespace, self._name, freed, found[1])
            except errors.ReconcileError as exc:
                _log.warning("Lease %s/%s not released: %s", self._namespace, self._name, exc)
                return
            if done is None:
                _log.warning("Lease %s/%s changed before release", self._namespace, self._name)
            else:
                _log.info("released Lease %s/%s", self._namespace, self._name)

    def _lose(self, why: str) -> None:
        with self._state:
            if not self.leading.is_set():
                return
            self.leading.clear()
            self.lost.set()
            self._disarm()
        _log.error("lost Lease %s/%s: %s", self._namespace, self._name, why)

    def _overdue(self, renewed_at: float) -> None:
        # The watchdog: a renewal stuck in a request (the adapter's timeout may be longer
        # than the Lease) must not keep `leading` set after a standby may have taken over.
        with self._state:
            stale = self.leading.is_set() and self._renewed_at == renewed_at
        if stale:
            self._lose(f"no renewal answered within {self._settings.renew_deadline:g}s")

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _try_acquire_or_renew(self) -> bool:
        now = self._clock()
        found = self._leases.get(self._namespace, self._name)
        ours = LeaseRecord(
            holder=self._holder,
            lease_duration=max(1, math.ceil(self._settings.lease_duration)),
            acquire_time=_micro_time(),
            renew_time=_micro_time(),
        )
        if found is None:
            version = self._leases.create(self._namespace, self._name, ours)
            return version is not None and self._won(ours, version, now)
        record, version = found
        if self._observed != found:
            # Our clock starts now: the record's own times are another host's word.
            self._observed, self._observed_at = found, now
        if record.holder != self._holder:
            if self.leading.is_set():
                self._lose(f"the Lease is held by {record.holder or 'nobody'} now")
                return False
            if record.holder and now < self._observed_at + record.lease_duration:
                return False  # held, and not expired by our clock
            ours = dataclasses.replace(ours, transitions=record.transitions + 1)
        else:
            ours = dataclasses.replace(
                ours, acquire_time=record.acquire_time, transitions=record.transitions
            )
        new_version = self._leases.update(self._namespace, self._name, ours, version)
        return new_version is not None and self._won(ours, new_version, now)

    def _won(self, record: LeaseRecord, version: str, now: float) -> bool:
        # `now` is when the request was sent: the Lease runs from no earlier than that.
        self._observed, self._observed_at = (record, version), now
        with self._state:
            if self.lost.is_set():
                return False  # the watchdog gave up while this request hung: stay lost
            self._renewed_at = now
            self.leading.set()
            self._disarm()
            # Counted from the send: whatever the request took is already spent.
            left = max(self._settings.renew_deadline - (self._clock() - now), 0.0)
            self._watchdog = threading.Timer(left, self._overdue, args=(now,))
            self._watchdog.daemon = True
            self._watchdog.start()
        return True
