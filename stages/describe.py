"""describe: a caption of every image of a dataset (BLIP by default), written as a clue file
in the captions format (data/<dataset>/clues/described-captions.txt)."""

import argparse
import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.features.describe import check_ready, describe_dataset
from mner.runner.preflight import or_exit
from mner.settings.describe import DescribeConfig, captions_file
from mner.settings.images import ImagesConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    args = parser.parse_args()
    workspace = Workspace(args.dataset)

    params = load_params()
    config = section(params, "describe", DescribeConfig)
    images = section(params, "images", ImagesConfig)
    or_exit(check_ready, config, images, args.dataset)
    out = captions_file(args.dataset)
    report = describe_dataset(config, images, workspace, out)
    print(
        f"{report.captions} images of {report.tweets} tweets captioned in {report.seconds:.1f} s "
        f"({report.captions / max(report.seconds, 1e-9):.1f} images/s) into {out}; "
        f"empty captions: {report.empty}; blank images: {report.images.summary()}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
