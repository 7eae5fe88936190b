"""The model registry and the checkpoint format.

A model is an ``nn.Module`` built as ``Model(config, inputs, num_labels)`` that exposes
``loss(batch) -> dict`` of named losses (``"loss"`` is the one to minimise) and
``decode(batch) -> list of label-id sequences``. A checkpoint is a directory with
``checkpoint.json`` (model name, config, label vocabulary, input sizes and the
provenance of the features it was trained on) and ``model.safetensors`` (the state dict):
loading runs no pickle and needs nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from mner.config import ConfigError, from_dict, plain, to_dict

MODELS: dict[str, tuple[type, type[nn.Module]]] = {}  # name -> (config class, model class)


@dataclass(frozen=True)
class InputDims:
    """Sizes of the cached features a model reads."""

    text_layers: int
    text_dim: int
    visual_dim: int = 0  # 0: the model reads no visual features


def register(name: str, config_class: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(model_class: type[nn.Module]) -> type[nn.Module]:
        MODELS[name] = (config_class, model_class)
        return model_class

    return add


def model_config(name: str, values: Mapping[str, Any], where: str = "") -> Any:
    """The config dataclass of model ``name`` from plain values (unknown keys refused)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return from_dict(MODELS[name][0], values, where or f"params.yaml:models.{name}")


@dataclass(frozen=True)
class Run:
    """A run's model as its ``models.<run name>`` params entry resolves."""

    model: str  # the registered model
    config: Any  # its config dataclass
    train: dict[str, Any]  # the run's overrides of the ``train`` section
    entries: tuple[str, ...]  # the params entries it was built from: its own, then its bases'


def resolve_run(models: Mapping[str, Any], run_name: str) -> Run:
    """The model and training overrides of run ``run_name`` from the ``models`` params
    section. An entry's ``model`` key names its base when that is another entry of
    ``models``: the run is then its base's keys (and ``train`` overrides) plus its own,
    so an ablation names only its switches. Otherwise ``model`` names the registered
    model (default: the run name)."""
    entries, name = [run_name], run_name
    while True:
        entry = models.get(name) or {}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"params.yaml:models.{name}: expected a mapping, got {entry!r}")
        base = entry.get("model", name)
        if base == name or base not in models:
            break
        if base in entries:
            cycle = " -> ".join([*entries, base])
            raise ConfigError(f"params.yaml:models.{run_name}: its bases form a cycle: {cycle}")
        entries.append(base)
        name = base
    values: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for name in reversed(entries):
        entry = dict(models.get(name) or {})
        entry.pop("model", None)
        overrides = entry.pop("train", None) or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"params.yaml:models.{name}.train: expected a mapping, got {overrides!r}")
        values.update(entry)
        train.update(overrides)
    where = f"params.yaml:models.{run_name}" + "".join(f" over models.{b}" for b in entries[1:])
    return Run(base, model_config(base, values, where), train, tuple(entries))


def build_model(name: str, config: Any, inputs: InputDims, num_labels: int) -> nn.Module:
    if not isinstance(config, MODELS[name][0]):
        config = model_config(name, config)
    return MODELS[name][1](config, inputs, num_labels)


def interaction_parameters(model: nn.Module) -> int | None:
    """Parameters of a multimodal model's interaction phase (its ``interaction_phase()``
    modules, as FMIT's Table 3 counts them); None for text-only models."""
    if not hasattr(model, "interaction_phase"):
        return None
    return sum(p.numel() for p in nn.ModuleList(model.interaction_phase()).parameters())


def save_checkpoint(
    out_dir: Path | str, name: str, model: nn.Module, inputs: InputDims, labels: Sequence[str], **meta: Any
) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "model": name,
        "config": to_dict(model.config),
        "inputs": to_dict(inputs),
        "labels": list(labels),
        **plain(meta),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, out_dir / "model.safetensors")
    (out_dir / "checkpoint.json").write_text(json.dumps(record, indent=2) + "\n")


def load_checkpoint(ckpt_dir: Path | str) -> tuple[nn.Module, dict]:
    """The model (in eval mode) and its ``checkpoint.json`` record."""
    ckpt_dir = Path(ckpt_dir)
    record = json.loads((ckpt_dir / "checkpoint.json").read_text())
    model = build_model(
        record["model"],
        model_config(record["model"], record["config"], f"{ckpt_dir}/checkpoint.json:config"),
        InputDims(**record["inputs"]),
        len(record["labels"]),
    )
    model.load_state_dict(load_file(ckpt_dir / "model.safetensors"))
    return model.eval(), record


def _register_builtin() -> None:
    from mner.models import baselines, fmit, gei  # noqa: F401  (registers on import)


_register_builtin()
