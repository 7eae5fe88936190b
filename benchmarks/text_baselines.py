"""Text-only baselines on the real Twitter-2015/2017 data with a real pretrained encoder
that works offline (MiniLM-L6, frozen): test P/R/F1 (conlleval scheme) and seconds per
epoch of each model, mean and std over seeds.

    python benchmarks/text_baselines.py --models transformer-crf linear-crf --seeds 1 2 3
"""

from __future__ import annotations

import json
import logging
import statistics

from benchmarks.common import base_parser, cached_dataset, minilm_config, text_params
from mner.config import to_dict
from mner.predict import evaluate_checkpoint
from mner.train import TrainConfig, run_training


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["transformer-crf", "linear-crf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--pooling", default="first", choices=["first", "mean"])
    parser.add_argument("--layers", nargs="+", type=int, default=[-1, -2, -3, -4])
    parser.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    parser.add_argument("--model-params", default="{}", help='{"model": {key: value}} as JSON')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    text_config = minilm_config(pooling=args.pooling, layers=tuple(args.layers))
    train_config = TrainConfig(**{"device": "auto", **json.loads(args.train)})
    params = {
        **text_params(text_config),
        "train": to_dict(train_config),
        "models": json.loads(args.model_params),
    }
    rows = []
    for dataset in args.datasets:
        prepared, cache = cached_dataset(dataset, text_config, args.work)
        for model in args.models:
            runs = []
            for seed in args.seeds:
                out = args.work / "runs" / dataset / model / f"seed{seed}"
                result = run_training(params, dataset, model, seed, prepared, cache, out)
                scores, _ = evaluate_checkpoint(out, prepared, cache)
                runs.append((scores.overall, result))
                print(
                    json.dumps(
                        {
                            "dataset": dataset,
                            "model": model,
                            "seed": seed,
                            "test": scores.summary(),
                            "best_epoch": result.best_epoch,
                            "dev_f1": result.best_dev_f1,
                            "s_per_epoch": result.seconds_per_epoch,
                        }
                    ),
                    flush=True,
                )
            rows.append((dataset, model, runs))
    print(
        f"\nencoder: MiniLM-L6 (frozen, layers {list(text_config.layers)}, {args.pooling} subword); "
        f"train: {json.loads(args.train)}; scheme: conlleval; seeds {args.seeds}"
    )
    print(f"{'dataset':12} {'model':16} {'P':>12} {'R':>12} {'F1':>12} {'s/epoch':>8}")
    for dataset, model, runs in rows:
        cells = [_mean_std([100 * getattr(o, k) for o, _ in runs]) for k in ("precision", "recall", "f1")]
        seconds = statistics.mean(r.seconds_per_epoch for _, r in runs)
        print(f"{dataset:12} {model:16} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} {seconds:8.1f}")


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f}±{std:.2f}"


if __name__ == "__main__":
    main()
