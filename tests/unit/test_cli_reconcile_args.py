"""`gitwarden reconcile` arguments that need no cluster: help, the loop's arguments, bad config."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest

from gitwarden_cli import main
from reconciler import configdoc


def test_help_includes_the_generated_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main.main(["reconcile", "--help"])
    assert caught.value.code == 0
    assert configdoc.help_text() in capsys.readouterr().out


def test_help_says_it_runs_until_stopped_and_lists_both_modes_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main.main(["reconcile", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Without --once it runs until stopped" in out
    assert "without --once: 0 stopped by SIGTERM/SIGINT, 1 could not start or lost the Lease" in out
    assert "with --once: 0 applied (or dry run), 1 refused or failed" in out


def test_the_loop_refuses_a_dry_run_and_a_missing_config_without_a_traceback(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "x.yaml")
    assert main.main(["reconcile", "--config", missing, "--dry-run"]) == main.EXIT_USAGE
    assert "--dry-run needs --once" in capsys.readouterr().err
    assert main.main(["reconcile", "--config", missing]) == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "x.yaml: cannot read" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source: {url: x}\ntrust: {anchor: nope}\n", "trust.anchor: must be a full commit id"),
        ("source: {url: x}\n", r"trust.anchor: missing"),
        (
            f"source: {{url: x}}\ntrust: {{anchor: {'a' * 40}, allowed_signers: missing}}\n",
            "missing: cannot read",
        ),
    ],
)
def test_configuration_problems_exit_2_without_a_traceback(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "gitwarden.yaml"
    path.write_text(text)
    assert main.main(["reconcile", "--config", str(path), "--once"]) == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_no_cluster_credentials_is_a_configuration_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "allowed_signers").write_text("")
    path = tmp_path / "gitwarden.yaml"
    path.write_text(
        f"source: {{url: x}}\ntrust: {{anchor: {'a' * 40}, allowed_signers: allowed_signers}}\n"
    )
    assert main.main(["reconcile", "--config", str(path), "--once"]) == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot load cluster credentials from in-cluster service account" in err
    assert "Traceback" not in err


def test_building_the_parser_does_not_import_prometheus_client() -> None:
    """`gitwarden webhook serve` sets prometheus_client's multiprocess directory first."""
    probe = (
        "import sys; from gitwarden_cli import main; main.build_parser();"
        " print('prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def test_the_loop_exits_1_naming_a_port_that_is_taken(tmp_path: pathlib.Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    (tmp_path / "allowed_signers").write_text("")
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    path = tmp_path / "gitwarden.yaml"
    path.write_text(
        f"source: {{url: x, cache_dir: {tmp_path / 'cache'}}}\n"
        f"trust: {{anchor: {'a' * 40}, allowed_signers: allowed_signers}}\n"
        "identity: {kubeconfig: kubeconfig}\n"
        f"server: {{listen: '127.0.0.1:{port}'}}\n"
        "keys: {serve: false}\nlog: {format: text}\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gitwarden_cli.main", "reconcile", "--config", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        taken.close()
    assert done.returncode == main.EXIT_FAILED, done.stderr
    assert "cannot listen: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
