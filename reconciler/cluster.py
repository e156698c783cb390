"""The engine's one cluster adapter: every request the apply stage and the status writer make.

Owns the shared `ApiClient` (its urllib3 pool sized to the apply concurrency), the client-side
token bucket taken before every request, request timeouts, discovery, server-side apply, lists
by label selector (metadata only, or whole objects page by page for the watches), streaming
watches (`watch`, read by `cluster_watch`), deletes, the CRD Established wait, and the Sync
status object (inventory, stored commit, status writes). Requests go through
`ApiClient.call_api` with raw JSON in and out: no model classes, so a Secret's values are never
copied into a typed object, and lists and applies ask for `PartialObjectMetadata` where the
body is not needed, so they never come back at all.

Every library error becomes a `cluster_errors` error with `from exc`; `ApiException`, urllib3
errors and `OSError` never escape (tests drive an unreachable server, RBAC refusals and invalid
objects through it). No retries here beyond urllib3's connect retries (the request was never
sent); the loop owns retries. Must not decide what to apply or prune (apply.py does).
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s

from reconciler import (
    applyplan,
    cluster_errors,
    cluster_watch,
    config,
    discovery,
    kube_client,
    objectref,
    ratelimit,
    status,
    syncstore,
    waits,
)

JSON = "application/json"
APPLY_PATCH = "application/apply-patch+yaml"
META_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
PAGE_SIZE = 500
WATCH_CONNECTIONS = 32  # one per watched kind, kept open beside the apply workers
WATCH_READ_SLACK = 30.0  # seconds a read may wait past the server's own watch timeout
RETRY_AFTER_ATTEMPTS, RETRY_AFTER_MAX = 4, 1.0


@dataclass(frozen=True)
class Response:
    """One 2xx answer: the status code and the JSON body (None when there is none)."""

    status: int
    body: Any


@dataclass(frozen=True)
class LiveObject:
    """What a metadata list says about one live object."""

    ref: objectref.ObjectRef
    resource_version: str
    uid: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Page:
    """One page of a list of whole objects, and the list's resourceVersion (the snapshot's)."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class Applied:
    """The server's answer to one server-side apply.

    `created` is the 201 the API server answers when the apply created the object; `body` is
    the whole resulting object only when asked for (dry-run diffs), else None.
    """

    ref: objectref.ObjectRef
    resource_version: str
    uid: str
    created: bool
    body: Mapping[str, Any] | None = None


def connect(kubeconfig: Path | None, settings: config.ApplyConfig) -> Cluster:
    """The adapter for the cluster that `kubeconfig` (or the in-cluster account) names."""
    return Cluster(kube_client.configuration(kubeconfig), settings)


class Cluster:
    """One API server, one connection pool, one rate limit; safe to share between threads."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        settings: config.ApplyConfig,
        *,
        user_agent: str = "",
        page_size: int = PAGE_SIZE,
    ) -> None:
        configuration = _copied(configuration)
        # Every apply worker holds one connection; a smaller pool would make urllib3 open and
        # drop extra connections (and warn) on every stage.
        # Each watch keeps one more for as long as it runs.
        configuration.connection_pool_maxsize = max(settings.concurrency, 1) + 1
        configuration.connection_pool_maxsize += WATCH_CONNECTIONS
        # Retry only connection attempts: those requests never reached the server. A read
        # retry could repeat a write; the loop decides about those.
        configuration.retries = urllib3.Retry(
            total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.1,
            status_forcelist=(), respect_retry_after_header=False,
        )  # fmt: skip
        self._api = k8s.ApiClient(configuration)
        # The audit log names the client by user agent; the bench and tests count by it.
        self._api.user_agent = user_agent or f"gitwarden/{syncstore.tooling_version()}"
        self._settings = settings
        self._bucket = ratelimit.TokenBucket(settings.qps, settings.burst)
        self._timeout = settings.request_timeout
        self._page_size = page_size
        self._resources: discovery.Resources | None = None
        self._count_lock = threading.Lock()
        self._requests = 0

    def close(self) -> None:
        """Close the connection pool."""
        self._api.close()  # type: ignore[no-untyped-call]  # untyped library

    @property
    def requests(self) -> int:
        """How many requests this adapter has sent (for tests and the bench)."""
        return self._requests

    @property
    def field_manager(self) -> str:
        return self._settings.field_manager

    @property
    def settings(self) -> config.ApplyConfig:
        return self._settings

    # ------------------------------------------------------------------ the Sync status object

    def inventory(self, name: str) -> applyplan.Inventory:
        """The inventory and commit the last pass stored in Sync `name` (empty if none)."""
        return syncstore.inventory(self, name)

    def stored_commit(self, name: str) -> str | None:
        """The last applied commit stored in Sync `name`; a hint, never a trust base."""
        return syncstore.stored_commit(self, name)

    def write_status(
        self, name: str, outcome: status.Outcome, now: datetime.datetime
    ) -> dict[str, Any]:
        """Render `outcome` into Sync `name`'s status (installing the CRD on first use)."""
        return syncstore.report(self, name, outcome, now)

    # --------------------------------------------------------------------- bounded waits

    def wait_for_kinds(self, kinds: Iterable[tuple[str, str]], timeout: float) -> None:
        """Refresh discovery until every (group, kind) is served, bounded by `timeout`."""
        waits.kinds_served(self, kinds, timeout)

    def wait_established(self, names: Iterable[str], timeout: float) -> None:
        """Poll the named CRDs until each is Established, bounded by `timeout`."""
        waits.established(self, names, timeout)

    def wait_gone(self, ref: objectref.ObjectRef, uid: str, timeout: float) -> None:
        """Poll until the object with `uid` no longer exists, bounded by `timeout`."""
        waits.gone(self, ref, uid, timeout)

    # ---------------------------------------------------------------------------- discovery

    def resources(self) -> discovery.Resources:
        """What the API server serves, fetched once (two requests) and cached."""
        if self._resources is None:
            self.refresh_discovery()
        assert self._resources is not None  # noqa: S101  # set by refresh_discovery
        return self._resources

    def refresh_discovery(self) -> discovery.Resources:
        """Fetch discovery again (after CRDs changed)."""
        docs = [
            self.request("GET", path, accept=discovery.ACCEPT, what=f"discover {path}").body
            for path in ("/api", "/apis")
        ]
        try:
            self._resources = discovery.parse(d if isinstance(d, dict) else {} for d in docs)
        except discovery.Unsupported as exc:
            raise cluster_errors.NotServed(f"discovery: {exc}") from exc
        return self._resources

    def resource(self, group: str, kind: str) -> discovery.Resource:
        """The served resource for a kind, or `NotServed`."""
        served = self.resources()
        found = served.get(group, kind)
        if found is None:
            name = f"{kind}.{group}" if group else kind
            if group in served.stale_groups:
                # Not "not served": prune would read that as "already gone" and forget it.
                raise cluster_errors.GroupUnavailable(
                    f"kind {name}: the API group {group} is served by an aggregated API server"
                    " that is not answering (discovery: Stale)"
                )
            raise cluster_errors.NotServed(f"the API server serves no resource for kind {name}")
        return found

    # ------------------------------------------------------------------------------ objects

    def apply(
        self,
        ref: objectref.ObjectRef,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        want_body: bool = False,
    ) -> Applied:
        """Server-side apply `body` with force, as this adapter's field manager."""
        resource = self.resource(ref.group, ref.kind)
        version = _version_of(body) or resource.preferred_version
        query = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        answer = self.request(
            "PATCH",
            resource.path(ref.namespace, ref.name, version=version),
            query=query,
            body=body,
            content_type=APPLY_PATCH,
            accept=JSON if want_body else META_ONLY,
            what=f"apply {ref.display()}",
        )
        meta = _metadata(answer.body)
        return Applied(
            ref=ref,
            resource_version=str(meta.get("resourceVersion") or ""),
            uid=str(meta.get("uid") or ""),
            created=answer.status == 201,
            body=answer.body if want_body else None,
        )

    def read(self, ref: objectref.ObjectRef, *, version: str | None = None) -> Any:
        """The whole live object, or None when it does not exist."""
        resource = self.resource(ref.group, ref.kind)
        try:
            return self.request(
                "GET",
                resource.path(ref.namespace, ref.name, version=version),
                what=f"read {ref.display()}",
            ).body
        except cluster_errors.NotFound:
            return None

    def read_meta(self, ref: objectref.ObjectRef) -> LiveObject | None:
        """One live object's metadata, or None when it does not exist."""
        found = self.read_metadata(ref)
        return None if found is None else _live(ref.group, ref.kind, found)

    def read_metadata(self, ref: objectref.ObjectRef) -> dict[str, Any] | None:
        """One live object as PartialObjectMetadata (labels, managedFields; never data)."""
        resource = self.resource(ref.group, ref.kind)
        try:
            answer = self.request(
                "GET",
                resource.path(ref.namespace, ref.name),
                accept=META_ONLY,
                what=f"read {ref.display()}",
            )
        except cluster_errors.NotFound:
            return None
        return answer.body if isinstance(answer.body, dict) else {}

    def list_labelled(
        self, resource: discovery.Resource, selector: str, namespaces: Sequence[str] = ()
    ) -> dict[objectref.ObjectRef, LiveObject]:
        """Every object of a kind matching `selector`, metadata only, paginated.

        One list across all namespaces (a page per PAGE_SIZE objects); when RBAC forbids that,
        one per namespace in `namespaces`.
        """
        try:
            return self._list_pages(resource, selector, "")
        except cluster_errors.Forbidden:
            if not resource.namespaced or not namespaces:
                raise
        found: dict[objectref.ObjectRef, LiveObject] = {}
        for namespace in sorted(set(namespaces)):
            found.update(self._list_pages(resource, selector, namespace))
        return found

    def _list_pages(
        self, resource: discovery.Resource, selector: str, namespace: str
    ) -> dict[objectref.ObjectRef, LiveObject]:
        found: dict[objectref.ObjectRef, LiveObject] = {}
        token = ""
        where = f" in {namespace}" if namespace else ""
        while True:
            query = [("labelSelector", selector), ("limit", str(self._page_size))]
            if token:
                query.append(("continue", token))
            page = self.request(
                "GET",
                resource.path(namespace),
                query=query,
                accept=META_LIST,
                what=f"list {resource.kind}{where}",
            ).body
            for item in (page or {}).get("items") or ():
                live = _live(resource.group, resource.kind, item)
                found[live.ref] = live
            token = str(((page or {}).get("metadata") or {}).get("continue") or "")
            if not token:
                return found

    def list_objects(self, resource: discovery.Resource, selector: str) -> Iterator[Page]:
        """Every object of a kind matching `selector` in all namespaces, whole, page by page.

        The pages are one consistent snapshot (the continue token pins it); the last page's
        resourceVersion is where a watch of the same selector starts. A page is dropped by
        the caller before the next is read, so a list of 10,000 objects never sits whole.
        """
        token = ""
        while True:
            query = [("labelSelector", selector), ("limit", str(self._page_size))]
            if token:
                query.append(("continue", token))
            page = self.request(
                "GET", resource.path(), query=query, what=f"list {resource.kind}"
            ).body
            meta = (page or {}).get("metadata") or {}
            items = (page or {}).get("items") or []
            yield Page(
                [i for i in items if isinstance(i, dict)], str(meta.get("resourceVersion") or "")
            )
            token = str(meta.get("continue") or "")
            if not token:
                return

    def watch(
        self, path: str, query: Sequence[tuple[str, str]], timeout: float
    ) -> cluster_watch.WatchStream:
        """Open a watch of the collection at `path`: its events as they come.

        `timeout` becomes the server's `timeoutSeconds` (it then ends the stream cleanly);
        a read waits at most WATCH_READ_SLACK longer, so a silent broken connection ends
        too. An HTTP error maps as any request's does (410: `Expired`); an ERROR event and
        read failures while iterating are mapped by `cluster_watch`. `close()` on the
        stream, from any thread, ends it.
        """
        seconds = max(int(timeout), 1)
        params = [*query, ("watch", "true"), ("timeoutSeconds", str(seconds))]
        url = path + "?" + urllib.parse.urlencode(params)
        what = f"watch {path}"
        read_timeout = seconds + WATCH_READ_SLACK
        answer = self._open(
            "GET", url, {"Accept": JSON}, None, what, timeout=(self._timeout, read_timeout)
        )
        response = answer.response
        if not 200 <= answer.status <= 299:
            try:
                raw = response.read(64 * 1024)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise cluster_errors.unreachable(what, exc) from exc
            finally:
                response.release_conn()
            raise cluster_errors.for_status(what, answer.status, answer.reason or "", raw)
        return cluster_watch.WatchStream(response, what)

    def delete(self, ref: objectref.ObjectRef, live: LiveObject | None = None) -> bool:
        """Delete in the background; False when it was already gone.

        With `live`, the delete carries its uid and resourceVersion as preconditions, so an
        object changed (e.g. unlabelled) since it was checked is not deleted (409, Transient).
        """
        resource = self.resource(ref.group, ref.kind)
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if live is not None:
            options["preconditions"] = {"uid": live.uid, "resourceVersion": live.resource_version}
        try:
            self.request(
                "DELETE",
                resource.path(ref.namespace, ref.name),
                body=options,
                content_type=JSON,
                accept=META_ONLY,
                what=f"delete {ref.display()}",
            )
        except cluster_errors.NotFound:
            return False
        return True

    # ------------------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        accept: str = JSON,
        what: str,
    ) -> Response:
        """Send one request (after taking a rate-limit token); map every failure to ours.

        A 429 that names a Retry-After is sent again up to RETRY_AFTER_ATTEMPTS times, as
        client-go does (the API server says it when a new CRD's storage or its priority
        levels are not ready yet). Every verb used here is idempotent: GET, apply, and
        DELETE with preconditions.
        """
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        # The client JSON-encodes bodies sent as JSON itself; an apply patch goes pre-encoded
        # (JSON is YAML), which spares the client's slow walk over every object.
        payload: Any = body
        if body is not None and content_type != JSON:
            payload = json.dumps(body, separators=(",", ":"))
        for attempt in range(1, RETRY_AFTER_ATTEMPTS + 1):
            status_code, phrase, raw, retry_after = self._send(method, url, headers, payload, what)
            if status_code != 429 or retry_after is None or attempt == RETRY_AFTER_ATTEMPTS:
                break
            time.sleep(min(retry_after, RETRY_AFTER_MAX))
        if not 200 <= status_code <= 299:
            raise cluster_errors.for_status(what, status_code, phrase, raw)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError as exc:
            raise cluster_errors.Busy(
                f"{what}: the API server sent a body that is not JSON"
            ) from exc
        return Response(status_code, parsed)

    def _send(
        self, method: str, url: str, headers: dict[str, str], payload: Any, what: str
    ) -> tuple[int, str, bytes, float | None]:
        answer = self._open(method, url, headers, payload, what, timeout=self._timeout)
        try:
            raw = answer.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise cluster_errors.unreachable(what, exc) from exc
        return (
            answer.status,
            answer.reason or "",
            raw,
            _retry_after(answer.getheader("Retry-After")),
        )

    def _open(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        payload: Any,
        what: str,
        *,
        timeout: float | tuple[float, float],
    ) -> Any:
        """Send one request after taking a rate-limit token; the response, body unread."""
        self._bucket.acquire()
        with self._count_lock:
            self._requests += 1
        try:
            method, full_url, sent_headers, sent, _ = self._api.param_serialize(
                method, url, header_params=dict(headers), body=payload,
                auth_settings=["BearerToken"],
            )  # fmt: skip
            return self._api.call_api(
                method, full_url, header_params=sent_headers, body=sent,
                _request_timeout=timeout,
            )  # fmt: skip
        except k8s.ApiException as exc:
            # The client turns TLS failures into ApiException(status=0) whose reason quotes
            # the library's text; the type is enough.
            raise cluster_errors.unreachable(what, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise cluster_errors.unreachable(what, exc) from exc


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _copied(configuration: k8s.Configuration) -> k8s.Configuration:
    # The caller's configuration may back other clients (tests share one); ours must own
    # its pool settings.
    copy = k8s.Configuration()
    copy.__dict__.update(configuration.__dict__)
    return copy


def _version_of(body: Mapping[str, Any]) -> str:
    api_version = str(body.get("apiVersion") or "")
    return api_version.rsplit("/", 1)[-1]


def _metadata(obj: Any) -> Mapping[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def _live(group: str, kind: str, item: Any) -> LiveObject:
    meta = _metadata(item)
    ref = objectref.ObjectRef(
        group, kind, str(meta.get("namespace") or ""), str(meta.get("name") or "")
    )
    labels = meta.get("labels")
    return LiveObject(
        ref=ref,
        resource_version=str(meta.get("resourceVersion") or ""),
        uid=str(meta.get("uid") or ""),
        labels=dict(labels) if isinstance(labels, dict) else {},
    )
