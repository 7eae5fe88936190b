"""Bytes per 1000 tweets of every feature cache of a pipeline workspace (after its feature
stages ran), per cache and per field, and of the trained checkpoints: what a team moves
over the network.

    mner offline-workspace /tmp/ws && (cd /tmp/ws && dvc repro text_features visual_features)
    python -m benchmarks.cache_sizes /tmp/ws
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py

from mner.core.cache import CacheReader


def field_bytes(path: Path) -> dict[str, int]:
    """Bytes of each field's data (all splits), offsets and ids included in ``(index)``."""
    sizes: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        for split in CacheReader.splits(f):
            for name, item in f[split].items():
                if isinstance(item, h5py.Group):
                    sizes[name] = sizes.get(name, 0) + item["data"].id.get_storage_size()
                    sizes["(index)"] = sizes.get("(index)", 0) + item["offsets"].id.get_storage_size()
                else:
                    sizes["(index)"] = sizes.get("(index)", 0) + item.id.get_storage_size()
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workspace", type=Path)
    args = parser.parse_args()
    print(f"{'cache':40} {'tweets':>7} {'MB':>9} {'MB / 1000 tweets':>17}  per field (MB / 1000 tweets)")
    for path in sorted((args.workspace / "features").rglob("*.h5")):
        tweets = sum(len(ids) for ids in CacheReader(path).ids.values())
        per_k = 1000 / tweets / 1e6
        fields = ", ".join(f"{name} {size * per_k:.3f}" for name, size in sorted(field_bytes(path).items()))
        name = str(path.relative_to(args.workspace))
        size = path.stat().st_size
        print(f"{name:40} {tweets:7d} {size / 1e6:9.3f} {size * per_k:17.3f}  {fields}")
    checkpoints = sorted(args.workspace.glob("runs/**/checkpoint/*"))
    if checkpoints:
        total = sum(p.stat().st_size for p in checkpoints if p.is_file())
        print(f"checkpoints: {len(checkpoints)} files, {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
