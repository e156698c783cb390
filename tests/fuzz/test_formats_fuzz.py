"""Fuzz the reconciler's format readers: commit objects, manifests, SealedSecrets.

Each reader takes bytes or values an attacker can write into Git. Whatever it is given, it
returns a value or raises the project's own error type (`MalformedObject`, `LoadError`,
`DecryptionError`, all `ReconcileError`s where they reach the loop), never a library exception
or a TypeError; a refusal of a SealedSecret never carries the plaintext it protects. Real parts
only: pygit2 object databases, the real RSA/AES code, a real sealing key.
Counts: tests/fuzz/budget.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pygit2
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler import errors, load, manifests
from reconciler.sealed import errors as sealed_errors
from reconciler.sealed import keys, objects, wire
from reconciler.signatures import commits
from tests import revisions, sealed_keys
from tests.fuzz import budget

KEY = sealed_keys.sealing_key(2048, 3)
SECRET = "fuzz-plaintext-7f3a"

# ------------------------------------------------------------------------ commit objects

header_names = st.sampled_from(
    [b"tree", b"parent", b"author", b"committer", b"gpgsig", b"gpgsig-sha256", b"encoding",
     b"mergetag", b"x", b"", b"tree ", b"gpgsigx"]
)  # fmt: skip
header_values = st.one_of(
    st.sampled_from(
        [
            b"4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            b"A U Thor <a@example.com> 1700000000 +0000",
            b"A <a@b> notanumber +0000",
            b"A <a@b> 99999999999999999999999 +0000",
            b"-----BEGIN PGP SIGNATURE-----",
            b"-----BEGIN SSH SIGNATURE-----",
        ]
    ),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
)
header_lines = st.one_of(
    st.tuples(header_names, header_values).map(lambda t: t[0] + b" " + t[1] + b"\n"),
    header_values.map(lambda v: b" " + v + b"\n"),  # a continuation line
)
raw_commits = st.one_of(
    st.tuples(st.lists(header_lines, max_size=10), st.binary(max_size=60)).map(
        lambda t: b"".join(t[0]) + b"\n" + t[1]
    ),
    st.binary(max_size=200),
)


@budget.examples("commits")
@given(raw=raw_commits)
def test_the_commit_splitter_returns_a_split_or_refuses_with_its_own_error(raw: bytes) -> None:
    """Only `MalformedObject`; a commit without any gpgsig header is its own payload."""
    try:
        split = commits.split_commit(raw)
    except commits.MalformedObject:
        return
    headers = raw.split(b"\n\n", 1)[0]
    if not any(line.startswith(b"gpgsig") for line in headers.split(b"\n")):
        assert split.payload == raw
        assert split.signature is None
    else:
        assert len(split.payload) < len(raw)
    assert split.signed_at is None or isinstance(split.signed_at, int)


@budget.examples("commits")
@given(raw=raw_commits)
def test_the_tag_splitter_returns_a_split_or_refuses_with_its_own_error(raw: bytes) -> None:
    try:
        split = commits.split_tag(raw)
    except commits.MalformedObject:
        return
    assert raw.startswith(split.payload)


# ------------------------------------------------------------------------------ manifests

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
    st.sampled_from(["v1", "ConfigMap", "apps/v1", "List", "2026-01-01", "0x1F", "~", "!!binary"]),
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["apiVersion", "kind", "metadata", "name", "namespace", "items", "data"]
            )
            | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
configmaps = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["v1", "V1", "", "a/b/c"]),
        "kind": st.sampled_from(["ConfigMap", "List", "Namespace", "x y"]),
        "metadata": st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "A", "", "a" * 300])},
            optional={"namespace": st.sampled_from(["app", "", "x/y"]), "labels": documents},
        ),
    },
    optional={"data": documents, "items": st.lists(documents, max_size=3)},
)
yaml_texts = st.one_of(
    st.lists(documents | configmaps, max_size=3).map(
        lambda docs: "---\n".join(yaml.safe_dump(d) for d in docs)
    ),
    st.text(max_size=200),
    st.sampled_from(
        [
            "a: &x [1]\nb: *x\n",
            "a: 1\na: 2\n",
            "!!python/object:os.system {}\n",
            "a: !!binary aGk=\n",
            "a: !!set {x}\n",
            "[[[[[[[[[[[[[[[[[[[[",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: app}\n---\n" * 2,
        ]
    ),
)
file_names = st.sampled_from(["a.yaml", "b.yml", "c.json", "d/e.yaml", "README.md"])


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path_factory.mktemp("fuzz-load")), bare=True)


def _commit(repo: pygit2.Repository, files: dict[str, bytes]) -> str:
    """A commit of `files` written straight into the object database (no work tree)."""
    root: dict[str, Any] = {}
    for path, content in files.items():
        *dirs, leaf = path.split("/")
        node = root
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = content

    def tree(node: dict[str, Any]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                builder.insert(name, tree(value), pygit2.enums.FileMode.TREE)
            else:
                builder.insert(name, repo.create_blob(value), pygit2.enums.FileMode.BLOB)
        return builder.write()

    who = pygit2.Signature("fuzz", "fuzz@example.com", 1700000000, 0)
    return str(repo.create_commit(None, who, who, "fuzz", tree(root), []))


@budget.examples("manifests")
@given(
    files=st.dictionaries(
        file_names,
        yaml_texts.map(str.encode)
        | st.binary(max_size=80)
        | documents.map(lambda d: json.dumps(d).encode()),
        min_size=1,
        max_size=3,
    )
)
def test_the_manifest_loader_loads_or_refuses_with_a_load_error(
    git_repo: pygit2.Repository, files: dict[str, bytes]
) -> None:
    """Any file content at a verified commit: manifests, or a `LoadError` naming the place."""
    sha = _commit(git_repo, files)
    verified = revisions.verified(sha, git_repo.path)
    try:
        loaded = load.run(verified, revisions.settings())
    except load.LoadError as exc:
        refusal: str | None = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert sha[:12] in refusal  # the refusal names the commit (and file and line)
        return
    for item in loaded.items:
        assert isinstance(item, manifests.Manifest)
        json.dumps(manifests.thaw(item.body))  # what is loaded is plain JSON


# -------------------------------------------------------------------------- SealedSecrets


def _sealed_for(namespace: str, name: str) -> dict[str, Any]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"password": SECRET},
    }
    return objects.seal(secret, KEY.certificate, dt.datetime(2026, 6, 1, tzinfo=dt.UTC))


GOOD = _sealed_for("app", "db")
ENCRYPTED = GOOD["spec"]["encryptedData"]["password"]


@st.composite
def mutated_ciphertexts(draw: st.DrawFn) -> str:
    """The real ciphertext with bytes flipped, cut or appended, or any text at all."""
    raw = bytearray(base64.b64decode(ENCRYPTED))
    choice = draw(st.integers(0, 3))
    if choice == 0 and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] ^= draw(st.integers(1, 255))
    elif choice == 1:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif choice == 2:
        raw += draw(st.binary(min_size=1, max_size=8))
    else:
        return draw(st.text(max_size=40))
    return base64.b64encode(bytes(raw)).decode()


sealed_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["bitnami.com/v1alpha1", "v1"]),
            "kind": st.sampled_from(["SealedSecret", "Secret"]),
            "metadata": st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["db", "other", "", 7]),
                    "namespace": st.sampled_from(["app", "elsewhere", "", None]),
                },
                optional={
                    "annotations": st.dictionaries(
                        st.sampled_from(
                            [
                                "sealedsecrets.bitnami.com/cluster-wide",
                                "sealedsecrets.bitnami.com/namespace-wide",
                            ]
                        ),
                        st.sampled_from(["true", "false", "yes"]),
                        max_size=2,
                    )
                },
            ),
            "spec": st.fixed_dictionaries(
                {},
                optional={
                    "encryptedData": st.dictionaries(
                        st.sampled_from(["password", "other"]) | st.integers(0, 3),
                        mutated_ciphertexts() | documents,
                        max_size=3,
                    )
                    | documents,
                    "template": documents,
                    "data": documents,
                },
            ),
        }
    ),
    documents,
)


@budget.examples("sealed")
@given(body=sealed_bodies)
def test_the_sealed_secret_decoder_opens_or_refuses_without_the_plaintext(body: Any) -> None:
    """Only `DecryptionError` (a Stalled error); its text never holds the protected value."""
    chooser = objects.KeyChooser(keys.KeyRing.of([KEY]), manifests.KeyHints())
    if not isinstance(body, dict):
        body = {"spec": body}
    try:
        opened = objects.unseal(body, chooser)
    except sealed_errors.DecryptionError as exc:
        refusal: sealed_errors.DecryptionError | None = exc
    else:
        refusal = None
    if refusal is not None:
        assert isinstance(refusal, errors.Stalled)
        assert SECRET not in f"{refusal} {refusal!r}"
        return
    assert opened.body_for_apply()["kind"] == "Secret"


@budget.examples("sealed")
@given(text=mutated_ciphertexts(), namespace=st.sampled_from(["app", "other"]))
def test_the_wire_format_opens_only_the_real_value_for_its_own_label(
    text: str, namespace: str
) -> None:
    """Tampered bytes or another label: `WireError`, never other plaintext or a crash."""
    label = wire.label(wire.Scope.STRICT, namespace, "db")
    try:
        plaintext = wire.open_with(KEY.private_key, wire.decode_text(text), label)
    except wire.WireError:
        return
    assert plaintext == SECRET.encode()
    assert namespace == "app"
