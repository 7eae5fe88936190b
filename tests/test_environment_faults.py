"""The file system failing under a cache write (a disk that fills up, a directory that is
not one): one line naming the cache and the cause, exit status 2 for a stage, no
temporary file left, the previous cache intact."""

import subprocess
import sys

import numpy as np
import pytest

from mner.core.cache import CacheError, CacheWriteError, CacheWriter, provenance

WRITE = """
import resource, signal, sys
import numpy as np
from mner import run_stage
from mner.core.cache import CacheWriter, provenance

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def main():
    with CacheWriter(sys.argv[1], provenance("text_features", {})) as cache:
        cache.write_ids("train", [str(i) for i in range(100)])
        cache.write_field("train", "words", [np.ones((10, 2, 64), np.float16)] * 100)


sys.exit(run_stage(main))
"""


def write_small_cache(path):
    with CacheWriter(path, provenance("text_features", {"model": "old"})) as cache:
        cache.write_ids("train", ["a"])
        cache.write_field("train", "words", [np.zeros((1, 2, 4), np.float16)])


def test_a_write_that_fails_midway_leaves_one_line_and_the_previous_cache(tmp_path):
    """The file grows past what the system allows while the rows are written (as on a disk
    that fills up): HDF5 can neither write nor close the file. Before, two tracebacks, a
    segmentation fault and the temporary file left behind."""
    path = tmp_path / "text.h5"
    write_small_cache(path)
    before = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", WRITE, str(path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: cannot be written (File too large); the previous one is unchanged"
    ]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.h5"]


def test_a_field_larger_than_the_free_space_is_refused_before_it_is_written(tmp_path, monkeypatch):
    path = tmp_path / "text.h5"
    write_small_cache(path)
    before = path.read_bytes()
    monkeypatch.setattr("mner.core.cache.shutil.disk_usage", lambda _: type("Usage", (), {"free": 10_000}))
    with pytest.raises(CacheError) as refused, CacheWriter(path, provenance("text_features", {})) as cache:
        cache.write_ids("train", [str(i) for i in range(100)])
        cache.write_field("train", "words", [np.ones((10, 2, 64), np.float16)] * 100)
    assert str(refused.value) == (
        f"{path}: train/words needs 0.2 MiB, 0.0 MiB free on its disk; free space and rerun "
        "(the previous one is unchanged)"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.h5"]


def test_a_cache_whose_directory_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "features").write_text("a file where the directory should be")
    path = tmp_path / "features" / "text.h5"
    with (
        pytest.raises(
            CacheWriteError, match=rf"^{path}: cannot be written \(File exists\); nothing was written$"
        ),
        CacheWriter(path, provenance("text_features", {})),
    ):
        pass
