"""Small registries of swappable backends, filled by a decorator and chosen by short
names in params.yaml (``DETECTORS["hf"]``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mner.config import ConfigError


class Registry(dict):
    """``name -> backend``; an unknown name fails with the list of valid ones. The one
    registry type of every swappable part: detectors, parsers, grounders and models."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(backend: Any) -> Any:
            if name in self:
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

    def __missing__(self, name: str) -> Any:
        raise KeyError(self.unknown(name))
