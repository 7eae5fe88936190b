"""``mner train DATA_DIR DEST``: the quickstart's workspace over a dataset of one's own, made
and checked without running it (tests/test_own_dataset.py runs such a dataset through every
stage)."""

import pytest
import yaml
from dvc.repo import Repo

from mner.core.config import ConfigError
from mner.data.conll import SPLITS, Sentence, read_conll, write_conll
from mner.offline import make_own_workspace
from tests.conftest import DATA


def own_data(root, name="shops"):
    """Twitter-2017's first 20 tweets of each split, in a directory of one's own."""
    data = root / name
    data.mkdir(parents=True)
    for split in SPLITS:
        write_conll(data / f"{split}.txt", read_conll(DATA / "twitter2017" / f"{split}.txt")[:20])
    return data


def test_a_directory_of_conll_files_becomes_a_workspace_with_the_chosen_runs(tmp_path):
    data = own_data(tmp_path / "mine")
    images = tmp_path / "pictures"
    images.mkdir()
    dest = make_own_workspace(tmp_path / "ws", data, ["transformer-crf", "umt", "linear-crf"], images)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    assert params["pipeline"]["datasets"] == ["shops"]
    assert params["pipeline"]["runs"] == {"text": ["transformer-crf", "linear-crf"], "visual": ["umt"]}
    assert params["report"]["baseline"] == "transformer-crf"
    assert read_conll(dest / "data/shops/test.txt") == read_conll(data / "test.txt")
    assert (dest / "data/images/shops").resolve() == images.resolve()
    assert not (dest / "data/twitter2017").exists()
    with Repo(str(dest)) as repo:
        names = {stage.addressing.split(":")[-1] for stage in repo.index.stages}
    assert {"prepare@shops", "train@shops-transformer-crf-1", "train_visual@shops-umt-1"} <= names
    assert not [name for name in names if "twitter" in name]


def test_a_dataset_without_its_splits_or_a_bad_run_is_refused_before_the_workspace(tmp_path):
    data = own_data(tmp_path / "mine")
    (data / "valid.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"shops: no valid.txt; a dataset is train.txt, valid.txt"):
        make_own_workspace(tmp_path / "ws", data)
    assert not (tmp_path / "ws").exists()
    write_conll(data / "valid.txt", [Sentence("v", "1", ("Oslo",), ("B-LOC",))])
    with pytest.raises(FileNotFoundError, match="nowhere: no such image directory"):
        make_own_workspace(tmp_path / "ws", data, images=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="models.no-such-model.model: unknown model 'no-such-model'"):
        make_own_workspace(tmp_path / "ws2", data, ["no-such-model"])
    assert not (tmp_path / "ws2").exists()


def test_a_directory_name_that_is_no_dataset_name_or_no_text_run_is_refused_before_the_workspace(tmp_path):
    """The dataset is named after its directory, and the report's case study compares the runs
    with a text-only one: either refused by the pre-flight only after the workspace was made."""
    data = own_data(tmp_path / "mine", name="my shops")
    with pytest.raises(
        ValueError, match=r"my shops: its name 'my shops' is not a plain name, as data/<dataset>"
    ):
        make_own_workspace(tmp_path / "ws", data)
    data = own_data(tmp_path / "mine", name="shops")
    with pytest.raises(
        ValueError, match=r"^--runs fmit: no run that reads the text alone, .* e.g. linear-crf$"
    ):
        make_own_workspace(tmp_path / "ws", data, ["fmit"])
    assert not (tmp_path / "ws").exists()
