"""YAML config files checked by pydantic models, shared by `mfm curate` and `mfm train`: read the file, apply
`--set a.b=value` overrides, validate, and explain every bad key or value with its dotted path and what is
allowed. Values under credential-bearing keys are never echoed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
SECRET_KEYS = frozenset({"storage", "storage_options"})  # sections that may hold credentials


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the dotted path and what is allowed."""


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML file (None: empty)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(pairs: list[str], example: str = "optim.lr=3e-4") -> dict[str, Any]:
    """["optim.lr=3e-4", ...] -> {"optim.lr": 0.0003} (values parsed as YAML scalars)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. {example}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set each dotted key of `overrides` in `data` (in place), creating sections as needed."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {key!r} is a value, not a section")
            node = child
        node[leaf] = value
    return data


def validate(model: type[Model], data: dict[str, Any], path: str | Path | None = None) -> Model:
    """`model` from `data`, or a ConfigError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(where + "invalid config:\n" + "\n".join(explain(exc, model))) from None


def explain(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per error: the dotted path, what is wrong, the allowed keys or the value given."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            lines.append(f"  {loc}: required")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; allowed keys here: {', '.join(fields_at(model, err['loc'][:-1]))}")
        elif SECRET_KEYS.intersection(map(str, err["loc"])):
            lines.append(f"  {loc}: {err['msg']}")  # may hold credentials: never echo the value
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r:.200})"
            lines.append(f"  {loc or 'config'}: {msg}{got}")
    return lines


def fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the section at `loc` of `model`."""
    for key in loc:
        annotation = model.model_fields[str(key)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
