"""A bare repository of SSH-signed (or unsigned) commits built in process, for engine tests.

Owns writing trees (files, symlinks, submodule entries) and commits straight into the object
database with pygit2, signing each with an in-process ed25519 key (`tests.harness.signing`,
whose output is checked against `git verify-commit` elsewhere), and the matching trust: an
allowed_signers file and the `verify.Trust` parsed from it. Fast enough to build a fresh
repository per test; the user's git configuration is never read.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Mapping

import pygit2
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler import gitsource, verify
from reconciler.signatures import allowed_signers, openpgp
from tests.harness import signing

PRINCIPAL = "alice@example.com"


@dataclasses.dataclass(frozen=True)
class Link:
    """A symbolic link entry (git mode 120000) pointing at `target`."""

    target: str


@dataclasses.dataclass(frozen=True)
class Submodule:
    """A submodule entry (git mode 160000) naming a commit of another repository."""

    commit: str = "1" * 40


Entry = bytes | str | Link | Submodule
Files = Mapping[str, Entry]


@dataclasses.dataclass
class SignedRepo:
    """The repository, the trusted key, an untrusted one, and the trust files."""

    root: pathlib.Path
    repo: pygit2.Repository
    key: ed25519.Ed25519PrivateKey
    stranger: ed25519.Ed25519PrivateKey
    allowed_signers: pathlib.Path
    _clock: int = dataclasses.field(default_factory=lambda: int(time.time()) - 100_000)

    @property
    def path(self) -> pathlib.Path:
        return pathlib.Path(self.repo.path)

    @property
    def trust(self) -> verify.Trust:
        text = self.allowed_signers.read_text()
        return verify.Trust(
            allowed_signers.parse(text, str(self.allowed_signers)), openpgp.load_keyring(())
        )

    def commit(
        self,
        files: Files,
        *,
        parents: tuple[str, ...] | None = None,
        signed: bool = True,
        trusted: bool = True,
        message: str = "change",
        branch: str | None = "main",
    ) -> str:
        """Write a commit whose tree holds exactly `files`; parent: the branch tip by default."""
        if parents is None:
            tip = self.tip(branch) if branch else None
            parents = (tip,) if tip else ()
        tree = self._tree(files)
        self._clock += 60
        ident = f"Alice <{PRINCIPAL}> {self._clock} +0000"
        payload = f"tree {tree}\n".encode()
        for parent in parents:
            payload += f"parent {parent}\n".encode()
        payload += f"author {ident}\ncommitter {ident}\n\n{message}\n".encode()
        raw = payload
        if signed:
            raw = signing.insert_signature(
                payload, signing.sshsig(self.key if trusted else self.stranger, payload)
            )
        sha = str(self.repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw))
        if branch:
            self.repo.references.create(f"refs/heads/{branch}", sha, force=True)
        return sha

    def tip(self, branch: str = "main") -> str | None:
        ref = self.repo.references.get(f"refs/heads/{branch}")
        return str(ref.target) if ref is not None else None

    def set_branch(self, sha: str, branch: str = "main") -> None:
        """Point `branch` at `sha` (a force-push)."""
        self.repo.references.create(f"refs/heads/{branch}", sha, force=True)

    def checkout(self, since: str | None, branch: str = "main") -> gitsource.Checkout:
        """What the fetch stage would hand verify for this repository."""
        return gitsource.open_local(self.path, f"refs/heads/{branch}", since)

    def _tree(self, files: Files) -> str:
        nested: dict[str, object] = {}
        for path, entry in files.items():
            *dirs, name = path.split("/")
            node = nested
            for part in dirs:
                node = node.setdefault(part, {})  # type: ignore[assignment]
            node[name] = entry
        return self._write(nested)

    def _write(self, node: Mapping[str, object]) -> str:
        builder = self.repo.TreeBuilder()
        for name, entry in sorted(node.items()):
            if isinstance(entry, Mapping):
                builder.insert(name, self._write(entry), pygit2.enums.FileMode.TREE)
            elif isinstance(entry, Link):
                blob = self.repo.create_blob(entry.target.encode())
                builder.insert(name, blob, pygit2.enums.FileMode.LINK)
            elif isinstance(entry, Submodule):
                builder.insert(name, pygit2.Oid(hex=entry.commit), pygit2.enums.FileMode.COMMIT)
            else:
                data = entry.encode() if isinstance(entry, str) else entry
                assert isinstance(data, bytes)
                builder.insert(name, self.repo.create_blob(data), pygit2.enums.FileMode.BLOB)
        return str(builder.write())


def build(root: pathlib.Path) -> SignedRepo:
    """An empty bare repository under `root` with a trusted and an untrusted ed25519 key."""
    root.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    stranger = ed25519.Ed25519PrivateKey.generate()
    signers = root / "allowed_signers"
    signers.write_text(f"{PRINCIPAL} {signing.public_line(key)}\n")
    repo = pygit2.init_repository(str(root / "repo.git"), bare=True)
    return SignedRepo(root, repo, key, stranger, signers)
