"""The load stage reads the verified commit from git's object database and refuses what it must,
naming commit, file and line."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from reconciler import errors, load, manifests, objectref
from tests import revisions
from tests.harness import signedrepo

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: app\n"


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> signedrepo.SignedRepo:
    return signedrepo.build(tmp_path)


def run(
    repo: signedrepo.SignedRepo,
    files: signedrepo.Files,
    paths: tuple[str, ...] = (".",),
    discovery: Any = None,
    **apply: Any,
) -> manifests.Manifests:
    sha = repo.commit(files)
    verified = revisions.verified(sha, str(repo.path))
    return load.run(verified, revisions.settings(paths, **apply), discovery)


def refs(loaded: manifests.Manifests) -> list[str]:
    return [str(m.ref) for m in loaded.items]


def test_reads_multi_document_yaml_and_json_at_the_verified_commit(
    repo: signedrepo.SignedRepo,
) -> None:
    files = {
        "apps/web.yaml": CM.format(name="a") + "---\n# only a comment\n---\n" + CM.format(name="b"),
        "apps/x.json": '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}',
        "apps/README.md": "not a manifest",
    }
    loaded = run(repo, files)
    assert refs(loaded) == ["/ConfigMap/app/a", "/ConfigMap/app/b", "/Namespace//app"]
    assert [(m.source, m.line) for m in loaded.items] == [
        ("apps/web.yaml", 1),
        ("apps/web.yaml", 9),
        ("apps/x.json", 1),
    ]
    assert loaded.verified.commit == loaded.revision


def test_reads_the_commit_not_whatever_the_branch_says_now(repo: signedrepo.SignedRepo) -> None:
    first = repo.commit({"a.yaml": CM.format(name="first")})
    repo.commit({"a.yaml": CM.format(name="later")})
    loaded = load.run(revisions.verified(first, str(repo.path)), revisions.settings())
    assert refs(loaded) == ["/ConfigMap/app/first"]


def test_list_kinds_are_expanded_with_each_items_line(repo: signedrepo.SignedRepo) -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: one, namespace: app}\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: two, namespace: app}\n"
    )
    loaded = run(repo, {"list.yaml": text})
    assert refs(loaded) == ["/ConfigMap/app/one", "/ConfigMap/app/two"]
    assert [m.line for m in loaded.items] == [4, 7]


def test_timestamps_stay_strings_and_int_keys_become_strings(repo: signedrepo.SignedRepo) -> None:
    text = CM.format(name="t") + "data:\n  when: 2024-01-01\n  8080: port\n"
    [item] = run(repo, {"t.yaml": text}).items
    assert dict(item.body["data"]) == {"when": "2024-01-01", "8080": "port"}


def test_the_default_namespace_fills_in_and_cluster_kinds_need_none(
    repo: signedrepo.SignedRepo,
) -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\n"
    )
    loaded = run(repo, {"a.yaml": text}, default_namespace="team")
    assert refs(loaded) == ["/ConfigMap/team/c", "rbac.authorization.k8s.io/ClusterRole//r"]
    assert loaded.items[0].body["metadata"]["namespace"] == "team"


def test_a_namespaced_object_without_namespace_is_refused_without_a_default(
    repo: signedrepo.SignedRepo,
) -> None:
    with pytest.raises(load.LoadError, match=r":a\.yaml:1: ConfigMap c names no namespace"):
        run(repo, {"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"})


def test_custom_kinds_take_their_scope_from_a_crd_in_the_revision_or_from_discovery(
    repo: signedrepo.SignedRepo,
) -> None:
    crd = (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata: {name: widgets.example.com}\n"
        "spec: {group: example.com, scope: Cluster, names: {kind: Widget, plural: widgets}}\n"
    )
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    gadget = "apiVersion: other.io/v1\nkind: Gadget\nmetadata: {name: g}\n"
    asked: list[tuple[str, str]] = []

    def discovery(group: str, kind: str) -> bool | None:
        asked.append((group, kind))
        return True

    loaded = run(repo, {"a.yaml": crd + "---\n" + widget + "---\n" + gadget}, discovery=discovery,
                 default_namespace="d")  # fmt: skip
    assert refs(loaded)[1:] == ["example.com/Widget//w", "other.io/Gadget/d/g"]
    assert asked == [("other.io", "Gadget")]


def test_a_kind_nobody_knows_is_refused(repo: signedrepo.SignedRepo) -> None:
    with pytest.raises(load.UnknownScope, match=r"cannot tell whether Gadget\.other\.io"):
        run(repo, {"a.yaml": "apiVersion: other.io/v1\nkind: Gadget\nmetadata: {name: g}\n"})


def test_the_same_object_in_two_files_is_refused_naming_both(repo: signedrepo.SignedRepo) -> None:
    files = {"a.yaml": CM.format(name="x"), "b/c.yaml": "---\n" + CM.format(name="x")}
    with pytest.raises(load.DuplicateObject) as caught:
        run(repo, files)
    assert ":a.yaml:1 and " in str(caught.value)
    assert ":b/c.yaml:2" in str(caught.value)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a/link.yaml": signedrepo.Link("../b.yaml"), "b.yaml": CM.format(name="b")},
         r":a/link.yaml: symbolic links are refused"),
        ({"a/in.yaml": signedrepo.Link("ok.yaml"), "a/ok.yaml": CM.format(name="b")},
         r":a/in.yaml: symbolic links are refused"),
        ({"a/x.txt": signedrepo.Link("/etc/passwd")}, r":a/x.txt: symbolic links"),
        ({"a/vendor": signedrepo.Submodule()}, r":a/vendor: submodules are refused"),
    ],
)  # fmt: skip
def test_links_and_submodules_under_a_path_are_refused_wherever_they_point(
    repo: signedrepo.SignedRepo, files: signedrepo.Files, message: str
) -> None:
    with pytest.raises(load.UnsafePath, match=message):
        run(repo, files, paths=("a",))


def test_a_configured_path_that_is_a_link_is_refused(repo: signedrepo.SignedRepo) -> None:
    files = {"apps": signedrepo.Link("policies"), "policies/p.yaml": CM.format(name="p")}
    with pytest.raises(load.UnsafePath, match=":apps: symbolic links"):
        run(repo, files, paths=("apps",))


def test_a_missing_path_is_refused_and_an_empty_one_is_reported(
    repo: signedrepo.SignedRepo,
) -> None:
    with pytest.raises(load.PathNotFound, match=":nope: the configured path is not in the commit"):
        run(repo, {"a.yaml": CM.format(name="a")}, paths=("nope",))
    loaded = run(repo, {"a/x.yaml": CM.format(name="a"), "b/notes.md": "x"}, paths=("a", "b"))
    assert loaded.empty_paths == ("b",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe", r":a.yaml: not UTF-8"),
        (b"!!python/object:os.system {}\n", r":a.yaml:1: not valid YAML: could not determine"),
        (b"a: [1,\n", r":a.yaml:2: not valid YAML"),
        (b"- 1\n- 2\n", r":a.yaml:1: a document must be a mapping"),
        (b"kind: ConfigMap\nmetadata: {name: a}\n", r"apiVersion is missing"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", r"metadata.name is missing"),
        (b"apiVersion: v1\nkind: ConfigMap\n", r"metadata is missing"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a/b, namespace: n}\n", "'/'"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\n"
         b"data: {k: 1}\ndata: {k: 2}\n", r":a.yaml:5: not valid YAML: duplicate key 'data'"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\n"
         b"binaryData: {k: !!binary aGk=}\n", r"a value JSON cannot hold \(bytes\)"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\nx: .nan\n",
         r"a number JSON cannot hold"),
    ],
)  # fmt: skip
def test_bad_documents_are_refused_naming_file_and_line(
    repo: signedrepo.SignedRepo, content: bytes, message: str
) -> None:
    with pytest.raises(load.LoadError, match=message) as caught:
        run(repo, {"a.yaml": content})
    assert isinstance(caught.value, errors.Stalled)


def test_bad_json_names_the_line_and_duplicate_json_keys_are_refused(
    repo: signedrepo.SignedRepo,
) -> None:
    with pytest.raises(load.LoadError, match=r":a.json:2: not valid JSON"):
        run(repo, {"a.json": '{"apiVersion": "v1",\n  kind}'})
    with pytest.raises(load.LoadError, match=r":a.json: duplicate key 'kind'"):
        run(repo, {"a.json": '{"apiVersion": "v1", "kind": "A", "kind": "B", "metadata": {}}'})


def test_an_alias_bomb_is_refused_before_it_expands(repo: signedrepo.SignedRepo) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = CM.format(name="bomb") + "data:\n" + "".join(f"  {line}\n" for line in lines)
    with pytest.raises(load.LoadError, match="expands past"):
        run(repo, {"a.yaml": text})


def test_an_error_message_never_quotes_file_content(repo: signedrepo.SignedRepo) -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\nstringData:\n"
    text += "  password: hunter2-do-not-print\n  password: again\n"
    with pytest.raises(load.LoadError) as caught:
        run(repo, {"a.yaml": text})
    assert "hunter2" not in str(caught.value)


def test_objects_know_their_ref() -> None:
    item = manifests.Manifest.of(
        "a.yaml", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"}}
    )
    assert item.ref == objectref.ObjectRef("apps", "Deployment", "", "w")


@pytest.mark.parametrize("path", ["../etc", "a/../../b", "a\\b"])
def test_paths_that_could_leave_the_root_are_refused_even_past_the_config_checks(
    repo: signedrepo.SignedRepo, path: str
) -> None:
    with pytest.raises(load.UnsafePath, match="not a plain relative path"):
        run(repo, {"a/x.yaml": CM.format(name="a")}, paths=(path,))


def test_dot_files_and_directories_are_tooling_and_never_loaded(
    repo: signedrepo.SignedRepo,
) -> None:
    files = {
        ".gitlab-ci.yml": "stages: [test]\n",
        ".github/workflows/ci.yaml": "on: push\n",
        "apps/.hidden/x.yaml": "not: a manifest\n",
        "apps/a.yaml": CM.format(name="a"),
    }
    assert refs(run(repo, files)) == ["/ConfigMap/app/a"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"apiVersion: a/b/v1\nkind: X\nmetadata: {name: n}\n", "is not group/version"),
        (b"apiVersion: v1\nkind: Config/Map\nmetadata: {name: n}\n", "is not a Kubernetes kind"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\ndata: "
         + b"[" * 300 + b"]" * 300 + b"\n", "nested deeper than 200 levels"),
    ],
)  # fmt: skip
def test_identities_that_would_not_round_trip_and_deep_nesting_are_refused(
    repo: signedrepo.SignedRepo, content: bytes, message: str
) -> None:
    with pytest.raises(load.LoadError, match=message):
        run(repo, {"a.yaml": content})


def test_deep_json_is_refused_not_a_crash(repo: signedrepo.SignedRepo) -> None:
    deep = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "x": '
    with pytest.raises(load.LoadError, match="nested"):
        run(repo, {"a.json": deep + "[" * 5000 + "]" * 5000 + "}"})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\n"
         "stringData:\n  password: !!int hunter2-do-not-print\n", r":a.yaml:1: a value"),
        ("a.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\n"
         "stringData:\n  password: !!float hunter2-do-not-print\n", r":a.yaml:1: a value"),
        ("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\n"
         "x: " + "7" * 5000 + "\n", r":a.yaml:1: a value"),
        ("a.json", '{"apiVersion": "v1", "kind": "ConfigMap",\n "x": ' + "7" * 5000 + "}",
         r":a.json: a value"),
    ],
)  # fmt: skip
def test_a_scalar_that_will_not_convert_is_refused_naming_the_line_never_the_value(
    repo: signedrepo.SignedRepo, name: str, content: str, message: str
) -> None:
    # Attack: an explicit `!!int`/`!!float` tag on text, or an integer past Python's
    # conversion limit, made the constructor raise a bare ValueError that escaped the load
    # stage (the CLI said "internal error", no Stalled status) and quoted the value.
    with pytest.raises(load.LoadError, match=message) as caught:
        run(repo, {name: content})
    assert isinstance(caught.value, errors.Stalled)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "meta",
    ["{name: '..', namespace: app}", "{name: ., namespace: app}", "{name: a, namespace: ..}"],
)
def test_dot_segment_names_are_refused(repo: signedrepo.SignedRepo, meta: str) -> None:
    # In a request URL `..` and `.` are dot segments: `configmaps/..` is the Namespace.
    content = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {meta}\n"
    with pytest.raises(load.LoadError, match=r"must not be '\.' or '\.\.'"):
        run(repo, {"a.yaml": content})


@pytest.mark.parametrize(
    "name", ["apps/\x1b[2Jok.yaml", "apps/x\ngitwarden reconcile: applied.yaml"]
)
def test_a_file_name_with_control_characters_is_refused_and_never_echoed_raw(
    repo: signedrepo.SignedRepo, name: str
) -> None:
    # Attack: a file name carrying a terminal escape or a newline reaches every message that
    # names the file (the CLI's stderr, the Sync status' condition message, logs): it could
    # clear an operator's terminal or forge a line that looks like GitWarden's own output.
    with pytest.raises(load.UnsafePath, match="control characters") as caught:
        run(repo, {name: CM.format(name="a") + "bad: [\n"})
    assert str(caught.value).isprintable()


@pytest.mark.parametrize("field", ["resourceVersion", "uid"])
def test_server_owned_metadata_in_git_is_refused(repo: signedrepo.SignedRepo, field: str) -> None:
    # Attack: a manifest that pins `metadata.resourceVersion` (or `uid`). Server-side apply
    # takes it as a precondition: once the live object moves on, every pass ends in 409
    # Conflict, which is Transient, so the Sync says "retrying" forever instead of Stalled.
    content = CM.format(name="a") + f"  {field}: '12345'\n"
    with pytest.raises(load.LoadError, match=rf"metadata\.{field} is set by the API server"):
        run(repo, {"a.yaml": content})
    # `creationTimestamp: null`, as `kubectl create --dry-run -o yaml` writes it, is fine.
    assert refs(run(repo, {"b.yaml": CM.format(name="b") + "  creationTimestamp: null\n"}))
