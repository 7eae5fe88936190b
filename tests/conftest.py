from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture
def write_file(tmp_path):
    """Write ``text`` (str or bytes) to a file in the test's temp dir and return its path."""

    def write(text: str | bytes, name: str = "tweets.txt") -> Path:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    return write
