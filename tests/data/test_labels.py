import pytest

from mner.data.conll import read_dataset
from mner.data.labels import (
    TWITTER_LABELS,
    bio_labels,
    entities,
    is_bio_vocabulary,
    label_types,
    label_vocabulary,
    ordered_types,
)
from tests.conftest import DATA

OLD_TWITTER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC")


@pytest.mark.parametrize("dataset", ["twitter2015", "twitter2017"])
@pytest.mark.parametrize("bio", ["keep", "repair"])
def test_twitter_vocabulary_is_the_fixed_one_of_before(dataset, bio):
    splits = read_dataset(DATA / dataset, bio=bio)
    labels = label_vocabulary(s.labels for sentences in splits.values() for s in sentences)
    assert labels == OLD_TWITTER_LABELS == TWITTER_LABELS


def test_conventional_types_first_then_the_others_by_name():
    sequences = [
        ("B-PRODUCT", "I-PRODUCT", "O", "B-ORG"),
        ("O", "I-EVENT", "B-person", "B-PER"),
        ("B-corporation", "I-LOC", "B-EVENT"),
    ]
    assert label_types(sequences) == ("PER", "LOC", "ORG", "EVENT", "PRODUCT", "corporation", "person")
    assert label_vocabulary(sequences) == (
        "O",
        *("B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-EVENT", "I-EVENT"),
        *("B-PRODUCT", "I-PRODUCT", "B-corporation", "I-corporation", "B-person", "I-person"),
    )


def test_vocabulary_of_types_only_in_i_tags_and_of_no_entities():
    assert label_vocabulary([("O", "I-MISC")]) == ("O", "B-MISC", "I-MISC")
    assert label_vocabulary([("O", "O")]) == ("O",)
    assert label_vocabulary([]) == ("O",)


def test_bio_labels_and_ordered_types_drop_repeats_and_sort():
    assert ordered_types(["b", "MISC", "a", "PER", "b"]) == ("PER", "MISC", "a", "b")
    assert bio_labels(["MISC", "PER"]) == ("O", "B-PER", "I-PER", "B-MISC", "I-MISC")


@pytest.mark.parametrize("label", ["X-PER", "B-", "B PER", "PER", "b-PER", "", "B-PER\n"])
def test_a_label_outside_the_bio_grammar_is_refused(label):
    with pytest.raises(ValueError, match="malformed label"):
        label_vocabulary([("O", label)])


def test_only_the_bio_layout_is_a_bio_vocabulary():
    assert is_bio_vocabulary(TWITTER_LABELS) and is_bio_vocabulary(["O", "B-x", "I-x"])
    assert not is_bio_vocabulary(["O", "B-PER"])  # no I- tag
    assert not is_bio_vocabulary(["O", "Z-PER"])  # outside the grammar


def test_an_unknown_scheme_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"^unknown scheme 'iobes'; expected one of conlleval, strict$"):
        entities(["B-PER"], scheme="iobes")
