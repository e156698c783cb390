"""Range verification: every commit in (since, tip], merges, force-pushes and the policy port."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from reconciler import commitpolicy, gitsource, verify
from reconciler.signatures import rejections
from tests.harness import gitcorpus
from tests.integration import conftest


@dataclasses.dataclass
class RecordingPolicy:
    """A fake of our CommitPolicy port: records its input, denies the shas it is told to."""

    deny: dict[str, str] = dataclasses.field(default_factory=dict)
    seen: list[commitpolicy.PolicyCommit] = dataclasses.field(default_factory=list)

    def evaluate(
        self, commits: Sequence[commitpolicy.PolicyCommit]
    ) -> tuple[commitpolicy.Denial, ...]:
        self.seen.extend(commits)
        return tuple(
            commitpolicy.Denial(c.sha, self.deny[c.sha]) for c in commits if c.sha in self.deny
        )


def _checkout(corpus: gitcorpus.Corpus, tip: str, since: str | None) -> gitsource.Checkout:
    return gitsource.open_local(
        corpus.repo, f"refs/cases/{tip}", corpus.objects.get(since or "", since)
    )


def test_merge_that_brings_in_an_unsigned_commit_fails_on_that_commit_in_mode_all(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    checkout = _checkout(corpus, "merge-of-unsigned", "range-base")
    report = inspect(checkout, verify.Mode.ALL)
    by_sha = {v.sha: v for v in report.verdicts}
    names = ("feature-signed", "feature-unsigned", "main-side", "merge-of-unsigned")
    assert set(by_sha) == {corpus.objects[n] for n in names}
    failed = [v for v in report.verdicts if not v.ok]
    assert [(v.sha, v.reason) for v in failed] == [
        (corpus.objects["feature-unsigned"], rejections.UNSIGNED)
    ]
    for sha, verdict in by_sha.items():
        assert verdict.ok == corpus.git_accepts(sha)
    with pytest.raises(verify.VerificationFailed) as caught:
        verify.accept(checkout, report)
    assert caught.value.failures[0][0] == corpus.objects["feature-unsigned"]


def test_range_lists_parents_before_children(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    checkout = _checkout(corpus, "merge-of-unsigned", "range-base")
    order = [v.sha for v in inspect(checkout, verify.Mode.ALL).verdicts]
    assert order[-1] == corpus.objects["merge-of-unsigned"]
    assert order.index(corpus.objects["feature-signed"]) < order.index(
        corpus.objects["feature-unsigned"]
    )


def test_head_mode_checks_only_the_tip(corpus: gitcorpus.Corpus, inspect: conftest.Inspect) -> None:
    checkout = _checkout(corpus, "merge-of-unsigned", "range-base")
    revision = verify.accept(checkout, inspect(checkout, verify.Mode.HEAD))
    assert revision.commit == corpus.objects["merge-of-unsigned"]
    assert [s.principals for s in revision.signers] == [("alice@example.com",)]


def test_fully_signed_range_gives_a_verified_revision(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    checkout = _checkout(corpus, "signed-gus", "root")
    revision = verify.accept(checkout, inspect(checkout, verify.Mode.ALL))
    assert revision.commit == corpus.objects["signed-gus"]
    assert revision.since == corpus.objects["root"]
    kinds = {s.kind for s in revision.signers}
    assert kinds == {"ssh", "openpgp"}


def test_tip_that_does_not_descend_from_the_last_applied_commit_is_refused(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    checkout = _checkout(corpus, "rewritten", "main-side")
    report = inspect(checkout, verify.Mode.ALL)
    assert report.refusal is not None
    assert "does not descend" in report.refusal
    assert report.verdicts == ()
    with pytest.raises(verify.ForcePushRefused):
        verify.accept(checkout, report)


@pytest.mark.parametrize("mode", [verify.Mode.HEAD, verify.Mode.TAG])
def test_force_push_is_refused_in_every_mode(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect, mode: verify.Mode
) -> None:
    checkout = _checkout(corpus, "rewritten", "main-side")
    assert inspect(checkout, mode).refusal is not None


def test_tip_equal_to_last_applied_has_nothing_to_verify(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    checkout = _checkout(corpus, "main-side", "main-side")
    report = inspect(checkout, verify.Mode.ALL)
    assert report.ok
    assert report.verdicts == ()


def test_policy_sees_signed_commits_their_paths_and_later_signers(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    policy = RecordingPolicy()
    checkout = _checkout(corpus, "merge-of-unsigned", "range-base")
    inspect(checkout, verify.Mode.ALL, policy)
    seen = {c.sha: c for c in policy.seen}
    # The unsigned commit fails on its own; the policy only judges verified signers.
    assert corpus.objects["feature-unsigned"] not in seen
    feature = seen[corpus.objects["feature-signed"]]
    assert feature.changed_paths == ("apps/feature.yaml",)
    assert [s.principals for s in feature.later_signers] == [("alice@example.com",)]
    merge = seen[corpus.objects["merge-of-unsigned"]]
    assert merge.changed_paths == ()  # a clean merge changes nothing of its own
    assert len(merge.parents) == 2
    assert merge.later_signers == ()


def test_policy_denial_fails_the_commit_with_the_policy_reason(
    corpus: gitcorpus.Corpus, inspect: conftest.Inspect
) -> None:
    target = corpus.objects["main-side"]
    policy = RecordingPolicy(deny={target: "no changes to apps/ on Fridays"})
    checkout = _checkout(corpus, "main-side", "range-base")
    (verdict,) = inspect(checkout, verify.Mode.ALL, policy).verdicts
    assert (verdict.ok, verdict.reason) == (False, "policy-denied")
    assert verdict.detail == "no changes to apps/ on Fridays"
    assert verdict.signer is not None
