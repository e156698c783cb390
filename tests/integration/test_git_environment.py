"""git child processes ignore the caller's environment and git configuration.

Each test exports what a developer's shell or a CI runner may carry (GIT_SSH_COMMAND,
GIT_SSL_NO_VERIFY, GIT_ALLOW_PROTOCOL, GIT_CONFIG_PARAMETERS, a ~/.gitconfig) and checks that
the host-key, TLS and protocol refusals still happen against the real servers on loopback.
"""

from __future__ import annotations

import pathlib
import shlex

import asyncssh
import pytest

from reconciler import gitsource
from tests.harness import gitcorpus, httpgit, pki, sshgit
from tests.integration import conftest


def test_an_exported_git_ssh_command_does_not_undo_host_key_checking(
    ssh_server: tuple[sshgit.SshGitServer, pathlib.Path],
    corpus: gitcorpus.Corpus,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, key_file = ssh_server
    other = server.known_hosts_line(asyncssh.generate_private_key("ssh-ed25519"))
    source = conftest.ssh_source(server, corpus, key_file, other)
    relaxed = ["ssh", "-i", str(key_file), "-o", "IdentitiesOnly=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]  # fmt: skip
    monkeypatch.setenv("GIT_SSH_COMMAND", shlex.join(relaxed))
    monkeypatch.setenv("GIT_SSH", "/bin/false")
    with pytest.raises(gitsource.FetchError, match="Host key verification failed"):
        gitsource.fetch(source, tmp_path, "main", None, full=False)


def _https_source(
    server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> gitsource.Source:
    """An https source whose CA bundle did not sign the server's certificate."""
    other = pki.CertificateAuthority("someone-else")
    (tmp_path / "other.pem").write_bytes(other.cert_pem)
    return gitsource.Source(
        server.url(corpus.repo.name, "deploy:t0ken-https"), ca_bundle=tmp_path / "other.pem"
    )


def _global_gitconfig(monkeypatch: pytest.MonkeyPatch, home: pathlib.Path, text: str) -> None:
    home.mkdir(exist_ok=True)
    (home / ".gitconfig").write_text(text)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.delenv("GIT_CONFIG_NOSYSTEM", raising=False)


@pytest.mark.parametrize("how", ["GIT_SSL_NO_VERIFY", "GIT_CONFIG_PARAMETERS", "gitconfig"])
def test_tls_verification_cannot_be_turned_off_from_outside(
    https_server: httpgit.HttpsGitServer,
    corpus: gitcorpus.Corpus,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    source = _https_source(https_server, corpus, tmp_path)
    # A URL-specific setting beats the generic `-c http.sslVerify=true` whatever its scope.
    per_url = f"https://127.0.0.1:{https_server.port}/"
    if how == "GIT_SSL_NO_VERIFY":
        monkeypatch.setenv("GIT_SSL_NO_VERIFY", "1")
    elif how == "GIT_CONFIG_PARAMETERS":
        monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'http.{per_url}.sslverify'='false'")
    else:
        _global_gitconfig(
            monkeypatch, tmp_path / "home", f'[http "{per_url}"]\n\tsslVerify = false\n'
        )
    with pytest.raises(gitsource.FetchError, match="certificate"):
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)


@pytest.mark.parametrize("how", ["GIT_ALLOW_PROTOCOL", "gitconfig"])
def test_the_ext_transport_stays_disabled(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """`ext::` runs any command; an exported allow-list or a global config must not enable it."""
    marker = tmp_path / "ran"
    source = gitsource.Source(f"ext::sh -c touch% {marker}")
    if how == "GIT_ALLOW_PROTOCOL":
        monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext:file:https:ssh")
    else:
        _global_gitconfig(monkeypatch, tmp_path / "home", "[protocol]\n\tallow = always\n"
                          "[protocol \"ext\"]\n\tallow = always\n")  # fmt: skip
    with pytest.raises(gitsource.FetchError, match="transport 'ext' not allowed"):
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["GIT_CONFIG_PARAMETERS", "gitconfig"])
def test_the_source_url_cannot_be_rewritten_from_outside(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """`url.<other>.insteadOf` would fetch an attacker's repository in place of the source."""
    # Nothing listens on port 9: the real source cannot be reached, the rewritten one could.
    url = "https://127.0.0.1:9/repo.git"
    rewrite = corpus.repo.as_uri()
    if how == "GIT_CONFIG_PARAMETERS":
        monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'url.{rewrite}.insteadof'='{url}'")
    else:
        _global_gitconfig(
            monkeypatch, tmp_path / "home", f'[url "{rewrite}"]\n\tinsteadOf = {url}\n'
        )
    with pytest.raises(gitsource.FetchError, match=r"127\.0\.0\.1 port 9"):
        gitsource.fetch(gitsource.Source(url), tmp_path / "cache", "main", None, full=False)


def test_the_git_child_environment_is_an_allow_list(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch still works with a hostile environment, and none of it reaches git."""
    for name, value in {
        "GIT_DIR": str(tmp_path / "elsewhere"),
        "GIT_OBJECT_DIRECTORY": str(tmp_path / "elsewhere"),
        "GIT_SSH_COMMAND": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_ASKPASS": "/bin/false",
        "GIT_TRACE": str(tmp_path / "trace"),
    }.items():
        monkeypatch.setenv(name, value)
    checkout = gitsource.fetch(
        gitsource.Source(corpus.repo.as_uri()), tmp_path / "cache", "merged", None, full=False
    )
    assert checkout.tip_commit == corpus.objects["merge-of-unsigned"]
    assert not (tmp_path / "trace").exists()
    assert not (tmp_path / "elsewhere").exists()


def test_a_source_url_is_never_read_as_a_git_option(
    tmp_path: pathlib.Path,
) -> None:
    """`--upload-pack=<command>` as the URL would make git run that command."""
    marker = tmp_path / "ran"
    source = gitsource.Source(f"--upload-pack=touch {marker}")
    with pytest.raises(gitsource.FetchError):
        gitsource.fetch(source, tmp_path / "cache", "refs/heads/main", None, full=False)
    assert not marker.exists()
