"""The paths a commit changed, which the commit policy judges (its only reason to read trees).

Owns diffing trees with pygit2: per commit (for a merge, only the paths that differ from every
parent) and between two commits (head and tag modes). It must not verify signatures or decide
anything; an absent tree (a treeless clone) is a `gitsource.SourceError` naming it.
"""

from __future__ import annotations

import pygit2

from reconciler import gitsource


def _commit(repo: pygit2.Repository, sha: str) -> pygit2.Commit:
    with gitsource.present(f"commit {sha}"):
        commit = repo.get(sha)
    if not isinstance(commit, pygit2.Commit):
        raise gitsource.SourceError(f"{sha} is not a commit")
    return commit


def of_commit(commit: pygit2.Commit) -> tuple[str, ...]:
    """Paths the commit itself changed; for a merge, only paths differing from every parent.

    A clean merge thus changes nothing of its own: the commits it brings in are in the range
    and each is checked with its own signer.
    """
    with gitsource.present(f"trees of commit {commit.id} (the commit policy needs them)"):
        if not commit.parents:
            return _tree_paths(commit.tree)
        per_parent = [_diff_paths(parent.tree, commit.tree) for parent in commit.parents]
    common = set(per_parent[0]).intersection(*per_parent[1:])
    return tuple(sorted(common))


def between(repo: pygit2.Repository, since: str | None, tip: str) -> tuple[str, ...]:
    tip_commit = _commit(repo, tip)
    with gitsource.present(f"trees of {since} and {tip} (the commit policy needs them)"):
        if since is None:
            return _tree_paths(tip_commit.tree)
        since_commit = _commit(repo, since)
        return _diff_paths(since_commit.tree, tip_commit.tree)


def _diff_paths(old: pygit2.Tree, new: pygit2.Tree) -> tuple[str, ...]:
    paths: set[str] = set()
    for delta in old.diff_to_tree(new).deltas:
        paths.add(delta.old_file.path)
        paths.add(delta.new_file.path)
    return tuple(sorted(paths))


def _tree_paths(tree: pygit2.Tree, prefix: str = "") -> tuple[str, ...]:
    paths: list[str] = []
    for entry in tree:
        name = f"{prefix}{entry.name}"
        if isinstance(entry, pygit2.Tree):
            paths.extend(_tree_paths(entry, f"{name}/"))
        else:
            paths.append(name)
    return tuple(paths)
