"""Typed reading of the admission configuration document, one mapping at a time.

Owns `ConfigError` and `Reader`: every value is checked for its type where it is read, every
message names the field's path in the document, and keys nobody read are refused. It returns
plain values; `webhook.config` builds the configuration from them. No I/O.
"""

from __future__ import annotations

from typing import Any

from webhook import allowances


class ConfigError(ValueError):
    """The configuration document is invalid; the message names the field."""


class Reader:
    """Typed access to one mapping of the document, remembering which keys were read."""

    def __init__(self, value: Any, where: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        self._value: dict[str, Any] = value
        self._where = where
        self._seen: set[str] = set()

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._value.get(key)

    def _fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self._where}.{key}: expected {expected}")

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._value) - self._seen)
        if unknown:
            raise ConfigError(f"{self._where}: unknown keys {', '.join(unknown)}")

    def section(self, key: str) -> Reader:
        return Reader(self._get(key), f"{self._where}.{key}")

    def string(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._get(key)
        if value is not None and not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def integer(self, key: str) -> int | None:
        value = self._get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._fail(key, "an integer")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def mapping(self, key: str) -> dict[str, str] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._fail(key, "a mapping of strings")
        return dict(value)

    def label(self, key: str) -> tuple[str, str] | None:
        value = self._get(key)
        if value is None:
            return None
        sub = Reader(value, f"{self._where}.{key}")
        k, v = sub.string("key"), sub.string("value")
        sub.reject_unknown()
        if not k or v is None:
            raise self._fail(key, "{key, value}")
        return (k, v)

    def items(self, key: str, expected: str) -> list[Reader] | None:
        """A reader for each mapping in the list at `key`."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._fail(key, expected)
        return [Reader(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(value)]

    def kinds(self, key: str) -> tuple[tuple[str, str, str], ...] | None:
        items = self.items(key, "a list of {group, kind, resource}")
        if items is None:
            return None
        kinds = []
        for sub in items:
            group, kind, resource = sub.string("group"), sub.string("kind"), sub.string("resource")
            sub.reject_unknown()
            if group is None or not kind or not resource:
                raise ConfigError(f"{sub.where}: group, kind and resource are required")
            kinds.append((group, kind, resource))
        return tuple(kinds)

    def group_resources(self, key: str) -> tuple[tuple[str, str], ...] | None:
        items = self.items(key, "a list of {group, resource}")
        if items is None:
            return None
        result = []
        for sub in items:
            group, resource = sub.string("group"), sub.string("resource")
            sub.reject_unknown()
            if group is None or not resource:
                raise ConfigError(f"{sub.where}: group and resource are required")
            result.append((group, resource))
        return tuple(result)

    def content_kinds(self, key: str) -> tuple[tuple[str, str, str], ...] | None:
        items = self.items(key, "a list of {group, version, resource}")
        if items is None:
            return None
        result = []
        for sub in items:
            group, version, resource = (
                sub.string("group"),
                sub.string("version"),
                sub.string("resource"),
            )
            sub.reject_unknown()
            if group is None or not version or not resource:
                raise ConfigError(f"{sub.where}: group, version and resource are required")
            result.append((group, version, resource))
        return tuple(result)

    def parent_subresources(
        self, key: str
    ) -> tuple[tuple[str, str, str, tuple[str, ...]], ...] | None:
        items = self.items(key, "a list of {group, resource, subresource, operations}")
        if items is None:
            return None
        result = []
        for sub in items:
            group, resource = sub.string("group"), sub.string("resource")
            subresource, operations = sub.string("subresource"), sub.strings("operations")
            sub.reject_unknown()
            if group is None or not resource or not subresource or not operations:
                raise ConfigError(
                    f"{sub.where}: group, resource, subresource and operations are required"
                )
            result.append((group, resource, subresource, operations))
        return tuple(result)

    def allowances(self, key: str) -> tuple[dict[str, Any], ...] | None:
        items = self.items(key, "a list of allowances")
        if items is None:
            return None
        result = []
        for sub in items:
            name = sub.string("name")
            if not name:
                raise ConfigError(f"{sub.where}.name is required")
            if sub.has("groups"):
                raise ConfigError(
                    f"{sub.where}.groups: allowances name each controller by username; a group "
                    "(such as system:serviceaccounts:kube-system) matches every account in it"
                )
            fields: dict[str, Any] = {"name": name}
            fields.update({f: sub.strings(f) or () for f in allowances.LIST_FIELDS})
            fields.update({f: sub.boolean(f) or False for f in allowances.BOOL_FIELDS})
            sub.reject_unknown()
            result.append(fields)
        return tuple(result)

    def has(self, key: str) -> bool:
        """Whether the mapping sets `key` (without marking it read)."""
        return key in self._value

    @property
    def where(self) -> str:
        """The path of this mapping in the document, for messages."""
        return self._where
