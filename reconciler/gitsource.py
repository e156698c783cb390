"""The fetch stage: bring a revision and enough history into a local git directory.

Owns talking to the `git` CLI (https, ssh with strict host-key checking against a configured
known_hosts file, and local paths) and resolving revisions with pygit2. It returns a `Checkout`,
the only value the verify stage accepts. It must not verify signatures, log object contents or
retry: a failed fetch raises `FetchError` and the loop decides what happens next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shlex
import subprocess

import pygit2

from reconciler import errors

_TIP_REF = "refs/gitwarden/tip"
_FIRST_DEPTH = 64
_GIT_TIMEOUT_SECONDS = 300
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")
# git's closing advice after any remote failure; dropped so the cause (for example "Host key
# verification failed.") stays within the lines an error message keeps.
_GENERIC_GIT_HINTS = frozenset(
    {"Please make sure you have the correct access rights", "and the repository exists."}
)


class SourceError(errors.Stalled):
    """The repository, revision or history asked for is not there (stalls until config changes)."""


class FetchError(errors.Transient):
    """`git fetch` failed: network, authentication or host key (worth retrying later)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where to fetch from and how to authenticate; built once from settings."""

    url: str
    known_hosts: pathlib.Path | None = None
    identity_file: pathlib.Path | None = None
    ca_bundle: pathlib.Path | None = None
    """PEM CAs for https sources (a private Git server); default: the system's."""


@dataclasses.dataclass(frozen=True)
class Checkout:
    """A resolved revision in a local git directory, with the last applied commit if any."""

    git_dir: pathlib.Path
    tip_object: str
    tip_commit: str
    since: str | None
    shallow: bool


def open_local(path: pathlib.Path, rev: str, since: str | None) -> Checkout:
    """Resolve `rev` (and `since`) in an existing local repository without copying it."""
    try:
        repo = pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        raise SourceError(f"{path}: not a git repository") from exc
    return _resolve(repo, rev, since)


def fetch(
    source: Source,
    cache_dir: pathlib.Path,
    rev: str,
    since: str | None,
    *,
    full: bool,
    first_depth: int = _FIRST_DEPTH,
) -> Checkout:
    """Fetch `rev` from `source` into a bare repository under `cache_dir`.

    With `full` (range verification without a last applied commit) the whole history is
    fetched. Otherwise the fetch starts `first_depth` deep (1 without `since`) and deepens
    until `since` is an ancestor of the tip or the history is complete, so a force-push is told
    apart from a too-shallow clone. A `since` that the complete history lacks is handed on
    unresolved, for the verify stage to refuse.
    """
    git_dir = cache_dir / (hashlib.sha256(source.url.encode()).hexdigest()[:24] + ".git")
    if not (git_dir / "HEAD").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        _git(source, ["init", "--quiet", "--bare", str(git_dir)])
    refspec = f"+{rev}:{_TIP_REF}"
    base = ["--git-dir", str(git_dir), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    if full:
        depth_args = ["--unshallow"] if _is_shallow(git_dir) else []
        _git(source, [*base, *depth_args, _remote_url(source), refspec])
        return _resolve(pygit2.Repository(str(git_dir)), _TIP_REF, since)
    depth = 1 if since is None else first_depth
    while True:
        _git(source, [*base, f"--depth={depth}", _remote_url(source), refspec])
        repo = pygit2.Repository(str(git_dir))
        checkout = _resolve(repo, _TIP_REF, None)
        if since is None:
            return checkout
        if _reaches(repo, checkout.tip_commit, since):
            return _resolve(repo, _TIP_REF, since)
        if not repo.is_shallow:
            return dataclasses.replace(checkout, since=since)
        depth *= 4


def has_commit(repo: pygit2.Repository, sha: str) -> bool:
    """Whether `sha` (full hex) names a commit present in `repo`."""
    try:
        return isinstance(repo.get(sha), pygit2.Commit)
    except ValueError:
        return False


def _reaches(repo: pygit2.Repository, tip: str, since: str) -> bool:
    if not has_commit(repo, since):
        return False
    return bool(since == tip or repo.descendant_of(tip, since))


def _resolve(repo: pygit2.Repository, rev: str, since: str | None) -> Checkout:
    try:
        tip = repo.revparse_single(rev)
        tip_commit = tip.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise SourceError(f"revision {rev!r} is not a commit or tag in the repository") from (exc)
    since_sha = None
    if since is not None:
        try:
            since_sha = str(repo.revparse_single(since).peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise SourceError(f"last applied revision {since!r} is not in the repository") from (
                exc
            )
    return Checkout(
        git_dir=pathlib.Path(repo.path),
        tip_object=str(tip.id),
        tip_commit=str(tip_commit.id),
        since=since_sha,
        shallow=repo.is_shallow,
    )


def _is_shallow(git_dir: pathlib.Path) -> bool:
    return (git_dir / "shallow").exists()


def _remote_url(source: Source) -> str:
    path = pathlib.Path(source.url)
    # A plain path becomes a file:// URL so that --depth is honoured for local sources too.
    return path.resolve().as_uri() if "://" not in source.url and path.exists() else source.url


def _git(source: Source, args: list[str]) -> None:
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if source.known_hosts is not None:
        ssh += [
            "-o",
            f"UserKnownHostsFile={source.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]
    if source.identity_file is not None:
        ssh += ["-o", "IdentitiesOnly=yes", "-i", str(source.identity_file)]
    command = [
        "git",
        "-c", "protocol.version=2",
        "-c", f"core.sshCommand={shlex.join(ssh)}",
        # Only the transports GitWarden supports; ext:: and friends stay disabled.
        "-c", "protocol.allow=never",
        "-c", "protocol.https.allow=always",
        "-c", "protocol.ssh.allow=always",
        "-c", "protocol.file.allow=always",
        "-c", "credential.interactive=never",
        "-c", "http.sslVerify=true",
        *args,
    ]  # fmt: skip
    # git lets GIT_SSL_CAINFO override http.sslCAInfo, and hosts often export it: a configured
    # bundle must win, so it goes into the child's environment (inherited otherwise).
    env = (
        None
        if source.ca_bundle is None
        else {**os.environ, "GIT_SSL_CAINFO": str(source.ca_bundle)}
    )
    try:
        subprocess.run(
            command,
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=_GIT_TIMEOUT_SECONDS,
        )
    except subprocess.CalledProcessError as exc:
        # git's stderr names the remote and the failure; it carries no object contents. The
        # subprocess error is not chained: its text quotes the command, URL credentials and all.
        lines = [
            line
            for line in exc.stderr.decode(errors="replace").splitlines()
            if line.strip() and line not in _GENERIC_GIT_HINTS
        ]
        raise FetchError(f"git failed: {_redact(' / '.join(lines[-3:]))}") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"git timed out after {_GIT_TIMEOUT_SECONDS}s") from None


def _redact(text: str) -> str:
    """Drop `user:token@` from any URL git echoes back, so credentials never reach a log."""
    return _URL_CREDENTIALS.sub("://***@", text)
