"""Text clues: the vendored captions and PGIM knowledge against the real prepared tweets,
the alignment of a prepared subset, each refusal's one line, and the plain formats."""

import zipfile

import pytest

from mner.clues import ClueError, read_clue_set, read_clues, write_image_text, write_tweet_text
from mner.core.config import ConfigError
from mner.data.conll import SPLITS, Sentence
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.settings.clues import ClueSource, clue_set, clue_sets
from tests.conftest import DATA

CAPTIONS = ClueSource("captions", "data/{dataset}/clues/blip2-captions.txt")
PGIM = ClueSource("pgim", "data/{dataset}/clues/pgim-knowledge.zip")
REPO = DATA.parent


def prepared(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp(dataset)
    prepare(PrepareConfig(data_dir=str(DATA)), dataset, out)
    return {split: read_prepared(out / f"{split}.jsonl") for split in SPLITS}


@pytest.fixture(scope="module")
def tweets2015(tmp_path_factory):
    return prepared(tmp_path_factory, "twitter2015")


@pytest.fixture(scope="module")
def tweets2017(tmp_path_factory):
    return prepared(tmp_path_factory, "twitter2017")


@pytest.fixture(scope="module")
def pgim2017(tweets2017):
    return read_clues(PGIM, "twitter2017", tweets2017, REPO)


@pytest.fixture(scope="module")
def pgim2015(tweets2015):
    return read_clues(ClueSource("pgim", PGIM.path, "empty"), "twitter2015", tweets2015, REPO)


def test_every_2017_tweet_has_a_caption_and_knowledge(tweets2017, pgim2017):
    for clues in (read_clues(CAPTIONS, "twitter2017", tweets2017, REPO), pgim2017):
        assert {s: len(t) for s, t in clues.texts.items()} == {"train": 3373, "valid": 723, "test": 723}
        assert clues.missing == clues.blank == dict.fromkeys(SPLITS, 0)
        assert clues.ignored == 0
    assert clues.texts["train"][0].startswith(
        "Named entities:1. Blackburn Festival of Voice (event/festival)2."
    )
    captions = read_clues(CAPTIONS, "twitter2017", tweets2017, REPO)
    assert captions.sha256 == "6ac8231876221740faec3e9d10b78501d678f9f1379e893bbd3c68f885241919"
    assert all(text and text == " ".join(text.split()) for texts in captions.texts.values() for text in texts)


def test_2015_captions_two_present_but_empty_and_31_other_images(tweets2015):
    clues = read_clues(CAPTIONS, "twitter2015", tweets2015, REPO)  # missing: fail, and none is missing
    assert clues.missing == dict.fromkeys(SPLITS, 0)
    assert clues.blank == {"train": 1, "valid": 1, "test": 0}
    assert clues.ignored == 31
    [empty] = [s.image_id for s, t in zip(tweets2015["train"], clues.texts["train"]) if not t]
    assert empty in ("71406", "770560")
    assert clues.summary()["sha256"] == "57646c1fd7cf120a5bb6948db56757e35536eed53660f6e0129817cacee492ec"


def test_2015_knowledge_lacks_the_last_tweet_of_each_split(tweets2015, pgim2015):
    assert pgim2015.missing == dict.fromkeys(SPLITS, 1)
    assert pgim2015.blank == dict.fromkeys(SPLITS, 0)  # missing is not present-but-empty
    for split in SPLITS:
        texts = pgim2015.texts[split]
        assert len(texts) == len(tweets2015[split]) and texts[-1] == "" and all(texts[:-1])
    assert pgim2015.texts["train"][0].startswith("Named entities:1. JayKenMinaj (person/handle)2. George")


def test_2015_knowledge_under_fail_names_the_first_tweet_without(tweets2015):
    valid = {"valid": tweets2015["valid"]}  # only valid.txt is read
    with pytest.raises(ClueError) as error:
        read_clues(PGIM, "twitter2015", valid, REPO, name="pgim")
    last = tweets2015["valid"][-1]
    assert str(error.value) == (
        f"{REPO}/data/twitter2015/clues/pgim-knowledge.zip: twitter2015 valid tweet valid-999 (image "
        f"{last.image_id}) has no clue (1 of 1000 valid tweets have none; the file's valid tweets end after "
        "999); set clues.pgim.missing: empty to give them an empty clue"
    )


def test_a_prepared_subset_aligns(tweets2017, pgim2017):
    full = pgim2017
    limited = {split: s[:5] for split, s in tweets2017.items()}  # prepare.limit: 5
    clues = read_clues(PGIM, "twitter2017", limited, REPO)
    assert clues.texts == {split: texts[:5] for split, texts in full.texts.items()}
    assert clues.ignored == 3373 + 723 + 723 - 15
    skipped = {"test": [s for i, s in enumerate(tweets2017["test"]) if i not in (0, 7)]}  # prepare.skip_bad
    clues = read_clues(PGIM, "twitter2017", skipped, REPO)
    assert clues.texts["test"] == tuple(t for i, t in enumerate(full.texts["test"]) if i not in (0, 7))
    assert clues.ignored == 2
    captions = read_clues(CAPTIONS, "twitter2017", limited, REPO)
    assert captions.ignored == 3373 + 723 + 723 - 15  # the images of the tweets the limit left out


# --- small synthetic files


def sentence(split, i, tokens, image=None):
    return Sentence(f"{split}-{i}", image or f"{split}{i}", tuple(tokens), ("O",) * len(tokens))


SENTENCES = {
    "train": [sentence("train", 0, ["RT", "@a", "Paris"]), sentence("train", 1, ["hi"], image="shared")],
    "valid": [sentence("valid", 0, ["so", "good"], image="shared")],
    "test": [sentence("test", 0, ["ok"])],
}


def knowledge(*tweets):
    """A PGIM split file: each tweet as (tokens, words)."""
    return "".join(
        "".join(f"{t}\tO\r\n" for t in tokens)
        + "<EOS>\tX\r\n"
        + "".join(f"{w}\tX\r\n" for w in words)
        + "\r\n"
        for tokens, words in tweets
    )


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
    return path


def good_zip(path, **changes):
    members = {
        "train.txt": knowledge((["RT", "@a", "Paris"], ["Paris", "(city)"]), (["hi"], ["a", "greeting"])),
        "valid.txt": knowledge((["so", "good"], ["nothing"])),
        "test.txt": knowledge((["ok"], ["fine", "  words"])),
        "labels.txt": "O\nB-PER\n",
    }
    members.update(changes)
    return write_zip(path, {k: v for k, v in members.items() if v is not None})


def read(tmp_path, format, name="own", missing="empty", sentences=SENTENCES):
    return read_clues(
        ClueSource(format, f"{name}.{{dataset}}", missing), "tiny", sentences, tmp_path, name="own"
    )


def refusal(tmp_path, format, name="own", sentences=SENTENCES, missing="empty"):
    with pytest.raises(ClueError) as error:
        read(tmp_path, format, name, missing, sentences)
    return str(error.value).replace(f"{tmp_path}/", "")


def test_pgim_zip_read_and_joined(tmp_path):
    good_zip(tmp_path / "own.tiny")
    clues = read(tmp_path, "pgim")
    assert clues.texts == {
        "train": ("Paris (city)", "a greeting"),
        "valid": ("nothing",),
        "test": ("fine words",),
    }
    assert clues.missing == dict.fromkeys(SPLITS, 0)


def test_pgim_in_a_folder_of_the_zip(tmp_path):
    members = {f"2015/{k}": v for k, v in [("train.txt", knowledge((["RT", "@a", "Paris"], ["x"])))]}
    write_zip(tmp_path / "own.tiny", members)
    assert read(tmp_path, "pgim", sentences={"train": SENTENCES["train"][:1]}).texts == {"train": ("x",)}


def test_pgim_tokens_that_differ_are_refused_naming_member_line_and_token(tmp_path):
    good_zip(
        tmp_path / "own.tiny", **{"train.txt": knowledge((["RT", "@b", "Paris"], ["x"]), (["hi"], ["y"]))}
    )
    assert refusal(tmp_path, "pgim") == (
        "own.tiny/train.txt:1: the tweet's tokens differ from those of train tweet train-0 (image train0): "
        "token 2 is '@b' here, '@a' in ours"
    )
    good_zip(tmp_path / "own.tiny", **{"test.txt": knowledge((["ok", "then"], ["x"]))})
    assert refusal(tmp_path, "pgim") == (
        "own.tiny/test.txt:1: the tweet's tokens differ from those of test tweet test-0 (image test0): "
        "2 tokens here, 1 in ours"
    )


def test_pgim_a_tweet_missing_in_the_middle_is_refused(tmp_path):
    good_zip(tmp_path / "own.tiny", **{"train.txt": knowledge((["hi"], ["y"]))})
    assert refusal(tmp_path, "pgim") == (
        "own.tiny/train.txt:1: the tweet's tokens differ from those of train tweet train-0 (image train0): "
        "token 1 is 'hi' here, 'RT' in ours"
    )


def test_pgim_missing_tail_counted_or_refused(tmp_path):
    good_zip(tmp_path / "own.tiny", **{"train.txt": knowledge((["RT", "@a", "Paris"], ["x"]))})
    clues = read(tmp_path, "pgim")
    assert clues.texts["train"] == ("x", "") and clues.missing["train"] == 1
    assert refusal(tmp_path, "pgim", missing="fail") == (
        "own.tiny: tiny train tweet train-1 (image shared) has no clue (1 of 2 train tweets have none; the "
        "file's train tweets end after 1); set clues.own.missing: empty to give them an empty clue"
    )


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("RT\tO\nhi\n", "own.tiny/train.txt:2: expected 'token<TAB>label', got 'hi'"),
        ("RT\tO\n\n", "own.tiny/train.txt:1: the tweet has no <EOS> line before the blank line ending it"),
        ("<EOS>\tX\nw\tX\n", "own.tiny/train.txt:1: <EOS> with no tweet tokens before it"),
        ("RT\tO\n<EOS>\tX\n<EOS>\tX\n", "own.tiny/train.txt:3: a second <EOS> line in the tweet of line 1"),
        (
            "RT\tO\n<EOS>\tX\nw\tX\nhi\tO\n",
            "own.tiny/train.txt:4: expected a knowledge word labelled X after <EOS>, got 'hi\\tO' "
            "(is the blank line before the next tweet missing?)",
        ),
        (b"RT\tO\n<EOS>\tX\nw\xe9\tX\n", "own.tiny/train.txt:3: not UTF-8 (byte 0xe9 at column 2)"),
    ],
)
def test_pgim_malformed_lines(tmp_path, train, message):
    good_zip(tmp_path / "own.tiny", **{"train.txt": train})
    assert refusal(tmp_path, "pgim") == message


def test_pgim_zip_without_a_split_or_not_a_zip(tmp_path):
    good_zip(tmp_path / "own.tiny", **{"valid.txt": None})
    assert refusal(tmp_path, "pgim") == (
        "own.tiny: no valid.txt in the zip (expected train.txt, valid.txt and test.txt at its top or in one "
        "folder; it holds train.txt, test.txt, labels.txt)"
    )
    (tmp_path / "own.tiny").write_text("RT\tO\n")
    assert (
        refusal(tmp_path, "pgim") == "own.tiny: not a zip archive (the pgim format is PGIM's knowledge zip)"
    )


def test_captions_by_image_id(tmp_path):
    (tmp_path / "own.tiny").write_bytes(
        b"\xef\xbb\xbftrain0.jpg :a  man\r\nshared.jpg :\r\n\r\n"
        b"other.jpg :not ours\r\ntest0.jpg: no space\r\n"
    )
    clues = read(tmp_path, "captions")
    assert clues.texts == {"train": ("a man", ""), "valid": ("",), "test": ("no space",)}
    assert clues.blank == {"train": 1, "valid": 1, "test": 0} and clues.missing == dict.fromkeys(SPLITS, 0)
    assert clues.ignored == 1


@pytest.mark.parametrize(
    ("format", "text", "message"),
    [
        (
            "captions",
            "train0 :a man\n",
            "own.tiny:1: expected '<image id>.jpg :<caption>', got 'train0 :a man'",
        ),
        (
            "captions",
            "a.jpg :x\n.jpg :y\n",
            "own.tiny:2: expected '<image id>.jpg :<caption>', got '.jpg :y'",
        ),
        ("image-text", "train0 a man\n", "own.tiny:1: expected '<image id><TAB><text>', got 'train0 a man'"),
        ("image-text", "x\ta\n\ty\n", "own.tiny:2: expected '<image id><TAB><text>', got '\\ty'"),
        ("image-text", "x\ta\n\nx\tb\n", "own.tiny:3: image 'x' has a clue already, on line 1"),
        ("captions", "x.jpg :a\nx.jpg :b\n", "own.tiny:2: image 'x' has a clue already, on line 1"),
        ("image-text", b"x\ta\ny\t\xff\n", "own.tiny:2: not UTF-8 (byte 0xff at column 3)"),
    ],
)
def test_image_keyed_malformed_lines(tmp_path, format, text, message):
    (tmp_path / "own.tiny").write_bytes(text if isinstance(text, bytes) else text.encode())
    assert refusal(tmp_path, format) == message


def test_image_keyed_missing_counted_or_refused(tmp_path):
    (tmp_path / "own.tiny").write_text("train0\ta\nshared\tb\n")
    clues = read(tmp_path, "image-text")
    assert clues.texts == {"train": ("a", "b"), "valid": ("b",), "test": ("",)}
    assert clues.missing == {"train": 0, "valid": 0, "test": 1} and clues.blank["test"] == 0
    assert refusal(tmp_path, "image-text", missing="fail") == (
        "own.tiny: tiny test tweet test-0 (image test0) has no clue (1 of 1 test tweets have none; the file "
        "has no line '<image id><TAB><text>' for its image); set clues.own.missing: empty to give them an "
        "empty clue"
    )


def test_a_missing_file_names_the_params_key(tmp_path):
    assert refusal(tmp_path, "captions", name="absent") == (
        "absent.tiny: no such clue file (clues.own.path: 'absent.{dataset}' for dataset tiny): check the "
        "path, or write the file in the format the params name"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"split": "train", "tokens": ["RT"], "text": 1}', "'text' is int, not a string"),
        (
            '{"split": "dev", "tokens": ["RT"], "text": ""}',
            "'split' is 'dev'; expected one of train, valid, test",
        ),
        (
            '{"split": "test", "tokens": [], "text": ""}',
            "'tokens' is not a non-empty list of the tweet's tokens",
        ),
        (
            '{"split": "test", "tokens": [""], "text": ""}',
            "'tokens' holds an item that is not a non-empty string",
        ),
        ('["test"]', "expected an object, got list"),
    ],
)
def test_tweet_text_malformed_lines(tmp_path, line, message):
    (tmp_path / "own.tiny").write_text(line + "\n")
    shape = '(a line is {"split": ..., "tokens": [...], "text": ...})'
    assert refusal(tmp_path, "tweet-text") == f"own.tiny:1: {message} {shape}"


def test_tweet_text_not_json_and_tokens_that_differ(tmp_path):
    (tmp_path / "own.tiny").write_text('{"split": "test", \n')
    assert refusal(tmp_path, "tweet-text").startswith("own.tiny:1: not JSON (Expecting property name")
    (tmp_path / "own.tiny").write_text('{"split": "test", "tokens": ["OK"], "text": "x"}\n')
    assert refusal(tmp_path, "tweet-text") == (
        "own.tiny:1: the tweet's tokens differ from those of test tweet test-0 (image test0): "
        "token 1 is 'OK' here, 'ok' in ours"
    )


def test_plain_formats_round_trip(tmp_path):
    texts = {"train": ("a  tab\there", ""), "valid": ("é ü\nnew line",), "test": (" x ",)}
    write_tweet_text(tmp_path / "own.tiny", SENTENCES, texts)
    clues = read(tmp_path, "tweet-text", missing="fail")
    assert clues.texts == {"train": ("a tab here", ""), "valid": ("é ü new line",), "test": ("x",)}
    assert clues.blank == {"train": 1, "valid": 0, "test": 0} and clues.ignored == 0
    write_image_text(tmp_path / "own.tiny", {"train0": "a\tb", "shared": " c ", "test0": "", "other": "d"})
    clues = read(tmp_path, "image-text", missing="fail")
    assert clues.texts == {"train": ("a b", "c"), "valid": ("c",), "test": ("",)} and clues.ignored == 1


def test_the_clues_section(tmp_path):
    params = {
        "clues": {"captions": {"format": "captions", "path": "data/{dataset}/clues/blip2-captions.txt"}}
    }
    assert clue_sets(params) == {"captions": (CAPTIONS,)}
    assert CAPTIONS.file("twitter2015", "/r").as_posix() == "/r/data/twitter2015/clues/blip2-captions.txt"
    assert clue_sets({}) == {}
    for entry, message in [
        (
            {"format": "ocr", "path": "x"},
            "params.yaml:clues.c.format: 'ocr' is not one of 'captions', 'pgim'",
        ),
        ({"format": "pgim"}, "params.yaml:clues.c: missing required key(s) path"),
        (
            {"format": "pgim", "path": "x", "missing": "blank"},
            "params.yaml:clues.c.missing: 'blank' is not one",
        ),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            clue_sets({"clues": {"c": entry}})
    with pytest.raises(ConfigError, match="is not a clue set name"):
        clue_sets({"clues": {"a/b": {"format": "pgim", "path": "x"}}})


def test_a_clue_set_of_several_sources_reads_their_texts_in_order(tmp_path):
    pgim = {"format": "pgim", "path": "k.zip"}
    params = {"clues": {"both": [{"format": "captions", "path": "c.txt"}, pgim], "k": pgim}}
    sets = clue_sets(params)
    assert [s.format for s in sets["both"]] == ["captions", "pgim"] and len(sets["k"]) == 1
    assert clue_set(params, "k") == sets["k"]
    with pytest.raises(ConfigError, match=r"^params.yaml:clues: no clue set 'x'; valid: both, k$"):
        clue_set(params, "x")
    with pytest.raises(ConfigError, match=r"^params.yaml:clues.e: a clue set needs at least one source$"):
        clue_sets({"clues": {"e": []}})
    with pytest.raises(ConfigError, match=r"^params.yaml:clues.b\[1\]: missing required key"):
        clue_sets({"clues": {"b": [pgim, {"format": "pgim"}]}})
    sentences = {
        "train": [Sentence("train0", "1", ("a",), ("O",)), Sentence("train1", "2", ("b",), ("O",))],
        "valid": [Sentence("valid0", "3", ("c",), ("O",))],
    }
    write_image_text(tmp_path / "one.txt", {"1": "first", "2": "", "3": "third"})
    write_image_text(tmp_path / "two.txt", {"1": "again", "2": "only here"})
    sources = (
        ClueSource("image-text", "one.txt"),
        ClueSource("image-text", "two.txt", missing="empty"),
    )
    clues = read_clue_set("two", sources, "d", sentences, tmp_path)
    assert clues.texts == {"train0": ("first", "again"), "train1": ("only here",), "valid0": ("third",)}
    assert clues.record["name"] == "two" and [s["path"] for s in clues.record["sources"]] == [
        "one.txt",
        "two.txt",
    ]
    assert [c["missing"]["valid"] for c in clues.record["read"]] == [0, 1]
