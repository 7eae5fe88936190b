"""train: one run (its entry under models) on one dataset with one seed, over the cached features."""

import json
import logging
import sys
from contextlib import nullcontext

from dvclive import Live

from mner import run_stage
from mner.config import load_params
from mner.distributed import join_processes
from mner.paths import grounding_cache, prepared_dir, run_arguments, run_dir, text_cache, visual_cache
from mner.train import run_training, training_job


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = run_arguments(__doc__)
    args = parser.parse_args()

    processes = join_processes()  # several processes under torchrun; rank 0 writes the outputs
    job = training_job(load_params(), args.run, args.visual)
    out = run_dir(args.dataset, args.run, args.seed)
    live = Live(str(out / "live"), dvcyaml=None, save_dvc_exp=False) if processes.rank == 0 else nullcontext()
    with live:

        def log_epoch(metrics: dict) -> None:
            for name, value in metrics.items():
                if name != "epoch":
                    live.log_metric(name, value)
            live.next_step()

        result = run_training(
            job,
            args.dataset,
            args.seed,
            prepared_dir(args.dataset),
            text_cache(args.dataset),
            out / "checkpoint",
            log_epoch,
            visual_cache(args.dataset) if args.visual else None,
            grounding_cache(args.dataset) if args.visual else None,
        )
    if processes.rank == 0:
        summary = {
            "best_epoch": result.best_epoch,
            "best_dev_f1": result.best_dev_f1,
            "seconds_per_epoch": result.seconds_per_epoch,
            "processes": processes.world,
        }
        (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(run_stage(main))
