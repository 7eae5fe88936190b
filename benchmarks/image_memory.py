"""Peak memory of hostile images: a 13000x13000 RGBA PNG (676 MB decoded, under twice PIL's
decompression-bomb limit, so PIL only warns, yet a few MB on disk) against a small JPEG and
an RGBA PNG just under the default ``images.max_pixels``.

Each figure is the peak resident set size of a fresh Python process (``VmHWM``, reset
just before the measured call; ``ru_maxrss`` would keep the high-water mark of the forked
parent across ``exec``) that either loads the image with the default ``ImagesConfig``
(``ImageSource.load``, as every image stage does) or runs the detect stage
(``detect_objects``, a tiny random DETR on the CPU, decoding in the stage's process:
``num_workers`` 0) on a dataset of one tweet whose image it is. ``--code DIR`` runs those
processes on the ``mner`` package found in DIR (e.g. a checkout of an older commit, for a
before/after comparison). The images are written a row at a time, so the writer never
holds a decoded image; they are named ``<id>.jpg`` as the datasets' images are (PIL reads
a file by its content).

    python -m benchmarks.image_memory
    python -m benchmarks.image_memory --code /path/to/another/checkout
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh process: argv is (mode, images dir, dataset, image id[, prepared dir, DETR dir, out]).
MEASURE = """
import json, sys
import mner
from mner.core.workspace import Workspace
from mner.features.images import ImageSource
from mner.settings.images import ImagesConfig
def status_mb(key):
    line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024
mode, images_dir, dataset, image_id = sys.argv[1:5]
images = ImagesConfig(dir=images_dir)
if mode == "detect":
    from mner.features.detect import detect_objects
    from mner.settings.detect import DetectConfig
    prepared, detr, out = sys.argv[5:8]
    config = DetectConfig(model=detr, revision="main", batch_size=1, num_workers=0, device="cpu")
before = status_mb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS, so that VmHWM is the peak of what follows
if mode == "load":
    problem = ImageSource(images, dataset).load(image_id).problem
else:
    report = detect_objects(config, images, Workspace.of(dataset, prepared), out)
    problem = ", ".join(k for k, v in report.images.counts["train"].items() if k != "images" and v)
result = {"mner": mner.__file__, "before_mb": before, "peak_mb": status_mb("VmHWM"), "problem": problem}
print(json.dumps(result))
"""


def write_rgba_png(path: Path, width: int, height: int) -> Path:
    """A blue RGBA PNG with a white band every 1000 rows, written a row at a time."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    plain, band = b"\0" + bytes((30, 120, 200, 255)) * width, b"\0" + b"\xff" * 4 * width
    compressor, pending = zlib.compressobj(9), b""
    with open(path, "wb") as out:
        out.write(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        )
        for y in range(height):
            pending += compressor.compress(band if y % 1000 < 50 else plain)
            if len(pending) > 1 << 20:
                out.write(chunk(b"IDAT", pending))
                pending = b""
        out.write(chunk(b"IDAT", pending + compressor.flush()) + chunk(b"IEND", b""))
    return path


def dataset_of_one_tweet(work: Path, image_id: str) -> Path:
    """Prepared splits: the train tweet shows ``image_id``, the others have no image."""
    from mner.data.conll import SPLITS, Sentence
    from mner.data.prepared import write_prepared

    prepared = work / f"prepared-{image_id}"
    prepared.mkdir(exist_ok=True)
    for split in SPLITS:
        shown = image_id if split == "train" else "absent"
        write_prepared(prepared / f"{split}.jsonl", [Sentence(f"{split}-0", shown, ("w",), ("O",))])
    return prepared


def measure(code: Path, *args: str) -> dict:
    """The peak RSS of :data:`MEASURE` run with ``args`` on the ``mner`` in ``code`` (its
    working directory, first on ``sys.path``)."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], cwd=code, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"measuring {args[:4]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--code", type=Path, default=REPO, help="directory holding the mner package to measure"
    )
    parser.add_argument("--side", type=int, default=13000, help="side of the hostile square RGBA PNG")
    args = parser.parse_args()
    from mner.tiny import build_tiny_detr

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images" / "ds"
        images.mkdir(parents=True)
        Image.new("RGB", (640, 480), (30, 120, 200)).save(images / "small.jpg")
        write_rgba_png(images / "under-limit.jpg", 6300, 6300)  # 39.7 M pixels: loads
        write_rgba_png(images / "hostile.jpg", args.side, args.side)
        detr = build_tiny_detr(work / "detr")
        print(f"mner from {args.code}; peak RSS of a fresh process during one call")
        for image_id in ("small", "under-limit", "hostile"):
            with Image.open(images / f"{image_id}.jpg") as image:
                size, mode = image.size, image.mode
            megabytes = (images / f"{image_id}.jpg").stat().st_size / 2**20
            print(f"{image_id}: {size[0]}x{size[1]} {mode}, {megabytes:.1f} MB on disk")
            loaded = measure(args.code, "load", str(work / "images"), "ds", image_id)
            print(f"  load_image    {describe(loaded)}")
            prepared = dataset_of_one_tweet(work, image_id)
            stage = measure(
                args.code,
                "detect",
                str(work / "images"),
                "ds",
                image_id,
                str(prepared),
                str(detr),
                str(work / "o.h5"),
            )
            print(f"  detect stage  {describe(stage)}")
        print(f"(measured on {loaded['mner']})")


def describe(figures: dict) -> str:
    added = figures["peak_mb"] - figures["before_mb"]
    return (
        f"peak {figures['peak_mb']:6.0f} MB, {added:6.0f} MB over the {figures['before_mb']:.0f} MB "
        f"before the call; blank image: {figures['problem'] or 'no'}"
    )


if __name__ == "__main__":
    main()
