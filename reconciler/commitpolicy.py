"""The port to the commit policy (`policies/commits`, Rego) and its adapter that runs `opa eval`.

Owns the policy's input document (one record per verified commit: the commit, its signer, the
paths it changed, and the signers of later commits in the range that contain it) and turning
OPA's answer into denials. It must not verify signatures or walk history (the verify stage does)
and must not decide anything itself: every rule, and all its configuration, lives in Rego and
OPA data. Any failure to get an answer is `PolicyUnavailable`, never an allow.

The adapter starts `opa eval` once per range with the whole batch as input: one process for a
thousand commits costs far less than a server round trip per commit, and the CLI needs no
long-lived server. The reconciler can put an OPA server behind the same `CommitPolicy` port.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
from collections.abc import Sequence
from typing import Protocol

from reconciler import errors

QUERY = "data.commits.deny"
_TIMEOUT_SECONDS = 60


class PolicyUnavailable(errors.Transient):
    """The policy engine could not be asked or gave no usable answer; never read as an allow."""


@dataclasses.dataclass(frozen=True)
class Signer:
    """A verified signer: `ssh` or `openpgp`, the principals trust gave it, its fingerprint."""

    kind: str
    principals: tuple[str, ...]
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class PolicyCommit:
    """What the policy sees about one commit (or tag) whose signature verified."""

    sha: str
    parents: tuple[str, ...]
    signer: Signer
    changed_paths: tuple[str, ...]
    later_signers: tuple[Signer, ...]


@dataclasses.dataclass(frozen=True)
class Denial:
    """The policy refused `sha` for `reason`."""

    sha: str
    reason: str


class CommitPolicy(Protocol):
    """Decides which verified commits the commit policy refuses."""

    def evaluate(self, commits: Sequence[PolicyCommit]) -> tuple[Denial, ...]:
        """Every denial for `commits`; an empty tuple means all are allowed."""
        ...


def input_document(commits: Sequence[PolicyCommit]) -> dict[str, object]:
    """The JSON input the Rego policy reads (also used by golden test inputs)."""
    return {
        "commits": [
            {
                "commit": {"sha": c.sha, "parents": list(c.parents)},
                "signer": _signer(c.signer),
                "changed_paths": list(c.changed_paths),
                "later_signers": [_signer(s) for s in c.later_signers],
            }
            for c in commits
        ]
    }


def denials_from(value: object) -> tuple[Denial, ...]:
    """Read the `deny` set OPA returned; anything else is an unusable answer."""
    if not isinstance(value, list):
        raise PolicyUnavailable("commit policy returned no deny set")
    denials = []
    for item in value:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("sha"), str)
            and isinstance(item.get("reason"), str)
        ):
            raise PolicyUnavailable("commit policy returned a malformed denial")
        denials.append(Denial(sha=item["sha"], reason=item["reason"]))
    return tuple(sorted(denials, key=lambda d: (d.sha, d.reason)))


@dataclasses.dataclass(frozen=True)
class OpaEval:
    """Evaluates the policy by running `opa eval` on the policy directory and a data file."""

    opa: str
    policy_dir: pathlib.Path
    data_file: pathlib.Path

    def evaluate(self, commits: Sequence[PolicyCommit]) -> tuple[Denial, ...]:
        if not commits:
            return ()
        command = [
            self.opa, "eval", "--format=json", "--stdin-input",
            "--data", str(self.policy_dir), "--data", str(self.data_file), QUERY,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command,
                input=json.dumps(input_document(commits)).encode(),
                capture_output=True,
                check=True,
                timeout=_TIMEOUT_SECONDS,
            )
        except FileNotFoundError as exc:
            raise PolicyUnavailable(f"cannot run {self.opa!r}: not found") from exc
        except OSError as exc:
            # Not executable, a directory, a bad interpreter line: no answer, so never an allow.
            raise PolicyUnavailable(f"cannot run {self.opa!r}: {exc.strerror}") from exc
        except subprocess.CalledProcessError as exc:
            first = exc.stderr.decode(errors="replace").strip().splitlines()[:1]
            raise PolicyUnavailable(f"opa eval failed: {' '.join(first)}") from exc
        except subprocess.TimeoutExpired as exc:
            raise PolicyUnavailable("opa eval timed out") from exc
        try:
            results = json.loads(done.stdout)["result"]
            value = results[0]["expressions"][0]["value"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # An undefined result means the policy was not loaded: deny, never allow.
            raise PolicyUnavailable(f"{QUERY} is undefined; is the policy loaded?") from exc
        return denials_from(value)


def _signer(signer: Signer) -> dict[str, object]:
    return {
        "kind": signer.kind,
        "principals": list(signer.principals),
        "fingerprint": signer.fingerprint,
    }
