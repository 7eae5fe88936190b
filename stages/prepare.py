"""prepare: the dataset's CoNLL files to prepared sentences, their labels and their stats."""

import argparse
import logging
import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.data.prepared import PrepareConfig, prepare
from mner.data.stats import table_columns
from mner.metrics import format_table


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    args = parser.parse_args()
    workspace = Workspace(args.dataset)

    config = section(load_params(), "prepare", PrepareConfig)
    stats = prepare(config, args.dataset, workspace.prepared)
    print(format_table(stats["splits"], table_columns(stats["splits"])))
    if stats["skipped"]:
        print(f"skipped {len(stats['skipped'])} malformed tweets (listed in stats.json)")


if __name__ == "__main__":
    sys.exit(run_stage(main))
