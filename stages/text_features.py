"""text_features: frozen transformer word features of every prepared tweet, cached in HDF5;
with --clues, each tweet read with the texts of a clue set after it (features/text/<dataset>.<clues>.h5)."""

import sys

from mner import run_stage
from mner.clues import read_clue_set
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS
from mner.data.prepared import read_prepared
from mner.features.text import check_ready, extract_text_features
from mner.runner.preflight import or_exit
from mner.runner.shards import extraction_arguments, run_sharded
from mner.settings.clues import clue_set
from mner.settings.text import TextFeaturesConfig


def main() -> None:
    args = extraction_arguments(__doc__, ("--clues", "read each tweet with this clue set (params clues)"))
    workspace = Workspace(args.dataset, clues=args.clues)

    params = load_params()
    config = section(params, "text_features", TextFeaturesConfig)
    or_exit(check_ready, config)
    clues = None
    if args.clues:
        sentences = {split: read_prepared(workspace.prepared / f"{split}.jsonl") for split in SPLITS}
        clues = read_clue_set(args.clues, clue_set(params, args.clues), args.dataset, sentences)
    report = run_sharded(
        lambda shard, out: extract_text_features(config, workspace.prepared, out, shard, clues),
        workspace.cache("text"),
        workspace.prepared,
        args.shard,
    )
    print(
        f"{report.tweets} tweets, {report.words} words in {report.seconds:.1f} s "
        f"({report.tweets / report.seconds:.1f} tweets/s); "
        f"{report.long_tweets} tweets needed several windows; "
        f"{len(report.empty_words)} words without subwords encoded as the unknown token"
    )
    if clues:
        print(
            f"clues {args.clues}: {report.clues} tweets read with one, {report.clues_truncated} cut to the "
            f"window, {report.clues_dropped} left out (tweets of several windows); per source: "
            + "; ".join(
                f"{c['path']} missing {c['missing']}, blank {c['blank']}" for c in clues.record["read"]
            )
        )
    if report.empty_words:
        print("words without subwords (tweet id:word index):", " ".join(report.empty_words[:50]))


if __name__ == "__main__":
    sys.exit(run_stage(main))
