"""summarize: every run's test P/R/F1 on one dataset (means over the seeds), the file DVC
tracks as the pipeline's metrics (``dvc metrics show``, ``dvc exp show``)."""

import argparse
import json
import sys

from mner import run_stage
from mner.core.config import load_params
from mner.core.workspace import summary_file
from mner.runs import Pipeline, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    args = parser.parse_args()

    summary = summarize(Pipeline.from_params(load_params()), args.dataset)
    out = summary_file(args.dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(run_stage(main))
