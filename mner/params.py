"""The settings of a params file as the stages read them (``mner params``).

Defaults live once, in the config dataclasses (one commented field each, beside the code
that reads it): a checkpoint or cache written before a setting existed still loads with
its default, ``mner predict``, the tests and the library build configs without a params
file, and a new model's paper settings are its config class. A params file states only
what its project sets otherwise (``params.yaml``: the pipeline, the runs and the choices
that differ from the defaults, each with its reason), so no value has two homes;
:func:`restated_defaults` finds a value written again at its default. DVC tracks a section
present in the file, even empty (``detect: {}``), and ``dvc exp run -S ++section.key=value``
sets any setting, written in the file or not. The ``pipeline`` section is the exception:
dvc.yaml reads its keys itself, so every params file states all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mner.core.config import plain, section, to_dict
from mner.data.prepared import PrepareConfig
from mner.evaluation import EvaluateConfig
from mner.models import MODELS, resolve_run
from mner.report_config import ReportConfig
from mner.runs import Pipeline
from mner.settings.clues import check_tracked, clue_set, clue_sets
from mner.settings.describe import DescribeConfig
from mner.settings.detect import DetectConfig
from mner.settings.ground import GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig
from mner.settings.text import TextFeaturesConfig
from mner.settings.visual import VisualConfig
from mner.train import TrainConfig, train_config

SECTIONS = {  # each stage's section and the dataclass it loads into
    "prepare": PrepareConfig,
    "text_features": TextFeaturesConfig,
    "images": ImagesConfig,
    "describe": DescribeConfig,
    "detect": DetectConfig,
    "parse": ParseConfig,
    "ground": GroundConfig,
    "visual_features": VisualConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}


def effective_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of ``params`` with the defaults filled in: the pipeline, each stage's
    section, the clue sets, and each run of the pipeline as its model is built (the registered
    model, its config, its train overrides)."""
    pipeline = Pipeline.from_params(params)
    runs = {name: resolve_run(params.get("models") or {}, name) for name in pipeline.trained_runs}
    return {
        "pipeline": {k: v for k, v in to_dict(pipeline).items() if k != "root"},
        **{name: to_dict(section(params, name, cls)) for name, cls in SECTIONS.items()},
        "clues": {name: [to_dict(s) for s in sources] for name, sources in clue_sets(params).items()},
        "models": {
            name: {"model": run.model, **to_dict(run.config), "train": plain(run.train)}
            for name, run in runs.items()
        },
    }


def check_params(params: Mapping[str, Any]) -> None:
    """Every value of ``params`` checked as the stages will read it: each section and each
    run of the pipeline with its train settings (``stages/check_params.py``, dvc.yaml's
    pre-flight)."""
    effective_params(params)
    models = params.get("models") or {}
    pipeline = Pipeline.from_params(params)
    for name in pipeline.trained_runs:
        train_config(params, resolve_run(models, name))
    for name in pipeline.clues:
        check_tracked(name, clue_set(params, name))


def restated_defaults(params: Mapping[str, Any]) -> list[str]:
    """The keys of ``params`` that state a value their dataclass already has as default:
    ``<section>.<key>`` and ``models.<entry>.<key>`` (an ablation's keys merged from its
    base entry count as the base's)."""
    found = []
    for name, cls in SECTIONS.items():
        defaults = to_dict(cls())
        found += [f"{name}.{k}" for k, v in (params.get(name) or {}).items() if defaults.get(k) == plain(v)]
    for entry, values in (params.get("models") or {}).items():
        model = values.get("model", entry)
        if model not in MODELS:
            continue
        defaults = to_dict(MODELS[model][0]())
        found += [
            f"models.{entry}.{k}" for k, v in values.items() if k in defaults and defaults[k] == plain(v)
        ]
    return found
