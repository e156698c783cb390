"""The fetch stage: bring a revision and enough history into a local git directory.

Owns talking to the `git` CLI (https, ssh with strict host-key checking against a configured
known_hosts file, and local paths) with an explicit environment, resolving revisions with pygit2
to exact ref names, and the refusals that come with that (a name that is both a branch and a
tag, a SHA-256 repository). It returns a `Checkout`, the only value the verify stage accepts. It
must not verify signatures, log object contents or retry: a failed fetch raises `FetchError` and
the loop decides what happens next.

Revisions are never resolved by git's "DWIM" rules, which try `refs/tags/<name>` before
`refs/heads/<name>`: a tag named `main` would then silently stand in for the branch. A short
name must be exactly one of `refs/heads/<name>` and `refs/tags/<name>`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import pathlib
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator

import pygit2

from reconciler import errors

_TIP_REF = "refs/gitwarden/tip"
_FIRST_DEPTH = 64
_GIT_TIMEOUT_SECONDS = 300
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")
_FULL_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_OID = re.compile(r"\b[0-9a-f]{40}\b")
# git's closing advice after any remote failure; dropped so the cause (for example "Host key
# verification failed.") stays within the lines an error message keeps.
_GENERIC_GIT_HINTS = frozenset(
    {"Please make sure you have the correct access rights", "and the repository exists."}
)
SHA256_UNSUPPORTED = "SHA-256 object format is not supported"


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
    username_file: pathlib.Path | None = None
    password_file: pathlib.Path | None = None
    """HTTPS basic credentials, read from these files at every fetch (so a rotated Secret is
    picked up); they reach git only through its environment, never its command line."""


@dataclasses.dataclass(frozen=True)
class Checkout:
    """A resolved revision in a local git directory, with the last applied commit if any."""

    git_dir: pathlib.Path
    tip_object: str
    tip_commit: str
    since: str | None
    shallow: bool
    ref: str | None = None
    """The exact ref the revision was named by (`refs/tags/v1`); None for a commit id."""


def open_local(path: pathlib.Path, rev: str, since: str | None) -> Checkout:
    """Resolve `rev` (and `since`) in an existing local repository without copying it."""
    repo = open_repository(path)
    ref = _local_ref(repo, rev, "revision")
    return _resolve(repo, rev if ref is None else ref, since, ref)


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

    `rev` is resolved on the remote first (`git ls-remote`) to exactly one of
    `refs/heads/<rev>` and `refs/tags/<rev>` (or the `refs/...` name or commit id given), and
    that exact ref is fetched; the fetched object must be the one the remote listed.

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
    ref, listed = _remote_ref(source, rev)
    refspec = f"+{ref or rev}:{_TIP_REF}"
    base = ["--git-dir", str(git_dir), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    if full:
        depth_args = ["--unshallow"] if _is_shallow(git_dir) else []
        _git(source, [*base, *depth_args, "--", _remote_url(source), refspec])
        return _fetched(git_dir, rev, since, ref, listed)
    depth = 1 if since is None else first_depth
    while True:
        _git(source, [*base, f"--depth={depth}", "--", _remote_url(source), refspec])
        checkout = _fetched(git_dir, rev, None, ref, listed)
        if since is None:
            return checkout
        repo = open_repository(git_dir)
        if _reaches(repo, checkout.tip_commit, since):
            return _fetched(git_dir, rev, since, ref, listed)
        if not repo.is_shallow:
            return dataclasses.replace(checkout, since=since)
        depth *= 4


def remote_tip(source: Source, ref: str) -> str:
    """The object id the remote lists for `ref` (`git ls-remote`, nothing fetched).

    The loop's cheap check while a revision is stalled: one round trip, the same hardened
    command and environment as `fetch`, so comparing tips costs no fetch, verify or apply.
    """
    _, listed = _remote_ref(source, ref)
    if listed is None:
        raise SourceError(f"revision {ref!r} is a commit id: it has no tip to follow")
    return listed


@contextlib.contextmanager
def present(what: str) -> Iterator[None]:
    """Turn pygit2's missing-object errors into a `SourceError` naming what was being read."""
    try:
        yield
    except (KeyError, pygit2.GitError) as exc:
        oid = _OID.search(str(exc))
        missing = f"object {oid.group(0)}" if oid else "an object"
        raise SourceError(
            f"{what}: {missing} is missing from the repository (partial or incomplete clone?)"
        ) from exc


def has_commit(repo: pygit2.Repository, sha: str) -> bool:
    """Whether `sha` (full hex) names a commit present in `repo`."""
    try:
        return isinstance(repo.get(sha), pygit2.Commit)
    except ValueError:
        return False


def open_repository(path: pathlib.Path) -> pygit2.Repository:
    """Open a repository with pygit2; anything it cannot open is a `SourceError` saying why."""
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        if _is_sha256_repository(path):
            raise SourceError(f"{path}: {SHA256_UNSUPPORTED}") from exc
        raise SourceError(f"{path}: not a git repository") from exc


def _fetched(
    git_dir: pathlib.Path, rev: str, since: str | None, ref: str | None, listed: str | None
) -> Checkout:
    checkout = _resolve(open_repository(git_dir), _TIP_REF, since, ref)
    if listed is not None and checkout.tip_object != listed:
        # The ref moved (or another ref matched the fetch) between listing and fetching.
        raise FetchError(f"{ref or rev} changed on the remote while it was fetched; try again")
    return checkout


def _reaches(repo: pygit2.Repository, tip: str, since: str) -> bool:
    if not has_commit(repo, since):
        return False
    try:
        return bool(since == tip or repo.descendant_of(tip, since))
    except (KeyError, pygit2.GitError):
        # History between tip and `since` is incomplete: deepen (or hand on, when complete).
        return False


def _valid_short_name(rev: str) -> bool:
    return rev != "HEAD" and pygit2.reference_is_valid_name(f"refs/heads/{rev}")


def _refusal(rev: str, what: str) -> str:
    return (
        f"{what} {rev!r} is not a branch or tag name, a full refs/... name or a full 40-hex"
        " commit id"
    )


def _ambiguous(rev: str, what: str) -> SourceError:
    return SourceError(
        f"{what} {rev!r} is ambiguous: both refs/heads/{rev} and refs/tags/{rev} exist;"
        f" name one of them in full"
    )


def _local_ref(repo: pygit2.Repository, rev: str, what: str) -> str | None:
    """The exact ref `rev` names in `repo` (None for a commit id); refuse anything else."""
    if _FULL_SHA.match(rev):
        return None
    if rev == "HEAD":
        head = repo.references.get("HEAD")
        target = None if head is None else head.target
        return target if isinstance(target, str) else None
    if rev.startswith("refs/") and pygit2.reference_is_valid_name(rev):
        return rev
    if not _valid_short_name(rev):
        raise SourceError(_refusal(rev, what))
    found = [name for name in (f"refs/heads/{rev}", f"refs/tags/{rev}") if name in repo.references]
    if len(found) > 1:
        raise _ambiguous(rev, what)
    if not found:
        raise SourceError(
            f"{what} {rev!r} is not a branch or tag in the repository"
            " (name other refs in full, for example refs/remotes/origin/main)"
        )
    return found[0]


def _remote_ref(source: Source, rev: str) -> tuple[str | None, str | None]:
    """The exact remote ref for `rev` and the object id the remote lists for it."""
    if _FULL_SHA.match(rev):
        return None, None
    if rev == "HEAD" or (rev.startswith("refs/") and pygit2.reference_is_valid_name(rev)):
        wanted = [rev]
    elif _valid_short_name(rev):
        wanted = [f"refs/heads/{rev}", f"refs/tags/{rev}"]
    else:
        raise SourceError(_refusal(rev, "revision"))
    # `--` before the URL: a source URL starting with `-` is never read as an option
    # (`--upload-pack=<command>` would run a command).
    listing = _git(source, ["ls-remote", "--", _remote_url(source), *wanted])
    found: dict[str, str] = {}
    for line in listing.splitlines():
        oid, _, name = line.partition("\t")
        # ls-remote matches patterns at path-component ends; only exact names count.
        if name in wanted:
            found[name] = oid
    if any(_SHA256.match(oid) for oid in found.values()):
        raise SourceError(f"{_redact(source.url)}: {SHA256_UNSUPPORTED}")
    if len(found) > 1:
        raise _ambiguous(rev, "revision")
    if not found:
        raise SourceError(f"revision {rev!r} is not a branch or tag on the remote")
    ((name, oid),) = found.items()
    return (None if name == "HEAD" else name), oid


def _resolve(repo: pygit2.Repository, rev: str, since: str | None, ref: str | None) -> Checkout:
    try:
        tip = _object(repo, rev)
        tip_commit = tip.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        shown = rev if rev != _TIP_REF else ref or "the fetched revision"
        raise SourceError(f"revision {shown!r} is not a commit or tag in the repository") from (exc)
    since_sha = None
    if since is not None:
        try:
            since_ref = _local_ref(repo, since, "last applied revision")
            found = _object(repo, since if since_ref is None else since_ref)
            since_sha = str(found.peel(pygit2.Commit).id)
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
        ref=ref,
    )


def _object(repo: pygit2.Repository, name: str) -> pygit2.Object:
    """The object a full commit id or an exact ref name (symbolic refs followed) points at."""
    found = repo.get(name if _FULL_SHA.match(name) else repo.references[name].resolve().target)
    if found is None:
        raise KeyError(name)
    return found


def _is_sha256_repository(path: pathlib.Path) -> bool:
    for config in (path / ".git" / "config", path / "config"):
        try:
            text = config.read_text(errors="replace")
        except OSError:
            continue
        if re.search(r"(?im)^\s*objectformat\s*=\s*sha256\s*$", text):
            return True
    return False


def _is_shallow(git_dir: pathlib.Path) -> bool:
    return (git_dir / "shallow").exists()


def _remote_url(source: Source) -> str:
    path = pathlib.Path(source.url)
    # A plain path becomes a file:// URL so that --depth is honoured for local sources too.
    return path.resolve().as_uri() if "://" not in source.url and path.exists() else source.url


def _ssh_command(source: Source) -> str:
    # -F /dev/null: no ~/.ssh/config or /etc/ssh/ssh_config (ssh reads them from the account's
    # home whatever HOME says), so no ProxyCommand, host alias or relaxed option sneaks in.
    ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if source.known_hosts is not None:
        ssh += [
            "-o",
            f"UserKnownHostsFile={source.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]
    if source.identity_file is not None:
        ssh += ["-o", "IdentitiesOnly=yes", "-i", str(source.identity_file)]
    return shlex.join(ssh)


def _environment(source: Source, home: str) -> dict[str, str]:
    """The whole environment of a git child: an allow-list, never the caller's environment.

    An inherited GIT_SSH_COMMAND, GIT_SSL_NO_VERIFY, GIT_ALLOW_PROTOCOL or GIT_CONFIG_* would
    override the `-c` settings below (git lets the environment win), and a global or system
    gitconfig could add `http.<url>.sslVerify=false` or `url.<x>.insteadOf`. SSH_AUTH_SOCK is
    not passed either: the only SSH identity is the configured key file.
    """
    env = {
        # PATH is the one inherited value: git must find ssh and its own helper programs.
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": home,
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    if source.ca_bundle is not None:
        env["GIT_SSL_CAINFO"] = str(source.ca_bundle)
    header = _basic_auth_header(source)
    if header is not None:
        # Through GIT_CONFIG_* (not `-c` or the URL, which `ps` and git's own messages show),
        # scoped to the source's scheme and host so a redirect elsewhere never receives it.
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{_origin(source.url)}/.extraHeader",
                "GIT_CONFIG_VALUE_0": header,
            }
        )
    return env


def _basic_auth_header(source: Source) -> str | None:
    """`Authorization: Basic …` from the credential files, or None when none are configured."""
    if source.username_file is None and source.password_file is None:
        return None
    if source.username_file is None or source.password_file is None:
        raise SourceError("HTTPS credentials need both a username file and a password file")
    if not source.url.startswith("https://"):
        raise SourceError("HTTPS credentials are only sent to an https:// source")
    values = []
    for path in (source.username_file, source.password_file):
        try:
            # One trailing newline (as `echo` writes) is not part of the value.
            values.append(path.read_text(encoding="utf-8").removesuffix("\n"))
        except (OSError, UnicodeDecodeError) as exc:
            # The file's name only: never its content.
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise SourceError(f"cannot read the credential file {path}: {reason}") from None
    user, password = values
    if not user or ":" in user or "\n" in user or "\n" in password:
        raise SourceError(
            f"the credential files {source.username_file} and {source.password_file} must hold"
            " one line each (a username without ':')"
        )
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Authorization: Basic {token}"


def _origin(url: str) -> str:
    """`https://host[:port]` of a URL (credentials in it dropped)."""
    rest = url.removeprefix("https://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"https://{host}"


def _git(source: Source, args: list[str]) -> str:
    command = [
        "git",
        "-c", "protocol.version=2",
        "-c", f"core.sshCommand={_ssh_command(source)}",
        "-c", "ssh.variant=ssh",
        # Only the transports GitWarden supports; ext:: and friends stay disabled.
        "-c", "protocol.allow=never",
        "-c", "protocol.https.allow=always",
        "-c", "protocol.ssh.allow=always",
        "-c", "protocol.file.allow=always",
        "-c", "credential.interactive=never",
        "-c", "http.sslVerify=true",
        *args,
    ]  # fmt: skip
    try:
        # An empty HOME: no ~/.gitconfig, ~/.netrc or XDG configuration of the caller's.
        with tempfile.TemporaryDirectory(prefix="gitwarden-git-home-") as home:
            done = subprocess.run(
                command,
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_environment(source, home),
                timeout=_GIT_TIMEOUT_SECONDS,
            )
    except subprocess.CalledProcessError as exc:
        # git's stderr names the remote and the failure; it carries no object contents. The
        # subprocess error is not chained: its text quotes the command, URL credentials and all.
        stderr = exc.stderr.decode(errors="replace")
        if "mismatched algorithms" in stderr:
            raise SourceError(f"{_redact(source.url)}: {SHA256_UNSUPPORTED}") from None
        lines = [
            line for line in stderr.splitlines() if line.strip() and line not in _GENERIC_GIT_HINTS
        ]
        raise FetchError(f"git failed: {_redact(' / '.join(lines[-3:]))}") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"git timed out after {_GIT_TIMEOUT_SECONDS}s") from None
    except OSError as exc:
        raise FetchError(f"cannot run git: {exc.strerror}") from None
    return done.stdout.decode(errors="replace")


def _redact(text: str) -> str:
    """Drop `user:token@` from any URL git echoes back, so credentials never reach a log."""
    return _URL_CREDENTIALS.sub("://***@", text)
