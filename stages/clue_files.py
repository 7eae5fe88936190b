"""clue_files: the SHA-256 of the files of one clue set of one dataset, written to
checks/clues/<dataset>.<clues>.sha256, the one input of its text cache's stage besides the
prepared splits: an edit to a caption file reruns the text caches read with captions only."""

import argparse
import sys

from mner import run_stage
from mner.core.cache import file_sha256
from mner.core.config import ConfigError, load_params
from mner.core.workspace import clue_files_record
from mner.settings.clues import check_tracked, clue_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--clues", required=True, help="the clue set (params clues)")
    args = parser.parse_args()

    lines = []
    sources = clue_set(load_params(), args.clues)
    check_tracked(args.clues, sources)
    for source in sources:
        path = source.file(args.dataset)
        if not path.is_file():
            raise ConfigError(f"params.yaml:clues.{args.clues}: no clue file {path} for {args.dataset}")
        lines.append(f"{file_sha256(path)}  {path}\n")
    out = clue_files_record(args.dataset, args.clues)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    print("".join(lines), end="")


if __name__ == "__main__":
    sys.exit(run_stage(main))
