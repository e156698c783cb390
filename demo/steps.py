"""The seven steps of the demo, each a function that acts, then reads what really happened.

Owns what each step does (commits, kubectl as a person, stopping OPA) and what it checks (live
objects, the Sync status, the exact messages people see). Every verdict comes from reading the
cluster or the commands' output after the fact; a step that needs something not yet built says
so and fails. Must not start or stop the stack itself, except OPA in step 7, which it restores.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

from kubernetes import client as k8s

from demo import commands, context, driver, report, repository, stack
from tests.harness import gitopsrepo

PASSWORD = "correct-horse-battery-staple"  # noqa: S105 - a throwaway value sealed for this run
DENIED = 'admission webhook "managed.gitwarden.gitwarden.dev" denied the request'
REPLICAS_SED = "sed -i s/replicas:\\ 1/replicas:\\ {n}/"
REVERT_WITHIN = 20.0  # seconds the loop has to take a break-glass edit back


# ------------------------------------------------------------------------------------ 1


def signed_commit_applied(d: context.Demo, step: report.Step) -> str:
    cert = d.reconciler.certificate()
    step.say(f"fetched the served sealing certificate ({driver.CERT_PATH}) to {cert.name}")
    d.repo.write(f"{repository.MANIFESTS}/namespaces.yaml", repository.namespaces())
    d.repo.write(repository.APP_FILE, repository.shop("blue"))
    d.repo.write(repository.SECRET_FILE, repository.seal(cert, PASSWORD))
    d.repo.write(
        repository.FLAGS_FILE, [repository.configmap("feature-flags", {"checkout-v2": "off"})]
    )
    step.say(f"sealed billing/{repository.SECRET_NAME} with `gitwarden seal --cert {cert.name}`")
    in_git = any(PASSWORD in p.read_text() for p in (d.repo.path / "clusters").rglob("*.yaml"))
    step.expect(not in_git, "the Secret's plaintext is in the repository")
    sha = d.commit(step, "shop: namespaces, web Deployment, settings, sealed DB password", "alice")
    if not step.expect(d.converge(step, sha).applied, f"{sha[:12]} was not applied"):
        return ""
    web = d.apps.read_namespaced_deployment("web", repository.APP_NS)
    labels = context.labels(web)
    step.expect(
        labels == ("true", repository.APP_FILE), f"shop/web lacks the label or its file: {labels}"
    )
    step.expect(d.mode() == "blue", "ConfigMap shop/settings does not hold mode=blue")
    value = stack.secret_value(
        d.stack.admin, repository.DATA_NS, repository.SECRET_NAME, repository.SECRET_KEY
    )
    step.expect(value == PASSWORD, "Secret billing/db-credentials does not hold the sealed value")
    step.say(
        f"live: Namespaces {repository.APP_NS}, {repository.DATA_NS}; Deployment shop/web"
        f" (from {repository.APP_FILE}); ConfigMaps shop/settings, shop/feature-flags;"
        " Secret billing/db-credentials"
    )
    d.notes["applied"] = sha
    return (
        "every object is live with the managed label and its file; the Secret holds the"
        " decrypted value, which is nowhere in Git"
    )


# ------------------------------------------------------------------------------------ 2


def human_edits_denied(d: context.Demo, step: report.Step) -> str:
    who = stack.DEVELOPER
    scaled = d.stack.kubectl(
        who, "-n", repository.APP_NS, "scale", "deployment/web", "--replicas=3"
    )
    step.say(
        f"{who}: kubectl -n {repository.APP_NS} scale deployment/web --replicas=3"
        f"  → exit {scaled.code}"
    )
    step.expect(scaled.code != 0 and "denied" in scaled.stderr, "kubectl scale was not denied")
    step.expect(
        repository.APP_FILE in scaled.stderr,
        f"the scale denial does not name {repository.APP_FILE}",
    )
    edited = d.stack.kubectl(
        who, "-n", repository.APP_NS, "edit", "deployment/web", editor=REPLICAS_SED.format(n=5)
    )
    step.say(
        f"{who}: kubectl -n {repository.APP_NS} edit deployment/web (replicas 1 → 5)"
        f"  → exit {edited.code}"
    )
    step.expect(edited.code != 0 and DENIED in edited.stderr, "kubectl edit was not denied")
    step.expect(
        repository.APP_FILE in edited.stderr, f"the edit denial does not name {repository.APP_FILE}"
    )
    message = context.first(edited.stderr, "Make the change in Git")
    if message:
        step.say(f"denial: {message[message.find('Deployment') :]}")
    step.expect(d.replicas() == 1, f"replicas changed to {d.replicas()}")
    return f"both denied, naming {repository.APP_FILE}; the Deployment still has 1 replica"


# ------------------------------------------------------------------------------------ 3


def break_glass_reverted(d: context.Demo, step: report.Step) -> str:
    who = stack.ONCALL
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    sent_at = time.monotonic()  # drift repair may finish before kubectl has even returned
    edited = d.stack.kubectl(
        who, "-n", repository.APP_NS, "edit", "deployment/web", editor=REPLICAS_SED.format(n=4)
    )
    step.say(
        f"{who} ({stack.BREAK_GLASS}): kubectl edit deployment/web (replicas 1 → 4)"
        f"  → exit {edited.code}"
    )
    warning = context.first(edited.stderr, "break-glass")
    step.expect(edited.code == 0, f"the break-glass edit was refused: {edited.stderr.strip()}")
    step.expect(bool(warning), "kubectl printed no break-glass warning")
    if warning:
        step.say(f"warning: {warning[warning.find('break-glass') :]}")
    while d.replicas() != 1 and time.monotonic() - sent_at < REVERT_WITHIN:
        time.sleep(0.1)
    took = time.monotonic() - sent_at
    if not step.expect(d.replicas() == 1, f"not reverted within {REVERT_WITHIN:.0f} s"):
        return ""
    step.say(f"back to 1 replica {took:.1f} s after kubectl edit started")
    event = _drift_event(d, since)
    step.expect(event is not None, "no Event names kubectl-edit, the edit's field manager")
    if event is not None:
        step.say(f"Event {event}")
    return f"allowed with a warning, reverted in {took:.1f} s, the Event names kubectl-edit"


def _drift_event(d: context.Demo, since: dt.datetime, manager: str = "kubectl-edit") -> str | None:
    """An Event since `since` about shop/web whose message names the field manager."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for item in k8s.CoreV1Api(d.stack.admin).list_event_for_all_namespaces().items:
            when = item.last_timestamp or item.event_time or item.metadata.creation_timestamp
            text = f"{item.reason}: {item.message}"
            if manager in (item.message or "") and "web" in text and when and when >= since:
                return f"{item.type} {item.reason}: {item.message}"
        time.sleep(0.5)
    return None


# ------------------------------------------------------------------------------------ 4


def unsigned_commit_refused(d: context.Demo, step: report.Step) -> str:
    last_good = d.repo.head()
    d.repo.write(repository.APP_FILE, repository.shop("unsigned"))
    bad = d.commit(step, "shop: switch settings to mode=unsigned", None)
    outcome = d.converge(step, bad)
    step.expect(outcome.stalled, "the unsigned commit did not stall the Sync")
    step.expect("unsigned" in outcome.message, "the Stalled message does not say unsigned")
    step.expect(d.mode() == "blue", f"the cluster changed: mode={d.mode()}")
    shown = commands.gitwarden(
        "status", "--kubeconfig", str(d.stack.kubeconfigs["admin"]), "--name", stack.SYNC_NAME
    )
    step.say(f"gitwarden status → exit {shown.code}: {context.first(shown.stdout, 'Ready=')}")
    step.expect(shown.code == 1, "gitwarden status did not exit 1 for a Stalled Sync")
    step.say(
        f"recovery: reset main to {last_good[:12]} (never applied: not a force-push over"
        " applied history) and make the change again, signed"
    )
    d.repo.reset(last_good)
    d.repo.write(repository.APP_FILE, repository.shop("green"))
    fixed = d.commit(step, "shop: switch settings to mode=green", "gus")
    step.expect(d.converge(step, fixed).applied, f"the signed fix {fixed[:12]} was not applied")
    step.expect(d.mode() == "green", f"mode is {d.mode()}, not green")
    return "unsigned: cluster unchanged, Sync Stalled (unsigned); the signed fix applied"


# ------------------------------------------------------------------------------------ 5


def policy_change_needs_two_admins(d: context.Demo, step: report.Step) -> str:
    base = d.repo.head()
    d.repo.checkout("policy-change", new_at="main")
    d.repo.write("policies/commits/shop.rego", "package shop\n\nmax_replicas := 3\n")
    d.repo.write(repository.APP_FILE, repository.shop("policy-v2"))
    alone = d.commit(step, "policies: shop limits (alice alone, fast-forwarded to main)", "alice")
    d.repo.checkout("main")
    d.repo.git("merge", "-q", "--ff-only", "policy-change")
    outcome = d.converge(step, alone)
    step.expect(outcome.stalled, "a policies/ change signed by one admin was not refused")
    step.expect("policy" in outcome.message, "the refusal does not name the commit policy")
    step.expect(d.mode() == "green", f"the cluster changed: mode={d.mode()}")
    step.say(f"reset main to {base[:12]}; bob reviews and merges the branch with a signed merge")
    d.repo.reset(base)
    merged = d.repo.merge("policy-change", "Merge policy-change (second admin)", "bob")
    step.say(f"commit {merged[:12]} signed by {gitopsrepo.email('bob')} (SSH): the merge")
    step.expect(d.converge(step, merged).applied, f"the merge {merged[:12]} was not applied")
    step.expect(d.mode() == "policy-v2", f"mode is {d.mode()}, not policy-v2")
    return "one admin's signature refused for policies/; applied after bob's signed merge"


# ------------------------------------------------------------------------------------ 6


def removed_file_pruned(d: context.Demo, step: report.Step) -> str:
    made = d.stack.kubectl(
        "admin",
        "-n",
        repository.APP_NS,
        "create",
        "configmap",
        "hand-made",
        "--from-literal=owner=ops",
    )
    step.say(
        f"admin: kubectl -n {repository.APP_NS} create configmap hand-made (no GitWarden label)"
        f"  → exit {made.code}"
    )
    step.expect(made.code == 0, f"could not create the unlabelled ConfigMap: {made.stderr}")
    d.repo.remove(repository.FLAGS_FILE)
    sha = d.commit(step, f"shop: remove {repository.FLAGS_FILE}", "carol")
    step.expect(d.converge(step, sha).applied, f"{sha[:12]} was not applied")
    read = d.core.read_namespaced_config_map
    step.expect(
        context.gone(lambda: read("feature-flags", repository.APP_NS)),
        "shop/feature-flags is still there",
    )
    step.expect(
        not context.gone(lambda: read("hand-made", repository.APP_NS)), "shop/hand-made was deleted"
    )
    step.expect(
        not context.gone(lambda: read("settings", repository.APP_NS)), "shop/settings was deleted"
    )
    return "shop/feature-flags deleted with its file; the unlabelled shop/hand-made left alone"


# ------------------------------------------------------------------------------------ 7


def opa_down_fails_closed(d: context.Demo, step: report.Step) -> str:
    patch = [
        "-n",
        repository.APP_NS,
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        '{"data":{"mode":"hotfix"}}',
    ]
    d.stack.opa.stop()
    step.say("OPA stopped")
    try:
        denied = d.stack.kubectl(stack.DEVELOPER, *patch)
        step.say(f"{stack.DEVELOPER}: kubectl patch configmap settings  → exit {denied.code}")
        line = context.first(denied.stderr, "policy engine unavailable")
        step.expect(denied.code != 0 and bool(line), "the change was not denied for want of OPA")
        if line:
            step.say(f"denial: {line[line.find('GitWarden') :]}")
        _controllers_allowed(d, step)
        d.repo.write(repository.APP_FILE, repository.shop("during-outage"))
        sha = d.commit(step, "shop: mode=during-outage (GitOps keeps working)", "alice")
        step.expect(
            d.converge(step, sha).applied, "the reconciler could not apply during the outage"
        )
        step.expect(d.mode() == "during-outage", f"mode is {d.mode()}")
    finally:
        d.stack.opa.start()
        step.say("OPA started again")
    ready = driver.wait_url_tls(f"{d.stack.webhook.url}/readyz", d.stack.webhook.tls_context())
    step.expect(ready, "the webhook is not ready again after OPA came back")
    again = d.stack.kubectl(stack.DEVELOPER, *patch)
    step.expect(
        again.code != 0 and "managed by GitOps" in again.stderr,
        "after OPA came back the change is not denied by the policy",
    )
    step.say(f'{stack.DEVELOPER} again: denied by the policy ("is managed by GitOps")')
    return (
        "OPA down: the person denied (fail closed), deployment-controller, HPA and GitOps"
        " allowed; OPA back: the policy decides again"
    )


def _controllers_allowed(d: context.Demo, step: report.Step) -> None:
    apps_dc = k8s.AppsV1Api(d.stack.client("deployment-controller"))
    generation = d.apps.read_namespaced_deployment("web", repository.APP_NS).metadata.generation
    try:
        apps_dc.patch_namespaced_deployment_status(
            "web", repository.APP_NS, {"status": {"observedGeneration": generation}}
        )
        step.say("kube-system:deployment-controller: status write of shop/web  → allowed")
    except k8s.ApiException as exc:
        step.expect(False, f"deployment-controller's status write refused: HTTP {exc.status}")
    hpa = k8s.AppsV1Api(d.stack.client("horizontal-pod-autoscaler"))
    try:
        hpa.patch_namespaced_deployment_scale("web", repository.APP_NS, {"spec": {"replicas": 1}})
        step.say("kube-system:horizontal-pod-autoscaler: scale of shop/web  → allowed")
    except k8s.ApiException as exc:
        message = json.loads(exc.body or "{}").get("message", "")
        step.expect(False, f"the HPA's scale refused: HTTP {exc.status} {message[:80]}")


STEPS: tuple[tuple[str, str, Callable[[context.Demo, report.Step], str]], ...] = (
    (
        "a signed commit is applied",
        "namespaces, a Deployment, ConfigMaps and a SealedSecret sealed against the served"
        " certificate, in one commit signed with alice's SSH key",
        signed_commit_applied,
    ),
    (
        "a person's kubectl scale and edit are denied",
        "alice (RBAC allows her everything on Deployments) scales and edits the managed Deployment",
        human_edits_denied,
    ),
    (
        "a break-glass edit is allowed, warned, reverted",
        "oncall, in the break-glass group, edits the Deployment; GitWarden must take it back within"
        " seconds and record who changed it",
        break_glass_reverted,
    ),
    (
        "an unsigned commit is refused, a signed fix applied",
        "an unsigned commit reaches main; then main is reset and the change made again, signed",
        unsigned_commit_refused,
    ),
    (
        "a policies/ change needs two admins",
        "a change under policies/ signed by one policy admin, then merged by a second",
        policy_change_needs_two_admins,
    ),
    (
        "a file removed from Git is pruned",
        "a file leaves Git; an object nobody labelled stays",
        removed_file_pruned,
    ),
    (
        "OPA down: fail closed for people, open for controllers",
        "OPA is stopped; a person, two controllers' identities and GitOps each make a change",
        opa_down_fails_closed,
    ),
)


def run_all(d: context.Demo, out: report.Report) -> None:
    for number, (title, what, body) in enumerate(STEPS, start=1):
        out.run(number, title, what, lambda step, body=body: body(d, step))  # type: ignore[misc]
