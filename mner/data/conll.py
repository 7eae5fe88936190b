"""Reader for the IMGID CoNLL files of Twitter-2015/2017, labels and the BIO policy.

A tweet is an ``IMGID:<image id>`` line followed by ``token<TAB>label`` lines; tweets
are separated by blank lines. A label is ``O``, ``B-<type>`` or ``I-<type>`` of any type
named with letters, digits, ``_``, ``-`` and ``.`` (:data:`mner.data.labels.BIO_LABEL`);
the type OTHER (Twitter-2015's) is read as MISC (Twitter-2017's), the one alias.

BIO policy:

- ``keep``: the labels as they are in the file. Scored with the ``conlleval`` scheme,
  an orphan ``I-X`` (after ``O`` or at the start) starts an entity, as conlleval does.
- ``repair``: an orphan ``I-X`` becomes ``B-X``, and an ``I-X`` after a tag of another
  type becomes ``B-X`` (it starts a new entity). The result is valid IOB2.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mner import InputError
from mner.data.labels import BIO_LABEL, LABEL_GRAMMAR

TYPE_ALIASES = {"OTHER": "MISC"}  # Twitter-2015's OTHER is Twitter-2017's MISC
SPLITS = ("train", "valid", "test")
# refused in a token: ASCII spaces and control characters (NUL, ...). Kept: other Unicode
# whitespace and controls, which the Twitter files hold as whole tokens (a lone U+00A0 in
# Twitter-2015's valid split, U+0092 twice in Twitter-2017's train split)
ASCII_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
BIO_POLICIES = ("keep", "repair")
# words in a post: a tweet holds at most 280 characters (the datasets' longest, 50 words). The
# models' attention grows with the square of the words: one FMIT post of 1000 words took 12 GiB
MAX_WORDS = 280
WORDS_RULE = "a tweet of 280 characters has fewer; split a longer text into sentences"
BioPolicy = Literal["keep", "repair"]


class ConllFormatError(InputError):
    """A malformed tweet; ``str()`` names the file and line."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}:{line}: {problem}")


@dataclass(frozen=True)
class Sentence:
    """One tweet: its tokens, BIO labels and the id of its image."""

    id: str
    image_id: str
    tokens: tuple[str, ...]
    labels: tuple[str, ...]
    line: int = field(default=0, compare=False)  # line of the IMGID line in its file


SIGILS = ("#", "@")  # a hashtag's and a mention's first character


def sigil_convention(sentences: Sequence[Sentence]) -> str:
    """How a dataset writes hashtags and mentions: ``"split"`` when its tokens more often hold
    a lone ``#`` or ``@`` before the word (Twitter-2015 and -2017: ``#`` ``NBA``) than a joined
    ``#NBA``, else ``"joined"``."""
    lone = joined = 0
    for sentence in sentences:
        for token in sentence.tokens:
            lone += token in SIGILS
            joined += len(token) > 1 and token[0] in SIGILS
    return "split" if lone > joined else "joined"


def is_plain_file_name(name: str) -> bool:
    """Whether ``name`` names a file inside a directory and nothing else: not empty, not
    ``.`` or ``..``, and without ``/``, ``\\`` or NUL."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def normalize_label(label: str) -> str | None:
    """The label with its type's alias resolved (OTHER to MISC), or None when it is not a
    BIO label."""
    match = BIO_LABEL.fullmatch(label)
    if match is None:
        return None
    prefix, kind = match.groups()
    return "O" if prefix is None else f"{prefix}-{TYPE_ALIASES.get(kind, kind)}"


def is_orphan(prev: str, label: str) -> bool:
    """An I- tag with no entity before it (after O or at the sentence start)."""
    return label.startswith("I-") and prev == "O"


def is_type_switch(prev: str, label: str) -> bool:
    """An I- tag following a B-/I- tag of another type."""
    return label.startswith("I-") and prev != "O" and prev[2:] != label[2:]


def repair_bio(labels: Sequence[str]) -> tuple[str, ...]:
    """Turn orphan and type-switching I- tags into B- tags (valid IOB2)."""
    repaired, prev = [], "O"
    for label in labels:
        if is_orphan(prev, label) or is_type_switch(prev, label):
            label = "B-" + label[2:]
        repaired.append(label)
        prev = label
    return tuple(repaired)


def read_conll(path: Path | str, *, bio: BioPolicy = "keep") -> list[Sentence]:
    """Read one file; the first malformed tweet raises :class:`ConllFormatError`."""
    return _all_or_raise(_parse(Path(path), bio))


def read_conll_skipping(
    path: Path | str, *, bio: BioPolicy = "keep"
) -> tuple[list[Sentence], list[ConllFormatError]]:
    """Read one file, skipping malformed tweets; returns the sentences and one error per
    skipped tweet."""
    sentences, skipped = [], []
    for item in _parse(Path(path), bio):
        (skipped if isinstance(item, ConllFormatError) else sentences).append(item)
    return sentences, skipped


def read_conll_columns(path: Path | str) -> tuple[list[Sentence], list[Sentence]]:
    """Read a file whose token lines end in gold and predicted label columns (as
    conlleval takes; IMGID lines optional); returns the gold and the predicted sentences."""
    path = Path(path)
    gold, pred = (
        _all_or_raise(_parse(path, "keep", _label_column(_lines(path), c), need_imgid=False))
        for c in (-2, -1)
    )
    return gold, pred


def read_dataset(data_dir: Path | str, *, bio: BioPolicy = "keep") -> dict[str, list[Sentence]]:
    """Read ``train.txt``, ``valid.txt`` and ``test.txt`` of one dataset directory."""
    data_dir = Path(data_dir)
    missing = [s for s in SPLITS if not (data_dir / f"{s}.txt").is_file()]
    if missing:
        names = ", ".join(f"{s}.txt" for s in missing)
        raise FileNotFoundError(f"{data_dir}: missing {names} (expected {', '.join(SPLITS)})")
    return {split: read_conll(data_dir / f"{split}.txt", bio=bio) for split in SPLITS}


def write_conll(path: Path | str, sentences: Sequence[Sentence]) -> None:
    """Write sentences in the dataset format (the reader reads back the same)."""
    with open(path, "w", encoding="utf-8") as f:
        for sentence in sentences:
            f.write(f"IMGID:{sentence.image_id}\n")
            f.writelines(f"{t}\t{lab}\n" for t, lab in zip(sentence.tokens, sentence.labels))
            f.write("\n")


def _all_or_raise(items: Iterator[Sentence | ConllFormatError]) -> list[Sentence]:
    sentences = []
    for item in items:
        if isinstance(item, ConllFormatError):
            raise item
        sentences.append(item)
    return sentences


class _BadLine(str):
    """A line that is wrong whatever tweet it is in; its text is the problem."""


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines without their line ending (LF, CRLF or CR) and without a leading
    byte order mark; a line that is not UTF-8 comes as a :class:`_BadLine`, so the parser
    can name it."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield number, _BadLine(f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")


def _shown(line: str, most: int = 80) -> str:
    """``line`` quoted for a message, cut at ``most`` characters."""
    return repr(line) if len(line) <= most else f"{line[:most]!r}... ({len(line)} characters)"


def _label_column(lines: Iterator[tuple[int, str]], column: int) -> Iterator[tuple[int, str]]:
    """View a file with label columns (``token ... gold pred``, tab- or space-separated,
    as conlleval reads) as ``token<TAB>label`` lines of one of its last two columns."""
    for number, line in lines:
        if isinstance(line, _BadLine) or line.startswith("IMGID:") or not line.strip():
            yield number, line
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            yield number, _BadLine(f"expected 'token gold pred' columns, got {len(fields)}: {_shown(line)}")
        else:
            yield number, f"{fields[0]}\t{fields[column]}"


@dataclass
class _Tweet:
    """A tweet being read: its lines so far, or the first error found in them."""

    image_id: str
    line: int
    tokens: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    error: ConllFormatError | None = None


def _parse(
    path: Path, bio: BioPolicy, lines: Iterator[tuple[int, str]] | None = None, need_imgid: bool = True
) -> Iterator[Sentence | ConllFormatError]:
    """Yield each tweet of the file (or of ``lines`` read from it) as a Sentence, or as
    the error that makes it bad. Without ``need_imgid``, a blank line alone separates
    tweets (as in conlleval's input) and the image id is empty."""
    if bio not in BIO_POLICIES:
        raise ValueError(f"unknown BIO policy {bio!r}; expected one of {', '.join(BIO_POLICIES)}")
    tweet: _Tweet | None = None
    index = 0
    whitespace_line = None  # the line of only whitespace that ended the last tweet
    for number, line in [*(lines or _lines(path)), (None, "")]:  # a blank line ends the last tweet
        if isinstance(line, _BadLine):
            error = ConllFormatError(path, number, line)
            tweet = tweet or _Tweet("?", number)
            tweet.error = tweet.error or error
        elif line.startswith("IMGID:") or not line.strip():
            if tweet is not None:
                done = _finish(path, tweet, f"{path.stem}-{index}", bio)
                index += isinstance(done, Sentence)
                yield done
            whitespace_line = number if tweet is not None and line and not line.strip() else None
            tweet = None
            if line.startswith("IMGID:"):
                tweet = _Tweet(line[len("IMGID:") :].strip(), number)
                if not tweet.image_id:
                    tweet.error = ConllFormatError(path, number, "empty image id after IMGID:")
                elif not is_plain_file_name(tweet.image_id):
                    tweet.error = ConllFormatError(
                        path,
                        number,
                        f"image id {_shown(tweet.image_id)} is not a plain file name (it names the image "
                        "<id>.jpg in the dataset's image directory: no '/', '\\' or NUL, not '.' or '..')",
                    )
        elif tweet is None and need_imgid and whitespace_line is not None:
            tweet = _Tweet("?", whitespace_line)
            tweet.error = ConllFormatError(
                path,
                whitespace_line,
                "a line of only whitespace inside a tweet (it ends the tweet, so the tokens after it "
                "have no IMGID line): make it empty, or remove it",
            )
        elif tweet is None and need_imgid:
            tweet = _Tweet("?", number)
            tweet.error = ConllFormatError(path, number, "tokens with no IMGID:<image id> line before them")
        elif tweet is None:
            tweet = _Tweet("", number - 1)  # as if an IMGID line stood before the tokens
            tweet.error = _add_token(path, number, line, tweet)
        elif tweet.error is None:
            tweet.error = _add_token(path, number, line, tweet)


def _finish(path: Path, tweet: _Tweet, sentence_id: str, bio: BioPolicy) -> Sentence | ConllFormatError:
    if tweet.error is not None:
        return tweet.error
    if not tweet.tokens:
        return ConllFormatError(path, tweet.line, f"tweet IMGID:{tweet.image_id} has no tokens")
    if len(tweet.tokens) > MAX_WORDS:
        words = f"{len(tweet.tokens)} words, more than {MAX_WORDS}"
        return ConllFormatError(path, tweet.line, f"tweet IMGID:{tweet.image_id} has {words} ({WORDS_RULE})")
    labels = tuple(tweet.labels)
    return Sentence(
        id=sentence_id,
        image_id=tweet.image_id,
        tokens=tuple(tweet.tokens),
        labels=repair_bio(labels) if bio == "repair" else labels,
        line=tweet.line,
    )


def _add_token(path: Path, number: int, line: str, tweet: _Tweet) -> ConllFormatError | None:
    """Append the token line to the tweet; return the error when the line is bad."""
    fields = line.split("\t")
    if len(fields) != 2:
        what = "no tab" if len(fields) == 1 else f"{len(fields) - 1} tabs"
        return ConllFormatError(path, number, f"expected 'token<TAB>label', got {what}: {_shown(line)}")
    token, raw_label = fields
    if not token:
        return ConllFormatError(path, number, "empty token")
    odd = ASCII_SPACE_OR_CONTROL.search(token)
    if odd:  # a word never holds one; other Unicode spaces and controls occur in the datasets
        return ConllFormatError(
            path, number, f"token {token!r} holds U+{ord(odd.group()):04X} (a space or control character)"
        )
    label = normalize_label(raw_label.strip())
    if label is None:
        return ConllFormatError(path, number, f"malformed label {raw_label!r}: expected {LABEL_GRAMMAR}")
    tweet.tokens.append(token)
    tweet.labels.append(label)
    return None
