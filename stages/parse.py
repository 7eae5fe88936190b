"""parse: noun-phrase word spans of every prepared tweet (stanza constituency NPs), cached in HDF5."""

import sys

from mner import run_stage
from mner.config import load_params, section
from mner.features.phrases import MissingModelsError, ParseConfig, check_ready, extract_phrases
from mner.paths import phrases_cache, prepared_dir
from mner.preflight import or_exit
from mner.shards import extraction_arguments, run_sharded


def main() -> None:
    args = extraction_arguments(__doc__)

    config = section(load_params(), "parse", ParseConfig)
    or_exit(check_ready, config)
    try:
        report = run_sharded(
            lambda shard, out: extract_phrases(config, prepared_dir(args.dataset), out, shard=shard),
            phrases_cache(args.dataset),
            prepared_dir(args.dataset),
            args.shard,
        )
    except MissingModelsError as error:  # models that pass the check but fail to load: no traceback either
        raise SystemExit(f"error: {error}") from None
    print(report.summary())


if __name__ == "__main__":
    sys.exit(run_stage(main))
