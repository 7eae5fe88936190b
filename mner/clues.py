"""Text clues of the images: one text per tweet (a caption of its image, knowledge generated
from the tweet and its image), read from a clue file and aligned with the prepared sentences.

A clue set is one entry of the params section ``clues: {<name>: {format, path, missing}}``
(:class:`ClueSource`); :func:`read_clues` gives, per split, one clue string per prepared
sentence in order, which a text encoder reads beside the tweet (never mixed into its words).

Formats (UTF-8; a leading byte order mark is dropped; lines end in LF, CRLF or CR):

- ``captions``: one line per image, ``<image id>.jpg :<caption>`` (the BLIP-2 caption files
  of PGIM's repository), e.g. ``108911.jpg :the chicago bears are playing in the nfl``.
  Keyed by image id (the tweet's ``IMGID``, without ``.jpg``).
- ``image-text``: a user's own clues keyed by image id, one line per image,
  ``<image id><TAB><text>`` (the image id as after ``IMGID:`` in the dataset, without
  ``.jpg``; the text is everything after the first tab).
- ``pgim``: PGIM's knowledge zip: members ``train.txt``, ``valid.txt``, ``test.txt`` (at its
  top or in one folder). Each tweet is its ``token<TAB>label`` lines (a space instead of the
  tab is read too) without the ``IMGID:`` line, then ``<EOS><TAB>X``, then the generated text
  one word a line, each labelled ``X``; blank lines between tweets; the tweets in the order of
  the dataset's split file. The clue is the words joined with spaces.
- ``tweet-text``: a user's own clues per tweet, JSON lines
  ``{"split": "train", "tokens": ["RT", "@user", ...], "text": "..."}``, each split's tweets
  in the order of its dataset file (the splits may follow each other or interleave; other
  keys, such as an ``id``, are ignored). The tokens are those of the dataset file, checked
  against the prepared sentence they align with.

Alignment. ``captions`` and ``image-text`` by image id: tweets that share an image share its
clue; an image id of the file that no prepared tweet has (Twitter-2015's caption file holds
31 images outside the splits, and a ``prepare.limit`` run reads a few tweets) is ignored and
counted; an image id twice in the file is refused. ``pgim`` and ``tweet-text`` by order and
token equality, per split: each prepared sentence takes the next record of its split whose
tokens equal its own, so that a prepared subset aligns (``prepare.limit`` cuts the tail,
``prepare.skip_bad`` drops malformed tweets); the records passed over and those after the
last sentence are ignored and counted. A sentence for which no later record has its tokens is
refused, naming the record it should have taken and the first differing token, unless the
records have run out: then the sentences from it to the end have no clue (Twitter-2015's
knowledge lacks the last tweet of each split). So a record missing in the middle, or one
whose tokens differ from ours, stops the reader; only a tail may be missing.

Coverage (``missing``): a tweet without a clue gets ``""`` and is counted (``empty``), or
the reader stops naming the first one, its split, id and image id (``fail``). A clue that is
present but empty after normalisation (two Twitter-2015 captions) is a clue: it is counted
apart (:attr:`Clues.blank`), never refused. Normalisation: the text stripped, its runs of
whitespace made one space.

Refusals (:class:`ClueError`, one line naming ``file:line``, or ``file/member:line`` in a
zip): a missing file (naming the params key ``clues.<name>.path``), bytes that are not UTF-8,
a malformed line, an image id twice, a zip that is not one or lacks a split's file, and
tokens that differ from the prepared sentence's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mner import InputError
from mner.data.conll import SPLITS, Sentence
from mner.settings.clues import ClueSet, ClueSource, clue_settings

CAPTION_LINE = re.compile(r"(.+?)\.jpg ?:(.*)")
EOS = "<EOS>"


class ClueError(InputError):
    """A clue file that cannot be read or does not fit the dataset; ``str()`` names it."""


@dataclass(frozen=True)
class Clues:
    """The clues of one dataset: per split, one text per prepared sentence, in order."""

    texts: dict[str, tuple[str, ...]]
    missing: dict[str, int]  # per split: tweets without a clue (given "")
    blank: dict[str, int]  # per split: tweets whose clue is present but empty
    ignored: int  # entries of the file no prepared tweet reads (other images, records passed over)
    sha256: str  # of the clue file as read
    path: str
    format: str

    def summary(self) -> dict[str, Any]:
        """What a report or a cache's provenance records about these clues."""
        return {
            "format": self.format,
            "path": self.path,
            "sha256": self.sha256,
            "tweets": {split: len(texts) for split, texts in self.texts.items()},
            "missing": dict(self.missing),
            "blank": dict(self.blank),
            "ignored": self.ignored,
        }


def read_clues(
    source: ClueSource,
    dataset: str,
    sentences: Mapping[str, Sequence[Sentence]],
    root: Path | str = Path("."),
    *,
    name: str | None = None,
) -> Clues:
    """The clues of ``source`` for the prepared ``sentences`` (per split) of ``dataset``;
    ``name`` (the clue set's key in params.yaml) is named in the refusals."""
    path = source.file(dataset, root)
    key = f"clues.{name}.path" if name else "the clue path"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ClueError(
            f"{path}: no such clue file ({key}: {source.path!r} for dataset {dataset}): check the path, "
            "or write the file in the format the params name"
        ) from None
    except IsADirectoryError:
        raise ClueError(f"{path} is a directory, not a clue file ({key}: {source.path!r})") from None
    except OSError as error:
        raise ClueError(f"{path}: cannot read the clue file ({error.strerror}; {key})") from None
    if source.format in ("captions", "image-text"):
        by_image = _read_image_keyed(path, data, source.format)
        texts, used = {}, set()
        for split, split_sentences in sentences.items():
            texts[split] = tuple(by_image.get(s.image_id) for s in split_sentences)
            used |= {s.image_id for s in split_sentences if s.image_id in by_image}
        ignored = len(set(by_image) - used)
        line = "'<image id>.jpg :<caption>'" if source.format == "captions" else "'<image id><TAB><text>'"
        why = dict.fromkeys(sentences, f"the file has no line {line} for its image")
    else:
        if source.format == "pgim":
            records, ignored = _pgim_records(path, data, sentences), 0
        else:
            records, ignored = _tweet_text_records(path, data, sentences)
        texts = {}
        for split, split_sentences in sentences.items():
            texts[split], passed = _align(records[split], split_sentences, split)
            ignored += passed
        why = {split: f"the file's {split} tweets end after {len(records[split])}" for split in sentences}
    missing = {split: sum(t is None for t in split_texts) for split, split_texts in texts.items()}
    for split, split_texts in texts.items():
        if source.missing == "fail" and missing[split]:
            first = sentences[split][split_texts.index(None)]
            raise ClueError(
                f"{path}: {dataset} {split} tweet {first.id} (image {first.image_id}) has no clue "
                f"({missing[split]} of {len(split_texts)} {split} tweets have none; {why[split]}); "
                f"set clues.{name or '<name>'}.missing: empty to give them an empty clue"
            )
    return Clues(
        texts={split: tuple(t or "" for t in split_texts) for split, split_texts in texts.items()},
        missing=missing,
        blank={split: sum(t == "" for t in split_texts) for split, split_texts in texts.items()},
        ignored=ignored,
        sha256=hashlib.sha256(data).hexdigest(),
        path=str(path),
        format=source.format,
    )


def normalize(text: str) -> str:
    """``text`` stripped, its runs of whitespace one space."""
    return " ".join(text.split())


# --- reading the formats


def _lines(where: str, data: bytes) -> list[tuple[int, str]]:
    """Numbered lines of ``data`` without their ending (LF, CRLF or CR); bytes that are not
    UTF-8 are refused naming ``where:line``."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for number, raw in enumerate(data.splitlines(), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ClueError(
                    f"{where}:{number}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                ) from None
        raise
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # not str.splitlines: U+0085
    if lines[-1] == "":
        lines.pop()
    return list(enumerate(lines, start=1))


def _shown(line: str, most: int = 80) -> str:
    return repr(line) if len(line) <= most else f"{line[:most]!r}... ({len(line)} characters)"


def _read_image_keyed(path: Path, data: bytes, format: str) -> dict[str, str]:
    """``{image id: normalised text}`` of a ``captions`` or ``image-text`` file; blank lines
    are skipped."""
    texts: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in _lines(str(path), data):
        if not line.strip():
            continue
        if format == "captions":
            match = CAPTION_LINE.fullmatch(line)
            if match is None or not match.group(1).strip():
                raise ClueError(f"{path}:{number}: expected '<image id>.jpg :<caption>', got {_shown(line)}")
            image_id, text = match.group(1), match.group(2)
        else:
            image_id, tab, text = line.partition("\t")
            if not tab or not image_id.strip():
                raise ClueError(f"{path}:{number}: expected '<image id><TAB><text>', got {_shown(line)}")
        if image_id in lines:
            raise ClueError(
                f"{path}:{number}: image {image_id!r:.80} has a clue already, on line {lines[image_id]}"
            )
        texts[image_id], lines[image_id] = normalize(text), number
    return texts


@dataclass(frozen=True)
class _Record:
    """One tweet of a per-tweet clue file: its tokens, its clue and where it starts."""

    tokens: tuple[str, ...]
    text: str
    where: str  # file:line (file/member:line in a zip)


def _pgim_records(
    path: Path, data: bytes, sentences: Mapping[str, Sequence[Sentence]]
) -> dict[str, list[_Record]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ClueError(f"{path}: not a zip archive (the pgim format is PGIM's knowledge zip)") from None
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        records = {}
        for split in sentences:
            members = [n for n in names if n == f"{split}.txt" or re.fullmatch(rf"[^/]+/{split}\.txt", n)]
            if len(members) != 1:
                problem = "no" if not members else f"{len(members)} files"
                raise ClueError(
                    f"{path}: {problem} {split}.txt in the zip (expected train.txt, valid.txt and test.txt "
                    f"at its top or in one folder; it holds {', '.join(names[:8]) or 'nothing'})"
                )
            try:
                member = archive.read(members[0])
            except (zipfile.BadZipFile, OSError) as error:  # a damaged member (bad CRC, truncated)
                raise ClueError(f"{path}/{members[0]}: cannot be read from the zip ({error})") from None
            records[split] = list(_pgim_tweets(f"{path}/{members[0]}", member))
    return records


def _pgim_tweets(where: str, data: bytes) -> Iterator[_Record]:
    """The tweets of one PGIM split file, each with its knowledge."""
    tokens: list[str] = []
    words: list[str] | None = None  # None before the tweet's <EOS> line
    start = 0
    for number, line in [*_lines(where, data), (0, "")]:
        if words is not None and line.endswith("\tX") and line[:-2] and line[:-2] != EOS:
            words.append(line[:-2])  # the common line, read fast
            continue
        if not line or line.isspace():
            if tokens or words is not None:
                if words is None:
                    raise ClueError(
                        f"{where}:{start}: the tweet has no {EOS} line before the blank line ending it"
                    )
                yield _Record(tuple(tokens), normalize(" ".join(words)), f"{where}:{start}")
            tokens, words = [], None
            continue
        fields = line.rsplit("\t", 1) if "\t" in line else line.rsplit(" ", 1)
        if len(fields) != 2 or not fields[0]:
            raise ClueError(f"{where}:{number}: expected 'token<TAB>label', got {_shown(line)}")
        word, label = fields
        if not tokens and words is None:
            start = number
        if word == EOS:
            if words is not None:
                raise ClueError(f"{where}:{number}: a second {EOS} line in the tweet of line {start}")
            if not tokens:
                raise ClueError(f"{where}:{number}: {EOS} with no tweet tokens before it")
            words = []
        elif words is None:
            tokens.append(word)
        elif label.strip() != "X":
            raise ClueError(
                f"{where}:{number}: expected a knowledge word labelled X after {EOS}, got {_shown(line)} "
                "(is the blank line before the next tweet missing?)"
            )
        else:
            words.append(word)


def _tweet_text_records(
    path: Path, data: bytes, sentences: Mapping[str, Sequence[Sentence]]
) -> tuple[dict[str, list[_Record]], int]:
    """The records of a ``tweet-text`` file per split read, and the count of those of the
    other splits."""
    records: dict[str, list[_Record]] = {split: [] for split in sentences}
    other = 0
    for number, line in _lines(str(path), data):
        if not line.strip():
            continue
        problem = None
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ClueError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(record, dict):
            problem = f"expected an object, got {type(record).__name__}"
        elif record.get("split") not in SPLITS:
            problem = f"'split' is {record.get('split')!r:.40}; expected one of {', '.join(SPLITS)}"
        elif not isinstance(tokens := record.get("tokens"), list) or not tokens:
            problem = "'tokens' is not a non-empty list of the tweet's tokens"
        elif not all(isinstance(t, str) and t for t in tokens):
            problem = "'tokens' holds an item that is not a non-empty string"
        elif not isinstance(record.get("text"), str):
            problem = f"'text' is {type(record.get('text')).__name__}, not a string"
        if problem:
            raise ClueError(
                f'{path}:{number}: {problem} (a line is {{"split": ..., "tokens": [...], "text": ...}})'
            )
        if record["split"] in records:
            records[record["split"]].append(
                _Record(tuple(tokens), normalize(record["text"]), f"{path}:{number}")
            )
        else:
            other += 1
    return records, other


def _align(
    records: Sequence[_Record], sentences: Sequence[Sentence], split: str
) -> tuple[list[str | None], int]:
    """Each sentence's clue (None past the records' end) and the count of records no
    sentence took; a sentence no later record matches, while records remain, is refused."""
    texts: list[str | None] = []
    at = 0  # the next record to take
    index = {}  # tokens -> the positions of the records with them, for the search ahead
    for position, record in enumerate(records):
        index.setdefault(record.tokens, []).append(position)
    for sentence in sentences:
        if at >= len(records):
            texts.append(None)
            continue
        if records[at].tokens != sentence.tokens:
            later = [p for p in index.get(sentence.tokens, ()) if p > at]
            if not later:
                raise ClueError(f"{records[at].where}: {_difference(records[at].tokens, sentence, split)}")
            at = later[0]
        texts.append(records[at].text)
        at += 1
    taken = sum(t is not None for t in texts)
    return texts, len(records) - taken


def _difference(tokens: Sequence[str], sentence: Sentence, split: str) -> str:
    """How ``tokens`` differ from the prepared sentence's, at the first difference."""
    what = f"the tweet's tokens differ from those of {split} tweet {sentence.id} (image {sentence.image_id})"
    for i, (here, ours) in enumerate(zip(tokens, sentence.tokens)):
        if here != ours:
            return f"{what}: token {i + 1} is {here!r:.60} here, {ours!r:.60} in ours"
    return f"{what}: {len(tokens)} tokens here, {len(sentence.tokens)} in ours"


# --- writing the plain formats


def write_image_text(path: Path | str, texts: Mapping[str, str]) -> None:
    """Write ``{image id: text}`` in the ``image-text`` format (texts normalised)."""
    with open(path, "w", encoding="utf-8") as f:
        for image_id, text in texts.items():
            if not image_id.strip() or any(c in image_id for c in "\t\r\n"):
                raise ValueError(f"image id {image_id!r:.80} cannot key an image-text line")
            f.write(f"{image_id}\t{normalize(text)}\n")


def write_captions(path: Path | str, texts: Mapping[str, str]) -> None:
    """Write ``{image id: caption}`` in the ``captions`` format (captions normalised), each
    image id checked to read back as itself."""
    with open(path, "w", encoding="utf-8") as f:
        for image_id, text in texts.items():
            line = f"{image_id}.jpg :{normalize(text)}"
            match = CAPTION_LINE.fullmatch(line)
            if not image_id.strip() or any(c in image_id for c in "\r\n") or match.group(1) != image_id:
                raise ValueError(f"image id {image_id!r:.80} cannot key a captions line")
            f.write(line + "\n")


def write_tweet_text(
    path: Path | str, sentences: Mapping[str, Sequence[Sentence]], texts: Mapping[str, Sequence[str]]
) -> None:
    """Write one clue per sentence (``texts[split][i]`` of ``sentences[split][i]``) in the
    ``tweet-text`` format."""
    with open(path, "w", encoding="utf-8") as f:
        for split, split_sentences in sentences.items():
            if len(texts[split]) != len(split_sentences):
                raise ValueError(f"{split}: {len(texts[split])} clues for {len(split_sentences)} sentences")
            for sentence, text in zip(split_sentences, texts[split]):
                record = {"split": split, "tokens": list(sentence.tokens), "text": normalize(text)}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class ClueTexts:
    """A clue set read for a dataset: each prepared sentence's clue texts by its id (one per
    source, in order, the empty ones left out), and what a text cache read with it records
    (the set's settings, what each source read)."""

    texts: dict[str, tuple[str, ...]]
    record: dict[str, Any]


def read_clue_set(
    name: str,
    sources: ClueSet,
    dataset: str,
    sentences: Mapping[str, Sequence[Sentence]],
    root: Path | str = Path("."),
) -> ClueTexts:
    """Clue set ``name`` (its ``sources``) for the prepared ``sentences`` of ``dataset``."""
    read = [read_clues(source, dataset, sentences, root, name=name) for source in sources]
    texts = {}
    for split, split_sentences in sentences.items():
        for i, sentence in enumerate(split_sentences):
            texts[sentence.id] = tuple(c.texts[split][i] for c in read if c.texts[split][i])
    record = clue_settings(name, sources) | {"sha256": [c.sha256 for c in read]}
    return ClueTexts(texts, record | {"read": [c.summary() for c in read]})
