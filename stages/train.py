"""train: one run that reads no image (its entry under models) on one dataset with one seed,
over the cached text features (with --clues, those read with a clue set: the run
<run>+<clues>; a model with clue_cells: true also reads that cache's clue cells)."""

import json
import logging
import sys

from mner import run_stage
from mner.core.config import load_params
from mner.core.workspace import Workspace, run_arguments, run_dir
from mner.models import resolve_run
from mner.settings.text import expected_text
from mner.train import train_stage, training_job


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = run_arguments(__doc__).parse_args()
    params = load_params()
    text = expected_text(params, args.clues, args.dataset)
    run = resolve_run(params.get("models") or {}, args.run)
    cells = {"cells": text} if args.clues and run.clue_cells else {}
    job = training_job(params, args.run, {"text": text} | cells)
    out = run_dir(args.dataset, args.run, args.seed, args.clues)
    summary = train_stage(job, Workspace(args.dataset, clues=args.clues), args.seed, out)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(run_stage(main))
