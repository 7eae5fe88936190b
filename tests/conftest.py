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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny random cased BERT saved to a temp dir (loaded back by path in the tests)."""
    from mner.data.conll import read_conll
    from mner.tiny import build_tiny_bert

    words = [w for s in read_conll(DATA / "twitter2017" / "valid.txt") for w in s.tokens]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), words, vocab_size=500)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run many times faster on one torch thread than on several competing for
    the cores of a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
