"""detect: objects in each tweet's image (DETR by default), cached in HDF5."""

import sys

from mner import run_stage
from mner.config import load_params, section
from mner.data.images import ImagesConfig
from mner.features.detect import DetectConfig, check_ready, detect_objects
from mner.paths import objects_cache, prepared_dir
from mner.preflight import or_exit
from mner.shards import extraction_arguments, run_sharded


def main() -> None:
    args = extraction_arguments(__doc__)

    params = load_params()
    config = section(params, "detect", DetectConfig)
    images = section(params, "images", ImagesConfig)
    or_exit(check_ready, config, images, args.dataset)
    report = run_sharded(
        lambda shard, out: detect_objects(
            config, images, args.dataset, prepared_dir(args.dataset), out, shard
        ),
        objects_cache(args.dataset),
        prepared_dir(args.dataset),
        args.shard,
    )
    print(
        f"{report.tweets} tweets, {report.objects} objects in {report.seconds:.1f} s "
        f"({report.tweets / report.seconds:.1f} images/s); blank images: {report.images.summary()}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
