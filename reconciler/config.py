"""`ReconcilerConfig`: every setting of the reconciler, each documented once, where it is declared.

Owns the frozen settings tree and its loader, built once at the entry point from one YAML file.
Each field's `metadata["help"]` is its only documentation: `gitwarden reconcile --help` and the
README's table are generated from it (`reconciler.configdoc`; a test fails when a field lacks
help). The managed label and the source-path annotation default to exactly what the webhook's
`AdmissionConfig` uses; a test checks that the two components agree without importing each other.

`load` refuses unknown keys, wrong types and bad values with a `ConfigError` naming the file and
the key (`source.url`); relative file paths are resolved against the configuration file's
directory. Must not read anything but the one file, nor the environment.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler import controlconfig, errors, yamlstrict

MANAGED_LABEL_KEY = "gitwarden.dev/managed"
MANAGED_LABEL_VALUE = "true"
SOURCE_PATH_ANNOTATION = "gitwarden.dev/source-path"
FIELD_MANAGER = "gitwarden"
PROTECTED_KINDS = (
    "Namespace",
    "CustomResourceDefinition.apiextensions.k8s.io",
    "PersistentVolumeClaim",
)

_HEX40 = re.compile(r"[0-9a-f]{40}")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")
_BAD_REF = re.compile(r"(^[-/.])|(\.\.)|([\x00-\x20~^:?*\[\\\x7f])|(@\{)|(//)|([/.]$)|(\.lock$)")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


class ConfigError(errors.Stalled):
    """The configuration file is missing, unreadable or wrong; names the file and the key."""


@dataclass(frozen=True)
class SourceConfig:
    """Where the desired state lives in Git."""

    url: str = field(
        metadata=_help(
            "Repository: https://, ssh:// (or scp-style user@host:path), file:// or a local path"
            " (relative to this file)."
        )
    )
    branch: str = field(
        default="main",
        metadata=_help("The protected branch to follow (resolved as `refs/heads/<branch>`)."),
    )
    paths: tuple[str, ...] = field(
        default=(".",),
        metadata=_help(
            "Directories or files in the repository to load manifests from, relative to its"
            " root; `.` is the whole repository. Must not overlap."
        ),
    )
    username_file: Path | None = field(
        default=None, metadata=_help("File holding the HTTPS username (with password_file).")
    )
    password_file: Path | None = field(
        default=None, metadata=_help("File holding the HTTPS password or token; never logged.")
    )
    identity_file: Path | None = field(
        default=None, metadata=_help("SSH private key file for ssh:// sources.")
    )
    known_hosts: Path | None = field(
        default=None,
        metadata=_help("known_hosts file for ssh:// sources; host keys are always checked."),
    )
    ca_bundle: Path | None = field(
        default=None,
        metadata=_help("PEM CA bundle for https:// sources; default: the system CAs."),
    )
    cache_dir: Path = field(
        default=Path("/var/cache/gitwarden"),
        metadata=_help("Where fetched repositories are kept between passes."),
    )


@dataclass(frozen=True)
class TrustConfig:
    """Who may change the cluster through Git."""

    anchor: str = field(
        metadata=_help(
            "The trust anchor: full 40-hex id of the commit signing is enforced from. Every"
            " commit in (anchor, tip] is verified at start; the anchor itself is trusted as is."
        )
    )
    allowed_signers: Path | None = field(
        default=None,
        metadata=_help("SSH allowed_signers file (git's gpg.ssh.allowedSignersFile format)."),
    )
    openpgp_keys: Path | None = field(
        default=None, metadata=_help("Directory of ASCII-armored OpenPGP public keys (*.asc).")
    )
    commit_policy_dir: Path | None = field(
        default=None,
        metadata=_help("Directory holding the commit policy (policies/commits); with data."),
    )
    commit_policy_data: Path | None = field(
        default=None, metadata=_help("JSON data for the commit policy (a `commits` object).")
    )
    opa: Path | None = field(
        default=None, metadata=_help("The opa binary for the commit policy; default: opa on PATH.")
    )


@dataclass(frozen=True)
class ApplyConfig:
    """How the desired state is written to the cluster."""

    field_manager: str = field(
        default=FIELD_MANAGER, metadata=_help("Server-side apply field manager.")
    )
    prune: bool = field(
        default=True,
        metadata=_help("Delete managed objects that left Git (only those in the last inventory)."),
    )
    allow_prune_to_empty: bool = field(
        default=False,
        metadata=_help(
            "Allow a revision that renders zero objects (or a path that renders none) to be"
            " applied, deleting what GitWarden applied before."
        ),
    )
    protected_kinds: tuple[str, ...] = field(
        default=PROTECTED_KINDS,
        metadata=_help(
            "Kinds (Kind or Kind.group) never pruned unless the object, as last applied from"
            " Git, is annotated gitwarden.dev/prune: allow."
        ),
    )
    default_namespace: str | None = field(
        default=None,
        metadata=_help(
            "Namespace for namespaced objects that name none; unset: such an object is refused."
        ),
    )
    managed_label_key: str = field(
        default=MANAGED_LABEL_KEY,
        metadata=_help("Label stamped on every applied object; must match the webhook's."),
    )
    managed_label_value: str = field(
        default=MANAGED_LABEL_VALUE, metadata=_help("Value of the managed label.")
    )
    source_path_annotation: str = field(
        default=SOURCE_PATH_ANNOTATION,
        metadata=_help("Annotation stamped with the object's file in Git; denials name it."),
    )
    concurrency: int = field(
        default=8, metadata=_help("Objects applied in parallel inside one stage (1-64).")
    )
    qps: float = field(
        default=100.0,
        metadata=_help(
            "Client-side rate limit: API requests per second (0: none; requests in flight are"
            " also bounded by concurrency)."
        ),
    )
    burst: int = field(
        default=300, metadata=_help("Client-side rate limit: requests allowed in a burst.")
    )
    request_timeout: float = field(
        default=30.0, metadata=_help("Seconds one API request may take.")
    )


@dataclass(frozen=True)
class IdentityConfig:
    """Who the reconciler is in the cluster and where its own objects live."""

    namespace: str = field(
        default="gitwarden",
        metadata=_help("GitWarden's namespace (sealing keys, the GitOps service account)."),
    )
    kubeconfig: Path | None = field(
        default=None,
        metadata=_help("Kubeconfig file; unset: the pod's service account (in-cluster)."),
    )
    name: str = field(
        default="gitwarden",
        metadata=_help("Name of the cluster-scoped Sync status object, the ApplySet's parent."),
    )


@dataclass(frozen=True)
class ReconcilerConfig:
    """The whole reconciler configuration (one YAML file)."""

    source: SourceConfig
    trust: TrustConfig
    apply: ApplyConfig = field(default_factory=ApplyConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    # The long-running process only (`gitwarden reconcile` without --once).
    loop: controlconfig.LoopConfig = field(default_factory=controlconfig.LoopConfig)
    guard: controlconfig.GuardConfig = field(default_factory=controlconfig.GuardConfig)
    leader: controlconfig.LeaderConfig = field(default_factory=controlconfig.LeaderConfig)
    server: controlconfig.ServerConfig = field(default_factory=controlconfig.ServerConfig)
    push: controlconfig.PushConfig = field(default_factory=controlconfig.PushConfig)
    keys: controlconfig.KeysConfig = field(default_factory=controlconfig.KeysConfig)
    log: controlconfig.LogConfig = field(default_factory=controlconfig.LogConfig)


SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("source", SourceConfig),
    ("trust", TrustConfig),
    ("apply", ApplyConfig),
    ("identity", IdentityConfig),
    *controlconfig.SECTIONS,
)


def load(path: Path) -> ReconcilerConfig:
    """Read and check the YAML file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=yamlstrict.Loader)  # noqa: S506  # a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{path}: {where}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    return from_document(document, path)


def from_document(document: object, origin: Path) -> ReconcilerConfig:
    """Build and check the configuration from a parsed document read from `origin`."""
    reader = _Reader(origin)
    top = reader.mapping(document, "")
    reader.no_unknown(top, "", {name for name, _ in SECTIONS})
    built = {name: reader.section(top.get(name), name, cls) for name, cls in SECTIONS}
    config = ReconcilerConfig(**built)
    _check(config, reader)
    return dataclasses.replace(config, source=_normalized(config.source, reader))


class _Reader:
    """Turns one parsed document into dataclasses, failing with the file and the key."""

    def __init__(self, origin: Path) -> None:
        self.origin = origin
        self.base = origin.parent.resolve()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(
            f"{self.origin}: {key}: {problem}" if key else f"{self.origin}: {problem}"
        )

    def mapping(self, value: object, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, not {_type_name(value)}")
        return value

    def no_unknown(self, given: Mapping[str, Any], key: str, known: set[str]) -> None:
        for name in given:
            if name not in known:
                full = f"{key}.{name}" if key else str(name)
                raise self.fail(full, f"unknown key (known: {', '.join(sorted(known))})")

    def section(self, value: object, key: str, cls: type[Any]) -> Any:
        given = self.mapping(value, key)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        self.no_unknown(given, key, set(fields))
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, spec in fields.items():
            full = f"{key}.{name}"
            if name not in given:
                if (
                    spec.default is dataclasses.MISSING
                    and spec.default_factory is dataclasses.MISSING
                ):
                    raise self.fail(full, "missing (required)")
                continue
            kwargs[name] = self.value(given[name], full, hints[name])
        return cls(**kwargs)

    def value(self, raw: object, key: str, hint: Any) -> Any:
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            if raw is None:
                return None
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        if hint is Path:
            return self._path(raw, key)
        if typing.get_origin(hint) is tuple:
            if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
                raise self.fail(key, "must be a list of non-empty strings")
            return tuple(raw)
        accepts, wanted = _SCALARS[hint]
        if not accepts(raw):
            raise self.fail(key, f"must be {wanted}, not {_type_name(raw)}")
        return float(raw) if hint is float else raw  # type: ignore[arg-type]  # checked above

    def _path(self, raw: object, key: str) -> Path:
        if not isinstance(raw, str) or not raw:
            raise self.fail(key, f"must be a path (a non-empty string), not {_type_name(raw)}")
        path = Path(raw).expanduser()
        return path if path.is_absolute() else self.base / path


# YAML's booleans are ints in Python: neither number type accepts them.
_SCALARS: dict[Any, tuple[typing.Callable[[object], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
}


def _type_name(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "empty"
    return names.get(type(value), f"a {type(value).__name__}")


def _check(config: ReconcilerConfig, reader: _Reader) -> None:
    """Rules across fields and on values; each failure names the key."""
    _check_git(config.source, config.trust, reader)
    _check_cluster(config.apply, config.identity, reader)
    controlconfig.check(
        loop=config.loop,
        leader=config.leader,
        server=config.server,
        push=config.push,
        keys=config.keys,
        log=config.log,
        fail=reader.fail,
    )


def _check_git(source: SourceConfig, trust: TrustConfig, reader: _Reader) -> None:
    if _BAD_REF.search(source.branch):
        raise reader.fail("source.branch", f"{source.branch!r} is not a valid branch name")
    if (source.username_file is None) != (source.password_file is None):
        raise reader.fail("source.username_file", "username_file and password_file go together")
    if not _HEX40.fullmatch(trust.anchor):
        raise reader.fail("trust.anchor", "must be a full commit id (40 lowercase hex characters)")
    if trust.allowed_signers is None and trust.openpgp_keys is None:
        raise reader.fail(
            "trust", "set allowed_signers and/or openpgp_keys: otherwise nothing is trusted"
        )
    if (trust.commit_policy_dir is None) != (trust.commit_policy_data is None):
        raise reader.fail(
            "trust.commit_policy_dir", "commit_policy_dir and commit_policy_data go together"
        )


def _check_cluster(apply: ApplyConfig, identity: IdentityConfig, reader: _Reader) -> None:
    if apply.default_namespace is not None and not _DNS_LABEL.fullmatch(apply.default_namespace):
        raise reader.fail("apply.default_namespace", "must be a namespace name (DNS-1123 label)")
    if not _label_key(apply.managed_label_key):
        raise reader.fail("apply.managed_label_key", "must be a label key ([prefix/]name)")
    if not _label_key(apply.source_path_annotation):
        raise reader.fail("apply.source_path_annotation", "must be an annotation key")
    if not 1 <= apply.concurrency <= 64:
        raise reader.fail("apply.concurrency", "must be between 1 and 64")
    if apply.qps < 0:
        raise reader.fail("apply.qps", "must not be negative (0 turns the limit off)")
    if apply.burst < 1 or apply.request_timeout <= 0:
        key = "apply.burst" if apply.burst < 1 else "apply.request_timeout"
        raise reader.fail(key, "must be positive")
    if not _DNS_LABEL.fullmatch(identity.namespace):
        raise reader.fail("identity.namespace", "must be a namespace name (DNS-1123 label)")
    if not _DNS_SUBDOMAIN.fullmatch(identity.name):
        raise reader.fail("identity.name", "must be an object name (DNS-1123 subdomain)")


def _normalized(source: SourceConfig, reader: _Reader) -> SourceConfig:
    """Paths as `a/b` without overlaps; a local repository path resolved against the file."""
    paths = tuple(_repo_path(p, reader) for p in source.paths)
    for i, one in enumerate(paths):
        for other in paths[i + 1 :]:
            if one == other or _inside(one, other) or _inside(other, one):
                raise reader.fail("source.paths", f"{one!r} and {other!r} overlap")
    url = source.url
    if "://" not in url and ":" not in url.split("/")[0]:
        url = str(reader.base / Path(url).expanduser())
    return dataclasses.replace(source, paths=paths, url=url)


def _repo_path(text: str, reader: _Reader) -> str:
    """A configured repository path as `a/b` ("." for the root); never absolute, never `..`."""
    if text.startswith("/") or "\\" in text:
        raise reader.fail("source.paths", f"{text!r}: must be relative to the repository root")
    parts = [p for p in pathlib.PurePosixPath(text).parts if p != "."]
    if ".." in parts:
        raise reader.fail("source.paths", f"{text!r}: must not contain '..'")
    return "/".join(parts) or "."


def _inside(inner: str, outer: str) -> bool:
    return outer == "." or inner.startswith(outer + "/")


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not _DNS_SUBDOMAIN.fullmatch(prefix):
        return False
    return bool(_LABEL_NAME.fullmatch(name))
