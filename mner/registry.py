"""Small registries of swappable backends, filled by a decorator and chosen by short
names in params.yaml (``DETECTORS["hf"]``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry(dict):
    """``name -> backend``; an unknown name fails with the list of valid ones."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(backend: Any) -> Any:
            self[name] = backend
            return backend

        return add

    def __missing__(self, name: str) -> Any:
        raise KeyError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self))}")
