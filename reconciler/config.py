"""`ReconcilerConfig`: every setting of the reconciler, each documented once, where it is declared.

Owns the frozen settings tree built once at the entry point from one YAML file. Each field's
`metadata["help"]` is its only documentation: `gitwarden reconcile --help` and the README's
table are generated from it (a test fails when a field lacks help). The managed label and the
source-path annotation default to exactly what the webhook's `AdmissionConfig` uses; a test
checks that the two components agree without importing each other.

The loader (`load`, `from_document`) is filled in by the engine work: unknown keys and wrong
types are errors naming the key; paths are resolved relative to the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MANAGED_LABEL_KEY = "gitwarden.dev/managed"
MANAGED_LABEL_VALUE = "true"
SOURCE_PATH_ANNOTATION = "gitwarden.dev/source-path"
FIELD_MANAGER = "gitwarden"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SourceConfig:
    """Where the desired state lives in Git."""

    url: str = field(
        metadata=_help("Repository: https://, ssh:// (or scp-style), file:// or a local path.")
    )
    branch: str = field(
        default="main",
        metadata=_help("The protected branch to follow (resolved as refs/heads/<branch>)."),
    )
    paths: tuple[str, ...] = field(
        default=(".",),
        metadata=_help(
            "Directories (or files) in the repository to load manifests from, relative to its root."
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
        metadata=_help(
            "known_hosts file for ssh:// sources; host keys are always checked strictly."
        ),
    )
    ca_bundle: Path | None = field(
        default=None,
        metadata=_help(
            "PEM CA bundle for https:// sources (a private Git server); default: the system CAs."
        ),
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
            "The trust anchor: full 40-hex id of the commit signing is enforced from. Every commit in (anchor, tip] is verified at start."
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
        default=None, metadata=_help("Directory holding the commit policy (policies/commits).")
    )
    commit_policy_data: Path | None = field(
        default=None, metadata=_help("JSON data for the commit policy (commits.settings).")
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
        metadata=_help(
            "Delete managed objects that left Git (only those in the previous inventory)."
        ),
    )
    allow_prune_to_empty: bool = field(
        default=False,
        metadata=_help(
            "Allow a revision that renders zero objects to delete everything GitWarden applied."
        ),
    )
    protected_kinds: tuple[str, ...] = field(
        default=(
            "Namespace",
            "CustomResourceDefinition.apiextensions.k8s.io",
            "PersistentVolumeClaim",
        ),
        metadata=_help(
            "Kinds (Kind or Kind.group) never pruned unless the object is annotated gitwarden.dev/prune: allow."
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
        metadata=_help(
            "Label stamped on every applied object; must match the webhook's managed label."
        ),
    )
    managed_label_value: str = field(
        default=MANAGED_LABEL_VALUE, metadata=_help("Value of the managed label.")
    )
    source_path_annotation: str = field(
        default=SOURCE_PATH_ANNOTATION,
        metadata=_help(
            "Annotation stamped with the object's file in Git; the webhook's denials name it."
        ),
    )
    concurrency: int = field(
        default=8, metadata=_help("Objects applied in parallel inside one stage.")
    )
    qps: float = field(
        default=100.0,
        metadata=_help(
            "Client-side rate limit: API requests per second (0: none; in-flight requests are also bounded by concurrency)."
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
        metadata=_help("Name of the cluster-scoped Sync status object and the ApplySet."),
    )


@dataclass(frozen=True)
class ReconcilerConfig:
    """The whole reconciler configuration (one YAML file)."""

    source: SourceConfig
    trust: TrustConfig
    apply: ApplyConfig = field(default_factory=ApplyConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
