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

The meaning of each setting is the comment of its field in the dataclass source:
:func:`field_notes` reads it there and :func:`commented_yaml` prints it after the value
(``mner params``), so it has no second home either.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from mner.core.config import ConfigError, plain, section, to_dict
from mner.data.prepared import PrepareConfig
from mner.evaluation import EvaluateConfig
from mner.models import MODELS, Run, resolve_run
from mner.report_config import ReportConfig
from mner.runs import Pipeline
from mner.settings.clues import ClueSource, check_tracked, clue_set, clue_sets
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
    check_baseline(section(params, "report", ReportConfig), pipeline)


def check_baseline(report: ReportConfig, pipeline: Pipeline) -> None:
    """Refuse a case-study baseline that the pipeline does not train as a text-only run: the
    report, which reads its predictions, would fail after all the training."""
    if report.baseline not in pipeline.runs.text:
        valid = ", ".join(pipeline.runs.text) or "none"
        raise ConfigError(
            f"params.yaml:report.baseline: {report.baseline!r:.80} is not one of pipeline.runs.text "
            f"({valid}); set report.baseline to one of them, or add it to pipeline.runs.text"
        )


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


Notes = dict[str, tuple[str, "Notes"]]  # per key: what it means, and the notes of its own keys


def setting_notes(params: Mapping[str, Any]) -> Notes:
    """What each setting of :func:`effective_params` of ``params`` means, as its dataclass's
    field comments say (a setting whose field has none: an empty note)."""
    pipeline = Pipeline.from_params(params)
    run_notes = field_notes(Run)
    models = {}
    for name in pipeline.trained_runs:
        model = resolve_run(params.get("models") or {}, name).model
        models[name] = (
            "",
            {
                "model": (run_notes["model"][0], {}),
                **field_notes(MODELS[model][0]),
                "train": (run_notes["train"][0], field_notes(TrainConfig)),
            },
        )
    return {
        "pipeline": ("", field_notes(Pipeline)),
        **{name: ("", field_notes(cls)) for name, cls in SECTIONS.items()},
        "clues": ("", {name: ("", field_notes(ClueSource)) for name in clue_sets(params)}),
        "models": ("", models),
    }


@functools.cache
def field_notes(cls: type) -> Notes:
    """The comment of each field of dataclass ``cls`` in its source (its base classes' too):
    the comment on the field's lines or, when there is none, the comment lines right above it;
    with the notes of a field whose type is a dataclass or a tuple of them."""
    notes: Notes = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        comments = _source_comments(klass)
        hints = typing.get_type_hints(klass)
        for field in dataclasses.fields(klass):
            inner = next(
                (
                    t
                    for t in (hints[field.name], *typing.get_args(hints[field.name]))
                    if dataclasses.is_dataclass(t)
                ),
                None,
            )
            notes[field.name] = (comments.get(field.name, ""), field_notes(inner) if inner else {})
    return notes


def _source_comments(cls: type) -> dict[str, str]:
    """Each annotated name of the class body of ``cls`` and its comment (see :func:`field_notes`)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source at hand: no notes
        return {}
    comments: dict[int, str] = {}  # by line number
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip().replace("``", "`")
    lines = source.splitlines()
    found, previous_end = {}, 1
    for statement in ast.parse(source).body[0].body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            on = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
            above = []
            for n in range(statement.lineno - 1, previous_end, -1):
                if n not in comments or lines[n - 1].strip()[:1] != "#":
                    break
                above.insert(0, comments[n])
            found[statement.target.id] = " ".join(on or above)
        previous_end = statement.end_lineno
    return found


def commented_yaml(settings: Mapping[str, Any], notes: Notes, indent: int = 0) -> str:
    """``settings`` as block YAML, each key's note as a comment after it (a value that is
    neither a mapping nor a list of mappings in flow style, on one line)."""
    pad, lines = " " * indent, []
    for key, value in settings.items():
        note, inner = notes.get(key, ("", {}))
        comment = f"  # {note}" if note else ""
        if isinstance(value, Mapping) and value:
            lines += [f"{pad}{_key(key)}:{comment}", commented_yaml(value, inner, indent + 2)]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) and v for v in value):
            lines.append(f"{pad}{_key(key)}:{comment}")
            for item in value:
                block = commented_yaml(item, inner, indent + 4)
                lines.append(f"{pad}  - {block[indent + 4 :]}")
        else:
            first, *rest = _flow(value).split("\n")
            if rest:  # a value of several lines: its note on a line of its own, above it
                lines += [f"{pad}#{comment[3:]}"] if comment else []
                comment = ""
            lines += [f"{pad}{_key(key)}: {first}{comment}", *(f"{pad}  {line}" for line in rest)]
    return "\n".join(lines)


def _flow(value: Any) -> str:
    """``value`` as YAML writes it in flow style (a scalar without the document end mark)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf"))
    return text.removesuffix("...\n").rstrip("\n")


def _key(key: Any) -> str:
    """``key`` as YAML writes a mapping key."""
    return yaml.safe_dump({key: None}, default_flow_style=False).rstrip("\n").removesuffix(" null")[:-1]
