"""parse: noun-phrase word spans of every prepared tweet (stanza constituency NPs), cached in HDF5."""

import sys

from mner import run_stage
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.features.phrases import MissingModelsError, check_ready, extract_phrases
from mner.runner.preflight import or_exit
from mner.runner.shards import extraction_arguments, run_sharded
from mner.settings.parse import ParseConfig


def main() -> None:
    args = extraction_arguments(__doc__)
    workspace = Workspace(args.dataset)

    config = section(load_params(), "parse", ParseConfig)
    or_exit(check_ready, config)
    try:
        report = run_sharded(
            lambda shard, out: extract_phrases(config, workspace.prepared, out, shard=shard),
            workspace.cache("phrases"),
            workspace.prepared,
            args.shard,
        )
    except MissingModelsError as error:  # models that pass the check but fail to load: no traceback either
        raise SystemExit(f"error: {error}") from None
    print(report.summary())


if __name__ == "__main__":
    sys.exit(run_stage(main))
