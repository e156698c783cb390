"""Benchmark of the apply stage on a real kube-apiserver, next to `kubectl apply --server-side`.

Starts etcd + kube-apiserver with the test harness and renders the same ~1,000 objects twice
(two sets of 10 namespaces): ConfigMaps, Secrets (planned as the decrypt stage hands them on),
ServiceAccounts, headless Services, Deployments and RoleBindings, plus a CRD and 100 custom
resources. GitWarden applies one set as a whole pass (read the inventory, apply, write the Sync
status); kubectl applies the other from the rendered YAML (CRD, wait Established, the rest).
Then GitWarden runs a no-op pass with a fresh adapter (new connections, new discovery), as a
new process would. Requests are counted from the API server's audit log by user agent.

    python -m bench.bench_apply [--concurrency 8] [--qps 0] [--burst 100] [--profile]

Targets: initial apply <= 0.5x kubectl's wall time; no-op <= 1 s and <= 30 requests.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reconciler import apply, applyplan, cluster, config, status
from tests import engine_plans
from tests.harness.controlplane import ControlPlane, running_control_plane

NAMESPACES = 10
PER_KIND = 15  # per namespace: 6 kinds x 15 x 10 namespaces = 900 objects
CUSTOM_RESOURCES = 100
AGENT = "gitwarden-bench"
T = TypeVar("T")


def objects(prefix: str, applyset: str) -> list[applyplan.PlannedObject]:
    """The planned objects of one set: namespaces, a CRD, 100 CRs and 900 namespaced objects."""
    group = f"{prefix}.bench.example.com"
    out = [
        planned(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns(prefix, i)}}, applyset
        )
        for i in range(NAMESPACES)
    ]
    out.append(planned(engine_plans.crd(group, "Widget", "widgets"), applyset))
    for i in range(NAMESPACES):
        n = ns(prefix, i)
        for j in range(PER_KIND):
            name = f"app-{j:02d}"
            out += [
                planned(
                    engine_plans.configmap(
                        n, name, {"settings.yaml": f"replicas: {j}\nlevel: info\n" * 4}
                    ),
                    applyset,
                ),
                engine_plans.planned_secret(
                    n,
                    name,
                    {"password": f"pw-{i}-{j}".encode() * 4, "user": b"app"},
                    applyset=applyset,
                ),
                planned(
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": name, "namespace": n},
                    },
                    applyset,
                ),
                planned(service(n, name), applyset),
                planned(
                    engine_plans.deployment(n, name, image=f"registry.invalid/{name}:1.{j}"),
                    applyset,
                ),
                planned(role_binding(n, name), applyset),
            ]
    for k in range(CUSTOM_RESOURCES):
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": f"w-{k:03d}", "namespace": ns(prefix, k % NAMESPACES)},
            "spec": {"size": k},
        }
        out.append(planned(widget, applyset))
    return out


def ns(prefix: str, i: int) -> str:
    return f"{prefix}-team-{i}"


def planned(body: dict[str, Any], applyset: str) -> applyplan.PlannedObject:
    return engine_plans.planned(body, f"bench/{body['kind'].lower()}.yaml", applyset=applyset)


def service(namespace: str, name: str) -> dict[str, Any]:
    # Headless: the harness's service CIDR has 254 addresses, fewer than both sets need.
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": name},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }


def role_binding(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def timed(func: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def requests_by(plane: ControlPlane, agent_prefix: str, since: int) -> int:
    return sum(
        1
        for e in plane.audit_events()[since:]
        if str(e.get("userAgent", "")).startswith(agent_prefix)
    )


def gitwarden_pass(
    plane: ControlPlane,
    settings: config.ApplyConfig,
    planned_objects: list[applyplan.PlannedObject],
    name: str,
) -> applyplan.ApplyPlan:
    """One whole pass as `reconcile --once` runs it: inventory, apply, status."""
    adapter = cluster.Cluster(plane.admin().configuration, settings, user_agent=AGENT)
    try:
        previous = adapter.inventory(name)
        plan = engine_plans.plan_of(
            planned_objects, previous=previous, applyset=status.applyset_id(name)
        )
        changes = apply.run(plan, adapter, settings)
        adapter.write_status(name, status.succeeded(plan, changes), dt.datetime.now(dt.UTC))
    finally:
        adapter.close()
    print(f"  gitwarden: {changes.summary()}")
    return plan


def kubectl_apply(
    plane: ControlPlane, planned_objects: list[applyplan.PlannedObject], workdir: Path
) -> None:
    kubeconfig = plane.admin_kubeconfig(workdir / "admin.kubeconfig")
    bodies = [o.body_for_apply() for o in planned_objects]
    crds = [b for b in bodies if b["kind"] == "CustomResourceDefinition"]
    rest = [b for b in bodies if b["kind"] != "CustomResourceDefinition"]
    rest.sort(key=lambda b: b["kind"] != "Namespace")
    (workdir / "crds.yaml").write_text(yaml.safe_dump_all(crds))
    (workdir / "rest.yaml").write_text(yaml.safe_dump_all(rest))
    base = ["kubectl", f"--kubeconfig={kubeconfig}"]
    for argv in (
        [*base, "apply", "--server-side", "-f", str(workdir / "crds.yaml")],
        [
            *base,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{c['metadata']['name']}" for c in crds),
        ],
        [*base, "apply", "--server-side", "-f", str(workdir / "rest.yaml")],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=600)
    print(f"  kubectl: {len(bodies)} objects applied")


def profiled(func: Callable[[], T]) -> T:
    profile = cProfile.Profile()
    result = profile.runcall(func)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = config.ApplyConfig()
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--qps", type=float, default=defaults.qps, help="0: no client-side limit")
    parser.add_argument("--burst", type=int, default=defaults.burst)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the initial GitWarden pass"
    )
    args = parser.parse_args(argv)
    settings = config.ApplyConfig(concurrency=args.concurrency, qps=args.qps, burst=args.burst)
    name = "bench"
    ours = objects("gw", status.applyset_id(name))
    theirs = objects("kc", status.applyset_id("kubectl"))
    print(
        f"objects per set: {len(ours)}; concurrency={settings.concurrency} "
        f"qps={settings.qps} burst={settings.burst}"
    )
    with (
        running_control_plane() as plane,
        tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp,
    ):
        mark = len(plane.audit_events())
        run_initial = lambda: gitwarden_pass(plane, settings, ours, name)  # noqa: E731
        _, gw_wall = timed((lambda: profiled(run_initial)) if args.profile else run_initial)
        gw_requests = requests_by(plane, AGENT, mark)

        mark = len(plane.audit_events())
        _, kc_wall = timed(lambda: kubectl_apply(plane, theirs, Path(tmp)))
        kc_requests = requests_by(plane, "kubectl", mark)

        mark = len(plane.audit_events())
        _, noop_wall = timed(lambda: gitwarden_pass(plane, settings, ours, name))
        noop_requests = requests_by(plane, AGENT, mark)

    ratio = gw_wall / kc_wall
    print(f"initial   gitwarden {gw_wall:6.2f} s {gw_requests:5d} requests")
    print(f"initial   kubectl   {kc_wall:6.2f} s {kc_requests:5d} requests")
    print(f"ratio     {ratio:.2f}x kubectl's wall time (target <= 0.50)")
    print(
        f"no-op     gitwarden {noop_wall:6.2f} s {noop_requests:5d} requests"
        " (targets <= 1 s, <= 30)"
    )
    print(
        "RSA operations: none here (Secrets are planned directly;"
        " the decrypt stage is benched by bench_unseal)"
    )
    ok = ratio <= 0.5 and noop_wall <= 1.0 and noop_requests <= 30
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
