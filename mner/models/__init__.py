"""The model registry and the checkpoint format.

A model is an ``nn.Module`` built as ``Model(config, inputs, num_labels)`` that exposes
``loss(batch) -> dict`` of named losses (``"loss"`` is the one to minimise) and
``decode(batch) -> list of label-id sequences``. A checkpoint is a directory with
``checkpoint.json`` (model name, config, label vocabulary, input sizes and the
provenance of the features it was trained on, and the SHA-256 of the weights file) and
``model.safetensors`` (the state dict): loading runs no pickle and needs nothing else.
Checkpoints come from a shared remote, so loading checks both files against each other
(the weights' hash, names, shapes, dtypes, finite values) and refuses a damaged or swapped
one with a :class:`CheckpointError` that names the file at fault.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mner import InputError
from mner.core.cache import file_sha256, remove_stale_temporaries
from mner.core.config import ConfigError, Registry, from_dict, plain, to_dict
from mner.data.labels import is_bio_vocabulary
from mner.tagger import VisualTagger

# name -> (config class, model class), each model's module imported when its name is first
# looked up: a run's stage imports the code of its own model only (a new model: its file, and
# its name here)
MODELS = Registry(
    "model",
    {
        "linear-softmax": "mner.models.baselines",
        "linear-crf": "mner.models.baselines",
        "transformer-crf": "mner.models.baselines",
        "gei": "mner.models.gei",
        "fmit": "mner.models.fmit",
        "umt": "mner.models.umt",
    },
)


@dataclass(frozen=True)
class InputDims:
    """Sizes of the cached features a model reads."""

    text_layers: int
    text_dim: int
    visual_dim: int = 0  # 0: the model reads no visual features


def register(name: str, config_class: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a model class under ``name`` with the config dataclass it is built from."""

    def add(model_class: type[nn.Module]) -> type[nn.Module]:
        MODELS.register(name)((config_class, model_class))
        return model_class

    return add


def model_config(name: str, values: Mapping[str, Any], where: str = "") -> Any:
    """The config dataclass of model ``name`` from plain values (unknown keys refused)."""
    return from_dict(MODELS[name][0], values, where or f"params.yaml:models.{name}")


def check_heads(model: str, heads: int, **widths: int) -> None:
    """Refuse a model config whose attention ``widths`` are not multiples of its ``heads``
    (torch's attention would fail only when the model is built)."""
    for name, width in widths.items():
        if width % heads:
            raise ConfigError(f"{model}: {name} ({width}) must be a multiple of heads ({heads})")


@dataclass(frozen=True)
class Run:
    """A run's model as its ``models.<run name>`` params entry gives it."""

    name: str  # the run, its entry under models
    model: str  # the registered model
    config: Any  # its config dataclass
    train: dict[str, Any]  # the run's overrides of the ``train`` section

    @property
    def clue_cells(self) -> bool:
        """Whether its model reads a clue set's cells (``clue_cells: true``) for its visual cells."""
        return bool(getattr(self.config, "clue_cells", False))


def resolve_run(models: Mapping[str, Any], run_name: str) -> Run:
    """Run ``run_name`` from the ``models`` params section: its entry's ``model`` names the
    registered model (default: the run name), ``train`` overrides the ``train`` section and
    the other keys are the model's config. An ablation holds its base entry's keys through a
    YAML merge (``<<: *gei``) and adds its switches, so the run's own entry is all that its
    train stage tracks, and a change to the base reruns it. No entry: the model's defaults."""
    where = f"params.yaml:models.{run_name}"
    values = models.get(run_name) or {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {values!r:.80}")
    values = dict(values)
    model = values.pop("model", run_name)
    train = values.pop("train", None) or {}
    if not isinstance(train, Mapping):
        raise ConfigError(f"{where}.train: expected a mapping, got {train!r:.80}")
    if model not in MODELS:
        merge = (
            f"; to build on the entry models.{model}, merge its keys: <<: *{model}" if model in models else ""
        )
        raise ConfigError(f"{where}.model: {MODELS.unknown(model)}{merge}")
    return Run(run_name, model, model_config(model, values, where), dict(train))


def build_model(name: str, config: Any, inputs: InputDims, num_labels: int) -> nn.Module:
    if not isinstance(config, MODELS[name][0]):
        config = model_config(name, config)
    return MODELS[name][1](config, inputs, num_labels)


def interaction_parameters(model: nn.Module) -> int | None:
    """Parameters of a multimodal model's interaction phase (its ``interaction_phase()``
    modules, as FMIT's Table 3 counts them); None for text-only models."""
    if not isinstance(model, VisualTagger):
        return None
    return sum(p.numel() for p in nn.ModuleList(model.interaction_phase()).parameters())


CHECKPOINT_FILES = ("checkpoint.json", "model.safetensors")
RECORD_KEYS = ("model", "config", "inputs", "labels")  # what the weights are: saved in them too
SAVED_WITH = "mner.model"  # the key of RECORD_KEYS' JSON in model.safetensors' metadata
REMEDY = "retrain it or pull it again (dvc pull)"


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded; ``str()`` starts with the file at fault."""


def save_checkpoint(
    out_dir: Path | str, name: str, model: nn.Module, inputs: InputDims, labels: Sequence[str], **meta: Any
) -> None:
    """Write ``checkpoint.json`` and ``model.safetensors`` to ``out_dir``. Both are written
    under temporary names first and renamed, the old ``checkpoint.json`` removed before and
    the new one renamed last: an interrupted save leaves no checkpoint that loads."""
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
    temporary = {file: out_dir / f".{file}.tmp-{os.getpid()}" for file in CHECKPOINT_FILES}
    directory = os.open(out_dir, os.O_RDONLY)
    try:
        # one save at a time: two trainings saving into one directory leave the later
        # checkpoint whole, not one's checkpoint.json beside the other's weights
        fcntl.flock(directory, fcntl.LOCK_EX)
        for file in CHECKPOINT_FILES:  # those of saves that were killed
            remove_stale_temporaries(out_dir / file)
        model_keys = json.dumps({key: record[key] for key in RECORD_KEYS})
        save_file(state, temporary["model.safetensors"], metadata={SAVED_WITH: model_keys})
        record["weights_sha256"] = file_sha256(temporary["model.safetensors"])
        temporary["checkpoint.json"].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (out_dir / "checkpoint.json").unlink(missing_ok=True)
        os.replace(temporary["model.safetensors"], out_dir / "model.safetensors")
        os.replace(temporary["checkpoint.json"], out_dir / "checkpoint.json")
    except OSError as error:  # a full disk, a read-only or vanished directory
        kept = "the previous one is unchanged" if (out_dir / "checkpoint.json").is_file() else "none is left"
        raise CheckpointError(
            f"{out_dir}: cannot write the checkpoint ({error.strerror or error}); {kept}"
        ) from error
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        os.close(directory)  # releases the lock


def load_checkpoint(ckpt_dir: Path | str, decode: str | None = None) -> tuple[nn.Module, dict]:
    """The model (in eval mode) and its ``checkpoint.json`` record. A checkpoint that
    cannot be loaded raises :class:`CheckpointError` naming the file and what is wrong.
    ``decode`` (constrained or free) overrides the decoding the checkpoint records."""
    ckpt_dir = Path(ckpt_dir)
    record = saved = read_record(ckpt_dir / "checkpoint.json")
    if decode is not None and isinstance(record["config"], dict):
        record = {**record, "config": {**record["config"], "decode": decode}}
    weights, labels = ckpt_dir / "model.safetensors", len(record["labels"])
    with torch.device("meta"):  # no memory yet: a record asking for a huge model is refused first
        skeleton = model_of_record(record, ckpt_dir / "checkpoint.json")
    check_weights_hash(record, weights)
    header, saved_with = read_header(weights)
    check_state(header, skeleton.state_dict(), weights, labels)
    check_saved_with(saved, saved_with, ckpt_dir / "checkpoint.json")
    model = model_of_record(record, ckpt_dir / "checkpoint.json")
    state = read_state(weights)
    check_state(state, model.state_dict(), weights, labels)
    model.load_state_dict(state)
    return model.eval(), record


def recorded(cls: type, params: Any, where: str, device: str, root: Path | None = None) -> Any:
    """Config ``cls`` from recorded ``params`` with ``device`` and no loader workers. A
    relative ``model`` path that is a directory of the workspace ``root`` that recorded it
    (``models/minilm``) is resolved there, whatever the current directory."""
    config = from_dict(cls, params, where)
    overrides = {"device": device, "num_workers": 0}
    model = getattr(config, "model", None)
    if root is not None and isinstance(model, str) and model and (root / model).is_dir():
        overrides["model"] = str(root / model)
    fields = {f.name for f in dataclasses.fields(cls)}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if k in fields})


def check_size(where: str, encoder: str, found: tuple[int, ...], trained: tuple[int, ...]) -> None:
    """Refuse a rebuilt ``encoder`` whose output sizes (``found``) are not those the model
    was trained on (the ``inputs`` recorded in ``where``)."""
    if found != trained:
        raise CheckpointError(
            f"{where}: the {encoder} encoder its provenance records gives features of shape {list(found)}, "
            f"but the model was trained on {list(trained)}; {REMEDY}"
        )


def require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: {'not a file' if path.exists() else 'not found'}; {REMEDY}")


def read_record(path: Path) -> dict:
    """The parsed ``checkpoint.json``: an object with at least :data:`RECORD_KEYS`."""
    require_file(path)
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); {REMEDY}"
        ) from None
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error}); {REMEDY}") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(record).__name__}; {REMEDY}")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {', '.join(missing)}; {REMEDY}")
    return record


def model_of_record(record: dict, path: Path) -> nn.Module:
    """The untrained model that ``checkpoint.json`` (``record``, read from ``path``) describes."""
    name, labels = record["model"], record["labels"]
    if not isinstance(name, str) or name not in MODELS:
        raise CheckpointError(f"{path}: {MODELS.unknown(name)}; {REMEDY}")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(label, str) and label for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise CheckpointError(
            f"{path}: labels must be a list of unique non-empty strings, got {labels!r:.80}; {REMEDY}"
        )
    if not is_bio_vocabulary(labels):
        raise CheckpointError(
            f"{path}: labels must be O, then B- and I- of each type (as prepare writes them), "
            f"got {labels!r:.80}; {REMEDY}"
        )
    try:
        config = model_config(name, record["config"], f"{path}:config")
        inputs = from_dict(InputDims, record["inputs"], f"{path}:inputs")
    except ConfigError as error:  # a config's own check (__post_init__) does not name the file
        where = "" if str(error).startswith(str(path)) else f"{path}:config: "
        raise CheckpointError(f"{where}{error}; {REMEDY}") from None
    if inputs.text_layers < 1 or inputs.text_dim < 1 or inputs.visual_dim < 0:
        raise CheckpointError(
            f"{path}:inputs: sizes must be positive (visual_dim may be 0), got {to_dict(inputs)}; {REMEDY}"
        )
    try:
        return build_model(name, config, inputs, len(labels))
    except (ValueError, RuntimeError, AssertionError, TypeError) as error:
        raise CheckpointError(
            f"{path}: cannot build {name} from its config and inputs ({error}); {REMEDY}"
        ) from None


def check_weights_hash(record: dict, path: Path) -> None:
    """Refuse weights whose SHA-256 is not the one ``checkpoint.json`` records (another
    run's weights, or an edit) or that records none."""
    if "weights_sha256" not in record:
        raise CheckpointError(
            f"{path.parent / 'checkpoint.json'}: records no weights_sha256 (the SHA-256 of its "
            f"model.safetensors), so any weights of the same shapes would load; {REMEDY}"
        )
    require_file(path)
    if file_sha256(path) != record["weights_sha256"]:
        raise CheckpointError(
            f"{path}: its SHA-256 is not the one its checkpoint.json records "
            f"({str(record['weights_sha256'])[:12]}...): these weights are another checkpoint's or were "
            f"changed; {REMEDY}"
        )


def check_saved_with(record: dict, saved_with: str | None, path: Path) -> None:
    """Refuse a ``checkpoint.json`` (at ``path``) whose model, config, input sizes or labels are
    not those its weights were saved with (``saved_with``, the JSON in their metadata): an edit
    that keeps every weight's shape (another head count, relabelled types) built another model
    over the same weights, or scored them under other names."""
    try:
        saved = json.loads(saved_with) if saved_with is not None else None
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{path.parent / 'model.safetensors'}: its metadata does not say which model it holds "
            f"(saved by an older mner, or by hand); {REMEDY}"
        )
    for key in RECORD_KEYS:
        if record[key] != saved.get(key):
            found, wanted = differing(record[key], saved.get(key), key)
            raise CheckpointError(
                f"{path}: {found}, but its weights were saved with {wanted}: this file was edited, or "
                f"is another checkpoint's; {REMEDY}"
            )


def differing(found: Any, saved: Any, key: str) -> tuple[str, str]:
    """The first difference of two JSON values under ``key``: ``("config.heads is 4", "2")``,
    ``('labels[7] is "B-PRODUCT"', '"B-MISC"')``."""
    if isinstance(found, dict) and isinstance(saved, dict):
        for name in sorted({*found, *saved}):  # JSON keys: strings
            if found.get(name, ...) != saved.get(name, ...):
                return differing(found.get(name, "absent"), saved.get(name, "absent"), f"{key}.{name}")
    if isinstance(found, list) and isinstance(saved, list) and len(found) == len(saved):
        index = next(i for i, (a, b) in enumerate(zip(found, saved)) if a != b)
        return differing(found[index], saved[index], f"{key}[{index}]")
    return f"{key} is {shown_json(found)}", shown_json(saved)


def shown_json(value: Any, most: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= most else f"{text[:most]}..."


SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_header(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors ``model.safetensors`` declares, as data-free (meta) tensors of their
    names, shapes and dtypes, and the JSON of what it holds (:data:`SAVED_WITH` of its
    metadata, None when it has none): read from its header, before any weight is."""
    require_file(path)
    try:
        with safe_open(path, framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
            tensors = {
                name: torch.empty(s.get_shape(), dtype=SAFETENSORS_DTYPES.get(s.get_dtype()), device="meta")
                for name, s in slices.items()
            }
            return tensors, (f.metadata() or {}).get(SAVED_WITH)
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}); {REMEDY}") from None


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``."""
    require_file(path)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}); {REMEDY}") from None


def check_state(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path, num_labels: int
) -> None:
    """Refuse a state dict whose names, shapes or dtypes differ from those of the model
    built from ``checkpoint.json`` (``expected``), or with a non-finite value."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    for problem, names in (("lacks", missing), ("has unexpected", unexpected)):
        if names:
            raise CheckpointError(
                f"{path}: {problem} tensor(s) {', '.join(names[:3])}"
                + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                + f" for the model its checkpoint.json describes; {REMEDY}"
            )
    for name, wanted in expected.items():
        tensor = state[name]
        if tensor.shape != wanted.shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {list(tensor.shape)}, the model its checkpoint.json "
                f"describes ({num_labels} labels) expects {list(wanted.shape)}; {REMEDY}"
            )
        if tensor.dtype != wanted.dtype:
            raise CheckpointError(
                f"{path}: tensor {name} is {tensor.dtype}, expected {wanted.dtype}; {REMEDY}"
            )
        if tensor.is_floating_point() and not tensor.is_meta and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name} holds non-finite values (NaN or Inf); {REMEDY}")
