"""check_params: the pre-flight of ``dvc repro``. Every value of params.yaml is checked (each
stage's section, every run of the pipeline with its train settings) before the first stage
that reads it, so a bad value stops the pipeline in seconds and in one line, not hours in.

Its output never changes (the stages after it rerun only for their own inputs); ``prepare``
depends on it, so every other stage comes after it."""

import sys

from mner import run_stage
from mner.core.config import load_params
from mner.core.workspace import params_check
from mner.params import check_params


def main() -> None:
    check_params(load_params())
    mark = params_check()
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text("params.yaml passed the pre-flight (stages/check_params.py)\n")


if __name__ == "__main__":
    sys.exit(run_stage(main))
