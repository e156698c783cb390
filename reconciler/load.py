"""The load stage: the manifests of a verified commit, read from git's object database.

Owns reading the configured paths at exactly the verified commit (pygit2 on the object database:
never a work tree, which could differ from what was verified), parsing YAML with the C loader and
JSON, expanding `List` kinds, the rules on what may be loaded, namespace defaulting, and refusing
the same object twice. Every refusal is a `LoadError` (Stalled) naming `commit:path:line`.

What is refused, and why:
* `..`, absolute or backslash paths (the configuration already refuses them; checked again).
* Symlinks (git mode 120000) anywhere on or under a configured path, wherever they point: the
  commit policy judges a change by the paths it touches, and a link would let a file under a
  loosely guarded path render content from a strictly guarded one (or the reverse).
  Submodules (mode 160000) are refused too: their content is not in the verified commit.
* Files that are not UTF-8, YAML with duplicate keys (a reviewer reads one value, the API server
  would get another), alias expansion past a size bound, values JSON cannot carry (binary,
  sets), documents that are not a mapping with apiVersion, kind and metadata.name.
Timestamps stay strings, as Kubernetes' own YAML reader leaves them. Must not talk to the cluster
(namespaced-ness of unknown kinds comes from the `Scopes` handed in) or log object contents.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pygit2
import yaml

from reconciler import config, errors, manifests, objectref, scopes, verify, yamlstrict

SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_NODES = 1_000_000  # per document, counting alias expansions
MAX_DEPTH = 200  # Kubernetes objects, CRD schemas included, stay far below
_API_VERSION = re.compile(
    r"((?=[^/]{1,253}/)[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
)
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_LINK = int(pygit2.enums.FileMode.LINK)
_GITLINK = int(pygit2.enums.FileMode.COMMIT)


class LoadError(errors.Stalled):
    """A manifest of the revision cannot be loaded; the message names commit, file and line."""


class PathNotFound(LoadError):
    """A configured path is not in the verified commit."""


class UnsafePath(LoadError):
    """A path that could leave the repository or the configured paths (symlink, submodule)."""


class DuplicateObject(LoadError):
    """The same group/kind/namespace/name is declared twice; both places are named."""


class UnknownScope(LoadError):
    """A kind whose namespaced-ness nothing knows: not built in, no CRD here, not served."""


def run(
    verified: verify.VerifiedRevision,
    settings: config.ReconcilerConfig,
    discovery: scopes.Discovery | None = None,
) -> manifests.Manifests:
    """Every object under `settings.source.paths` at `verified.commit`, checked and defaulted."""
    where = _Where(verified.commit)
    parsed: list[manifests.Manifest] = []
    empty: list[str] = []
    try:
        repo = pygit2.Repository(verified.git_dir)
        commit = repo.get(verified.commit)
        if not isinstance(commit, pygit2.Commit):
            raise LoadError(f"{verified.commit}: not a commit in {verified.git_dir}")
        for path in settings.source.paths:
            found = [
                m
                for blob_path, blob in _files(commit.tree, path, where)
                for m in _parse(blob_path, blob, where)
            ]
            if not found:
                empty.append(path)
            parsed.extend(found)
    except pygit2.GitError as exc:
        # A tree or blob missing from the fetched repository (a partial clone, a broken cache).
        raise LoadError(f"{where.at('')}: cannot read the commit's files: {exc}") from None
    known = scopes.Scopes(_declared_scopes(parsed, where), discovery)
    items = _defaulted(parsed, known, settings.apply.default_namespace, where)
    _refuse_duplicates(items, where)
    return manifests.Manifests(verified=verified, items=tuple(items), empty_paths=tuple(empty))


@dataclass(frozen=True)
class _Where:
    commit: str

    def at(self, path: str, line: int = 0) -> str:
        return f"{self.commit[:12]}:{path}:{line}" if line else f"{self.commit[:12]}:{path}"


# ---- the tree -------------------------------------------------------------------------------


def _files(tree: pygit2.Tree, path: str, where: _Where) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every manifest file at `path` (a directory or a file), sorted."""
    node: pygit2.Object = tree
    walked: list[str] = []
    for part in [] if path == "." else path.split("/"):
        if part in ("", ".", "..") or "\\" in part:
            raise UnsafePath(f"{where.at(path)}: not a plain relative path")
        walked.append(part)
        if not isinstance(node, pygit2.Tree) or part not in node:
            raise PathNotFound(f"{where.at(path)}: the configured path is not in the commit")
        node = node[part]
        _refuse_links(node, "/".join(walked), where)
    if isinstance(node, pygit2.Tree):
        yield from _walk(node, "" if path == "." else path + "/", where)
    elif isinstance(node, pygit2.Blob):
        if not path.endswith(SUFFIXES):
            raise LoadError(
                f"{where.at(path)}: a configured file must end in {', '.join(SUFFIXES)}"
            )
        yield path, _content(node, path, where)


def _walk(tree: pygit2.Tree, prefix: str, where: _Where) -> Iterator[tuple[str, bytes]]:
    for entry in sorted(tree, key=lambda e: e.name or ""):
        name = f"{prefix}{entry.name}"
        if (entry.name or ".").startswith("."):
            continue  # .github/, .gitlab-ci.yml, .sops.yaml: tooling, never manifests
        _refuse_links(entry, name, where)
        if isinstance(entry, pygit2.Tree):
            yield from _walk(entry, name + "/", where)
        elif isinstance(entry, pygit2.Blob) and name.endswith(SUFFIXES):
            yield name, _content(entry, name, where)


def _refuse_links(entry: pygit2.Object, path: str, where: _Where) -> None:
    if not path.isprintable():
        # Every message that names the file (CLI, status, logs) would carry the raw name: a
        # terminal escape or a newline that forges a line of GitWarden's own output.
        raise UnsafePath(f"{where.at('')}{path!r}: a file name with control characters")
    if entry.filemode == _LINK:
        raise UnsafePath(f"{where.at(path)}: symbolic links are refused under configured paths")
    if entry.filemode == _GITLINK:
        raise UnsafePath(f"{where.at(path)}: submodules are refused under configured paths")


def _content(blob: pygit2.Blob, path: str, where: _Where) -> bytes:
    if blob.size > MAX_FILE_BYTES:
        raise LoadError(f"{where.at(path)}: larger than {MAX_FILE_BYTES} bytes")
    return bytes(blob.data)


# ---- parsing --------------------------------------------------------------------------------


def _parse(path: str, raw: bytes, where: _Where) -> Iterator[manifests.Manifest]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{where.at(path)}: not UTF-8 (byte {exc.start})") from None
    if path.endswith(".json"):
        yield from _objects(path, _json(path, text, where), 1, None, where)
        return
    loader = yamlstrict.Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            line = node.start_mark.line + 1
            _bounded(node, path, line, where)
            try:
                document = loader.construct_document(node)
            except ValueError:
                # `!!int`/`!!float` on text, or an integer past Python's digit limit: the
                # constructor's message quotes the value (it could be a Secret's), so only
                # the document is named, and the error is not chained.
                raise LoadError(
                    f"{where.at(path, line)}: a value does not convert to its tag's type"
                ) from None
            if document is not None:
                yield from _objects(path, document, line, node, where)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise LoadError(f"{where.at(path, line)}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError:
        raise LoadError(f"{where.at(path)}: not valid YAML") from None
    finally:
        loader.dispose()


def _json(path: str, text: str, where: _Where) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise LoadError(f"{where.at(path)}: duplicate key {key!r}")
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise LoadError(f"{where.at(path, exc.lineno)}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise LoadError(f"{where.at(path)}: nested too deeply") from None
    except ValueError:
        # An integer past Python's digit limit; the message would quote it.
        raise LoadError(f"{where.at(path)}: a value does not convert to a number") from None


def _bounded(node: yaml.Node, path: str, line: int, where: _Where) -> None:
    """Refuse a document whose alias expansion would exceed MAX_NODES (a "billion laughs")."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise LoadError(f"{where.at(path, line)}: nested deeper than {MAX_DEPTH} levels")
        known = sizes.get(id(current))
        if known is not None:
            return known
        sizes[id(current)] = 1  # a recursive alias counts once; construction refuses it later
        total = 1
        if isinstance(current, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in current.value)
        sizes[id(current)] = total
        if total > MAX_NODES:
            raise LoadError(f"{where.at(path, line)}: document expands past {MAX_NODES} nodes")
        return total

    size(node, 0)


def _objects(
    path: str, document: Any, line: int, node: yaml.Node | None, where: _Where
) -> Iterator[manifests.Manifest]:
    """The objects of one document: itself, or the items of a List kind."""
    body = _json_tree(document, where.at(path, line))
    items = body.get("items") if isinstance(body, dict) else None
    if isinstance(items, list) and str(body.get("kind", "")).endswith("List"):
        lines = _item_lines(node, len(items), line)
        for item, item_line in zip(items, lines, strict=True):
            _check_shape(item, where.at(path, item_line))
            if str(item["kind"]).endswith("List") and "items" in item:
                raise LoadError(f"{where.at(path, item_line)}: a List inside a List is refused")
            yield manifests.Manifest.of(path, item, item_line)
        return
    _check_shape(body, where.at(path, line))
    yield manifests.Manifest.of(path, body, line)


def _item_lines(node: yaml.Node | None, count: int, line: int) -> list[int]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "items" and isinstance(value, yaml.SequenceNode):
                return [child.start_mark.line + 1 for child in value.value]
    return [line] * count


def _json_tree(value: Any, at: str, depth: int = 0) -> Any:
    """The document as JSON would hold it; keys become strings as Kubernetes' reader does."""
    if depth > MAX_DEPTH:
        raise LoadError(f"{at}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for raw_key, child in value.items():
            if isinstance(raw_key, bool):
                key = "true" if raw_key else "false"
            elif isinstance(raw_key, int | str):
                key = str(raw_key)
            else:
                kind = type(raw_key).__name__
                raise LoadError(f"{at}: a mapping key that is not a string ({kind})")
            result[key] = _json_tree(child, at, depth + 1)
        return result
    if isinstance(value, list):
        return [_json_tree(child, at, depth + 1) for child in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise LoadError(f"{at}: a number JSON cannot hold ({value})")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise LoadError(f"{at}: a value JSON cannot hold ({type(value).__name__})")


def _check_shape(body: Any, at: str) -> None:
    if not isinstance(body, dict):
        raise LoadError(f"{at}: a document must be a mapping (an object)")
    for key in ("apiVersion", "kind"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise LoadError(f"{at}: {key} is missing or not a string")
    # The object's identity is written `group/Kind/namespace/name` in the inventory: nothing in
    # it may contain a `/` it does not own.
    if not _API_VERSION.fullmatch(body["apiVersion"]):
        raise LoadError(f"{at}: apiVersion {body['apiVersion'][:80]!r} is not group/version")
    if not _KIND.fullmatch(body["kind"]):
        raise LoadError(f"{at}: kind {body['kind'][:80]!r} is not a Kubernetes kind name")
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        raise LoadError(f"{at}: metadata is missing or not a mapping")
    name, namespace = meta.get("name"), meta.get("namespace", "")
    if not isinstance(name, str) or not name:
        raise LoadError(f"{at}: metadata.name is missing or not a string")
    if not isinstance(namespace, str):
        raise LoadError(f"{at}: metadata.namespace is not a string")
    if "/" in name or "/" in namespace:
        raise LoadError(f"{at}: metadata.name and metadata.namespace must not contain '/'")
    for owned in ("resourceVersion", "uid"):
        # Server-side apply reads these as preconditions: a pinned value turns every later
        # pass into a 409 Conflict (retried forever) instead of a refusal of the revision.
        if meta.get(owned) is not None:
            raise LoadError(f"{at}: metadata.{owned} is set by the API server, not in Git")
    if name in (".", "..") or namespace in (".", ".."):
        # In a URL these are dot segments: they would address the namespace or collection.
        raise LoadError(f"{at}: metadata.name and metadata.namespace must not be '.' or '..'")


# ---- scopes, namespaces, duplicates ---------------------------------------------------------


def _declared_scopes(
    parsed: list[manifests.Manifest], where: _Where
) -> Mapping[tuple[str, str], bool]:
    declared: dict[tuple[str, str], bool] = {}
    for manifest in parsed:
        if (manifest.api_version.rpartition("/")[0], manifest.kind) != (
            scopes.CRD_GROUP,
            "CustomResourceDefinition",
        ):
            continue
        spec = manifest.body.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        names = spec.get("names")
        group, kind = spec.get("group"), names.get("kind") if isinstance(names, Mapping) else None
        scope = spec.get("scope")
        if (
            not isinstance(group, str)
            or not isinstance(kind, str)
            or scope not in ("Namespaced", "Cluster")
        ):
            raise LoadError(
                f"{where.at(manifest.source, manifest.line)}: a CustomResourceDefinition needs"
                " spec.group, spec.names.kind and spec.scope (Namespaced or Cluster)"
            )
        declared[(group, kind)] = scope == "Namespaced"
    return declared


def _defaulted(
    parsed: list[manifests.Manifest],
    known: scopes.Scopes,
    default_namespace: str | None,
    where: _Where,
) -> list[manifests.Manifest]:
    result = []
    for manifest in parsed:
        ref = manifest.ref
        at = where.at(manifest.source, manifest.line)
        namespaced = known.namespaced(ref.group, ref.kind)
        if namespaced is None:
            raise UnknownScope(
                f"{at}: cannot tell whether {ref.group_kind} is namespaced: not a built-in kind,"
                " no CustomResourceDefinition for it in this revision, and the cluster does not"
                " serve it"
            )
        if not namespaced and ref.namespace:
            raise LoadError(f"{at}: {ref.group_kind} is cluster-scoped but names a namespace")
        if namespaced and not ref.namespace:
            if default_namespace is None:
                raise LoadError(
                    f"{at}: {ref.display()} names no namespace and apply.default_namespace is unset"
                )
            body = manifests.thaw(manifest.body)
            body["metadata"]["namespace"] = default_namespace
            result.append(manifests.Manifest.of(manifest.source, body, manifest.line))
        else:
            result.append(manifest)
    return result


def _refuse_duplicates(items: list[manifests.Manifest], where: _Where) -> None:
    first: dict[objectref.ObjectRef, manifests.Manifest] = {}
    for manifest in items:
        ref = manifest.ref
        if ref in first:
            earlier = first[ref]
            raise DuplicateObject(
                f"{ref.display()} is declared twice: {where.at(earlier.source, earlier.line)}"
                f" and {where.at(manifest.source, manifest.line)}"
            )
        first[ref] = manifest
