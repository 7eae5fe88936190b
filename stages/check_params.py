"""check_params: the pre-flight of ``dvc repro``. Every value of params.yaml is checked (each
stage's section, every run of the pipeline with its train settings) before the first stage
that reads it, so a bad value stops the pipeline in seconds and in one line, not hours in.
So is each dataset's image directory, which the image stages depend on: absent, it stops the
pipeline, or with ``images.missing: blank`` it is made empty (those stages read blank images).

Its output never changes (the stages after it rerun only for their own inputs); ``prepare``
depends on it, so every other stage comes after it."""

import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import params_check
from mner.params import check_params
from mner.runner.preflight import or_exit
from mner.runs import Pipeline
from mner.settings.images import ImagesConfig, ensure_image_dir


def main() -> None:
    params = load_params()
    check_params(params)
    images = section(params, "images", ImagesConfig)
    for dataset in Pipeline.from_params(params).datasets:
        if made := or_exit(ensure_image_dir, images, dataset):
            print(f"{made}: no images of {dataset}; every tweet reads the blank image (images.missing)")
    mark = params_check()
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text("params.yaml passed the pre-flight (stages/check_params.py)\n")


if __name__ == "__main__":
    sys.exit(run_stage(main))
