"""`python -m demo [--keep]` runs the demo; `python -m demo stop` stops a kept one.

Owns the run's order (set-up, the seven steps, the summary, teardown, the final check that no
process or port is left) and its exit code: 0 only when every step passed and nothing was left
behind. Ctrl-C and SIGTERM unwind through the same teardown. With `--keep` the demo runs in a
supervisor process of its own session, so everything stays up after `make` returns; the
supervisor holds the children (they die with it) and tears them down on `python -m demo stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import TextIO

from demo import context, driver, procs, report, repository, stack, steps
from tests.harness import controlplane

STATE_DIR = controlplane.REPO_ROOT / ".demo"
STATE_FILE = STATE_DIR / "state.json"
SUPERVISOR_LOG = STATE_DIR / "supervisor.log"
READY = "@@gitwarden-demo-ready@@"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _interrupt(signum: int, frame: types.FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the ExitStack stops every process it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("action", nargs="?", choices=["run", "stop"], default="run")
    parser.add_argument("--keep", action="store_true", help="keep everything running afterwards")
    parser.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.action == "stop":
        return stop()
    if args.keep and not args.supervise:
        return _launch_supervisor()
    signal.signal(signal.SIGTERM, _interrupt)
    return run(sys.stdout, keep=args.supervise)


class _TimedExitStack(contextlib.ExitStack):
    """An ExitStack that notes when it began unwinding (the teardown's start, however reached)."""

    unwound_at: float | None = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> bool:
        self.unwound_at = time.monotonic()
        return bool(super().__exit__(exc_type, exc, tb))


def run(out: TextIO, *, keep: bool) -> int:
    """Set up, run the steps, tear down, check nothing is left; the exit code."""
    procs.become_subreaper()
    out_report = report.Report(out)
    workdir = Path(tempfile.mkdtemp(prefix="gitwarden-demo-"))
    ports: list[int] = []
    setup: list[tuple[str, bool, float, str]] = []
    interrupted = False
    started = time.monotonic()
    exits = _TimedExitStack()
    try:
        with exits:
            exits.callback(shutil.rmtree, workdir, ignore_errors=True)
            demo, setup_ok = _set_up(exits, workdir, out_report, ports)
            setup.append(("setup", setup_ok, time.monotonic() - started, ""))
            if demo is not None:
                steps.run_all(demo, out_report)
            if keep:
                out_report.summary(setup, [])
                _keep(demo, out_report, all(s.passed for s in out_report.steps) and setup_ok)
            out_report.line()
            out_report.line("tearing down (every process this demo started)")
    except KeyboardInterrupt:
        interrupted = True
        out_report.line("\ninterrupted: everything this demo started was stopped")
    left, still = procs.leftovers(ports)
    clean = not left and not still
    if not clean:
        procs.kill_descendants()
    note = "" if clean else f"left: {[p.cmdline[:60] for p in left]} ports {still}"
    took = time.monotonic() - (exits.unwound_at or time.monotonic())
    after = [("teardown: no process or port left", clean, took, note)]
    with contextlib.suppress(OSError):
        if keep:
            STATE_FILE.unlink()
    passed = out_report.summary(setup, after) and bool(out_report.steps) and not interrupted
    out_report.line(f"total {time.monotonic() - started:.0f} s")
    out_report.line("demo: every step behaved" if passed else "demo: FAILED (see above)")
    return EXIT_OK if passed else EXIT_FAILED


def _set_up(
    exits: contextlib.ExitStack, workdir: Path, out: report.Report, ports: list[int]
) -> tuple[context.Demo | None, bool]:
    """Start the stack and the reconciler; (None, False) with the reason printed on failure."""
    out.line("[setup] a local cluster, OPA, the webhook and the reconciler on 127.0.0.1")
    say = report.Step(0, "setup", out.out).say
    try:
        running = stack.start(exits, workdir, (workdir / "repo").as_uri(), say)
        ports.extend(running.ports)
        repo = repository.create(workdir, running.keys)
        reconciler_ports = {p: controlplane.free_port() for p in ("keys", "server", "push")}
        ports.extend(reconciler_ports.values())
        config = repository.write_config(
            workdir / "reconciler.yaml", repo, running, reconciler_ports
        )
        reconciler = driver.build(running, config, reconciler_ports)
        exits.callback(reconciler.stop)
        say(f"reconciler: {reconciler.description}")
        reconciler.start()
    except (RuntimeError, OSError, controlplane.MissingTool, controlplane.StartError) as exc:
        out.line(f"      FAIL  setup: {exc}")
        return None, False
    say(f"GitOps repository {repo.path} (trust anchor {repo.anchor[:12]}, signed by alice)")
    return context.Demo(running, repo, reconciler), True


def _keep(demo: context.Demo | None, out: report.Report, passed: bool) -> None:
    """Print how to use and stop the running demo, signal the launcher, wait for SIGTERM."""
    if demo is None:
        return
    running = demo.stack
    kubeconfig = stack.combined_kubeconfig(running, running.workdir / "demo.kubeconfig")
    pids = {**running.process_ids(), **demo.reconciler.process_ids()}
    STATE_DIR.mkdir(exist_ok=True)
    STATE_FILE.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "workdir": str(running.workdir),
                "kubeconfig": str(kubeconfig),
                "pids": pids,
            }
        )
    )
    out.line()
    out.line("The demo keeps running (KEEP=1). In another shell:")
    out.line(f"  export DEMO={running.workdir}")
    out.line("  export KUBECONFIG=$DEMO/demo.kubeconfig   # contexts: admin, alice, oncall, gitops")
    out.line(f"  export WEBHOOK={running.webhook.url}")
    out.line(f"  export SEALING_CERT={demo.reconciler.certificate_url()}")
    out.line("  kubectl get syncs")
    out.line("  kubectl --context alice -n shop scale deployment/web --replicas=3    # denied")
    out.line("  kubectl --context oncall -n shop scale deployment/web --replicas=3   # break-glass")
    out.line("  .venv/bin/gitwarden status --name demo")
    out.line("  .venv/bin/gitwarden reconcile --config $DEMO/reconciler.yaml --once")
    out.line("  git -C $DEMO/repo log --oneline      # the demo repository")
    out.line("Stop it with:  make demo-stop   (or: .venv/bin/python -m demo stop)")
    out.line(f"  by hand: kill -TERM {os.getpid()}   (the supervisor; it stops {pids})")
    out.line(f"{READY} {EXIT_OK if passed else EXIT_FAILED}")
    # The launcher stops reading now: later output goes to a log in the work directory.
    log = os.open(SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    threading.Event().wait()  # until SIGTERM raises KeyboardInterrupt


def _launch_supervisor() -> int:
    """Start the kept demo in its own session; relay its output until it is ready."""
    if STATE_FILE.exists() and procs.alive(json.loads(STATE_FILE.read_text()).get("pid", 0)):
        print("a kept demo is already running: `make demo-stop` first", file=sys.stderr)
        return EXIT_USAGE
    child = subprocess.Popen(
        [sys.executable, "-m", "demo", "--keep", "--supervise"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        cwd=controlplane.REPO_ROOT,
    )
    try:
        for line in child.stdout or ():
            if line.startswith(READY):
                return int(line.split()[1])
            print(line, end="", flush=True)
    except KeyboardInterrupt:
        child.terminate()
    return child.wait()


def stop(timeout: float = 60) -> int:
    """SIGTERM the kept demo's supervisor and wait until it has torn everything down."""
    if not STATE_FILE.exists():
        print("no kept demo is running")
        return EXIT_OK
    state = json.loads(STATE_FILE.read_text())
    pid = int(state.get("pid", 0))
    if not procs.alive(pid):
        STATE_FILE.unlink()
        print("no kept demo is running (stale state removed)")
        return EXIT_OK
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while procs.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if procs.alive(pid):
        print(f"the demo (pid {pid}) did not stop within {timeout:.0f} s", file=sys.stderr)
        return EXIT_FAILED
    with contextlib.suppress(OSError):
        STATE_FILE.unlink()
    left = [p for p in state.get("pids", {}).values() if procs.alive(int(p))]
    print(f"stopped the demo (pid {pid})" + (f"; still alive: {left}" if left else ""))
    with contextlib.suppress(OSError):
        # The supervisor's own final check, written after its teardown.
        for line in SUPERVISOR_LOG.read_text().splitlines():
            if line.startswith("teardown:"):
                print(line)
    return EXIT_OK if not left else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
