"""`gitwarden webhook`: serve the admission webhook, or render what installs it.

Composes `webhook.settings`, `webhook.config`, `webhook.registration` and `webhook.serve`;
reads the environment here, at the entry point, and nowhere below.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import yaml

from gitwarden_cli import main as cli
from webhook import config as config_mod
from webhook import registration
from webhook import settings as settings_mod


def _env_help() -> str:
    """The serve command's epilog: every GITWARDEN_WEBHOOK_* setting from `webhook.settings`."""
    lines = ["environment (serve):"]
    for variable, default, help_text in settings_mod.documented():
        lines.append(f"  {variable}  (default: {default})")
        lines += textwrap.wrap(
            help_text,
            width=88,
            initial_indent="      ",
            subsequent_indent="      ",
            break_on_hyphens=False,  # keep "DNS-1123" and "kept-alive" whole
            break_long_words=False,
        )
    return "\n".join(lines) + "\n"


def register(subparsers: Any) -> None:
    """Add `gitwarden webhook ...`."""
    parser = subparsers.add_parser(
        "webhook",
        help="serve the admission webhook or render its configuration",
        description="The admission webhook that lets only GitOps change managed objects.",
    )
    sub = parser.add_subparsers(dest="webhook_command", metavar="ACTION", required=True)

    serve_p = sub.add_parser(
        "serve",
        help="serve /validate over TLS with gunicorn",
        description="Serve the webhook over TLS with gunicorn. Configured by the environment.",
        epilog=_env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_p.set_defaults(func=_serve)

    data_p = sub.add_parser(
        "opa-data",
        help="print the OPA data document for a configuration file",
        description="Print the JSON data document the admission policy reads, for `opa run`.",
    )
    data_p.add_argument("--config", type=Path, required=True, help="admission configuration (YAML)")
    data_p.set_defaults(func=_opa_data)

    vwc_p = sub.add_parser(
        "configuration",
        help="print the ValidatingWebhookConfiguration for a configuration file",
        description="Print the ValidatingWebhookConfiguration (YAML) for the configuration.",
    )
    vwc_p.add_argument("--config", type=Path, required=True, help="admission configuration (YAML)")
    target = vwc_p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="webhook base URL, e.g. https://127.0.0.1:8443")
    target.add_argument("--service", help="NAMESPACE/NAME[:PORT] of the webhook's Service")
    vwc_p.add_argument("--ca-bundle", type=Path, help="PEM CA that signed the serving certificate")
    vwc_p.add_argument("--name", default=registration.NAME, help="object name (default gitwarden)")
    vwc_p.set_defaults(func=_configuration)


def load_config(path: Path) -> config_mod.AdmissionConfig:
    """The admission configuration, or `UsageError` naming what is wrong."""
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        raise cli.UsageError(str(exc)) from exc


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_mod.WebhookSettings.from_env(os.environ)
    except settings_mod.SettingsError as exc:
        raise cli.UsageError(str(exc)) from exc
    if settings.admission_config is not None:
        load_config(settings.admission_config)  # refused here, not in every worker
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="gitwarden-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    # prometheus-client chooses its multiprocess value store when it is first imported, so
    # the directory must be in the environment before `webhook.serve` pulls it in.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before its multiprocess directory was set"
        )
    from webhook import serve  # noqa: PLC0415 - must follow the environment variable above

    try:
        serve.run(dataclasses.replace(settings, metrics_dir=metrics_dir))
    except settings_mod.SettingsError as exc:
        raise cli.UsageError(str(exc)) from exc
    finally:
        if settings.metrics_dir is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return cli.EXIT_OK


def _opa_data(args: argparse.Namespace) -> int:
    sys.stdout.write(config_mod.opa_data_json(load_config(args.config)) + "\n")
    return cli.EXIT_OK


def client_config(url: str | None, service: str | None, ca_bundle: Path | None) -> dict[str, Any]:
    """The webhook's clientConfig from `--url` or `--service` and `--ca-bundle`."""
    client: dict[str, Any]
    if url:
        if not url.startswith("https://"):
            raise cli.UsageError("--url must be https://")
        client = {"url": url}
    else:
        where, _, port = (service or "").partition(":")
        namespace, _, name = where.partition("/")
        if not namespace or not name or (port and not port.isdigit()):
            raise cli.UsageError("--service must be NAMESPACE/NAME[:PORT]")
        client = {"service": {"namespace": namespace, "name": name, "port": int(port or 443)}}
    if ca_bundle:
        try:
            client["caBundle"] = base64.b64encode(ca_bundle.read_bytes()).decode()
        except OSError as exc:
            raise cli.UsageError(f"--ca-bundle: {exc}") from exc
    return client


def _configuration(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    client = client_config(args.url, args.service, args.ca_bundle)
    document = registration.validating_webhook_configuration(config, client, name=args.name)
    sys.stdout.write(yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False))
    return cli.EXIT_OK
