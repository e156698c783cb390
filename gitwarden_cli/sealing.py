"""`gitwarden keys new`, `seal`, `unseal` and `reseal`: SealedSecrets from the command line.

Owns argument parsing, reading stdin and files, and writing stdout for the sealing commands; the
format and the rules live in `reconciler.sealed`. Must never print ciphertext or plaintext in a
message: parse errors of inputs that may hold secrets are reported without the library's text.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from gitwarden_cli import main
from reconciler import errors, kube_client, manifests
from reconciler.sealed import keys, objects, wire
from reconciler.services import certserver, keyservice


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the four sealing commands."""
    keys_parser = subparsers.add_parser("keys", help="manage sealing keys")
    keys_sub = keys_parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    serve = keys_sub.add_parser(
        "serve",
        help="keep a current sealing key in the cluster and serve /v1/cert.pem",
        description=(
            "Make a sealing key when none exists or the newest is --renew-days old (old keys "
            "are kept for decryption), stored as the sealed-secrets controller stores them, and "
            "serve the newest certificate at /v1/cert.pem. Run one replica."
        ),
    )
    serve.add_argument("--namespace", default="gitwarden", help="where the key Secrets live")
    serve.add_argument("--kubeconfig", type=Path, help="default: in-cluster credentials")
    serve.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT (default 0.0.0.0:8080)")
    serve.add_argument(
        "--renew-days",
        type=float,
        default=keys.DEFAULT_RENEW_PERIOD.days,
        help="make a new key this often; 0 turns renewal off (default 30)",
    )
    serve.add_argument(
        "--check-every",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how often to look at the keys (default 3600)",
    )
    serve.set_defaults(func=_keys_serve)

    new = keys_sub.add_parser("new", help="make a key pair: DIR/tls.key and DIR/tls.crt")
    new.add_argument("--out", required=True, type=Path, metavar="DIR")
    new.add_argument("--bits", type=int, default=keys.DEFAULT_KEY_BITS)
    new.add_argument("--common-name", default="", help="certificate subject CN (default none)")
    new.add_argument("--days", type=int, default=keys.DEFAULT_CERT_TTL.days, help="validity")
    new.set_defaults(func=_keys_new)

    seal = subparsers.add_parser(
        "seal", help="seal a Secret (stdin, YAML or JSON) into a SealedSecret (stdout)"
    )
    seal.add_argument("--cert", required=True, type=Path, help="PEM certificate to seal for")
    seal.add_argument("--scope", choices=[s.value for s in wire.Scope], default=None)
    seal.add_argument("--raw", action="store_true", help="seal one value from stdin, like kubeseal")
    seal.add_argument("--namespace", "-n", default="", help="with --raw: the namespace")
    seal.add_argument("--name", default="", help="with --raw: the SealedSecret's name")
    _add_format(seal)
    seal.set_defaults(func=_seal)

    unseal = subparsers.add_parser(
        "unseal", help="open a SealedSecret (stdin) into a Secret (stdout) with private keys"
    )
    _add_keys(unseal)
    _add_format(unseal)
    unseal.set_defaults(func=_unseal)

    reseal = subparsers.add_parser(
        "reseal", help="re-encrypt a SealedSecret (stdin) for the newest certificate (stdout)"
    )
    _add_keys(reseal)
    reseal.add_argument("--cert", required=True, type=Path, help="the newest certificate")
    _add_format(reseal)
    reseal.set_defaults(func=_reseal)


def _add_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        action="append",
        required=True,
        type=Path,
        help="PEM private key, or a key Secret / List backup holding tls.key (repeatable)",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", "-o", choices=["yaml", "json"], default="yaml")


def _keys_serve(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise main.UsageError("--listen must be HOST:PORT")
    if args.renew_days < 0 or args.check_every <= 0:
        raise main.UsageError("--renew-days must be >= 0 and --check-every > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = keyservice.Settings(
        namespace=args.namespace,
        listen=certserver.Settings(host=host, port=int(port)),
        check_every=args.check_every,
        policy=keys.KeyPolicy(renew_period=dt.timedelta(days=args.renew_days)),
    )
    try:
        api = kube_client.api_client(args.kubeconfig)
    except kube_client.ConfigError as exc:
        raise main.UsageError(str(exc)) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        keyservice.KeyService(api, settings).run(stop)
    except OSError as exc:  # the port cannot be bound
        raise main.UsageError(f"--listen {args.listen}: {exc.strerror}") from exc
    return main.EXIT_OK


def _keys_new(args: argparse.Namespace) -> int:
    out: Path = args.out
    targets = (out / "tls.key", out / "tls.crt")
    if any(path.exists() for path in targets):
        raise main.UsageError(f"{out} already holds tls.key or tls.crt; refusing to overwrite")
    policy = keys.KeyPolicy(
        bits=args.bits, common_name=args.common_name, cert_ttl=dt.timedelta(days=args.days)
    )
    key = keys.generate(keys.SystemClock().now(), policy)
    out.mkdir(parents=True, exist_ok=True)
    targets[0].touch(mode=0o600)
    targets[0].write_bytes(key.private_key_pem())
    targets[1].write_bytes(key.certificate_pem())
    print(f"wrote {targets[0]} and {targets[1]} (fingerprint {key.fingerprint})", file=sys.stderr)
    return main.EXIT_OK


def _seal(args: argparse.Namespace) -> int:
    now = keys.SystemClock().now()
    scope = wire.Scope(args.scope) if args.scope else None
    try:
        certificate = keys.load_certificate(_read(args.cert), str(args.cert))
        if args.raw:
            text = objects.seal_raw(
                sys.stdin.buffer.read(),
                certificate,
                now,
                scope or wire.Scope.STRICT,
                namespace=args.namespace,
                name=args.name,
            )
            sys.stdout.write(text)  # no newline, as kubeseal --raw
            return main.EXIT_OK
        sealed = [objects.seal(doc, certificate, now, scope) for doc in _documents("Secret")]
    except errors.ReconcileError as exc:
        return _failed("seal", exc)
    _write(sealed, args.format)
    return main.EXIT_OK


def _unseal(args: argparse.Namespace) -> int:
    try:
        chooser = objects.KeyChooser(_ring(args.key), manifests.KeyHints())
        opened = [objects.unseal(doc, chooser) for doc in _documents("SealedSecret")]
    except errors.ReconcileError as exc:
        return _failed("unseal", exc)
    _write([secret.body_for_apply() for secret in opened], args.format)
    return main.EXIT_OK


def _reseal(args: argparse.Namespace) -> int:
    now = keys.SystemClock().now()
    try:
        certificate = keys.load_certificate(_read(args.cert), str(args.cert))
        chooser = objects.KeyChooser(_ring(args.key), manifests.KeyHints())
        resealed = [
            objects.reseal(doc, chooser, certificate, now) for doc in _documents("SealedSecret")
        ]
    except errors.ReconcileError as exc:
        return _failed("reseal", exc)
    _write(resealed, args.format)
    return main.EXIT_OK


def _failed(command: str, exc: errors.ReconcileError) -> int:
    # Our errors carry names and reasons only; the chained library error is not printed.
    print(f"gitwarden {command}: {exc}", file=sys.stderr)
    return main.EXIT_FAILED


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise main.UsageError(f"cannot read {path}: {exc.strerror}") from None


def _load_yaml(text: bytes) -> list[Any] | None:
    try:
        return [doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc is not None]
    except yaml.YAMLError:
        return None


def _documents(kind: str) -> list[Mapping[str, Any]]:
    """The objects on stdin; YAML error text is not shown, since it quotes the input."""
    docs = _load_yaml(sys.stdin.buffer.read())
    if docs is None:
        raise main.UsageError(f"stdin is not valid YAML or JSON (expected a {kind})")
    if not docs or not all(isinstance(doc, Mapping) for doc in docs):
        raise main.UsageError(f"stdin holds no {kind} object")
    return docs


def _ring(paths: Iterable[Path]) -> keys.KeyRing:
    """Keys from PEM files or key Secret backups (a Secret or a v1 List of them)."""
    now = keys.SystemClock().now()
    found: list[keys.SealingKey] = []
    for path in paths:
        content = _read(path)
        if content.lstrip().startswith(b"-----BEGIN"):
            private_key = keys.load_private_key(content, str(path))
            # A bare private key has no certificate; one is made up to give it a place in the
            # ring. It is used only to decrypt here, never to seal.
            found.append(keys.certify(private_key, now, keys.KeyPolicy()))
            continue
        docs = _load_yaml(content)
        if docs is None:
            raise main.UsageError(f"{path}: neither a PEM key nor a YAML/JSON key Secret")
        for doc in docs:
            items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
            found.extend(_key_from_secret(item, str(path)) for item in items)
    return keys.KeyRing.of(found)


def _key_from_secret(secret: Mapping[str, Any], source: str) -> keys.SealingKey:
    data = secret.get("data") or {}
    try:
        tls_key = base64.b64decode(data["tls.key"], validate=True)
        tls_crt = base64.b64decode(data.get("tls.crt", ""), validate=True)
    except (KeyError, TypeError, AttributeError, binascii.Error, ValueError):
        tls_key = tls_crt = b""
    if not tls_key:
        raise keys.KeyMaterialError(f"{source}: a key Secret without a readable data.tls.key")
    if not tls_crt:
        now = keys.SystemClock().now()
        return keys.certify(keys.load_private_key(tls_key, source), now, keys.KeyPolicy())
    return keys.from_pem(tls_key, tls_crt, source)


def _write(docs: list[Any], output_format: str) -> None:
    if output_format == "json":
        for doc in docs:
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    sys.stdout.write(yaml.dump_all(docs, Dumper=yaml.CSafeDumper, sort_keys=False, width=1 << 20))
