"""OpenPGP keys made by the real gpg that our backend cannot use are refused when trust loads.

GnuPG accepts brainpool curves, DSA-1024 and SHA-1 self-signatures; Sequoia's backend and
standard policy find no valid binding signature for them. Such a key must be an error naming
the file and the key when `--gpg-keys` is read, never a traceback while a commit is verified.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from gitwarden_cli import main
from reconciler.signatures import openpgp
from tests.harness import gitcorpus

# name: (extra gpg options, algorithm for --quick-gen-key, expected reason)
KEYS = {
    "bea": ([], "brainpoolP256r1", "the brainpoolP256r1 curve is not supported"),
    "bo": ([], "brainpoolP384r1", "the brainpoolP384r1 curve is not supported"),
    "dan": ([], "dsa1024", "DSA-1024 keys are refused as too weak"),
    "sid": (["--cert-digest-algo", "SHA1"], "ed25519", "self-signatures use SHA-1"),
}


@pytest.fixture(scope="module")
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    root = tmp_path_factory.mktemp("weak-keys")
    home = root / "gnupg"
    home.mkdir(mode=0o700)
    yield home
    subprocess.run(["gpgconf", "--kill", "all"], env=_env(home), capture_output=True, check=False)


def _env(home: pathlib.Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home.parent),
        "GNUPGHOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "LC_ALL": "C",
    }


def _gpg(home: pathlib.Path, *args: str) -> bytes:
    done = subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        env=_env(home), capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.fixture(scope="module")
def key_files(gpg_home: pathlib.Path) -> dict[str, pathlib.Path]:
    """Each key of KEYS made by gpg and exported armored to its own directory."""
    files = {}
    for name, (options, algorithm, _why) in KEYS.items():
        _gpg(gpg_home, *options, "--quick-gen-key", f"{name} <{name}@example.com>", algorithm,
             "sign", "never")  # fmt: skip
        directory = gpg_home.parent / name
        directory.mkdir()
        files[name] = directory / f"{name}.asc"
        files[name].write_bytes(_gpg(gpg_home, "--armor", "--export", f"{name}@example.com"))
    return files


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_key_the_backend_cannot_use_is_refused_naming_file_key_and_reason(
    key_files: dict[str, pathlib.Path], name: str
) -> None:
    path = key_files[name]
    with pytest.raises(openpgp.KeyringError) as caught:
        openpgp.load_keyring(((str(path), path.read_bytes()),))
    message = str(caught.value)
    assert message.startswith(f"{path}: OpenPGP key ")
    assert KEYS[name][2] in message
    assert "Caused by" not in message  # nothing of the backend's own text


def test_a_commit_signed_by_a_brainpool_key_exits_2_before_verifying(
    corpus: gitcorpus.Corpus,
    gpg_home: pathlib.Path,
    key_files: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GnuPG signs (and git verifies) with bea's key; our verify says why it cannot."""
    repo = tmp_path / "repo"
    env = _env(gpg_home)
    git = ["git", "-c", "user.name=Bea", "-c", "user.email=bea@example.com",
           "-c", "user.signingKey=bea@example.com", "-c", "gpg.format=openpgp"]  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], env=env, check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*git, "commit", "-q", "-S", "--allow-empty", "-m", "bea"], cwd=repo, env=env,
                   check=True, capture_output=True)  # fmt: skip
    code = main.main(["verify", "--repo", str(repo), "--rev", "main", "--mode", "head",
                      "--gpg-keys", str(key_files["bea"].parent)])  # fmt: skip
    assert code == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{key_files['bea']}: OpenPGP key" in err
    assert "brainpoolP256r1" in err
