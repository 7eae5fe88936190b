"""detect: objects in each tweet's image (DETR by default), cached in HDF5."""

import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.features.detect import check_ready, detect_objects
from mner.runner.preflight import or_exit
from mner.runner.shards import extraction_arguments, run_sharded
from mner.settings.detect import DetectConfig
from mner.settings.images import ImagesConfig


def main() -> None:
    args = extraction_arguments(__doc__)
    workspace = Workspace(args.dataset)

    params = load_params()
    config = section(params, "detect", DetectConfig)
    images = section(params, "images", ImagesConfig)
    or_exit(check_ready, config, images, args.dataset)
    report = run_sharded(
        lambda shard, out: detect_objects(config, images, workspace, out, shard),
        workspace.cache("objects"),
        workspace.prepared,
        args.shard,
    )
    print(
        f"{report.tweets} tweets, {report.objects} objects in {report.seconds:.1f} s "
        f"({report.tweets / report.seconds:.1f} images/s); blank images: {report.images.summary()}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
