"""The trust base on its own, on a real repository: what each stored commit leads to."""

from __future__ import annotations

import pathlib

import pytest

from reconciler import trustbase
from tests import revisions
from tests.harness import signedrepo

Repo = tuple[signedrepo.SignedRepo, dict[str, str]]


@pytest.fixture
def history(tmp_path: pathlib.Path) -> Repo:
    repo = signedrepo.build(tmp_path)
    named = {"before": repo.commit({"a": "0"}, signed=False)}
    named["anchor"] = repo.commit({"a": "1"})
    named["applied"] = repo.commit({"a": "2"})
    named["tip"] = repo.commit({"a": "3"})
    named["sibling"] = repo.commit({"a": "x"}, parents=(named["anchor"],), branch=None)
    return repo, named


def check(history: Repo, stored: str | None) -> tuple[str, ...]:
    repo, named = history
    verified = revisions.verified(named["tip"], str(repo.path))
    return trustbase.check_stored(verified, named["anchor"], stored)


@pytest.mark.parametrize("name", ["anchor", "applied", "tip"])
def test_a_stored_commit_on_the_path_from_the_anchor_to_the_tip_is_fine(
    history: Repo, name: str
) -> None:
    assert check(history, history[1][name]) == ()


def test_no_stored_commit_is_fine(history: Repo) -> None:
    assert check(history, None) == ()


def test_a_stored_commit_that_the_tip_dropped_is_a_force_push(history: Repo) -> None:
    with pytest.raises(trustbase.StoredForcePush, match=history[1]["sibling"]):
        check(history, history[1]["sibling"])


@pytest.mark.parametrize(
    ("stored", "says"),
    [
        ("before", "does not descend from the trust anchor"),
        ("e" * 40, "not in the branch's history"),
        ("HEAD~1", "is not a commit id"),
    ],
)
def test_other_stored_values_are_ignored_and_reported(
    history: Repo, stored: str, says: str
) -> None:
    [warning] = check(history, history[1].get(stored, stored))
    assert says in warning


def test_the_base_is_the_anchor_unless_this_process_applied_something() -> None:
    settings = revisions.settings(anchor="a" * 40)
    assert trustbase.base(settings.trust, None) == "a" * 40
    assert trustbase.base(settings.trust, "b" * 40) == "b" * 40
