"""Constrained against free decoding on the same checkpoints: test P/R/F1 of every run of
a workspace decoded both ways, and the invalid I- tags of each (an I- tag that continues no
entity of its type), with the gold file's own count beside them.

    python -m benchmarks.decoding /tmp/mner-quickstart
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from mner.core.config import load_params
from mner.core.workspace import Workspace, run_dir
from mner.data.conll import is_orphan, is_type_switch
from mner.data.prepared import read_prepared
from mner.evaluation import evaluate_checkpoint
from mner.runs import Pipeline

MODES = ("free", "constrained")


def invalid_tags(label_sequences) -> int:
    """I- tags that continue no entity of their type (after O, at the start, or after
    another type)."""
    return sum(
        is_orphan(before, label) or is_type_switch(before, label)
        for labels in label_sequences
        for before, label in zip(["O", *labels], labels)
    )


def decode_both_ways(checkpoint: Path, workspace: Workspace) -> dict:
    """Test F1 and invalid tags of one checkpoint decoded free and constrained, over the caches
    of ``workspace`` it was trained on."""
    row = {}
    for mode in MODES:
        scores, predicted = evaluate_checkpoint(checkpoint, workspace, decode=mode)
        row[mode] = {"f1": 100 * scores.overall.f1, "invalid": invalid_tags(s.labels for s in predicted)}
    return row


def gold_invalid(prepared: Path) -> int:
    """Invalid tags of the gold test labels."""
    return invalid_tags(s.labels for s in read_prepared(prepared / "test.jsonl"))


HEADER = (
    "| dataset | run | gold invalid | F1 free | F1 constrained | invalid free | invalid constrained |\n"
    "|---|---|---|---|---|---|---|"
)


def table_row(dataset: str, run: str, gold: int, rows: list[dict]) -> str:
    """One line of the table: mean ± std over the seeds' ``decode_both_ways`` rows."""
    cells = [
        mean_std([row[mode][key] for row in rows], digits)
        for key, digits in (("f1", 2), ("invalid", 1))
        for mode in MODES
    ]
    return f"| {dataset} | {run} | {gold} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a pipeline workspace whose runs are trained")
    parser.add_argument("--runs", nargs="+", help="only these runs (default: every run of the pipeline)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (default: the pipeline's)")
    args = parser.parse_args()
    pipeline = Pipeline.from_params(load_params(args.workspace / "params.yaml"), args.workspace)
    print(HEADER)
    for dataset in args.datasets or pipeline.datasets:
        workspace = pipeline.workspace(dataset)
        for run in args.runs or pipeline.run_names:
            rows = [
                decode_both_ways(args.workspace / run_dir(dataset, run, seed) / "checkpoint", workspace)
                for seed in pipeline.seeds
            ]
            print(table_row(dataset, run, gold_invalid(workspace.prepared), rows))


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


if __name__ == "__main__":
    main()
