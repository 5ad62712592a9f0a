"""Config schemas: each plugin declares its ``[config.NAME]`` fields and the host checks them.

A schema is declared in the plugin's metadata::

    [tool.p2phost.plugin.config]
    peers = { type = "list[str]", default = [], description = "addresses to dial" }
    interval = { type = "float", default = 5.0 }

Every problem is a :class:`ConfigError` naming the field, what was expected and what was
found, so a user can fix ``p2phost.toml`` without reading the plugin's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError

_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "table": (dict,),
}
#: The field types a schema may use.
FIELD_TYPES = (*_SCALARS, "list[str]", "list[int]", "list[float]")


def _matches(type_name: str, value: Any) -> bool:
    if type_name.startswith("list["):
        item = type_name[5:-1]
        return isinstance(value, list) and all(_matches(item, v) for v in value)
    # bool is an int in Python; a config that says `port = true` is a mistake.
    if isinstance(value, bool) and type_name != "bool":
        return False
    return isinstance(value, _SCALARS[type_name])


@dataclass(frozen=True)
class ConfigField:
    """One field of a plugin's config."""

    name: str
    type: str
    default: Any = None
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class ConfigSchema:
    """The fields a plugin accepts in its ``[config.NAME]`` table."""

    fields: tuple[ConfigField, ...] = field(default_factory=tuple)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ConfigSchema:
        """Read a schema from metadata; ValueError lists what is wrong with it."""
        fields, problems = [], []
        for name, spec in table.items():
            if isinstance(spec, str):
                spec = {"type": spec}
            if not isinstance(spec, Mapping):
                problems.append(f"config.{name}: expected a table such as {{ type = \"str\" }}")
                continue
            type_name = spec.get("type")
            if type_name not in FIELD_TYPES:
                problems.append(
                    f"config.{name}.type: expected one of {', '.join(FIELD_TYPES)}, "
                    f"got {type_name!r}"
                )
                continue
            default = spec.get("default")
            if default is not None and not _matches(type_name, default):
                problems.append(f"config.{name}.default: expected {type_name}, got {default!r}")
                continue
            fields.append(
                ConfigField(
                    name=name,
                    type=type_name,
                    default=default,
                    required=bool(spec.get("required", False)),
                    description=str(spec.get("description", "")),
                )
            )
        if problems:
            raise ValueError("; ".join(problems))
        return cls(tuple(fields))

    def to_table(self) -> dict[str, Any]:
        """The schema as metadata (the inverse of :meth:`from_table`)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            spec: dict[str, Any] = {"type": f.type}
            if f.default is not None:
                spec["default"] = f.default
            if f.required:
                spec["required"] = True
            if f.description:
                spec["description"] = f.description
            out[f.name] = spec
        return out

    def problems(self, table: Mapping[str, Any], plugin: str) -> list[ConfigError]:
        """Every way ``table`` does not fit this schema (empty when it fits)."""
        known = {f.name: f for f in self.fields}
        found: list[ConfigError] = []
        for key, value in table.items():
            f = known.get(key)
            if f is None:
                expected = "one of " + ", ".join(sorted(known)) if known else "no fields"
                found.append(ConfigError(plugin, key, f"a known field ({expected})", value))
            elif not _matches(f.type, value):
                found.append(ConfigError(plugin, key, f.type, value))
        for f in self.fields:
            if f.required and f.name not in table:
                found.append(ConfigError(plugin, f.name, f"{f.type} (required)", None))
        return found

    def validate(self, table: Mapping[str, Any], plugin: str) -> dict[str, Any]:
        """``table`` with defaults filled in; raises the first :class:`ConfigError`."""
        problems = self.problems(table, plugin)
        if problems:
            raise problems[0]
        values = {f.name: f.default for f in self.fields}
        values.update(table)
        return values
