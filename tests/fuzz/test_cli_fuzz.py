"""Fuzz the command line: no `gitwarden` command prints a traceback, whatever its input files.

`gitwarden unseal` and `reseal` read a SealedSecret from stdin; `gitwarden verify` reads an
allowed_signers file and a repository whose commit objects anyone could have written. Each
generated input runs through `gitwarden_cli.main.main` in this process (fast: any exception
escaping it would be the traceback an operator sees), and a few through the installed command
as a child process, as an operator runs it. Exit codes are 0, 1 (refused) or 2 (usage) only.
Counts: tests/fuzz/budget.py.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pygit2
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gitwarden_cli import main
from tests import sealed_keys
from tests.fuzz import budget
from tests.fuzz import test_formats_fuzz as formats

EXITS = (main.EXIT_OK, main.EXIT_FAILED, main.EXIT_USAGE)


@contextlib.contextmanager
def stdio(stdin: bytes) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Swap in stdin, stdout and stderr for one in-process run."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def in_process(argv: list[str], stdin: bytes = b"") -> str:
    """Run the CLI in this process; return stderr. An escaping exception fails the example."""
    with stdio(stdin) as (_, err):
        code = main.main(argv)
    assert code in EXITS
    return err.getvalue()


def as_operator(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "gitwarden_cli.main", *argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert done.returncode in EXITS, done.stderr
    return done


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A sealing key, its certificate, and a repository with one unsigned commit."""
    root = tmp_path_factory.mktemp("fuzz-cli")
    key = root / "tls.key"
    key.write_bytes(formats.KEY.private_key_pem())
    cert = root / "tls.crt"
    cert.write_bytes(sealed_keys.sealing_key(2048, 4).certificate_pem())
    repo = pygit2.init_repository(str(root / "repo"), bare=True)
    who = pygit2.Signature("fuzz", "fuzz@example.com", 1700000000, 0)
    tree = repo.TreeBuilder().write()
    repo.create_commit("refs/heads/main", who, who, "unsigned", tree, [])
    return {"key": key, "cert": cert, "repo": pathlib.Path(repo.path), "root": root}


stdin_documents = st.one_of(
    formats.sealed_bodies.map(lambda b: yaml.safe_dump(b).encode()),
    formats.yaml_texts.map(str.encode),
    st.binary(max_size=120),
)


@budget.examples("cli_in_process")
@given(stdin=stdin_documents, command=st.sampled_from(["unseal", "reseal"]))
def test_unseal_and_reseal_answer_any_stdin_with_an_exit_code(
    files: dict[str, pathlib.Path], stdin: bytes, command: str
) -> None:
    argv = [command, "--key", str(files["key"])]
    if command == "reseal":
        argv += ["--cert", str(files["cert"])]
    err = in_process(argv, stdin)
    assert formats.SECRET not in err


allowed_signers = st.one_of(
    st.lists(
        st.tuples(
            st.sampled_from(["alice@example.com", "*", '"a b"', "", "x,y"]),
            st.sampled_from(["", 'namespaces="git"', 'valid-after="2020"', "cert-authority"]),
            st.sampled_from(["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "x"]),
            st.sampled_from(["AAAAC3NzaC1lZDI1NTE5AAAAIB", "!!", ""]) | st.text(max_size=20),
        ).map(" ".join),
        max_size=4,
    ).map(lambda lines: "\n".join(lines).encode()),
    st.binary(max_size=120),
)


@budget.examples("cli_in_process")
@given(signers=allowed_signers)
def test_verify_answers_any_allowed_signers_file_with_an_exit_code(
    files: dict[str, pathlib.Path], signers: bytes
) -> None:
    path = files["root"] / "allowed_signers"
    path.write_bytes(signers)
    argv = ["verify", "--repo", str(files["repo"]), "--rev", "main", "--allowed-signers", str(path)]
    in_process(argv)


@budget.examples("cli_in_process")
@given(raw=formats.raw_commits)
def test_verify_answers_a_repository_of_any_commit_object_with_an_exit_code(
    files: dict[str, pathlib.Path], raw: bytes
) -> None:
    """A commit object with any bytes, written straight into the object database."""
    repo = pygit2.Repository(str(files["repo"]))
    oid = repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw)
    signers = files["root"] / "one_signer"
    signers.write_text("alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n")
    argv = ["verify", "--repo", str(files["repo"]), "--rev", str(oid)]
    in_process([*argv, "--allowed-signers", str(signers)])


@budget.examples("cli_child")
@given(
    stdin=stdin_documents, raw=formats.raw_commits, command=st.sampled_from(["unseal", "verify"])
)
def test_the_installed_command_prints_no_traceback(
    files: dict[str, pathlib.Path], stdin: bytes, raw: bytes, command: str
) -> None:
    """The same inputs through the real `gitwarden` process: an exit code and no traceback."""
    if command == "unseal":
        as_operator(["unseal", "--key", str(files["key"])], stdin)
        return
    oid = pygit2.Repository(str(files["repo"])).odb.write(pygit2.enums.ObjectType.COMMIT, raw)
    signers = files["root"] / "one_signer"
    signers.write_text("alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n")
    argv = ["verify", "--repo", str(files["repo"]), "--rev", str(oid)]
    as_operator([*argv, "--allowed-signers", str(signers)])
