"""What the demo's steps share: the running parts, and reading the cluster and messages.

Owns `Demo` (the stack, the repository, the reconciler, and the shortcuts steps use to commit,
converge and read the shop's Deployment and ConfigMap) and the small readers of kubectl's and
the Sync's messages. Must not decide a verdict: each step does, in `demo.steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from demo import driver, report, repository, stack
from tests.harness import gitopsrepo


@dataclass
class Demo:
    """What the steps share."""

    stack: stack.Stack
    repo: gitopsrepo.GitOpsRepo
    reconciler: driver.Reconciler
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.stack.admin)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.stack.admin)

    def replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment("web", repository.APP_NS).spec.replicas)

    def mode(self) -> str:
        return str(self.core.read_namespaced_config_map("settings", repository.APP_NS).data["mode"])

    def commit(self, step: report.Step, message: str, signer: str | None) -> str:
        sha = self.repo.commit(message, signer)
        how = "UNSIGNED" if signer is None else f"signed by {gitopsrepo.email(signer)}"
        kind = (
            ""
            if signer is None
            else (" (SSH)" if signer in gitopsrepo.SSH_SIGNERS else " (OpenPGP)")
        )
        step.say(f"commit {sha[:12]} {how}{kind}: {message}")
        return sha

    def converge(self, step: report.Step, commit: str) -> driver.Converged:
        outcome = self.reconciler.converge(commit)
        if outcome.applied:
            step.say(f"reconciler: applied {commit[:12]} ({outcome.message})")
        elif outcome.stalled:
            step.say(f"reconciler: Stalled ({outcome.reason}): {short(outcome.message)}")
        else:
            step.say(f"reconciler: no outcome ({outcome.reason}): {outcome.message}")
        return outcome


def short(message: str) -> str:
    """A refusal without the repeated full commit ids (the first 12 characters name one)."""
    words = [
        w[:12] + (":" if w.endswith(":") else "") if len(w.rstrip(":")) == 40 else w
        for w in message.split()
    ]
    return " ".join(words)


def first(text: str, needle: str) -> str:
    """The first line of `text` containing `needle` (for showing one message, not a log)."""
    return next((line.strip() for line in text.splitlines() if needle in line), "")


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except k8s.ApiException as exc:
        return bool(exc.status == 404)
    return False


def labels(obj: Any) -> tuple[str | None, str | None]:
    meta = obj.metadata
    return (
        (meta.labels or {}).get("gitwarden.dev/managed"),
        (meta.annotations or {}).get("gitwarden.dev/source-path"),
    )
