"""visual_features: ResNet features of each tweet's image, detected and grounded objects."""

import sys

from mner import run_stage
from mner.config import load_params, section
from mner.data.images import ImagesConfig
from mner.features.visual import VisualConfig, check_ready, expected_caches, extract_visual_features
from mner.paths import grounding_cache, objects_cache, prepared_dir, visual_cache
from mner.preflight import or_exit
from mner.shards import extraction_arguments, run_sharded


def main() -> None:
    args = extraction_arguments(__doc__)

    params = load_params()
    config = section(params, "visual_features", VisualConfig)
    images = section(params, "images", ImagesConfig)
    or_exit(check_ready, config, images, args.dataset)
    expected = expected_caches(params)

    report = run_sharded(
        lambda shard, out: extract_visual_features(
            config,
            images,
            args.dataset,
            prepared_dir(args.dataset),
            objects_cache(args.dataset),
            grounding_cache(args.dataset),
            out,
            shard,
            expect_objects=expected["objects"],
            expect_grounding=expected["grounding"],
        ),
        visual_cache(args.dataset),
        prepared_dir(args.dataset),
        args.shard,
    )
    print(
        f"{report.tweets} tweets, {report.crops} crops in {report.seconds:.1f} s "
        f"({report.tweets / max(report.seconds, 1e-9):.1f} images/s); blank images: {report.images.summary()}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
