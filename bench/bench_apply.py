"""Benchmark of the apply stage on a real kube-apiserver, next to `kubectl apply --server-side`.

Starts etcd + kube-apiserver with the test harness and renders the same ~1,000 objects twice
(two sets of 10 namespaces): ConfigMaps, Secrets from SealedSecrets (sealed with a key of the
product's default size), ServiceAccounts, headless Services, Deployments and RoleBindings, plus
a CRD and 100 custom resources. GitWarden runs one set as the pipeline does after verify and
load: decrypt (with the process's cache of opened values), plan, then apply and the Sync status
with the inventory read from the cluster. kubectl applies the other set from the same rendered
YAML (plaintext Secrets: CRD, wait Established, the rest). Then GitWarden runs a no-op pass in
the same process with a fresh adapter (new connections, new discovery). Requests are counted
from the API server's audit log by user agent, RSA operations by the decrypt stage.

    python -m bench.bench_apply [--concurrency 8] [--qps 0] [--burst 100] [--profile]

Targets: initial apply <= 0.5x kubectl's wall time; no-op <= 1 s and <= 30 requests, and no
RSA operation for the unchanged SealedSecrets.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reconciler import apply, applyplan, cluster, config, decrypt, manifests, plan, status
from reconciler.sealed import keys
from reconciler.sealed import objects as sealed_objects
from tests import engine_plans, revisions
from tests.harness.controlplane import ControlPlane, running_control_plane

NAMESPACES = 10
PER_KIND = 15  # per namespace: 6 kinds x 15 x 10 namespaces = 900 objects
CUSTOM_RESOURCES = 100
AGENT = "gitwarden-bench"
T = TypeVar("T")


def objects(prefix: str) -> list[dict[str, Any]]:
    """The manifests of one set: namespaces, a CRD, 100 CRs and 900 namespaced objects."""
    group = f"{prefix}.bench.example.com"
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns(prefix, i)}}
        for i in range(NAMESPACES)
    ]
    out.append(engine_plans.crd(group, "Widget", "widgets"))
    for i in range(NAMESPACES):
        n = ns(prefix, i)
        for j in range(PER_KIND):
            name = f"app-{j:02d}"
            out += [
                engine_plans.configmap(
                    n, name, {"settings.yaml": f"replicas: {j}\nlevel: info\n" * 4}
                ),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": n},
                    "stringData": {"password": f"pw-{i}-{j}" * 4, "user": "app"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": n},
                },
                service(n, name),
                engine_plans.deployment(n, name, image=f"registry.invalid/{name}:1.{j}"),
                role_binding(n, name),
            ]
    for k in range(CUSTOM_RESOURCES):
        out.append(
            {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": f"w-{k:03d}", "namespace": ns(prefix, k % NAMESPACES)},
                "spec": {"size": k},
            }
        )
    return out


def sealed(bodies: list[dict[str, Any]], key: keys.SealingKey) -> list[dict[str, Any]]:
    """The same manifests with every Secret sealed as `kubeseal --cert` would seal it."""
    now = dt.datetime.now(dt.UTC)
    return [
        sealed_objects.seal(b, key.certificate, now) if b["kind"] == "Secret" else b for b in bodies
    ]


def loaded(bodies: list[dict[str, Any]]) -> manifests.Manifests:
    """What the load stage would hand on for these manifests (one file per kind)."""
    return manifests.Manifests(
        revisions.verified("b" * 40),
        tuple(
            manifests.Manifest.of(f"bench/{b['kind'].lower()}.yaml#{index}", b)
            for index, b in enumerate(bodies)
        ),
    )


def ns(prefix: str, i: int) -> str:
    return f"{prefix}-team-{i}"


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


@dataclass
class Pipeline:
    """The stages after load, with what a reconciler process keeps between passes."""

    settings: config.ReconcilerConfig
    ring: keys.KeyRing
    hints: manifests.KeyHints = decrypt.NO_HINTS
    opened: decrypt.OpenedCache = field(default_factory=decrypt.OpenedCache)

    def run(self, plane: ControlPlane, source: manifests.Manifests) -> int:
        """One pass (decrypt, plan, apply, status) as `reconcile` runs it; its RSA count."""
        name = self.settings.identity.name
        adapter = cluster.Cluster(
            plane.admin().configuration, self.settings.apply, user_agent=AGENT
        )
        try:
            opened = decrypt.run(source, self.ring, self.hints, self.opened)
            self.hints = opened.key_hints
            planned = plan.build(opened, adapter.inventory(name), self.settings)
            changes = apply.run(planned, adapter, self.settings.apply)
            adapter.write_status(name, status.succeeded(planned, changes), dt.datetime.now(dt.UTC))
        finally:
            adapter.close()
        print(f"  gitwarden: {changes.summary()}; {opened.rsa_operations} RSA operations")
        return opened.rsa_operations


def kubectl_apply(plane: ControlPlane, bodies: list[dict[str, Any]], workdir: Path) -> None:
    kubeconfig = plane.admin_kubeconfig(workdir / "admin.kubeconfig")
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
    applying = config.ApplyConfig(concurrency=args.concurrency, qps=args.qps, burst=args.burst)
    settings = replace(revisions.settings(), apply=applying)
    settings = replace(settings, identity=replace(settings.identity, name="bench"))
    key = keys.generate(dt.datetime.now(dt.UTC), keys.KeyPolicy())
    ours = loaded(sealed(objects("gw"), key))
    # kubectl gets the same rendered objects (stamped like ours), its Secrets in plaintext.
    theirs_plan = plan.build(
        decrypt.run(loaded(sealed(objects("kc"), key)), keys.KeyRing.of([key])),
        applyplan.Inventory(),
        replace(settings, identity=replace(settings.identity, name="kubectl")),
    )
    theirs = [o.body_for_apply() for o in theirs_plan.objects()]
    pipeline = Pipeline(settings, keys.KeyRing.of([key]))
    print(
        f"objects per set: {len(ours.items)}; concurrency={applying.concurrency} "
        f"qps={applying.qps} burst={applying.burst}; sealing key RSA-{key.private_key.key_size}"
    )
    with (
        running_control_plane() as plane,
        tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp,
    ):
        mark = len(plane.audit_events())
        run_initial = lambda: pipeline.run(plane, ours)  # noqa: E731
        gw_rsa, gw_wall = timed((lambda: profiled(run_initial)) if args.profile else run_initial)
        gw_requests = requests_by(plane, AGENT, mark)

        mark = len(plane.audit_events())
        _, kc_wall = timed(lambda: kubectl_apply(plane, theirs, Path(tmp)))
        kc_requests = requests_by(plane, "kubectl", mark)

        mark = len(plane.audit_events())
        noop_rsa, noop_wall = timed(lambda: pipeline.run(plane, ours))
        noop_requests = requests_by(plane, AGENT, mark)

    ratio = gw_wall / kc_wall
    print(f"initial   gitwarden {gw_wall:6.2f} s {gw_requests:5d} requests")
    print(f"initial   kubectl   {kc_wall:6.2f} s {kc_requests:5d} requests")
    print(f"ratio     {ratio:.2f}x kubectl's wall time (target <= 0.50)")
    print(
        f"no-op     gitwarden {noop_wall:6.2f} s {noop_requests:5d} requests"
        " (targets <= 1 s, <= 30)"
    )
    print(f"RSA ops   initial {gw_rsa}, no-op {noop_rsa} (target: 0 on the no-op pass)")
    ok = ratio <= 0.5 and noop_wall <= 1.0 and noop_requests <= 30 and noop_rsa == 0
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
