"""evaluate: test-set P/R/F1 (overall and per type) of a trained run, and its predictions,
read from the caches its checkpoint was trained on; with --test-dataset another dataset's
test set (cross-domain, written under cross/<it>)."""

import json
import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace, clue_run, evaluation_dir, run_arguments, run_dir
from mner.data.conll import write_conll
from mner.evaluation import EvaluateConfig, evaluate_checkpoint
from mner.metrics import format_scores


def main() -> None:
    parser = run_arguments(__doc__)
    parser.add_argument("--test-dataset", help="score on this dataset's test set (default: the training one)")
    args = parser.parse_args()
    test = args.test_dataset or args.dataset

    config = section(load_params(), "evaluate", EvaluateConfig)
    checkpoint = run_dir(args.dataset, args.run, args.seed, args.clues) / "checkpoint"
    workspace = Workspace(test, clues=args.clues)
    scores, predictions = evaluate_checkpoint(checkpoint, workspace, "test", config.scheme, config.batch_size)
    out = evaluation_dir(args.dataset, clue_run(args.run, args.clues), args.seed, test)
    out.mkdir(parents=True, exist_ok=True)
    write_conll(out / "predictions.txt", predictions)
    (out / "scores.json").write_text(json.dumps(scores.to_dict(), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(scores.summary(), indent=2) + "\n")
    print(format_scores(scores))


if __name__ == "__main__":
    sys.exit(run_stage(main))
