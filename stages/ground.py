"""ground: boxes for each tweet's noun phrases and four general words in its image, cached in HDF5."""

import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.features.ground import check_ready, ground_dataset
from mner.runner.preflight import or_exit
from mner.runner.shards import extraction_arguments, run_sharded
from mner.settings.ground import GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig, expected_provenance


def main() -> None:
    args = extraction_arguments(__doc__)
    workspace = Workspace(args.dataset)

    params = load_params()
    config = section(params, "ground", GroundConfig)
    images = section(params, "images", ImagesConfig)
    or_exit(check_ready, config, images, args.dataset)
    expect_phrases = expected_provenance(section(params, "parse", ParseConfig))

    report = run_sharded(
        lambda shard, out: ground_dataset(
            config, images, workspace, out, shard, expect_phrases=expect_phrases
        ),
        workspace.cache("grounding"),
        workspace.prepared,
        args.shard,
    )
    seconds = max(report.seconds, 1e-9)
    print(
        f"{report.tweets} tweets, {report.queries} queries, {report.boxes} boxes in {report.seconds:.1f} s "
        f"({report.tweets / seconds:.1f} tweets/s, {report.queries / seconds:.1f} queries/s); "
        f"{report.empty_tweets} tweets without a box, {report.capped_tweets} with more than "
        f"{config.max_phrases} phrases, {report.truncated_queries} queries cut to the model's text length"
    )
    print("blank images:", report.images.summary() or "none")


if __name__ == "__main__":
    sys.exit(run_stage(main))
