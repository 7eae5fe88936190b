"""Loading ``params.yaml`` sections into frozen dataclasses that reject unknown keys and
wrong types, so a typo fails at once instead of after an hour of extraction."""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import torch
import yaml

from mner import InputError

T = TypeVar("T")
# a name that names directories, caches and DVC stages: a dataset's, a run's, a clue set's
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PLAIN_CHARACTERS = "(letters, digits, '_', '-', '.'; a letter or digit first)"  # PLAIN_NAME in words


class ConfigError(InputError):
    """A params value that does not fit its dataclass; ``str()`` names the key."""


class OutOfRange(ConfigError):
    """A params value of the right type outside the values its key allows."""


@dataclass(frozen=True)
class Range:
    """The values a number may take (with ``length``, the number of items of a list), as
    the metadata of an ``Annotated`` field type; checked when a section is loaded."""

    low: float | None = None
    high: float | None = None
    above: bool = False  # low itself excluded
    below: bool = False  # high itself excluded
    length: bool = False

    def check(self, value: Any, where: str) -> None:
        n = len(value) if self.length else value
        if isinstance(n, float) and not math.isfinite(n):
            raise OutOfRange(f"{where}: {plain(value)!r} is not a finite number; allowed: {self}")
        low = self.low is not None and (n <= self.low if self.above else n < self.low)
        high = self.high is not None and (n >= self.high if self.below else n > self.high)
        if low or high:
            raise OutOfRange(f"{where}: {plain(value)!r} is out of range; allowed: {self}")

    def __str__(self) -> str:
        bounds = []
        if self.low is not None:
            bounds.append(f"{'above' if self.above else 'at least'} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"{'below' if self.below else 'at most'} {_number(self.high)}")
        return (
            ("a list of " if self.length else "") + " and ".join(bounds) + (" items" if self.length else "")
        )


def _number(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


@dataclass(frozen=True)
class Distinct:
    """A list whose items differ, as the metadata of an ``Annotated`` field type."""

    def check(self, value: Any, where: str) -> None:
        repeated = list(dict.fromkeys(v for i, v in enumerate(value) if v in value[:i]))
        if repeated:
            raise OutOfRange(
                f"{where}: {plain(value)!r} lists {', '.join(map(repr, repeated))} more than once; "
                "list each once"
            )


@dataclass(frozen=True)
class DeviceName:
    """A torch device as a params value: auto, cpu, cuda, cuda:<n> or mps."""

    def check(self, value: str, where: str) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise OutOfRange(f"{where}: {value!r} is not a device; allowed: auto, cpu, cuda, cuda:<n>, mps")


Count = Annotated[int, Range(1)]  # at least 1: sizes, batches, epochs
NonNegative = Annotated[int, Range(0)]  # workers, patience, counts that may be 0
Positive = Annotated[float, Range(0, above=True)]  # a learning rate, a norm
Share = Annotated[float, Range(0, 1)]  # a fraction or a score threshold
Dropout = Annotated[float, Range(0, 1, below=True)]
Weight = Annotated[float, Range(0)]  # a loss weight, a decay
Device = Annotated[str, DeviceName()]
Seed = Annotated[int, Range(0, 2**32 - 1)]  # what numpy (and so the trainer) takes as a seed

MAX_VALUES = 100_000  # values a params file may hold, its YAML aliases expanded (ours: a few hundred)


class ParamsYamlError(yaml.YAMLError):
    """A params file that is YAML but not one to read: ``line`` (1-based) is where."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class ParamsLoader(yaml.SafeLoader):
    """YAML as :func:`yaml.safe_load` reads it, but a mapping that states a key twice is
    refused (PyYAML keeps the last value silently, DVC refuses the file), and so is a
    document that holds more than :data:`MAX_VALUES` values once its aliases are expanded
    (a billion laughs: small to load, as its aliases share their node, but hours for DVC,
    which expands them) or that contains itself."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a merged key (<<) stated again is an override, as YAML means it
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in seen:
                raise ParamsYamlError(
                    line,
                    f"key {key!r:.80} is stated twice in one mapping (first at line {seen[key]}); YAML "
                    "would keep the last silently and DVC refuses the file: keep one",
                )
            seen[key] = line
        return super().construct_mapping(node, deep)

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            expanded_size(node, MAX_VALUES)
        return node


def expanded_size(root: yaml.Node, limit: int) -> int:
    """The number of values (nodes) under ``root``, each alias counted as the whole node it
    names; refused (:class:`ParamsYamlError`) above ``limit`` or for a node within itself.
    Linear in the distinct nodes, whatever the expanded size."""

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    sizes: dict[int, int] = {}  # by id() of the node: the graph holds every node meanwhile
    path, stack = {id(root)}, [(root, iter(children(root)))]
    while stack:
        node, pending = stack[-1]
        for child in pending:
            if id(child) in path:
                raise ParamsYamlError(child.start_mark.line + 1, "a YAML alias here names a value it is in")
            if id(child) not in sizes:
                path.add(id(child))
                stack.append((child, iter(children(child))))
                break
        else:
            stack.pop()
            path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children(node))
            if sizes[id(node)] > limit:
                raise ParamsYamlError(
                    node.start_mark.line + 1,
                    f"the value here holds more than {limit:,} values once its YAML aliases are "
                    "expanded (DVC expands them all); write out what it needs, with fewer aliases",
                )
    return sizes[id(root)]


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """The whole params file as a dict; a file that is not UTF-8 YAML, states a key twice in
    a mapping or expands beyond :data:`MAX_VALUES` values is refused naming it (and the line)."""
    try:
        with open(path, encoding="utf-8") as f:
            loader = ParamsLoader(f)
            try:
                params = loader.get_single_data() or {}
            finally:
                loader.dispose()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except ParamsYamlError as error:
        raise ConfigError(f"{path}:{error.line}: {error.message}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    except RecursionError:
        raise ConfigError(f"{path}: its YAML is nested too deeply to be a params file") from None
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
    hints = get_type_hints(cls, include_extras=True)
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
    """``auto`` is cuda when a GPU is present, else cpu; any other name as torch reads it. A
    CUDA device this machine does not have is refused here, not by the first tensor sent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= visible:
        raise ConfigError(f"device {name!r}: this machine has {visible} CUDA device(s); use cpu or auto")
    return device


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
    if origin is Annotated:
        converted = _convert(args[0], value, where)
        for check in args[1:]:
            check.check(converted, where)
        return converted
    if origin in (typing.Union, types.UnionType):
        out_of_range = []
        for arg in args:
            try:
                return _convert(arg, value, where)
            except OutOfRange as error:
                out_of_range.append(error)
            except ConfigError:
                continue
        raise out_of_range[0] if out_of_range else ConfigError(f"{where}: {value!r} is not {_describe(hint)}")
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
    if get_origin(hint) is Annotated:
        return _describe(get_args(hint)[0])
    if get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


# --- registries of swappable backends, chosen by short names in params.yaml (DETECTORS["hf"])
class Registry(dict):
    """``name -> backend``; an unknown name fails with the list of valid ones. The one
    registry type of every swappable part: detectors, parsers, grounders, models.

    A registry knows its built-in names before their code is imported: ``modules`` maps each
    name to the module whose import registers it, imported when the name is first looked up
    (as torchtune's ``_component_`` paths), so that checking a params file or computing what a
    run expects loads no backend, and a stage imports the code of the backend it runs only."""

    def __init__(self, kind: str, modules: Mapping[str, str] | None = None) -> None:
        super().__init__(dict.fromkeys(modules or {}))
        self.kind = kind
        self.modules = dict(modules or {})  # name -> the module that registers it on import

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(backend: Any) -> Any:
            if dict.get(self, name) is not None:
                raise ValueError(f"a {self.kind} named {name!r} is registered already")
            self[name] = backend
            return backend

        return add

    def unknown(self, name: object) -> str:
        return f"unknown {self.kind} {name!r:.80}; valid: {', '.join(sorted(self))}"

    def check(self, name: object, key: str) -> None:
        """Refuse a params value ``key`` that names no registered backend."""
        if name not in self:
            raise ConfigError(f"{key}: {self.unknown(name)}")

    def module(self, name: str) -> str | None:
        """The module that registers ``name`` (None for one registered by other code)."""
        return self.modules.get(name)

    def __getitem__(self, name: str) -> Any:
        backend = super().__getitem__(name)
        if backend is None:  # known by name, its module not imported yet
            importlib.import_module(self.modules[name])
            backend = super().__getitem__(name)
            if backend is None:
                raise KeyError(f"{self.modules[name]} registers no {self.kind} named {name!r}")
        return backend

    def __missing__(self, name: str) -> Any:
        raise KeyError(self.unknown(name))
