"""The clue diagnostic (``mner clue-use``) of the benchmark's runs read with clue sets: test
F1 of each run with each tweet's own clue, with none and with another tweet's, mean ± std
over seeds, with the clue files of the repository (data/<dataset>/clues/).

    python -m benchmarks.clue_use --datasets twitter2017 twitter2015 \\
        --runs transformer-crf+captions transformer-crf+knowledge --seeds 1 2 3
"""

from __future__ import annotations

from benchmarks.common import REPO, base_parser, mean_std
from mner.clue_use import CONDITIONS, clue_use


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--runs", nargs="+", required=True, help="run directories' names, <run>+<clues>")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    print(
        "| dataset | run | seeds | "
        + " | ".join(f"F1 {c}" for c in CONDITIONS)
        + " | ΔF1 none | ΔF1 deranged |"
    )
    print("|---|---|---|" + "---|" * (len(CONDITIONS) + 2))
    for dataset in args.datasets:
        for run in args.runs:
            results = [
                clue_use(args.work / "runs" / dataset / run / f"seed{seed}", "cpu", clue_root=REPO)
                for seed in args.seeds
            ]
            f1 = {c: [100 * r.conditions[c].f1 for r in results] for c in CONDITIONS}
            delta = {c: [100 * r.conditions[c].delta_f1 for r in results] for c in ("none", "deranged")}
            cells = [mean_std(f1[c]) for c in CONDITIONS] + [mean_std(delta[c]) for c in delta]
            print(f"| {dataset} | {run} | {len(results)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
