"""SIGKILL at random moments of a big apply: every restart converges, nothing is lost.

The reconciler runs as a child process and is killed with SIGKILL (no handler, no cleanup) at
random moments while it applies 500 ConfigMaps, 5 times (the long profile, GITWARDEN_FUZZ=long
as `make test-long` sets it: 1,000 ConfigMaps, 20 times); after each kill, everything managed
in the cluster is on record in the Sync's inventory (the write-ahead), so a later revision can prune
it; the last restart converges on the commit with exactly the right inventory and nothing
pruned by mistake. Then a pass killed while applying B, with Git moved on to C that drops
what B added: the restart prunes exactly those. The seed is printed for a rerun.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from reconciler import status as status_mod
from tests.e2e import loop_process
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import wait_for
from tests.e2e.reconcile_stack import Env, unique

pytestmark = pytest.mark.cluster

FILE = "clusters/test/many.yaml"
LONG = os.environ.get("GITWARDEN_FUZZ", "") == "long"
COUNT, KILLS = (1000, 20) if LONG else (500, 5)
WAIT = 90.0 * COUNT / 500  # seconds for a converging pass


@pytest.fixture
def loops() -> Iterator[loop_process.Running]:
    yield from loop_process.running()


def objects(ns: str, value: str, extra: int = 0) -> list[dict[str, Any]]:
    """The Namespace, COUNT ConfigMaps `cm-NNN` and `extra` ConfigMaps `b-NNN` (sorted first)."""
    return [
        m.namespace(ns),
        *(m.configmap(ns, f"b-{i:03}", {"k": value}) for i in range(extra)),
        *(m.configmap(ns, f"cm-{i:03}", {"k": value}) for i in range(COUNT)),
    ]


def live_names(env: Env, ns: str) -> set[str]:
    items = (
        k8s.CoreV1Api(env.admin)
        .list_namespaced_config_map(ns, label_selector="gitwarden.dev/managed=true")
        .items
    )
    return {str(cm.metadata.name) for cm in items}


def count(env: Env, ns: str) -> int:
    """How many ConfigMaps `ns` holds, from one cheap request (the list's remaining count)."""
    listed = k8s.CoreV1Api(env.admin).list_namespaced_config_map(ns, limit=1)
    return len(listed.items) + int(listed.metadata.remaining_item_count or 0)


def stored(env: Env, name: str) -> dict[str, str]:
    """Inventory entries of ConfigMaps in the Sync status: name → resourceVersion."""
    inventory = status_mod.decode_inventory(env.sync(name)["status"])
    return {
        ref.name: entry.resource_version
        for ref, entry in inventory.entries.items()
        if ref.kind == "ConfigMap"
    }


def noops(loop: loop_process.Loop) -> list[dict[str, Any]]:
    return [ln for ln in loop.lines() if ln.get("summary") == f"{COUNT + 1} unchanged"]


def applying(loop: loop_process.Loop, commit: str) -> None:
    loop.wait_log(
        lambda line: line.get("stage") == "apply" and line.get("revision") == commit,
        60,
        f"applying {commit[:12]}",
    )


def test_sigkills_during_a_big_apply_then_a_killed_b_superseded_by_c(
    env: Env, loops: loop_process.Running
) -> None:
    seed = int(os.environ.get("GITWARDEN_KILL_SEED", time.time_ns() % 100_000))
    print(f"GITWARDEN_KILL_SEED={seed}")  # to rerun the same moments
    chance = random.Random(seed)  # noqa: S311  # moments to kill at, not secrets
    ns, name = unique("kill"), unique("sync")
    repo = env.repo()
    repo.write(FILE, objects(ns, "a"))
    first = repo.commit(f"{COUNT} objects", "alice")
    # 1,000 requests a full pass (a dry-run check and an apply per object), 400 a second and no
    # burst: 1.25 s of dry-run checks, then 1.25 s of writes, however fast the machine. (A burst
    # of 400 once let a fast CI machine finish the whole pass inside the first kill's sleep.)
    config = loop_process.config_with(
        env.config(repo, name, qps=400, burst=1),
        # The kills are about the record, not the Lease: a killed leader's Lease would only
        # make each restart wait lease_duration as a standby.
        {"leader": {"enabled": False}},
    )
    began = time.monotonic()

    partial: list[int] = []  # managed ConfigMaps in the cluster after each kill
    # The first kill at a random moment of the dry-run checks (nothing written yet); the
    # others when a random, growing number of ConfigMaps has been written.
    targets = sorted(chance.sample(range(1, COUNT - 20), KILLS - 1))
    for kill in range(KILLS):
        loop = loops.start(env, config)
        applying(loop, first)
        if kill == 0:  # within the 1.25 s of checks
            time.sleep(chance.uniform(0.0, 1.0))
        else:
            target = targets[kill - 1]
            wait_for(lambda: count(env, ns) >= target, 60, "writes", every=0.02)  # noqa: B023
        loop.kill()
        assert loop.proc.returncode == -9
        # Whatever it created is on record: a later revision without it can prune it.
        live, recorded = live_names(env, ns), stored(env, name)
        assert live <= set(recorded), (kill, sorted(live - set(recorded))[:5])
        partial.append(len(live))
        assert env.sync(name)["status"].get("lastAppliedCommit") != first

    print(f"{KILLS} kills survived; ConfigMaps there after each kill: {partial}")
    assert any(0 < n < COUNT for n in partial), "no kill landed among the writes"
    loop = loops.start(env, config)
    loop.applied(first, timeout=WAIT)
    recorded = stored(env, name)
    assert set(recorded) == {f"cm-{i:03}" for i in range(COUNT)}
    assert all(recorded.values()), "every entry carries the version it was applied at"
    assert live_names(env, ns) == set(recorded)
    assert env.sync(name)["status"]["lastAppliedCommit"] == first
    deleted = [ln for ln in loop.lines() if ln.get("object") and " deleted" in ln["message"]]
    assert deleted == []  # nothing pruned by mistake
    # The next passes (every 2 s) are no-ops: one list per kind, no write-ahead, no writes.
    wait_for(lambda: len(noops(loop)) >= 3, 30, "three no-op passes")
    assert [ln["summary"] for ln in noops(loop)][:3] == [f"{COUNT + 1} unchanged"] * 3
    assert len([ln for ln in loop.lines() if ln.get("stage") == "apply"]) <= 1  # the converge
    print(f"no-op pass of {COUNT + 1} objects: {[ln['seconds'] for ln in noops(loop)]} s")
    assert loop.terminate() == 0

    # B adds b-000..b-049 (applied first) and changes every cm-; it is killed mid-apply.
    repo.write(FILE, objects(ns, "b", extra=50))
    second = repo.commit("b: fifty more", "alice")
    loop = loops.start(env, config)
    applying(loop, second)
    wait_for(lambda: "b-000" in live_names(env, ns), 30, "b-000 applied")
    loop.kill()
    live, recorded = live_names(env, ns), stored(env, name)
    assert "b-000" in live
    assert live <= set(recorded)
    assert env.sync(name)["status"]["lastAppliedCommit"] == first

    # C drops what B added: the restart converges on C and prunes exactly those.
    repo.write(FILE, objects(ns, "c"))
    third = repo.commit(f"c: back to {COUNT}", "alice")
    loop = loops.start(env, config)
    loop.applied(third, timeout=WAIT)
    assert live_names(env, ns) == {f"cm-{i:03}" for i in range(COUNT)}
    assert set(stored(env, name)) == {f"cm-{i:03}" for i in range(COUNT)}
    cm = k8s.CoreV1Api(env.admin).read_namespaced_config_map(f"cm-{COUNT - 1:03}", ns)
    assert cm.data == {"k": "c"}
    pruned = {
        str(line.get("object")).rsplit("/", 1)[-1]
        for line in loop.lines()
        if line.get("object") and " deleted" in str(line["message"])
    }
    assert pruned == {f"b-{i:03}" for i in range(50)}  # those B created and those it planned
    assert loop.terminate() == 0
    print(f"kill test: {time.monotonic() - began:.1f}s")
