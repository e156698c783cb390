"""The verify stage: each commit in (last applied, tip], or the tip, or the tag, signed and allowed.

Owns the range walk (pygit2 on raw objects), the force-push refusal, choosing the verifier for
each signature, the verification times, the changed paths the commit policy sees, and the
`VerifiedRevision` value that only the next stage accepts. It must not fetch, retry, log object
contents, or decide path rules itself (the commit policy port does).

Verification times for SSH signatures: git checks allowed_signers windows only at the committer
(or tagger) date, which the signer writes. We check the window at that date *and* at `now`, so a
retired key cannot sign new history by back-dating it.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Iterable

import pygit2

from reconciler import changedpaths, commitpolicy, errors, gitsource
from reconciler.signatures import allowed_signers, commits, openpgp, rejections, sshsig

SSH_NAMESPACE = "git"


class VerificationFailed(errors.Stalled):
    """At least one object failed; `failures` pairs each sha with its reason."""

    def __init__(self, message: str, failures: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.failures = failures


class ForcePushRefused(VerificationFailed):
    """The tip does not descend from the last applied commit, or that commit is gone."""


class Mode(enum.Enum):
    """What must be signed: every commit in the range, only the tip commit, or the tag object."""

    ALL = "all"
    HEAD = "head"
    TAG = "tag"


@dataclasses.dataclass(frozen=True)
class Trust:
    """The trusted keys: an SSH allowed_signers file and OpenPGP certificates."""

    allowed_signers: allowed_signers.AllowedSigners
    keyring: openpgp.Keyring


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome for one object: `ok`, or the reason code and a detail naming the key."""

    sha: str
    kind: str
    ok: bool
    signer: commitpolicy.Signer | None
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Report:
    """Every verdict for a request, plus a refusal of the range as a whole (force-push)."""

    tip: str
    since: str | None
    mode: Mode
    verdicts: tuple[Verdict, ...]
    refusal: str | None

    @property
    def ok(self) -> bool:
        return self.refusal is None and all(v.ok for v in self.verdicts)


@dataclasses.dataclass(frozen=True)
class VerifiedRevision:
    """A commit whose required signatures and commit policy all passed; input of the load stage."""

    git_dir: str
    commit: str
    since: str | None
    mode: Mode
    signers: tuple[commitpolicy.Signer, ...]


def verify(
    checkout: gitsource.Checkout,
    trust: Trust,
    mode: Mode,
    policy: commitpolicy.CommitPolicy | None,
    now: datetime.datetime,
) -> VerifiedRevision:
    """Verify `checkout` and return the revision, or raise `VerificationFailed`."""
    return accept(checkout, inspect(checkout, trust, mode, policy, now))


def accept(checkout: gitsource.Checkout, report: Report) -> VerifiedRevision:
    """Turn a fully passing report into a `VerifiedRevision`; anything else raises."""
    if report.refusal is not None:
        raise ForcePushRefused(report.refusal, ((report.tip, report.refusal),))
    failures = tuple((v.sha, f"{v.reason}: {v.detail}") for v in report.verdicts if not v.ok)
    if failures:
        raise VerificationFailed(f"{len(failures)} object(s) failed verification", failures)
    return VerifiedRevision(
        git_dir=str(checkout.git_dir),
        commit=checkout.tip_commit,
        since=checkout.since,
        mode=report.mode,
        signers=tuple(dict.fromkeys(v.signer for v in report.verdicts if v.signer is not None)),
    )


def inspect(
    checkout: gitsource.Checkout,
    trust: Trust,
    mode: Mode,
    policy: commitpolicy.CommitPolicy | None,
    now: datetime.datetime,
) -> Report:
    """Verify every object `mode` requires and return all verdicts, failing ones included.

    Only commit (and tag) objects are read unless `policy` is set: the commit policy needs the
    changed paths, hence trees, so a treeless clone can be verified without one. An object the
    walk needs but the repository lacks raises `gitsource.SourceError`, never a pygit2 error.
    """
    repo = gitsource.open_repository(checkout.git_dir)
    report = Report(checkout.tip_commit, checkout.since, mode, (), None)
    since = checkout.since
    if since is not None and not gitsource.has_commit(repo, since):
        return dataclasses.replace(
            report,
            refusal=f"the last applied commit {since} is not in the history of the source"
            " (force-push?)",
        )
    context = _Context(repo, trust, now, int(now.timestamp()))
    if mode is Mode.ALL:
        return _inspect_range(context, checkout, policy, report)
    with gitsource.present(f"history between {since} and {checkout.tip_commit}"):
        descends = (
            since is None
            or since == checkout.tip_commit
            or (repo.descendant_of(checkout.tip_commit, since))
        )
    if not descends:
        return dataclasses.replace(report, refusal=_force_push(repo, checkout))
    if mode is Mode.TAG:
        return _inspect_tag(context, checkout, policy, report)
    if mode is Mode.HEAD:
        verdict = _check(context, checkout.tip_commit, "commit")
        paths = changedpaths.between(repo, since, checkout.tip_commit) if policy else ()
        verdicts = _apply_policy(policy, [(verdict, (), paths)], {})
        return dataclasses.replace(report, verdicts=verdicts)
    raise AssertionError(mode)  # every mode is handled above


def _force_push(repo: pygit2.Repository, checkout: gitsource.Checkout) -> str:
    # A shallow clone that does not reach `since` cannot tell a force-push apart; either way
    # nothing is applied.
    where = " in the fetched (shallow) history" if repo.is_shallow else ""
    return (
        f"tip {checkout.tip_commit} does not descend from the last applied "
        f"commit {checkout.since}{where} (force-push?)"
    )


def _inspect_range(
    context: _Context,
    checkout: gitsource.Checkout,
    policy: commitpolicy.CommitPolicy | None,
    report: Report,
) -> Report:
    """Mode all: one walk gives the range and, for free, whether the tip descends from since."""
    repo, since = context.repo, checkout.since
    if since is None and repo.is_shallow:
        raise gitsource.SourceError(
            "history is shallow: cannot verify every commit without --since"
        )
    walked = _range(repo, checkout.tip_commit, since)
    # `since` is an ancestor of the tip exactly when a commit of (since, tip] is its child.
    if since is not None and since != checkout.tip_commit:
        since_id = pygit2.Oid(hex=since)
        if not any(since_id in commit.parent_ids for commit in walked):
            return dataclasses.replace(report, refusal=_force_push(repo, checkout))
    with gitsource.present(f"commits in ({since}, {checkout.tip_commit}]"):
        checked = [_check(context, str(c.id), "commit", raw=c.read_raw()) for c in walked]
    if policy is None:
        return dataclasses.replace(report, verdicts=tuple(checked))
    items: list[_Item] = [
        # Changed paths cost a tree diff per commit; only the policy needs them.
        (verdict, tuple(str(p) for p in commit.parent_ids), changedpaths.of_commit(commit))
        for verdict, commit in zip(checked, walked, strict=True)
    ]
    return dataclasses.replace(report, verdicts=_apply_policy(policy, items, _later_signers(items)))


@dataclasses.dataclass(frozen=True)
class _Context:
    repo: pygit2.Repository
    trust: Trust
    now: datetime.datetime
    now_ts: int


def _inspect_tag(
    context: _Context,
    checkout: gitsource.Checkout,
    policy: commitpolicy.CommitPolicy | None,
    report: Report,
) -> Report:
    if checkout.tip_object == checkout.tip_commit:
        verdict = Verdict(
            checkout.tip_object, "tag", False, None, rejections.UNSIGNED,
            "not an annotated tag: mode tag needs a signed tag object",
        )  # fmt: skip
        return dataclasses.replace(report, verdicts=(verdict,))
    verdict = _check(context, checkout.tip_object, "tag", checkout.ref)
    paths = (
        changedpaths.between(context.repo, checkout.since, checkout.tip_commit) if policy else ()
    )
    return dataclasses.replace(report, verdicts=_apply_policy(policy, [(verdict, (), paths)], {}))


def _range(repo: pygit2.Repository, tip: str, since: str | None) -> list[pygit2.Commit]:
    """Commits in (since, tip], both sides of merges, parents before children."""
    # Hiding `since` makes libgit2 read its ancestors too, so they must be present.
    with gitsource.present(f"commits in ({since}, {tip}]"):
        walker = repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE)
        if since is not None:
            walker.hide(since)
        return list(walker)


def _check(
    context: _Context, sha: str, kind: str, ref: str | None = None, raw: bytes | None = None
) -> Verdict:
    if raw is None:
        with gitsource.present(f"{kind} {sha}"):
            _type, raw = context.repo.odb.read(sha)
    try:
        signed = commits.split_commit(raw) if kind == "commit" else commits.split_tag(raw)
    except commits.MalformedObject as exc:
        return Verdict(sha, kind, False, None, rejections.MALFORMED_OBJECT, str(exc))
    mismatch = _tag_name_mismatch(signed.tag_name, ref) if kind == "tag" else None
    if mismatch is not None:
        return Verdict(sha, kind, False, None, rejections.TAG_NAME_MISMATCH, mismatch)
    if signed.signature is None:
        return Verdict(sha, kind, False, None, rejections.UNSIGNED, f"{kind} is not signed")
    try:
        signer = _signer(signed.signature, signed, context)
    except rejections.SignatureRejected as exc:
        return Verdict(sha, kind, False, None, exc.reason, exc.detail)
    return Verdict(sha, kind, True, signer, "", "")


def _signer(
    signature: bytes, signed: commits.SignedObject, context: _Context
) -> commitpolicy.Signer:
    signature_format = signed.signature_format
    if signature_format is commits.SignatureFormat.SSH:
        now_ts = context.now_ts
        times = (now_ts,) if signed.signed_at is None else (signed.signed_at, now_ts)
        ssh = sshsig.verify(
            signed.payload,
            signature,
            context.trust.allowed_signers,
            namespace=SSH_NAMESPACE,
            times=times,
        )
        return commitpolicy.Signer("ssh", ssh.principals, ssh.fingerprint)
    if signature_format is commits.SignatureFormat.OPENPGP:
        pgp = openpgp.verify(signed.payload, signature, context.trust.keyring, now=context.now)
        return commitpolicy.Signer("openpgp", (pgp.principal,), pgp.fingerprint)
    raise rejections.SignatureRejected(
        rejections.UNSUPPORTED_SIGNATURE,
        "x509 signatures are not supported" if signature_format else "unknown signature armor",
    )


def _tag_name_mismatch(name: str | None, ref: str | None) -> str | None:
    """Why a tag object may not stand for `ref`, or None when its own name is that ref's.

    The signature covers the `tag` header, not the ref: a signed `v1.0` pushed again as
    `refs/tags/v2.0` would otherwise vouch for a release its signer never named. A tag named
    by its object id claims no name, so there is nothing to compare.
    """
    if ref is None:
        return None
    if name is not None and ref == f"refs/tags/{name}":
        return None
    return f"tag object is named {name!r} but was reached through {ref}"


_Item = tuple[Verdict, tuple[str, ...], tuple[str, ...]]


def _later_signers(items: list[_Item]) -> dict[str, frozenset[commitpolicy.Signer]]:
    """For each commit, the good signers of the range's commits that have it as an ancestor."""
    children: dict[str, list[Verdict]] = {}
    for verdict, parents, _paths in items:
        for parent in parents:
            children.setdefault(parent, []).append(verdict)
    later: dict[str, frozenset[commitpolicy.Signer]] = {}
    # `items` are parents before children, so walk backwards: children are done first.
    for verdict, _parents, _paths in reversed(items):
        found: set[commitpolicy.Signer] = set()
        for child in children.get(verdict.sha, []):
            found |= later.get(child.sha, frozenset())
            if child.signer is not None:
                found.add(child.signer)
        later[verdict.sha] = frozenset(found)
    return later


def _apply_policy(
    policy: commitpolicy.CommitPolicy | None,
    items: Iterable[_Item],
    later: dict[str, frozenset[commitpolicy.Signer]],
) -> tuple[Verdict, ...]:
    items = list(items)
    verdicts = tuple(verdict for verdict, _parents, _paths in items)
    if policy is None:
        return verdicts
    inputs = [
        commitpolicy.PolicyCommit(
            sha=verdict.sha,
            parents=parents,
            signer=verdict.signer,
            changed_paths=paths,
            later_signers=tuple(
                sorted(later.get(verdict.sha, ()), key=lambda s: (s.fingerprint, s.principals))
            ),
        )
        for verdict, parents, paths in items
        if verdict.signer is not None
    ]
    denied: dict[str, list[str]] = {}
    for denial in policy.evaluate(inputs):
        denied.setdefault(denial.sha, []).append(denial.reason)
    return tuple(
        dataclasses.replace(v, ok=False, reason="policy-denied", detail="; ".join(denied[v.sha]))
        if v.sha in denied
        else v
        for v in verdicts
    )
