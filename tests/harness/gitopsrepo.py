"""A signed GitOps repository built with the real git, ssh-keygen and gpg, and its config file.

Owns the signers of the end-to-end reconcile tests (SSH keys made by `ssh-keygen`, one OpenPGP
key made by `gpg`), the trust files the reconciler reads (allowed_signers, a directory of armored
OpenPGP keys, commit-policy data with two policy admins and `policies/` protected), a repository
whose commits are signed by a chosen signer or left unsigned, and the `ReconcilerConfig` YAML
pointing at all of it. Everything lives under a temporary directory; the user's git config and
keyrings are never read. Trust files live outside the repository, as in production (a commit
can never trust its own key).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.harness import gitcorpus

POLICY_DIR = pathlib.Path(__file__).resolve().parents[2] / "policies" / "commits"
# name: ssh-keygen type arguments; trusted unless listed in UNTRUSTED.
SSH_SIGNERS = {
    "alice": ["-t", "ed25519"],
    "bob": ["-t", "ecdsa", "-b", "256"],
    "carol": ["-t", "ed25519"],
    "mallory": ["-t", "ed25519"],
}
UNTRUSTED = frozenset({"mallory"})
GPG_SIGNERS = ("gus",)
POLICY_ADMINS = ("alice", "bob")
MANIFESTS = "clusters/test"


def email(name: str) -> str:
    return f"{name}@example.com"


@dataclass(frozen=True)
class Keys:
    """The signers' keys and the trust files made from them, shared by many repositories."""

    root: pathlib.Path
    allowed_signers: pathlib.Path
    openpgp_keys: pathlib.Path
    gnupg_home: pathlib.Path
    policy_data: pathlib.Path
    gpg_fingerprints: Mapping[str, str]

    def env(self) -> dict[str, str]:
        """An environment that isolates git and gpg from the user's configuration."""
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "GNUPGHOME": str(self.gnupg_home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(self.root / "gitconfig"),
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def sign_args(self, signer: str | None) -> list[str]:
        """`git -c ...` arguments that make the next commit signed by `signer` (None: unsigned)."""
        if signer is None:
            return ["-c", "commit.gpgSign=false"]
        if signer in SSH_SIGNERS:
            key = self.root / f"ssh-{signer}"
            return ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key}",
                    "-c", "commit.gpgSign=true"]  # fmt: skip
        fingerprint = self.gpg_fingerprints[signer]
        return ["-c", "gpg.format=openpgp", "-c", f"user.signingKey={fingerprint}!",
                "-c", "commit.gpgSign=true"]  # fmt: skip

    def stop_agents(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env(), capture_output=True,
                       check=False)  # fmt: skip


def _run(args: Sequence[str], env: Mapping[str, str], cwd: pathlib.Path | None = None) -> str:
    done = subprocess.run(list(args), env=dict(env), cwd=cwd, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} {args[1]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


def make_keys(root: pathlib.Path) -> Keys:
    """Generate every signer's key and write the trust files under `root` (about a second)."""
    gitcorpus.require_tools()
    root.mkdir(parents=True, exist_ok=True)
    keys_dir, home = root / "openpgp-keys", root / "gnupg"
    keys_dir.mkdir()
    home.mkdir(mode=0o700)
    (root / "gitconfig").write_text("")
    partial = Keys(root, root / "allowed_signers", keys_dir, home, root / "commits.json", {})
    env = partial.env()
    lines = ["# trusted SSH signers of the test GitOps repository"]
    for name, type_args in SSH_SIGNERS.items():
        key = root / f"ssh-{name}"
        _run(["ssh-keygen", "-q", *type_args, "-N", "", "-C", name, "-f", str(key)], env)
        key_type, blob, *_ = (root / f"ssh-{name}.pub").read_text().split()
        if name not in UNTRUSTED:
            lines.append(f"{email(name)} {key_type} {blob}")
    partial.allowed_signers.write_text("\n".join(lines) + "\n")
    fingerprints: dict[str, str] = {}
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    for name in GPG_SIGNERS:
        uid = f"{name.title()} <{email(name)}>"
        _run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], env)
        listing = _run([*gpg, "--with-colons", "--list-keys", email(name)], env)
        fingerprints[name] = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        armored = _run([*gpg, "--armor", "--export", fingerprints[name]], env)
        (keys_dir / f"{name}.asc").write_text(armored + "\n")
    settings = {
        "policy_admins": [email(n) for n in POLICY_ADMINS],
        "protected_paths": ["policies/"],
        "require_two_signers": True,
    }
    partial.policy_data.write_text(json.dumps({"commits": {"settings": settings}}))
    return Keys(root, partial.allowed_signers, keys_dir, home, partial.policy_data, fingerprints)


@dataclass
class GitOpsRepo:
    """One repository on branch `main`; `anchor` is its first commit, where trust starts."""

    keys: Keys
    path: pathlib.Path
    anchor: str = ""
    commits: dict[str, str] = field(default_factory=dict)

    def git(self, *args: str) -> str:
        return _run(["git", *args], self.keys.env(), cwd=self.path)

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def write(self, relpath: str, documents: Iterable[Mapping[str, Any]] | str) -> None:
        """Write a file: text as is, or objects as one multi-document YAML file."""
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(documents, str):
            target.write_text(documents)
        else:
            target.write_text(yaml.safe_dump_all([dict(d) for d in documents], sort_keys=False))

    def remove(self, relpath: str) -> None:
        self.git("rm", "-q", "-r", "--", relpath)

    def commit(self, name: str, signer: str | None) -> str:
        """Commit everything in the work tree (empty commits allowed) signed by `signer`."""
        self.git("add", "-A")
        self.git(*self.keys.sign_args(signer), "commit", "-q", "--allow-empty", "-m", name)
        self.commits[name] = self.head()
        return self.commits[name]

    def merge(self, branch: str, name: str, signer: str | None) -> str:
        """A --no-ff merge of `branch` into the current branch, signed by `signer`."""
        self.git(*self.keys.sign_args(signer), "merge", "-q", "--no-ff", "-m", name, branch)
        self.commits[name] = self.head()
        return self.commits[name]

    def checkout(self, branch: str, *, new_at: str | None = None) -> None:
        if new_at is None:
            self.git("checkout", "-q", branch)
        else:
            self.git("checkout", "-q", "-b", branch, new_at)

    def reset(self, rev: str) -> None:
        """Move the current branch to `rev` (a force-push, as the server would see it)."""
        self.git("reset", "-q", "--hard", rev)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def create(root: pathlib.Path, keys: Keys, signer: str = "alice") -> GitOpsRepo:
    """A repository whose first commit (signed by `signer`) is the trust anchor."""
    root.mkdir(parents=True)
    repo = GitOpsRepo(keys, root)
    repo.git("init", "-q", "-b", "main")
    repo.git("config", "user.name", "GitOps Test")
    repo.git("config", "user.email", "gitops@example.com")
    repo.write("README.md", "The desired state of the test cluster.\n")
    repo.anchor = repo.commit("anchor", signer)
    return repo


def write_config(
    path: pathlib.Path,
    repo: GitOpsRepo,
    *,
    name: str,
    kubeconfig: pathlib.Path,
    cache_dir: pathlib.Path,
    opa: pathlib.Path,
    namespace: str = "gitwarden",
    paths: Sequence[str] = (MANIFESTS,),
    apply: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """The reconciler's YAML configuration (keys as in `reconciler.config`) for `repo`."""
    document = {
        "source": {
            "url": repo.url,
            "branch": "main",
            "paths": list(paths),
            "cache_dir": str(cache_dir),
        },
        "trust": {
            "anchor": repo.anchor,
            "allowed_signers": str(repo.keys.allowed_signers),
            "openpgp_keys": str(repo.keys.openpgp_keys),
            "commit_policy_dir": str(POLICY_DIR),
            "commit_policy_data": str(repo.keys.policy_data),
            "opa": str(opa),
        },
        "apply": dict(apply or {}),
        "identity": {"namespace": namespace, "kubeconfig": str(kubeconfig), "name": name},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
