"""Models on the real Twitter-2015/2017 text with a real pretrained encoder that works
offline (MiniLM-L6, frozen): test P/R/F1 (conlleval scheme) and seconds per epoch of each
model, mean and std over seeds. With ``--images blank`` every tweet has the blank
placeholder image (no real images exist on this machine), so the multimodal models run
too; the interaction phase's parameter count of each model is printed.

    python -m benchmarks.models --models transformer-crf linear-crf --seeds 1 2 3
    python -m benchmarks.models --images blank --models transformer-crf gei --seeds 1 2 3

With ``--decoding`` the test table of constrained against free decoding of the same
checkpoints follows (as ``benchmarks.decoding`` prints it for a workspace).

With ``--dev-only`` the runs are scored on the dev set only (their best dev F1, the
early-stopping score): the form of a study that chooses a default. A run's
``--model-params`` entry may carry ``train`` overrides (as in params.yaml), so one
invocation can compare learning rates or batch sizes under different run names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from benchmarks.common import (
    REPO,
    base_parser,
    blank_image_caches,
    blank_image_params,
    cached_dataset,
    interaction_parameters,
    minilm_config,
    print_dev_table,
    print_table,
    text_params,
    train_and_test,
)
from benchmarks.decoding import HEADER, decode_both_ways, gold_invalid, table_row
from mner.core.config import load_params, to_dict
from mner.core.workspace import Workspace, clue_run
from mner.models import resolve_run
from mner.train import TrainConfig


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["transformer-crf", "linear-crf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--pooling", default="first", choices=["first", "mean"])
    parser.add_argument("--layers", nargs="+", type=int, default=[-1, -2, -3, -4])
    parser.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    parser.add_argument("--model-params", default="{}", help='{"model": {key: value}} as JSON')
    parser.add_argument("--images", default="none", choices=["none", "blank"])
    parser.add_argument("--dev-only", action="store_true", help="best dev F1 only; no test scores")
    parser.add_argument(
        "--clues",
        nargs="+",
        default=[],
        help="also train each model on the text cache read with these clue sets",
    )
    parser.add_argument(
        "--cells",
        help="the clue set whose clue cells the models with clue_cells read, beside the tweet read alone",
    )
    parser.add_argument(
        "--decoding", action="store_true", help="also decode each checkpoint free and constrained"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    text_config = minilm_config(pooling=args.pooling, layers=tuple(args.layers))
    train_config = TrainConfig(**{"device": "auto", **json.loads(args.train)})
    params = {
        **text_params(text_config),
        "train": to_dict(train_config),
        "models": json.loads(args.model_params),
    }
    if (
        args.clues or args.cells
    ):  # the clue sets of the repository's params.yaml (files in data/<dataset>/clues/)
        params["clues"] = load_params(REPO / "params.yaml")["clues"]
    rows, decoding = [], []
    for dataset in args.datasets:
        prepared, cache = cached_dataset(dataset, text_config, args.work)
        images = (None, None)
        if args.images == "blank":
            params = blank_image_params(params)
            images = blank_image_caches(dataset, prepared, params, args.work)
        cells = cached_dataset(dataset, text_config, args.work, args.cells)[1] if args.cells else None
        workspace = Workspace.of(
            dataset, prepared, text=cache, visual=images[0], grounding=images[1], cells=cells
        )
        workspaces = [workspace]
        for clues in args.clues:
            clued = cached_dataset(dataset, text_config, args.work, clues)[1]
            workspaces.append(replace(workspace, paths={**workspace.paths, "text": clued}, clues=clues))
        for workspace, model in ((w, m) for w in workspaces for m in args.models):
            reads_cells = resolve_run(params["models"], model).clue_cells
            runs = train_and_test(
                params,
                workspace,
                model,
                args.seeds,
                args.work,
                not args.dev_only,
                args.cells if reads_cells else None,
            )
            model = clue_run(model, workspace.clues)
            rows.append((dataset, model, runs))
            if args.decoding:
                checkpoints = [args.work / "runs" / dataset / model / f"seed{seed}" for seed in args.seeds]
                both = [decode_both_ways(checkpoint, workspace) for checkpoint in checkpoints]
                decoding.append(table_row(dataset, model, gold_invalid(prepared), both))
    print(
        f"\nencoder: MiniLM-L6 (frozen, layers {list(text_config.layers)}, {args.pooling} subword); "
        f"train: {json.loads(args.train)}; images: {args.images}; scheme: conlleval; seeds {args.seeds}"
    )
    if args.dev_only:
        print_dev_table(rows)
    else:
        print_table(rows)
    if decoding:
        print("\n" + HEADER, *decoding, sep="\n")
    for model in args.models:
        count = interaction_parameters(params, model, cache)
        if count is not None:  # text-only models have no interaction phase
            print(f"{model}: interaction phase {count / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()
