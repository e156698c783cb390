"""Benchmark: verifying a 1,000-commit signed range in process vs git's own verification.

Owns building the benchmark repository (half the commits SSH-signed with ed25519, half
OpenPGP-signed, signatures made in process and confirmed by `git verify-commit`), timing
`reconciler.verify` over the whole range, `git log --format=%G?` over the same range, and a
`git verify-commit` loop, all in the same run, and printing the ratios. The verify-commit loop
runs on an evenly spaced sample (default 60 commits) and is extrapolated to the whole range;
the output says so. Run with `python -m bench.bench_verify [--commits N] [--sample N]`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

import pygit2
import pysequoia
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler import commitpolicy, gitsource, verify
from reconciler.signatures import allowed_signers, openpgp
from tests.harness import signing


def _env(root: pathlib.Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "GNUPGHOME": str(root / "gnupg"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(root / "gitconfig"),
        "LC_ALL": "C",
    }


def build(root: pathlib.Path, count: int) -> tuple[pathlib.Path, list[str], verify.Trust]:
    """A repository with `count` signed commits after an (also signed) root commit."""
    ssh_key = ed25519.Ed25519PrivateKey.generate()
    tsk = pysequoia.Tsk.generate("Bench <bench@example.com>")
    pgp_signer = tsk.signer()
    cert = tsk.extract_certificate()
    (root / "gitconfig").write_text("")
    (root / "allowed_signers").write_text(f"bench@example.com {signing.public_line(ssh_key)}\n")
    (root / "gnupg").mkdir(mode=0o700)
    (root / "bench.asc").write_text(str(cert))
    env = _env(root)
    subprocess.run(["gpg", "--batch", "--import", str(root / "bench.asc")], env=env,
                   capture_output=True, check=True)  # fmt: skip
    subprocess.run(["gpg", "--batch", "--import-ownertrust"], env=env, capture_output=True,
                   input=f"{cert.fingerprint.upper()}:6:\n".encode(), check=True)  # fmt: skip
    repo = pygit2.init_repository(str(root / "repo"), bare=True)
    repo.config["gpg.ssh.allowedSignersFile"] = str(root / "allowed_signers")
    parent: str | None = None
    shas = []
    stamp = int(time.time()) - count
    for index in range(count + 1):
        blob = repo.create_blob(f"replicas: {index}\n".encode())
        apps = repo.TreeBuilder()
        apps.insert(f"app-{index % 10}.yaml", blob, pygit2.enums.FileMode.BLOB)
        top = repo.TreeBuilder()
        top.insert("apps", apps.write(), pygit2.enums.FileMode.TREE)
        payload = f"tree {top.write()}\n".encode()
        if parent is not None:
            payload += f"parent {parent}\n".encode()
        ident = f"Bench <bench@example.com> {stamp + index} +0000"
        payload += f"author {ident}\ncommitter {ident}\n\ncommit {index}\n".encode()
        if index % 2:
            signature = pysequoia.sign(pgp_signer, payload, mode=pysequoia.SignatureMode.DETACHED)
        else:
            signature = signing.sshsig(ssh_key, payload)
        raw = signing.insert_signature(payload, signature)
        parent = str(repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw))
        shas.append(parent)
    assert parent is not None
    repo.references.create("refs/heads/main", parent)
    trust = verify.Trust(
        allowed_signers.parse((root / "allowed_signers").read_text(), "allowed_signers"),
        openpgp.load_keyring((("bench.asc", str(cert).encode()),)),
    )
    return root / "repo", shas, trust


def stop_agent(root: pathlib.Path) -> None:
    """Stop the gpg-agent that importing the key may have started under `root`."""
    subprocess.run(["gpgconf", "--kill", "all"], env=_env(root), capture_output=True, check=False)


def _best(runs: int, action: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=60)
    pinned = pathlib.Path(__file__).resolve().parents[1] / ".tools" / "bin" / "opa"
    parser.add_argument(
        "--opa",
        default=str(pinned) if pinned.exists() else "opa",
        help="opa binary (default: the pinned one from `make tools`, else opa on PATH)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitwarden-bench-") as tmp:
        root = pathlib.Path(tmp)
        start = time.perf_counter()
        repo, shas, trust = build(root, args.commits)
        print(f"built {args.commits} signed commits in {time.perf_counter() - start:.2f}s")
        env = _env(root)
        checkout = gitsource.open_local(repo, "main", shas[0])
        now = datetime.datetime.now(datetime.UTC)

        def ours() -> None:
            report = verify.inspect(checkout, trust, verify.Mode.ALL, None, now)
            assert report.ok
            assert len(report.verdicts) == args.commits

        policy_data = root / "commits.json"
        policy_data.write_text(json.dumps({"commits": {"settings": {"policy_admins": []}}}))
        policy = commitpolicy.OpaEval(args.opa, pathlib.Path("policies/commits"), policy_data)

        def ours_with_policy() -> None:
            assert verify.inspect(checkout, trust, verify.Mode.ALL, policy, now).ok

        ours_s = _best(5, ours)
        policy_s = _best(3, ours_with_policy)
        start = time.perf_counter()
        log = subprocess.run(
            ["git", "--git-dir", str(repo), "log", "--format=%G?", f"{shas[0]}..main"],
            env=env, capture_output=True, check=True, text=True,
        ).stdout.split()  # fmt: skip
        log_s = time.perf_counter() - start
        assert log == ["G"] * args.commits, sorted(set(log))
        step = max(1, args.commits // args.sample)
        sample = shas[1::step][: args.sample]
        loop = []
        for sha in sample:
            start = time.perf_counter()
            subprocess.run(["git", "--git-dir", str(repo), "verify-commit", sha], env=env,
                           capture_output=True, check=True)  # fmt: skip
            loop.append(time.perf_counter() - start)
        loop_s = statistics.mean(loop) * args.commits
        stop_agent(root)
    n = args.commits
    print(f"\n{n} commits, half SSH ed25519 / half OpenPGP (ed25519 subkey); best of runs")
    print(f"{'method':<58}{'seconds':>10}{'per commit':>14}{'ratio':>10}")
    rows = [
        ("gitwarden verify (walk, split, verify), in process", ours_s),
        ("gitwarden verify + commit policy (changed paths, opa eval)", policy_s),
        ("git log --format=%G? (one git, ssh-keygen/gpg per commit)", log_s),
        (f"git verify-commit loop ({len(sample)} sampled, extrapolated)", loop_s),
    ]
    for label, seconds in rows:
        ratio = seconds / ours_s
        print(f"{label:<58}{seconds:>10.3f}{seconds / n * 1e6:>11.0f} µs{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
