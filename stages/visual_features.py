"""visual_features: ResNet features of each tweet's image, detected and grounded objects."""

import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.features.visual import check_ready, extract_visual_features
from mner.runner.preflight import or_exit
from mner.runner.shards import extraction_arguments, run_sharded
from mner.settings.images import ImagesConfig
from mner.settings.visual import VisualConfig, expected_caches


def main() -> None:
    args = extraction_arguments(__doc__)
    workspace = Workspace(args.dataset)

    params = load_params()
    config = section(params, "visual_features", VisualConfig)
    images = section(params, "images", ImagesConfig)
    or_exit(check_ready, config, images, args.dataset)
    expected = expected_caches(params)

    report = run_sharded(
        lambda shard, out: extract_visual_features(
            config,
            images,
            workspace,
            out,
            shard,
            expect_objects=expected["objects"],
            expect_grounding=expected["grounding"],
        ),
        workspace.cache("visual"),
        workspace.prepared,
        args.shard,
    )
    print(
        f"{report.tweets} tweets, {report.crops} crops in {report.seconds:.1f} s "
        f"({report.tweets / max(report.seconds, 1e-9):.1f} images/s); blank images: {report.images.summary()}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
