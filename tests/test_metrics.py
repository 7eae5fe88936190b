import random
import warnings

import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from mner.data.conll import Sentence, read_conll, write_conll
from mner.data.labels import TWITTER_LABELS, Entity, bio_labels, entities
from mner.metrics import format_scores, score, score_files
from tests.conftest import DATA


@pytest.mark.parametrize(
    ("labels", "conlleval", "strict"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)], [("PER", 0, 2), ("LOC", 3, 4)]),
        (["I-PER", "I-PER", "O"], [("PER", 0, 2)], []),
        (["O", "I-LOC"], [("LOC", 1, 2)], []),
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)], [("PER", 0, 1)]),
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)], [("PER", 0, 1), ("PER", 1, 3)]),
        (["B-ORG"], [("ORG", 0, 1)], [("ORG", 0, 1)]),
        ([], [], []),
    ],
)
def test_entities_by_scheme(labels, conlleval, strict):
    assert entities(labels, "conlleval") == [Entity(*e) for e in conlleval]
    assert entities(labels, "strict") == [Entity(*e) for e in strict]


def test_score_counts_and_zero_division():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    scores = score(gold, pred)
    assert (scores.overall.correct, scores.overall.predicted, scores.overall.gold) == (1, 2, 2)
    assert scores.overall.f1 == pytest.approx(0.5)
    assert list(scores.per_type) == ["PER", "LOC", "ORG"]
    assert scores.per_type["ORG"].precision == 0.0 and scores.per_type["ORG"].recall == 0.0
    assert scores.per_type["LOC"].f1 == 0.0
    assert score([["O"]], [["O"]]).overall.f1 == 0.0


def test_score_refuses_unaligned_sequences():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        score([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: 2 gold labels but 1 predicted"):
        score([["O"], ["O", "O"]], [["O"], ["O"]])


def perturb(labels, rng, rate):
    """Random edits of the kinds a tagger makes: wrong label, wrong type, lost B-, shifted end."""
    out = list(labels)
    for i, label in enumerate(out):
        if rng.random() >= rate:
            continue
        kind = rng.randrange(4)
        if kind == 0:
            out[i] = rng.choice(TWITTER_LABELS)
        elif kind == 1 and label != "O":
            out[i] = label[:2] + rng.choice(["PER", "LOC", "ORG", "MISC"])
        elif kind == 2 and label.startswith("B-"):
            out[i] = "I-" + label[2:]
        elif kind == 3 and i + 1 < len(out) and label != "O":
            out[i + 1] = "I-" + label[2:]
    return out


SEQEVAL_MODES = {"conlleval": {}, "strict": {"mode": "strict", "scheme": IOB2}}


@pytest.mark.parametrize("dataset", ["twitter2015", "twitter2017"])
@pytest.mark.parametrize("scheme", ["conlleval", "strict"])
def test_agrees_with_seqeval_on_perturbed_test_sets(dataset, scheme):
    gold = [list(s.labels) for s in read_conll(DATA / dataset / "test.txt")]
    rng = random.Random(f"{dataset}-{scheme}")
    for trial in range(8):
        pred = [perturb(labels, rng, rate=0.02 + 0.04 * trial) for labels in gold]
        ours = score(gold, pred, scheme)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = classification_report(
                gold, pred, output_dict=True, zero_division=0, **SEQEVAL_MODES[scheme]
            )
        micro = ref["micro avg"]
        assert ours.overall.precision == pytest.approx(micro["precision"], abs=1e-9)
        assert ours.overall.recall == pytest.approx(micro["recall"], abs=1e-9)
        assert ours.overall.f1 == pytest.approx(micro["f1-score"], abs=1e-9)
        assert set(ours.per_type) == set(ref) - {"micro avg", "macro avg", "weighted avg"}
        for entity_type, prf in ours.per_type.items():
            assert prf.precision == pytest.approx(ref[entity_type]["precision"], abs=1e-9)
            assert prf.recall == pytest.approx(ref[entity_type]["recall"], abs=1e-9)
            assert prf.f1 == pytest.approx(ref[entity_type]["f1-score"], abs=1e-9)
            assert prf.gold == ref[entity_type]["support"]


@pytest.mark.parametrize(
    "vocabulary", [TWITTER_LABELS, bio_labels(["PER", "PRODUCT", "EVENT", "person", "creative-work"])]
)
def test_agrees_with_seqeval_on_short_random_sequences(vocabulary):
    rng = random.Random(7)
    for _ in range(300):
        gold = [[rng.choice(vocabulary) for _ in range(rng.randrange(1, 6))] for _ in range(3)]
        pred = [[rng.choice(vocabulary) for _ in labels] for labels in gold]
        for scheme, kwargs in SEQEVAL_MODES.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
            ours = score(gold, pred, scheme)
            assert ours.overall.f1 == pytest.approx(ref["micro avg"]["f1-score"], abs=1e-9)
            for entity_type, prf in ours.per_type.items():
                assert prf.f1 == pytest.approx(ref[entity_type]["f1-score"], abs=1e-9)


def test_per_type_scores_of_a_dataset_of_other_types(tmp_path):
    tokens = ("iPhone", "launch", "party", "Tim", "Cook", "at", "Apple")
    gold = [
        Sentence("g", "1", tokens, ("B-PRODUCT", "B-EVENT", "I-EVENT", "B-person", "I-person", "O", "B-ORG"))
    ]
    pred = [Sentence("p", "1", tokens, ("B-PRODUCT", "B-EVENT", "O", "B-person", "I-person", "O", "B-PER"))]
    write_conll(tmp_path / "gold.txt", gold)
    write_conll(tmp_path / "pred.txt", pred)
    scores = score_files(tmp_path / "gold.txt", tmp_path / "pred.txt")
    assert list(scores.per_type) == ["PER", "ORG", "EVENT", "PRODUCT", "person"]
    assert {t: (prf.correct, prf.predicted, prf.gold) for t, prf in scores.per_type.items()} == {
        "PER": (0, 1, 0),
        "ORG": (0, 0, 1),
        "EVENT": (0, 1, 1),
        "PRODUCT": (1, 1, 1),
        "person": (1, 1, 1),
    }
    assert list(scores.summary())[3:] == ["f1_PER", "f1_ORG", "f1_EVENT", "f1_PRODUCT", "f1_person"]
    rows = [line.split()[0] for line in format_scores(scores).splitlines()[2:]]
    assert rows == ["overall", "PER", "ORG", "EVENT", "PRODUCT", "person"]


def test_score_files_two_files_and_columns(tmp_path):
    gold = [Sentence("g-0", "7", ("Paris", "Hilton", "hi"), ("B-PER", "I-PER", "O"))]
    pred = [Sentence("p-0", "7", ("Paris", "Hilton", "hi"), ("B-LOC", "O", "O"))]
    write_conll(tmp_path / "gold.txt", gold)
    write_conll(tmp_path / "pred.txt", pred)
    assert score_files(tmp_path / "gold.txt", tmp_path / "pred.txt").overall.predicted == 1
    assert score_files(tmp_path / "gold.txt", tmp_path / "gold.txt").overall.f1 == 1.0
    (tmp_path / "cols.txt").write_text("Paris B-PER B-PER\nHilton I-PER I-PER\nhi O B-LOC\n")
    scores = score_files(tmp_path / "cols.txt")
    assert (scores.overall.correct, scores.overall.predicted) == (1, 2)


@pytest.mark.parametrize(
    ("pred_tokens", "pred_image", "message"),
    [
        (("Paris", "Hilton"), "7", r"gold\.txt:4 and .*pred\.txt:4: tweet IMGID:7 has 3 tokens vs 2"),
        (
            ("Paris", "Hiltn", "hi"),
            "7",
            r"gold\.txt:6: token 1 of IMGID:7 is 'Hilton' but 'Hiltn' at .*pred\.txt:6",
        ),
        (("Paris", "Hilton", "hi"), "8", r"image ids differ \('7' vs '8'\)"),
    ],
)
def test_score_files_names_first_mismatch(tmp_path, pred_tokens, pred_image, message):
    first = Sentence("x", "1", ("a",), ("O",))
    write_conll(tmp_path / "gold.txt", [first, Sentence("g", "7", ("Paris", "Hilton", "hi"), ("O",) * 3)])
    write_conll(
        tmp_path / "pred.txt", [first, Sentence("p", pred_image, pred_tokens, ("O",) * len(pred_tokens))]
    )
    with pytest.raises(ValueError, match=message):
        score_files(tmp_path / "gold.txt", tmp_path / "pred.txt")


def test_score_files_names_tweet_count_mismatch(tmp_path):
    sentence = Sentence("x", "1", ("a",), ("O",))
    write_conll(tmp_path / "gold.txt", [sentence, sentence])
    write_conll(tmp_path / "pred.txt", [sentence])
    with pytest.raises(ValueError, match=r"gold\.txt has 2 tweets but .*pred\.txt has 1"):
        score_files(tmp_path / "gold.txt", tmp_path / "pred.txt")
