"""evaluate: test-set P/R/F1 (overall and per type) of a trained run, and its predictions."""

import argparse
import json

from mner.cli import format_scores
from mner.config import load_params, section
from mner.data.conll import write_conll
from mner.paths import grounding_cache, prepared_dir, run_dir, text_cache, visual_cache
from mner.predict import EvaluateConfig, evaluate_checkpoint

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--visual", action="store_true", help="a multimodal model: read the visual caches too")
args = parser.parse_args()

config = section(load_params(), "evaluate", EvaluateConfig)
run = run_dir(args.dataset, args.model, args.seed)
scores, predictions = evaluate_checkpoint(
    run / "checkpoint",
    prepared_dir(args.dataset),
    text_cache(args.dataset),
    "test",
    config.scheme,
    config.batch_size,
    visual_cache(args.dataset) if args.visual else None,
    grounding_cache(args.dataset) if args.visual else None,
)
(run / "eval").mkdir(parents=True, exist_ok=True)
write_conll(run / "eval" / "predictions.txt", predictions)
(run / "eval" / "scores.json").write_text(json.dumps(scores.to_dict(), indent=2) + "\n")
(run / "eval" / "metrics.json").write_text(json.dumps(scores.summary(), indent=2) + "\n")
print(format_scores(scores))
