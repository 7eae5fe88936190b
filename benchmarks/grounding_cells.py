"""Visual cells per tweet that FMIT reads under each phrase and grounding setting: for
``parse.keep`` base/all and ``ground.select`` best/threshold (the backend's default
thresholds), the phrases per tweet, the grounded boxes per tweet and the visual cells
(the whole image plus the grounded boxes, capped at ``models.fmit.max_visual``), over
every split of a dataset of a workspace (its params.yaml, prepared data and images).

    mner offline-workspace /tmp/ws && (cd /tmp/ws && dvc repro prepare)
    python -m benchmarks.grounding_cells /tmp/ws --dataset twitter2017
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
from pathlib import Path

from mner.core.cache import CacheReader
from mner.core.config import load_params, section
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS
from mner.features.ground import ground_dataset
from mner.features.phrases import extract_phrases
from mner.models import resolve_run
from mner.settings.ground import GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig, expected_provenance


def per_tweet(cache: Path, field: str) -> list[int]:
    reader = CacheReader(cache)
    return [len(reader.get(s, field, i)) for s in SPLITS for i in range(len(reader.ids[s]))]


def describe(counts: list[int]) -> str:
    zero = 100 * sum(c == 0 for c in counts) / len(counts)
    return f"{statistics.mean(counts):6.2f} {statistics.median(counts):6.1f} {max(counts):4d} {zero:6.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--dataset", default="twitter2017")
    parser.add_argument("--max-visual", type=int, help="cap on visual cells (default: the FMIT run's)")
    args = parser.parse_args()
    os.chdir(args.workspace)  # the params' relative paths (models/, data/) are the workspace's
    params = load_params(Path("params.yaml"))
    parse, images = section(params, "parse", ParseConfig), section(params, "images", ImagesConfig)
    ground = section(params, "ground", GroundConfig)
    max_visual = args.max_visual or resolve_run(params["models"], "fmit").config.max_visual
    prepared = Workspace(args.dataset).prepared
    print(f"{args.workspace} {args.dataset}: FMIT max_visual {max_visual}; per tweet: mean median max zero")
    print(f"{'keep':5} {'select':10} {'phrases':>28} {'grounded boxes':>28} {'visual cells':>28}")
    with tempfile.TemporaryDirectory() as tmp:
        for keep in ("base", "all"):
            parse_keep = dataclasses.replace(parse, keep=keep)
            phrases = Path(tmp) / f"phrases-{keep}.h5"
            extract_phrases(parse_keep, prepared, phrases)
            for select in ("best", "threshold"):
                thresholds = {"box_threshold": None, "text_threshold": 0.25} if select == "threshold" else {}
                config = dataclasses.replace(ground, select=select, **thresholds)
                out = Path(tmp) / f"ground-{keep}-{select}.h5"
                ground_dataset(
                    config,
                    images,
                    Workspace.of(args.dataset, prepared, phrases=phrases),
                    out,
                    expect_phrases=expected_provenance(parse_keep),
                )
                boxes = per_tweet(out, "boxes")
                cells = [1 + min(b, max_visual - 1) for b in boxes]
                print(
                    f"{keep:5} {select:10} {describe(per_tweet(phrases, 'spans')):>28} "
                    f"{describe(boxes):>28} {describe(cells):>28}"
                )


if __name__ == "__main__":
    main()
