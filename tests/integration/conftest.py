"""Session fixtures for signature tests: the real-tool corpus and the matching trust settings."""

from __future__ import annotations

import datetime
import pathlib
import shutil
from collections.abc import Iterator
from typing import Protocol

import asyncssh
import pytest

from reconciler import commitpolicy, gitsource, verify
from reconciler.signatures import allowed_signers, openpgp
from tests.harness import gitcorpus, httpgit, sshgit


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gitcorpus.Corpus]:
    """Keys, trust files and the case repository, built once with git, ssh-keygen and gpg."""
    try:
        built = gitcorpus.build(tmp_path_factory.mktemp("sigs"))
    except gitcorpus.MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)
    yield built
    gitcorpus.stop_agents(built)


@pytest.fixture(scope="session")
def trust(corpus: gitcorpus.Corpus) -> verify.Trust:
    """The same trust configuration git is given: allowed_signers and the exported *.asc keys."""
    keys = tuple((str(p), p.read_bytes()) for p in sorted(corpus.gpg_keys.glob("*.asc")))
    return verify.Trust(
        allowed_signers.parse(corpus.allowed_signers.read_text(), str(corpus.allowed_signers)),
        openpgp.load_keyring(keys),
    )


@pytest.fixture
def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="session")
def opa() -> str:
    """The pinned opa binary; a missing one fails the run with how to build it."""
    found = shutil.which("opa") or str(pathlib.Path(".tools/bin/opa").resolve())
    if not pathlib.Path(found).exists():
        pytest.fail("opa not found: run `make tools`", pytrace=False)
    return found


@pytest.fixture(scope="session")
def policy_repo(corpus: gitcorpus.Corpus) -> dict[str, str]:
    """The repository whose commits touch policies/ (see gitcorpus.policy_repository)."""
    return gitcorpus.policy_repository(corpus)


class Inspect(Protocol):
    """`verify.inspect` bound to the corpus trust and the current time."""

    def __call__(
        self,
        checkout: gitsource.Checkout,
        mode: verify.Mode,
        policy: commitpolicy.CommitPolicy | None = None,
    ) -> verify.Report: ...


@pytest.fixture
def inspect(trust: verify.Trust, now: datetime.datetime) -> Inspect:
    """`verify.inspect` with the corpus trust and the current time."""

    def run(
        checkout: gitsource.Checkout,
        mode: verify.Mode,
        policy: commitpolicy.CommitPolicy | None = None,
    ) -> verify.Report:
        return verify.inspect(checkout, trust, mode, policy, now)

    return run


@pytest.fixture(scope="module")
def ssh_server(
    corpus: gitcorpus.Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[sshgit.SshGitServer, pathlib.Path]]:
    """The corpus served over SSH, and the client's private key file."""
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path_factory.mktemp("ssh-client") / "id_ed25519"
    key_file.write_bytes(client_key.export_private_key("openssh"))
    key_file.chmod(0o600)
    with sshgit.ssh_git_server(corpus.repo.parent, client_key) as server:
        yield server, key_file


def ssh_source(
    server: sshgit.SshGitServer, corpus: gitcorpus.Corpus, key_file: pathlib.Path, known: str
) -> gitsource.Source:
    """An ssh source for the corpus that trusts exactly the known_hosts text `known`."""
    known_hosts = key_file.parent / f"known_hosts-{abs(hash(known))}"
    known_hosts.write_text(known)
    return gitsource.Source(
        server.url(corpus.repo.name), known_hosts=known_hosts, identity_file=key_file
    )


@pytest.fixture(scope="module")
def https_server(corpus: gitcorpus.Corpus) -> Iterator[httpgit.HttpsGitServer]:
    """The corpus served over smart HTTP with TLS and basic authentication."""
    with httpgit.https_git_server(corpus.repo.parent, ("deploy", "t0ken-https")) as server:
        yield server
