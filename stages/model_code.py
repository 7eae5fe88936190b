"""model_code: the SHA-256 of the source files of each run's model (its module and every mner
file it imports), by run, in checks/model_code.yaml: the train and evaluate stages of a run
track its key as a param, so that an edit to one model's file reruns that model's runs only."""

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mner import run_stage
from mner.core.config import load_params
from mner.core.workspace import model_code_file
from mner.models import MODELS, resolve_run
from mner.runs import Pipeline
from mner.sources import ROOT, module_closure, sources_digest


def model_code(params: Mapping[str, Any], root: Path = ROOT) -> dict[str, str]:
    """Each run of the pipeline with the SHA-256 of its model's sources under ``root``."""
    models = params.get("models") or {}
    return {
        name: sources_digest(module_closure(MODELS.module(resolve_run(models, name).model), root), root)
        for name in Pipeline.from_params(params).trained_runs
    }


def main() -> None:
    digests = model_code(load_params())
    out = model_code_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(digests, sort_keys=True))
    print(f"{len(digests)} runs, {len(set(digests.values()))} distinct model sources")


if __name__ == "__main__":
    sys.exit(run_stage(main))
