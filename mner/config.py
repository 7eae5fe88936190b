"""Loading ``params.yaml`` sections into frozen dataclasses that reject unknown keys and
wrong types, so a typo fails at once instead of after an hour of extraction."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import torch
import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params value that does not fit its dataclass; ``str()`` names the key."""


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """The whole params file as a dict."""
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def section(params: Mapping[str, Any], name: str, cls: type[T], where: str = "params.yaml") -> T:
    """Section ``name`` of ``params`` as a ``cls`` instance (missing section: defaults)."""
    return from_dict(cls, params.get(name) or {}, f"{where}:{name}")


def from_dict(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise
    :class:`ConfigError` naming ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    hints = get_type_hints(cls)
    values = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**values)


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when a GPU is present, else cpu; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """float16 autocast on cuda when ``amp`` is set; off on any other device (the one
    mixed-precision switch of the extractors)."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data (tuples as lists), for provenance and checkpoints."""
    return plain(dataclasses.asdict(config))


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively, as JSON would give it back."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against type ``hint`` (lists become tuples, ints become floats
    where a float is expected)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _convert(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {_describe(hint)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_describe(hint)}, got {type(value).__name__} {value!r}")


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))
