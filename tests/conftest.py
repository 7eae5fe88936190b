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


# The matrix of the offline workspace that the pipeline tests share (tests/test_pipeline.py):
# each stage kind of dvc.yaml on both datasets, with two text-only runs (the report's baseline,
# and linear-softmax, whose test F1 is not 0 there), GEI with its grid-reading ablation, FMIT and
# UMT, and one cross-domain pair (the other entries of configs/offline.yaml differ from these
# only in model flags, tested in tests/models). The clue stages run in tests/test_own_dataset.py
# (CLUE_STAGES), over clues in a user's own format.
OFFLINE_RUNS = {
    "text": ["linear-softmax", "transformer-crf"],
    "visual": ["gei", "gei-image-region", "fmit", "umt"],
}
OFFLINE_CROSS_DOMAIN = [{"train": "twitter2017", "test": "twitter2015"}]
CLUE_STAGES = {"clue_files", "text_features_clues", "train_clues", "evaluate_clues"}


def dvc(workspace, *args, **env):
    """``dvc *args`` in ``workspace``; its stdout (the test fails on a non-zero status)."""
    import os
    import subprocess

    run_env = {**os.environ, **env} if env else None
    result = subprocess.run(["dvc", *args], cwd=workspace, capture_output=True, text=True, env=run_env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def offline_pipeline(tmp_path_factory):
    """The offline workspace with the matrix above, reproduced once per session (``dvc
    repro``) and committed: (workspace, the output of that ``dvc repro``). Tests that change
    it restore it (tests/test_pipeline.py's ``restored``)."""
    from dvc.utils.serialize import modify_yaml

    from mner.offline import commit, make_offline_workspace

    workspace = make_offline_workspace(tmp_path_factory.mktemp("offline") / "ws")
    with modify_yaml(workspace / "params.yaml") as params:
        params["pipeline"]["runs"] = OFFLINE_RUNS
        params["pipeline"]["cross_domain"] = OFFLINE_CROSS_DOMAIN
        params["pipeline"] |= {"clues": [], "clue_runs": []}  # in tests/test_own_dataset.py
    commit(workspace, "the tests' matrix")
    first = dvc(workspace, "repro")
    commit(workspace, "features and runs")
    return workspace, first
