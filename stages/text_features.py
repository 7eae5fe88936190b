"""text_features: frozen transformer word features of every prepared tweet, cached in HDF5."""

import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.features.text import check_ready, extract_text_features
from mner.runner.preflight import or_exit
from mner.runner.shards import extraction_arguments, run_sharded
from mner.settings.text import TextFeaturesConfig


def main() -> None:
    args = extraction_arguments(__doc__)
    workspace = Workspace(args.dataset)

    config = section(load_params(), "text_features", TextFeaturesConfig)
    or_exit(check_ready, config)
    report = run_sharded(
        lambda shard, out: extract_text_features(config, workspace.prepared, out, shard),
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
    if report.empty_words:
        print("words without subwords (tweet id:word index):", " ".join(report.empty_words[:50]))


if __name__ == "__main__":
    sys.exit(run_stage(main))
