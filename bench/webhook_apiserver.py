"""bench_webhook's second half: the webhook as the real kube-apiserver sees it.

Owns three measurements against a running `webhook_stack.Stack`: the admission latency the
webhook adds to people's in-scope UPDATEs at N concurrent clients, read from the API server's
own `apiserver_admission_webhook_admission_duration_seconds` histogram (the difference over
the run, for GitWarden's webhook and UPDATE only); and the number of webhook calls that the
GitOps identity's writes and the deployment controller's status writes that leave metadata as
it was cause (both must be zero: matchConditions decide them in the API server), counted from
the webhook's own /metrics and from the API server's request and exclusion counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kubernetes import client as k8s
from prometheus_client import parser

from tests.e2e import webhook_stack

DURATION = "apiserver_admission_webhook_admission_duration_seconds"
CALLS = "apiserver_admission_webhook_request_total"
EXCLUDED = "apiserver_admission_match_condition_exclusions_total"
DECISIONS = "gitwarden_webhook_decisions_total"


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound, count) of one histogram over a window."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def quantile(self, q: float) -> float:
        """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
        rank, lower, below = q * self.count, 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if upper == float("inf"):
                    return lower
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = upper, cumulative
        return lower

    def share_within(self, bound: float) -> float:
        """The fraction of observations at or under `bound` (a bucket's upper bound)."""
        within = next((c for u, c in self.buckets if u >= bound), self.count)
        return within / self.count if self.count else 0.0


def scrape(api: k8s.ApiClient) -> str:
    """The API server's /metrics text."""
    method, url, headers, _, _ = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}
    )
    response = api.call_api(method, url, header_params=headers, _request_timeout=30)
    text: bytes = response.read()  # type: ignore[no-untyped-call]
    return text.decode()


def _samples(
    text: str, name: str, labels: dict[str, str]
) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(name) and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                yield sample.name, sample.labels, sample.value


def total(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum of a counter's samples with these labels."""
    return sum(v for n, _, v in _samples(text, name, labels) if n in (name, name + "_total"))


def histogram(before: str, after: str, name: str, labels: dict[str, str]) -> Histogram:
    """The buckets of `name` (summed over other labels) observed between two scrapes."""

    def buckets(text: str) -> dict[float, float]:
        found: dict[float, float] = {}
        for n, lab, value in _samples(text, name, labels):
            if n == name + "_bucket":
                le = float(lab["le"])
                found[le] = found.get(le, 0.0) + value
        return found

    old, new = buckets(before), buckets(after)
    return Histogram(tuple(sorted((le, new[le] - old.get(le, 0.0)) for le in new)))


def _concurrently(clients: int, work: Callable[[int], None]) -> float:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # reported after the join, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return time.perf_counter() - started


@dataclass(frozen=True)
class Added:
    """What the webhook added to people's in-scope UPDATEs, as the API server measured it."""

    clients: int
    requests: int
    seconds: float
    api_server: Histogram
    webhook: Histogram
    floor: Histogram | None
    """The floor's calls for the same requests, when it was registered beside the webhook."""


def human_updates(
    stack: webhook_stack.Stack,
    namespaces: tuple[str, str],
    clients: int,
    each: int,
    *,
    prefix: str = "edit",
    floor_hook: str | None = None,
) -> Added:
    """`clients` people each scaling managed Deployments `each` times: half denied, half warned.

    With `floor_hook` (the name of a floor webhook registered with the same rules), the API
    server calls both for every request, in parallel, and both histograms come from the same
    requests in the same minutes.
    """
    admin = stack.plane.admin()
    gitops = k8s.AppsV1Api(stack.gitops)
    for i in range(clients):
        for ns in namespaces:
            gitops.create_namespaced_deployment(ns, webhook_stack.deployment(f"{prefix}-{i}"))  # type: ignore[arg-type]
    apis = [k8s.AppsV1Api(stack.plane.client_for(stack.alice_creds)) for _ in range(clients)]
    labels = {"name": webhook_stack.HOOK, "operation": "UPDATE", "type": "validating"}
    before, hook_before = scrape(admin), _webhook_metrics(stack)

    def work(index: int) -> None:
        api = apis[index]
        for n in range(each):
            ns = namespaces[n % 2]
            patch = {"spec": {"replicas": n % 5 + 1}}
            try:
                api.patch_namespaced_deployment(f"{prefix}-{index}", ns, patch)
            except k8s.ApiException as exc:
                if exc.status != 403 or ns != namespaces[0]:
                    raise

    seconds = _concurrently(clients, work)
    after, hook_after = scrape(admin), _webhook_metrics(stack)
    return Added(
        clients=clients,
        requests=clients * each,
        seconds=seconds,
        api_server=histogram(before, after, DURATION, labels),
        webhook=histogram(
            hook_before, hook_after, "gitwarden_webhook_request_duration_seconds", {}
        ),
        floor=None
        if floor_hook is None
        else histogram(before, after, DURATION, {**labels, "name": floor_hook}),
    )


def _webhook_metrics(stack: webhook_stack.Stack) -> str:
    import urllib.request  # noqa: PLC0415 - only here

    with urllib.request.urlopen(  # noqa: S310 - loopback URL built by the harness
        f"{stack.webhook.url}/metrics", context=stack.webhook.tls_context(), timeout=10
    ) as resp:
        text: bytes = resp.read()
    return text.decode()


@dataclass(frozen=True)
class Skipped:
    """Writes the API server decided by itself: how many, and the calls the webhook still got."""

    who: str
    writes: int
    webhook_decisions: float
    api_server_calls: float
    api_server_exclusions: float


def skipped_writes(
    stack: webhook_stack.Stack, who: str, namespace: str, count: int, write: Callable[[int], None]
) -> Skipped:
    """Run `count` writes and count what reached the webhook meanwhile."""
    admin = stack.plane.admin()
    before, hook_before = scrape(admin), _webhook_metrics(stack)
    for n in range(count):
        write(n)
    after, hook_after = scrape(admin), _webhook_metrics(stack)
    hook = {"name": webhook_stack.HOOK}
    return Skipped(
        who=who,
        writes=count,
        webhook_decisions=total(hook_after, DECISIONS, {}) - total(hook_before, DECISIONS, {}),
        api_server_calls=total(after, CALLS, hook) - total(before, CALLS, hook),
        api_server_exclusions=total(after, EXCLUDED, hook) - total(before, EXCLUDED, hook),
    )


def gitops_writes(stack: webhook_stack.Stack, namespace: str, count: int) -> Skipped:
    """The GitOps identity updating a managed ConfigMap `count` times."""
    api = k8s.CoreV1Api(stack.gitops)
    api.create_namespaced_config_map(
        namespace,
        webhook_stack.configmap("gitops-owned", webhook_stack.MANAGED),  # type: ignore[arg-type]
    )

    def write(n: int) -> None:
        api.patch_namespaced_config_map("gitops-owned", namespace, {"data": {"k": f"from-git-{n}"}})

    return skipped_writes(stack, "GitOps identity", namespace, count, write)


def controller_status_writes(
    stack: webhook_stack.Stack, namespace: str, name: str, count: int
) -> Skipped:
    """The deployment controller writing a managed Deployment's status, metadata unchanged."""
    controller = stack.plane.as_service_account("kube-system", "deployment-controller")
    apps = k8s.AppsV1Api(controller)

    landed: list[bool] = []

    def write(n: int) -> None:
        status = {"status": {"observedGeneration": n + 1, "replicas": 1, "readyReplicas": n % 2}}
        written = apps.patch_namespaced_deployment_status(name, namespace, status)
        # The real deployment controller (kube-controller-manager runs in the harness) writes
        # this status too, so each write is checked in its own answer, not read back later.
        seen = written.status.observed_generation if written.status is not None else None
        landed.append(seen == n + 1)

    result = skipped_writes(stack, "deployment-controller status", namespace, count, write)
    if not all(landed):
        raise SystemExit(f"the status writes did not land: {landed.count(False)} of {count}")
    return result
