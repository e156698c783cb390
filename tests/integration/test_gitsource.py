"""Fetching with the real git from a local source: shallow, deepening, full, and failures."""

from __future__ import annotations

import pathlib
import traceback

import asyncssh
import pygit2
import pytest

from reconciler import gitsource, verify
from tests.harness import gitcorpus, httpgit, pki, sshgit
from tests.integration import conftest


def test_head_fetch_is_one_commit_deep(corpus: gitcorpus.Corpus, tmp_path: pathlib.Path) -> None:
    source = gitsource.Source(str(corpus.repo))
    checkout = gitsource.fetch(source, tmp_path, "merged", None, full=False)
    assert checkout.shallow
    assert checkout.tip_commit == corpus.objects["merge-of-unsigned"]
    assert checkout.git_dir.is_relative_to(tmp_path)


def test_range_fetch_deepens_until_the_last_applied_commit_is_reached(
    corpus: gitcorpus.Corpus,
    inspect: conftest.Inspect,
    tmp_path: pathlib.Path,
) -> None:
    source = gitsource.Source(str(corpus.repo))
    since = corpus.objects["root"]
    checkout = gitsource.fetch(source, tmp_path, "main", since, full=False, first_depth=1)
    assert checkout.since == since
    report = inspect(checkout, verify.Mode.ALL)
    assert report.refusal is None
    assert corpus.objects["signed-alice"] in {v.sha for v in report.verdicts}


def test_full_fetch_has_the_whole_history(corpus: gitcorpus.Corpus, tmp_path: pathlib.Path) -> None:
    source = gitsource.Source(str(corpus.repo))
    checkout = gitsource.fetch(source, tmp_path, "main", None, full=True)
    assert not checkout.shallow
    assert corpus.objects["root"] in pygit2.Repository(str(checkout.git_dir))


def test_shallow_history_cannot_be_verified_without_a_last_applied_commit(
    corpus: gitcorpus.Corpus,
    inspect: conftest.Inspect,
    tmp_path: pathlib.Path,
) -> None:
    checkout = gitsource.fetch(
        gitsource.Source(str(corpus.repo)), tmp_path, "main", None, full=False
    )
    with pytest.raises(gitsource.SourceError, match="shallow"):
        inspect(checkout, verify.Mode.ALL)


def test_force_push_is_refused_after_fetching_the_complete_history(
    corpus: gitcorpus.Corpus,
    inspect: conftest.Inspect,
    tmp_path: pathlib.Path,
) -> None:
    source = gitsource.Source(str(corpus.repo))
    since = corpus.objects["main-side"]
    checkout = gitsource.fetch(source, tmp_path, "rewritten", since, full=False, first_depth=1)
    assert not checkout.shallow
    report = inspect(checkout, verify.Mode.ALL)
    assert report.refusal is not None


def test_last_applied_commit_missing_from_the_source_is_refused(
    corpus: gitcorpus.Corpus,
    inspect: conftest.Inspect,
    tmp_path: pathlib.Path,
) -> None:
    source = gitsource.Source(str(corpus.repo))
    gone = "0123456789abcdef0123456789abcdef01234567"
    checkout = gitsource.fetch(source, tmp_path, "main", gone, full=False, first_depth=1)
    report = inspect(checkout, verify.Mode.ALL)
    assert report.refusal is not None
    assert "not in the history" in report.refusal


def test_unknown_revision_is_a_source_error(
    corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(gitsource.SourceError, match="not a branch or tag on the remote"):
        gitsource.fetch(
            gitsource.Source(str(corpus.repo)), tmp_path, "no-such-branch", None, full=False
        )


def test_fetch_errors_never_show_url_credentials(tmp_path: pathlib.Path) -> None:
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    source = gitsource.Source("https://deploy:s3cr3t-token@127.0.0.1:9/repo.git")
    with pytest.raises(gitsource.FetchError) as caught:
        gitsource.fetch(source, tmp_path, "main", None, full=False)
    assert "s3cr3t-token" not in str(caught.value)
    # Nor anywhere in the chain a log handler would print with the traceback.
    assert caught.value.__cause__ is None
    assert "s3cr3t-token" not in "".join(traceback.format_exception(caught.value))


def test_ssh_fetch_with_the_right_host_key(
    ssh_server: tuple[sshgit.SshGitServer, pathlib.Path],
    corpus: gitcorpus.Corpus,
    tmp_path: pathlib.Path,
) -> None:
    """Over a real SSH connection, a host key in known_hosts lets the fetch through."""
    server, key_file = ssh_server
    source = conftest.ssh_source(server, corpus, key_file, server.known_hosts_line())
    checkout = gitsource.fetch(source, tmp_path, "merged", None, full=False)
    assert checkout.tip_commit == corpus.objects["merge-of-unsigned"]
    assert checkout.shallow


@pytest.mark.parametrize("known", ["other-key", "empty"])
def test_ssh_fetch_refuses_an_unknown_or_changed_host_key(
    ssh_server: tuple[sshgit.SshGitServer, pathlib.Path],
    corpus: gitcorpus.Corpus,
    tmp_path: pathlib.Path,
    known: str,
) -> None:
    """Strict host-key checking: a server whose key is not the configured one is refused."""
    server, key_file = ssh_server
    line = (
        server.known_hosts_line(asyncssh.generate_private_key("ssh-ed25519"))
        if known == "other-key"
        else ""
    )
    source = conftest.ssh_source(server, corpus, key_file, line)
    with pytest.raises(gitsource.FetchError, match="Host key verification failed"):
        gitsource.fetch(source, tmp_path, "main", None, full=False)
    assert not (tmp_path / "objects").exists() or not any((tmp_path).rglob("*.pack"))


def test_https_fetch_with_the_servers_ca(
    https_server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    """Over real TLS with credentials, the configured CA bundle lets the fetch through."""
    source = gitsource.Source(
        https_server.url(corpus.repo.name, "deploy:t0ken-https"),
        ca_bundle=https_server.write_ca(tmp_path / "ca.pem"),
    )
    checkout = gitsource.fetch(
        source, tmp_path / "cache", "main", corpus.objects["root"], full=False
    )
    assert checkout.since == corpus.objects["root"]
    assert checkout.tip_commit == str(
        pygit2.Repository(str(corpus.repo)).revparse_single("main").id
    )


def test_https_fetch_refuses_a_server_the_ca_did_not_sign(
    https_server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    """A certificate from another CA (or none configured) fails verification: no fetch."""
    other = pki.CertificateAuthority("someone-else")
    (tmp_path / "other.pem").write_bytes(other.cert_pem)
    source = gitsource.Source(
        https_server.url(corpus.repo.name, "deploy:t0ken-https"), ca_bundle=tmp_path / "other.pem"
    )
    with pytest.raises(gitsource.FetchError, match="certificate") as caught:
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)
    assert "t0ken-https" not in "".join(traceback.format_exception(caught.value))


def test_https_wrong_credentials_fail_without_showing_them(
    https_server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    """A 401 is a FetchError that never repeats the password."""
    source = gitsource.Source(
        https_server.url(corpus.repo.name, "deploy:wr0ng-secret"),
        ca_bundle=https_server.write_ca(tmp_path / "ca.pem"),
    )
    with pytest.raises(gitsource.FetchError) as caught:
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)
    text = "".join(traceback.format_exception(caught.value))
    assert "wr0ng-secret" not in text
    assert "Authentication failed" in text or "401" in text


def test_local_repository_that_is_not_git_is_a_source_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(gitsource.SourceError, match="not a git repository"):
        gitsource.open_local(tmp_path, "main", None)


def test_unknown_last_applied_revision_in_a_local_repository_is_a_source_error(
    corpus: gitcorpus.Corpus,
) -> None:
    with pytest.raises(gitsource.SourceError, match="last applied revision"):
        gitsource.open_local(corpus.repo, "main", "no-such-rev")


def _credential_files(tmp_path: pathlib.Path, user: str, password: str) -> dict[str, pathlib.Path]:
    (tmp_path / "username").write_text(f"{user}\n")
    (tmp_path / "password").write_text(f"{password}\n")
    return {"username_file": tmp_path / "username", "password_file": tmp_path / "password"}


def test_https_credentials_from_files_fetch_without_a_password_in_the_url(
    https_server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    """Basic credentials read from files (a mounted Secret) authenticate the fetch."""
    source = gitsource.Source(
        https_server.url(corpus.repo.name),
        ca_bundle=https_server.write_ca(tmp_path / "ca.pem"),
        **_credential_files(tmp_path, "deploy", "t0ken-https"),
    )
    checkout = gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)
    assert checkout.tip_commit == str(
        pygit2.Repository(str(corpus.repo)).revparse_single("main").id
    )
    # Nothing of the credentials is stored in the cache's configuration.
    assert "t0ken-https" not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "cache").rglob("config")
    )


def test_https_without_the_credential_files_is_refused(
    https_server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    """The control: the same server without credentials answers 401."""
    source = gitsource.Source(
        https_server.url(corpus.repo.name), ca_bundle=https_server.write_ca(tmp_path / "ca.pem")
    )
    with pytest.raises(gitsource.FetchError):
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)


def test_wrong_credentials_from_files_fail_without_showing_them(
    https_server: httpgit.HttpsGitServer, corpus: gitcorpus.Corpus, tmp_path: pathlib.Path
) -> None:
    source = gitsource.Source(
        https_server.url(corpus.repo.name),
        ca_bundle=https_server.write_ca(tmp_path / "ca.pem"),
        **_credential_files(tmp_path, "deploy", "wr0ng-secret"),
    )
    with pytest.raises(gitsource.FetchError) as caught:
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)
    text = "".join(traceback.format_exception(caught.value))
    assert "wr0ng-secret" not in text
    # The server refused the header (401), so git asked for credentials it may not prompt for.
    assert "could not read Username" in text or "Authentication failed" in text


def test_credential_files_that_cannot_be_read_name_the_file_only(tmp_path: pathlib.Path) -> None:
    source = gitsource.Source(
        "https://127.0.0.1:1/repo",
        username_file=tmp_path / "missing-user",
        password_file=tmp_path / "missing-password",
    )
    with pytest.raises(gitsource.SourceError, match="missing-user"):
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)


def test_credentials_are_never_sent_to_a_plain_http_or_ssh_source(tmp_path: pathlib.Path) -> None:
    files = _credential_files(tmp_path, "deploy", "t0ken")
    source = gitsource.Source("ssh://git@127.0.0.1:1/repo", **files)
    with pytest.raises(gitsource.SourceError, match="only sent to an https:// source"):
        gitsource.fetch(source, tmp_path / "cache", "main", None, full=False)
