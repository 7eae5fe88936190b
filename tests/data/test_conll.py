import pytest

from mner.data.conll import (
    MAX_WORDS,
    ConllFormatError,
    Sentence,
    read_conll,
    read_conll_columns,
    read_conll_skipping,
    read_dataset,
    repair_bio,
    write_conll,
)
from mner.data.stats import dataset_stats, table_columns
from tests.conftest import DATA

GOOD = "IMGID:1\nGeorge\tB-PER\nZimmerman\tI-PER\nshot\tO\n\nIMGID:2\nOscars\tB-OTHER\nnight\tO\n"


def test_reads_tweets_ids_tokens_and_maps_other_to_misc(write_file):
    sentences = read_conll(write_file(GOOD))
    assert sentences == [
        Sentence("tweets-0", "1", ("George", "Zimmerman", "shot"), ("B-PER", "I-PER", "O")),
        Sentence("tweets-1", "2", ("Oscars", "night"), ("B-MISC", "O")),
    ]
    assert [s.line for s in sentences] == [1, 6]


def test_any_bio_type_is_read_and_only_other_is_an_alias(write_file):
    text = (
        "IMGID:1\niPhone\tB-PRODUCT\nlaunch\tB-EVENT\nparty\tI-EVENT\nby\tO\nTim\tB-person\n\n"
        "IMGID:2\nAlphabet\tB-corporation\nInc.\tI-corporation\nv2\tB-creative-work.v2_x\n"
        "Oscars\tB-OTHER\nnight\tI-OTHER\n"
    )
    first, second = read_conll(write_file(text))
    assert first.labels == ("B-PRODUCT", "B-EVENT", "I-EVENT", "O", "B-person")
    assert second.labels == ("B-corporation", "I-corporation", "B-creative-work.v2_x", "B-MISC", "I-MISC")


def test_crlf_and_missing_final_newline_and_extra_blank_lines(write_file):
    text = "\n\nIMGID:1\r\nA\tO\r\n\r\n\r\nIMGID:2\r\nB\tB-LOC"
    assert [s.tokens for s in read_conll(write_file(text))] == [("A",), ("B",)]


def test_byte_order_mark_and_cr_only_line_endings(write_file):
    """A BOM before the first IMGID is not part of it; CR alone ends a line as LF does."""
    lf = read_conll(write_file(GOOD))
    assert read_conll(write_file(b"\xef\xbb\xbf" + GOOD.encode())) == lf
    assert read_conll(write_file(GOOD.replace("\n", "\r"))) == lf
    assert [s.line for s in read_conll(write_file(GOOD.replace("\n", "\r")))] == [1, 6]


def test_whitespace_lines_between_tweets_are_blank_lines(write_file):
    assert len(read_conll(write_file(GOOD.replace("\n\nIMGID:2", "\n \t\nIMGID:2")))) == 2


def test_write_then_read_round_trip(tmp_path, write_file):
    sentences = read_conll(write_file(GOOD))
    write_conll(tmp_path / "out.txt", sentences)
    assert read_conll(tmp_path / "out.txt") == [
        Sentence(s.id.replace("tweets", "out"), s.image_id, s.tokens, s.labels) for s in sentences
    ]


def test_the_datasets_odd_unicode_tokens_are_kept(write_file):
    """Twitter-2015's valid split has a lone U+00A0 token, Twitter-2017's train split U+0092
    twice: Unicode spaces and controls other than ASCII's stay tokens."""
    sentences = read_conll(write_file("IMGID:1\nA\tO\n\xa0\tO\n\x92\tO\n"))
    assert sentences[0].tokens == ("A", "\xa0", "\x92")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("IMGID:1\nA\tO\nB O\n", 3, "expected 'token<TAB>label', got no tab"),
        ("IMGID:1\nA\tO\tO\n", 2, "got 2 tabs"),
        ("IMGID:1\nA\tX-PER\n", 2, "malformed label 'X-PER': expected O, B-<type> or I-<type>"),
        ("IMGID:1\nA\tB-\n", 2, "malformed label 'B-'"),
        ("IMGID:1\nA\tB PER\n", 2, "malformed label 'B PER'"),
        ("IMGID:1\nA\tB_PER\n", 2, "malformed label 'B_PER'"),
        ("IMGID:1\nA\tb-per\n", 2, "malformed label 'b-per'"),
        ("IMGID:1\nA\tB-P/R\n", 2, "malformed label 'B-P/R'"),
        ("IMGID:1\nA\tI-ORG!\n", 2, "malformed label 'I-ORG!'"),
        ("IMGID:1\nA\to\n", 2, "malformed label 'o'"),
        ("IMGID:1\n\tO\n", 2, "empty token"),
        ("IMGID:1\nA\tO\nNew York\tB-LOC\n", 3, "token 'New York' holds U+0020 (a space or control"),
        ("IMGID:1\n \tO\n", 2, "token ' ' holds U+0020"),
        ("IMGID:1\nA\x00B\tO\n", 2, "token 'A\\x00B' holds U+0000"),
        ("IMGID:1\nA\x1bB\tO\n", 2, "holds U+001B"),
        ("IMGID:1\nA\tO\n\nIMGID:2\n\nIMGID:3\nB\tO\n", 4, "tweet IMGID:2 has no tokens"),
        ("IMGID:1\nA\tO\nIMGID:2\nIMGID:3\nB\tO\n", 3, "tweet IMGID:2 has no tokens"),
        ("IMGID:1\nA\tO\n\nB\tO\n", 4, "tokens with no IMGID:<image id> line before them"),
        ("IMGID:\nA\tO\n", 1, "empty image id"),
        ("IMGID:../../../etc/passwd\nA\tO\n", 1, "image id '../../../etc/passwd' is not a plain file name"),
        ("IMGID:ok\nA\tO\n\nIMGID:..\nA\tO\n", 4, "image id '..' is not a plain file name"),
        ("IMGID:a\\b\nA\tO\n", 1, "is not a plain file name"),
        (b"IMGID:1\nA\tO\ncaf\xe9\tO\n", 3, "not UTF-8 (byte 0xe9 at column 4)"),
        ("IMGID:1\nA\tO\n  \t\nB\tO\n", 3, "a line of only whitespace inside a tweet"),
        ("IMGID:1\rA\tO\rB\tX\r", 3, "malformed label 'X'"),  # CR-only line endings
        (b"\xef\xbb\xbfIMGID:1\nA\tO\nB\n", 3, "got no tab: 'B'"),  # a BOM, then a bad line
        ("IMGID:1\n" + "x" * 500 + "\n", 2, "'" + "x" * 80 + "'... (500 characters)"),
        (
            "IMGID:1\nA\tO\n\nIMGID:2\n" + "w\tO\n" * 281,
            4,
            "tweet IMGID:2 has 281 words, more than 280 (a tweet",
        ),
    ],
)
def test_malformed_input_names_file_and_line(write_file, text, line, problem):
    path = write_file(text)
    with pytest.raises(ConllFormatError) as caught:
        read_conll(path)
    assert caught.value.line == line
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_a_tweet_of_the_most_words_is_read(write_file):
    assert len(read_conll(write_file("IMGID:1\n" + "w\tO\n" * MAX_WORDS))[0].tokens) == MAX_WORDS


def test_skipping_keeps_good_tweets_and_reports_every_skipped_one(write_file):
    text = "IMGID:1\nA\tO\n\nIMGID:2\nB\tX\n\nIMGID:3\nC\tB-LOC\n\nD\tO\n\nIMGID:5\nE\tO\nF G\tO\n"
    sentences, skipped = read_conll_skipping(write_file(text.replace("F G\tO", "F\tG\tO")))
    assert [s.image_id for s in sentences] == ["1", "3"]
    assert [s.id for s in sentences] == ["tweets-0", "tweets-1"]
    assert [e.line for e in skipped] == [5, 10, 14]
    assert "malformed label 'X'" in str(skipped[0])


def test_bio_repair_turns_orphans_and_type_switches_into_b():
    labels = ("I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-MISC", "I-MISC", "B-PER", "I-PER")
    assert repair_bio(labels) == (
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-ORG",
        "B-MISC",
        "I-MISC",
        "B-PER",
        "I-PER",
    )


def test_unknown_bio_policy_is_refused(write_file):
    with pytest.raises(ValueError, match="unknown BIO policy 'fix'"):
        read_conll(write_file(GOOD), bio="fix")


def test_label_columns_file(write_file):
    gold, pred = read_conll_columns(write_file("IMGID:1\nA NN B-PER B-PER\nB NN I-PER O\n\nC\tO\tB-OTHER\n"))
    assert [s.labels for s in gold] == [("B-PER", "I-PER"), ("O",)]
    assert [s.labels for s in pred] == [("B-PER", "O"), ("B-MISC",)]
    with pytest.raises(ConllFormatError, match=r":2: expected 'token gold pred' columns, got 2"):
        read_conll_columns(write_file("IMGID:1\nA B-PER\n"))


def test_missing_split_file_is_named(tmp_path):
    (tmp_path / "train.txt").write_text(GOOD)
    with pytest.raises(FileNotFoundError, match=r"missing valid\.txt, test\.txt"):
        read_dataset(tmp_path)


@pytest.mark.parametrize(
    ("dataset", "tweets", "orphans", "switches"),
    [
        ("twitter2015", {"train": 4000, "valid": 1000, "test": 3257}, [175, 52, 129], [11, 1, 6]),
        ("twitter2017", {"train": 3373, "valid": 723, "test": 723}, [0, 0, 0], [0, 0, 0]),
    ],
)
def test_real_datasets_and_bio_policies(dataset, tweets, orphans, switches):
    kept = read_dataset(DATA / dataset)
    assert {split: len(s) for split, s in kept.items()} == tweets
    table = dataset_stats(kept)
    columns = ("tweets", "tokens", "PER", "LOC", "ORG", "MISC", "entities", "orphans", "type_switches")
    assert table_columns(table) == columns and all(tuple(row) == columns for row in table.values())
    assert [table[s]["orphans"] for s in ("train", "valid", "test")] == orphans
    assert [table[s]["type_switches"] for s in ("train", "valid", "test")] == switches
    assert all(not label.endswith("OTHER") for s in kept["train"] for label in s.labels)

    repaired = read_dataset(DATA / dataset, bio="repair")
    assert dataset_stats(repaired)["total"]["orphans"] == 0
    assert dataset_stats(repaired)["total"]["type_switches"] == 0
    # conlleval already reads an orphan as an entity start, so repair keeps every entity
    assert dataset_stats(repaired)["total"]["entities"] == table["total"]["entities"]
    assert [s.tokens for s in repaired["test"]] == [s.tokens for s in kept["test"]]
