import json

import pytest

from mner.data.conll import Sentence, write_conll
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import PrepareConfig, prepare, read_labels, read_prepared, write_labels
from tests.conftest import DATA

SPLIT_LABELS = {
    "train": [("B-PRODUCT", "I-PRODUCT", "O", "B-person"), ("B-LOC", "O", "B-EVENT")],
    "valid": [("O", "B-PER", "I-PER")],
    "test": [("B-corporation", "O"), ("O", "B-OTHER")],
}


@pytest.fixture
def own_dataset(tmp_path):
    """A dataset of other types than Twitter's: data/own/{train,valid,test}.txt."""
    directory = tmp_path / "data" / "own"
    directory.mkdir(parents=True)
    for split, sequences in SPLIT_LABELS.items():
        sentences = [
            Sentence(f"{split}-{i}", f"{split}{i}", tuple(f"w{j}" for j in range(len(labels))), labels)
            for i, labels in enumerate(sequences)
        ]
        write_conll(directory / f"{split}.txt", sentences)
    return tmp_path / "data"


def test_prepare_records_the_labels_of_every_split(own_dataset, tmp_path):
    out = tmp_path / "prepared" / "own"
    stats = prepare(PrepareConfig(data_dir=str(own_dataset)), "own", out)
    types = ["PER", "LOC", "MISC", "EVENT", "PRODUCT", "corporation", "person"]
    labels = ["O", *(f"{prefix}-{t}" for t in types for prefix in "BI")]
    assert json.loads((out / "labels.json").read_text()) == {"types": types, "labels": labels}
    assert read_labels(out) == tuple(labels)
    assert list(stats["splits"]["train"]) == [
        "tweets",
        "tokens",
        *types,
        "entities",
        "orphans",
        "type_switches",
    ]
    assert stats["splits"]["train"]["PRODUCT"] == 1 and stats["splits"]["test"]["corporation"] == 1
    assert stats["splits"]["total"]["MISC"] == 1 and stats["splits"]["train"]["MISC"] == 0
    assert [s.labels for s in read_prepared(out / "test.jsonl")] == [("B-corporation", "O"), ("O", "B-MISC")]


def test_a_limit_keeps_the_labels_of_the_whole_dataset(own_dataset, tmp_path):
    out = tmp_path / "prepared" / "own"
    stats = prepare(PrepareConfig(data_dir=str(own_dataset), limit=1), "own", out)
    assert "B-EVENT" in read_labels(out) and "B-MISC" in read_labels(out)
    assert stats["splits"]["total"]["EVENT"] == 0 and stats["splits"]["total"]["MISC"] == 0


def test_twitter_labels_and_stats_columns_stay_those_of_before(tmp_path):
    stats = prepare(PrepareConfig(data_dir=str(DATA), limit=20), "twitter2015", tmp_path)
    assert read_labels(tmp_path) == TWITTER_LABELS
    assert json.loads((tmp_path / "labels.json").read_text())["types"] == ["PER", "LOC", "ORG", "MISC"]
    columns = ["tweets", "tokens", "PER", "LOC", "ORG", "MISC", "entities", "orphans", "type_switches"]
    assert all(list(row) == columns for row in stats["splits"].values())
    assert json.loads((tmp_path / "stats.json").read_text()) == stats


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "labels.json is missing"),
        ("{'types': []}", "not JSON"),
        ('["O"]', "expected an object with a list of 'types' and a list of 'labels'"),
        ('{"labels": ["O"]}', "expected an object with a list of 'types'"),
        ('{"types": ["B PER"], "labels": ["O", "B-B PER", "I-B PER"]}', "malformed type 'B PER'"),
        ('{"types": [3], "labels": ["O"]}', "malformed type 3"),
        ('{"types": ["LOC", "PER"], "labels": ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]}', "each type once"),
        ('{"types": ["PER", "PER"], "labels": ["O", "B-PER", "I-PER"]}', "each type once"),
        ('{"types": ["PER"], "labels": ["O", "B-PER"]}', "the labels O, then B- and I- of each type"),
        ('{"types": ["PER"], "labels": ["O", "B-PER", "I-PER"], "extra": 1}', "each type once"),
    ],
)
def test_read_labels_refuses_a_missing_or_malformed_file(tmp_path, content, problem):
    prepared = tmp_path / "prepared" / "own"
    prepared.mkdir(parents=True)
    if content is not None:
        (prepared / "labels.json").write_text(content)
    with pytest.raises((FileNotFoundError, ValueError)) as caught:
        read_labels(prepared)
    message = str(caught.value)
    assert message.startswith(str(prepared / "labels.json"))
    assert problem in message and message.endswith("rerun dvc repro prepare@own")


def test_write_labels_refuses_what_is_no_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="is not a label vocabulary"):
        write_labels(tmp_path, ("O", "B-LOC", "I-LOC", "B-PER", "I-PER"))
    assert write_labels(tmp_path, TWITTER_LABELS) == ("PER", "LOC", "ORG", "MISC")
    assert read_labels(tmp_path) == TWITTER_LABELS


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_split_is_refused_naming_its_file(own_dataset, tmp_path, content):
    """A 0-byte or blank test.txt ran text features and training before evaluation refused."""
    from mner import InputError

    empty = own_dataset / "own" / "test.txt"
    empty.write_text(content)
    with pytest.raises(InputError, match=rf"^{empty}: no tweets; a split needs at least one$"):
        prepare(PrepareConfig(data_dir=str(own_dataset)), "own", tmp_path / "prepared")
    assert not (tmp_path / "prepared" / "labels.json").exists()
