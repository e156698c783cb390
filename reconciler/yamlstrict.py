"""How GitWarden reads YAML: the C safe loader, strict where PyYAML is lenient.

Owns `Loader`: libyaml's safe loader (no Python objects, no arbitrary tags), refusing duplicate
mapping keys (a reviewer reads one value, the program would get the other) and keeping
timestamps as strings, as Kubernetes' own reader does. Used for manifests (the load stage) and
for the reconciler's configuration file. Must not know about manifests or settings.
"""

from __future__ import annotations

from typing import Any

import yaml

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class Loader(yaml.CSafeLoader):
    """The C safe loader, with timestamps kept as strings and duplicate keys refused."""

    yaml_implicit_resolvers = {  # noqa: RUF012  # a class attribute, as the base declares it
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _value in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                problem = "a mapping key must be a scalar"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            if key in seen:
                problem = f"duplicate key {key!r}"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
