"""A corpus of signed, unsigned and forged git objects built with the real git, ssh-keygen, gpg.

Owns the test keys, the trust configuration (an allowed_signers file, a directory of armored
OpenPGP keys, and a GnuPG home holding only those public keys) and one repository with a named
object for every acceptance case. It also answers what `git verify-commit`/`verify-tag` say
with that same trust configuration, so tests compare our verdicts with git's. Everything lives
under a temporary directory; the user's git config and keyrings are never read or touched.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess

from tests.harness import signing

SSH_KEYS = {
    # name: (ssh-keygen type args, allowed_signers options or None when untrusted)
    "alice": (["-t", "ed25519"], ""),
    "bob": (["-t", "ecdsa", "-b", "256"], ""),
    "erin": (["-t", "ecdsa", "-b", "384"], ""),
    "carol": (["-t", "rsa", "-b", "3072"], ""),
    "mallory": (["-t", "ed25519"], None),
    "dave": (["-t", "ed25519"], 'valid-before="20200101Z" '),
    "frank": (["-t", "ed25519"], 'valid-after="20990101Z" '),
    "nina": (["-t", "ed25519"], 'namespaces="file" '),
    # Certificate authorities and the keys they certify (trusted only through certificates).
    "ca": (["-t", "ed25519"], None),
    "rogue-ca": (["-t", "ed25519"], None),
    "ivy": (["-t", "ecdsa", "-b", "256"], None),
    "kim": (["-t", "ed25519"], None),
    "leo": (["-t", "ed25519"], None),
    "rex": (["-t", "ed25519"], None),
    "max": (["-t", "ed25519"], None),
}
# name: (signing CA, certificate principals, validity)
CERTIFICATES = {
    "ivy": ("ca", "ivy@example.com", "20200101:20990101"),
    "kim": ("ca", "kim@example.com", "20100101:20150101"),
    "leo": ("ca", "deploy", "20200101:20990101"),
    "rex": ("rogue-ca", "rex@example.com", "20200101:20990101"),
    "max": ("ca", "max@example.com", "20200101:20990101"),
}
CERTIFICATE_OPTIONS = {"max": ["-O", "force-command=/bin/true"]}
OLD_DATE = "2019-06-01T12:00:00+00:00"


class MissingTool(RuntimeError):
    """A tool the corpus needs is not installed."""


@dataclasses.dataclass
class Corpus:
    """Paths of the trust configuration and the repository, and the named objects in it."""

    root: pathlib.Path
    repo: pathlib.Path
    allowed_signers: pathlib.Path
    gpg_keys: pathlib.Path
    sign_home: pathlib.Path
    verify_home: pathlib.Path
    objects: dict[str, str] = dataclasses.field(default_factory=dict)
    fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)

    def env(self, gnupghome: pathlib.Path | None = None) -> dict[str, str]:
        """An environment that isolates git and gpg from the user's configuration."""
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "GNUPGHOME": str(gnupghome or self.sign_home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(self.root / "gitconfig"),
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def git(self, *args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> str:
        """Run git in the corpus repository and return its stdout."""
        done = subprocess.run(
            ["git", *args],
            cwd=self.repo,
            env={**self.env(), **(env or {})},
            input=stdin,
            capture_output=True,
            check=True,
        )
        return done.stdout.decode().strip()

    def git_accepts(self, name_or_sha: str, *, tag: bool = False) -> bool:
        """What `git verify-commit` (or `verify-tag`) says with the corpus's trust configuration."""
        sha = self.objects.get(name_or_sha, name_or_sha)
        done = subprocess.run(
            ["git", "verify-tag" if tag else "verify-commit", sha],
            cwd=self.repo,
            env=self.env(self.verify_home),
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


def _run(args: list[str], env: dict[str, str], stdin: bytes = b"") -> bytes:
    return subprocess.run(args, env=env, input=stdin, capture_output=True, check=True).stdout


def require_tools() -> None:
    """Fail loudly when git, ssh-keygen or gpg is missing: never skip."""
    missing = [tool for tool in ("git", "ssh-keygen", "gpg", "gpgconf") if not shutil.which(tool)]
    if missing:
        raise MissingTool(f"the signature corpus needs {', '.join(missing)} on PATH")


def build(root: pathlib.Path) -> Corpus:
    """Create keys, trust configuration and the repository with every case under `root`."""
    require_tools()
    corpus = Corpus(
        root=root,
        repo=root / "repo",
        allowed_signers=root / "allowed_signers",
        gpg_keys=root / "gpg-keys",
        sign_home=root / "gnupg-sign",
        verify_home=root / "gnupg-verify",
    )
    for home in (corpus.sign_home, corpus.verify_home):
        home.mkdir(mode=0o700)
    corpus.gpg_keys.mkdir()
    (root / "gitconfig").write_text("")
    _ssh_keys(corpus)
    _gpg_keys(corpus)
    _repository(corpus)
    return corpus


def stop_agents(corpus: Corpus) -> None:
    """Stop the gpg-agents the corpus started."""
    for home in (corpus.sign_home, corpus.verify_home):
        subprocess.run(
            ["gpgconf", "--kill", "all"], env=corpus.env(home), capture_output=True, check=False
        )


def _ssh_keys(corpus: Corpus) -> None:
    lines = []
    for name, (type_args, options) in SSH_KEYS.items():
        key = corpus.root / f"ssh-{name}"
        _run(["ssh-keygen", "-q", *type_args, "-N", "", "-C", name, "-f", str(key)], corpus.env())
        key_type, blob, *_ = (corpus.root / f"ssh-{name}.pub").read_text().split()
        if options is not None:
            lines.append(f"{name}@example.com {options}{key_type} {blob}")
    ca_type, ca_blob, *_ = (corpus.root / "ssh-ca.pub").read_text().split()
    lines.append(f"*@example.com cert-authority {ca_type} {ca_blob}")
    for name, (ca, principals, validity) in CERTIFICATES.items():
        _run(["ssh-keygen", "-q", "-s", str(corpus.root / f"ssh-{ca}"), "-I", name,
              "-n", principals, "-V", validity, *CERTIFICATE_OPTIONS.get(name, []),
              str(corpus.root / f"ssh-{name}.pub")],
             corpus.env())  # fmt: skip
    corpus.allowed_signers.write_text("# test trust\n" + "\n".join(lines) + "\n")


def _gpg(corpus: Corpus, *args: str, home: pathlib.Path | None = None) -> bytes:
    return _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                corpus.env(home))  # fmt: skip


def _gpg_keys(corpus: Corpus) -> None:
    for name in ("gus", "rita", "ursula"):
        _gpg(
            corpus,
            "--quick-gen-key",
            f"{name.title()} <{name}@example.com>",
            "ed25519",
            "sign",
            "never",
        )
        corpus.fingerprints[name] = _fingerprint(corpus, f"{name}@example.com")
    # Gus signs with a signing subkey, so verification must map a subkey to its certificate.
    _gpg(corpus, "--quick-add-key", corpus.fingerprints["gus"], "ed25519", "sign", "never")
    # Olga's key was made (and signed with) in 2020 and expired a day later.
    _gpg(corpus, "--faked-system-time", "20200101T000000", "--quick-gen-key",
         "Olga <olga@example.com>", "ed25519", "sign", "1d")  # fmt: skip
    corpus.fingerprints["olga"] = _fingerprint(corpus, "olga@example.com")
    wrapper = corpus.root / "gpg-in-2020"
    wrapper.write_text('#!/bin/sh\nexec gpg --faked-system-time 20200101T010000 "$@"\n')
    wrapper.chmod(0o755)


def _fingerprint(corpus: Corpus, email: str) -> str:
    listing = _gpg(corpus, "--with-colons", "--list-keys", email).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def _trust_gpg_keys(corpus: Corpus) -> None:
    """Export the trusted public keys (Ursula's stays out) to *.asc and the verify home."""
    for name in ("gus", "rita", "olga"):
        armored = _gpg(corpus, "--armor", "--export", corpus.fingerprints[name])
        (corpus.gpg_keys / f"{name}.asc").write_bytes(armored)
        _gpg(corpus, "--import", str(corpus.gpg_keys / f"{name}.asc"), home=corpus.verify_home)
        trust = f"{corpus.fingerprints[name]}:6:\n".encode()
        _run(["gpg", "--batch", "--import-ownertrust"], corpus.env(corpus.verify_home), trust)


def _revoke_rita(corpus: Corpus) -> None:
    fingerprint = corpus.fingerprints["rita"]
    certificate = corpus.sign_home / "openpgp-revocs.d" / f"{fingerprint}.rev"
    # gpg writes the revocation certificate with a ':' guard before the armor line.
    text = certificate.read_text().replace(":-----BEGIN", "-----BEGIN")
    revocation = corpus.root / "rita.rev"
    revocation.write_text(text)
    _gpg(corpus, "--import", str(revocation))


def _repository(corpus: Corpus) -> None:
    corpus.repo.mkdir()
    git = corpus.git
    git("init", "-q", "-b", "main")
    git("config", "user.name", "Corpus")
    git("config", "user.email", "corpus@example.com")
    git("config", "gpg.ssh.allowedSignersFile", str(corpus.allowed_signers))
    git("config", "commit.gpgSign", "false")
    objects = corpus.objects

    def commit(name: str, signer: str | None, path: str = "apps/app.yaml", **env: str) -> str:
        file = corpus.repo / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"{name}\n")
        git("add", path)
        git(*_sign_args(corpus, signer), "commit", "-q", "-m", f"{name}", env=env or None)
        objects[name] = git("rev-parse", "HEAD")
        return objects[name]

    commit("root", "alice")
    for name in ("alice", "bob", "erin", "carol", "gus", "rita", "mallory", "ursula"):
        commit(f"signed-{name}", name)
    commit("signed-olga", "olga")
    commit("unsigned", None)
    commit("nina-namespace-restricted", "nina")
    commit("dave-outside-window", "dave")
    commit("dave-backdated", "dave", GIT_COMMITTER_DATE=OLD_DATE, GIT_AUTHOR_DATE=OLD_DATE)
    commit("frank-not-yet-valid", "frank")
    commit("certificate-ivy", "ivy")
    commit("certificate-expired", "kim")
    commit("certificate-other-principal", "leo")
    commit("certificate-untrusted-ca", "rex")
    commit("certificate-critical-option", "max")
    git("tag", "base", objects["root"])
    _forge(corpus)
    _tags(corpus)
    _merge_and_force_push(corpus)
    _revoke_rita(corpus)
    _trust_gpg_keys(corpus)
    for name, sha in objects.items():
        git("update-ref", f"refs/cases/{name}", sha)


def _sign_args(corpus: Corpus, signer: str | None) -> list[str]:
    if signer is None:
        return []
    if signer in SSH_KEYS:
        key = str(corpus.root / f"ssh-{signer}")
        if signer in CERTIFICATES:
            key += "-cert.pub"  # ssh-keygen finds the private key next to the certificate
        return ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key}", "-c", "commit.gpgSign=true",
                "-c", "tag.gpgSign=true"]  # fmt: skip
    program = ["-c", f"gpg.program={corpus.root / 'gpg-in-2020'}"] if signer == "olga" else []
    key = corpus.fingerprints[signer]
    return [*program, "-c", "gpg.format=openpgp", "-c", f"user.signingKey={key}!",
            "-c", "commit.gpgSign=true", "-c", "tag.gpgSign=true"]  # fmt: skip


def _write_commit(corpus: Corpus, raw: bytes) -> str:
    return corpus.git("hash-object", "-t", "commit", "-w", "--stdin", "--literally", stdin=raw)


def _forge(corpus: Corpus) -> None:
    """Objects git itself would not write: tampered, duplicate header, other namespace."""
    for signer in ("alice", "gus"):
        raw = corpus.git("cat-file", "commit", corpus.objects[f"signed-{signer}"]).encode() + b"\n"
        # One byte of the message changed after signing.
        tampered = raw.replace(f"signed-{signer}\n".encode(), f"signed-{signer}!".encode())
        corpus.objects[f"tampered-{signer}"] = _write_commit(corpus, tampered)
    raw = corpus.git("cat-file", "commit", corpus.objects["signed-alice"]).encode() + b"\n"
    head, _, message = raw.partition(b"\n\n")
    signature_block = head[head.index(b"gpgsig ") :]
    corpus.objects["duplicate-signature-header"] = _write_commit(
        corpus, head + b"\n" + signature_block + b"\n\n" + message
    )
    parent = corpus.objects["root"]
    tree = corpus.git("rev-parse", f"{parent}^{{tree}}")
    payload = (
        f"tree {tree}\nparent {parent}\nauthor A <a@example.com> 1700000000 +0000\n"
        f"committer A <a@example.com> {_now()} +0000\n\nsigned for another namespace\n"
    ).encode()
    (corpus.root / "payload").write_bytes(payload)
    _run(["ssh-keygen", "-Y", "sign", "-n", "file", "-f", str(corpus.root / "ssh-alice"),
          str(corpus.root / "payload")], corpus.env())  # fmt: skip
    signature = (corpus.root / "payload.sig").read_bytes()
    corpus.objects["wrong-namespace"] = _write_commit(
        corpus, signing.insert_signature(payload, signature)
    )


def _now() -> int:
    done = subprocess.run(["date", "+%s"], capture_output=True, check=True)
    return int(done.stdout)


def _tags(corpus: Corpus) -> None:
    target = corpus.objects["signed-alice"]
    for name, signer in (("tag-ssh", "alice"), ("tag-gpg", "gus"), ("tag-untrusted", "mallory")):
        corpus.git(*_sign_args(corpus, signer), "tag", "-s", "-m", name, name, target)
        corpus.objects[name] = corpus.git("rev-parse", name)
    corpus.git("tag", "-a", "-m", "unsigned", "tag-unsigned", target)
    corpus.objects["tag-unsigned"] = corpus.git("rev-parse", "tag-unsigned")
    corpus.git("tag", "tag-lightweight", target)


def _merge_and_force_push(corpus: Corpus) -> None:
    """main gains a merge (signed by alice) of a branch holding one unsigned commit."""
    git = corpus.git
    git("reset", "-q", "--hard", corpus.objects["signed-alice"])
    corpus.objects["range-base"] = corpus.objects["signed-alice"]
    git("checkout", "-q", "-b", "feature")
    (corpus.repo / "apps" / "feature.yaml").write_text("feature\n")
    git("add", "apps/feature.yaml")
    git(*_sign_args(corpus, "bob"), "commit", "-q", "-m", "signed feature")
    corpus.objects["feature-signed"] = git("rev-parse", "HEAD")
    (corpus.repo / "apps" / "feature.yaml").write_text("feature, unsigned\n")
    git("commit", "-q", "-am", "unsigned feature")
    corpus.objects["feature-unsigned"] = git("rev-parse", "HEAD")
    git("checkout", "-q", "main")
    (corpus.repo / "apps" / "main.yaml").write_text("main\n")
    git("add", "apps/main.yaml")
    git(*_sign_args(corpus, "carol"), "commit", "-q", "-m", "main moves on")
    corpus.objects["main-side"] = git("rev-parse", "HEAD")
    git(*_sign_args(corpus, "alice"), "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    corpus.objects["merge-of-unsigned"] = git("rev-parse", "HEAD")
    git("branch", "-q", "merged", "HEAD")
    # A rewritten history: signed, but not descending from main-side.
    git("checkout", "-q", "-b", "rewritten", corpus.objects["range-base"])
    (corpus.repo / "apps" / "main.yaml").write_text("rewritten\n")
    git("add", "apps/main.yaml")
    git(*_sign_args(corpus, "alice"), "commit", "-q", "-m", "rewritten")
    corpus.objects["rewritten"] = git("rev-parse", "HEAD")
    git("checkout", "-q", "main")


def policy_repository(corpus: Corpus) -> dict[str, str]:
    """A second repository whose commits touch `policies/`, for the commit policy tests.

    p0 (alice) adds apps/; p1 (alice) changes policies/ on a branch that p2, a merge signed by
    bob, brings into main; p3 (carol) changes policies/ on top of p0.
    """
    repo = corpus.root / "policy-repo"
    repo.mkdir()
    shas: dict[str, str] = {}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, env=corpus.env(), capture_output=True,
                              check=True)  # fmt: skip
        return done.stdout.decode().strip()

    def commit(name: str, signer: str, path: str) -> None:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(f"{name}\n")
        git("add", path)
        git(*_sign_args(corpus, signer), "commit", "-q", "-m", name)
        shas[name] = git("rev-parse", "HEAD")

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Corpus")
    git("config", "user.email", "corpus@example.com")
    commit("p0", "alice", "apps/app.yaml")
    git("checkout", "-q", "-b", "policy-change")
    commit("p1", "alice", "policies/commits/extra.rego")
    git("checkout", "-q", "main")
    git(*_sign_args(corpus, "bob"), "merge", "-q", "--no-ff", "-m", "p2", "policy-change")
    shas["p2"] = git("rev-parse", "HEAD")
    git("checkout", "-q", "-b", "outsider", shas["p0"])
    commit("p3", "carol", "policies/admission/rules.rego")
    git("checkout", "-q", "main")
    shas["path"] = str(repo)
    return shas
