"""Frozen transformer word features over pre-tokenized tweets (the ``text_features`` stage).

Every word of the dataset gets one vector per kept hidden layer; no word is dropped or
truncated. A tweet longer than the model's window is encoded in overlapping windows and
each subword takes its vector from the window where it has the most context on both
sides. A word for which the tokenizer yields no subword (zero-width characters, some
emoji) is encoded as the unknown token, and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from mner.clues import ClueTexts
from mner.core.cache import CacheWriter, loaded_revision, provenance
from mner.core.config import ConfigError, autocast, resolve_device, to_dict
from mner.core.workspace import CLUE_MEAN, CLUE_WORDS
from mner.data.conll import Sentence
from mner.runner.extraction import ExtractionReport, prepared_splits, write_cache
from mner.runner.preflight import check_hf_model
from mner.runner.shards import Shard
from mner.settings.text import TextFeaturesConfig, model_files

if TYPE_CHECKING:  # transformers is imported where it is used: it is slow to import
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def check_ready(config: TextFeaturesConfig) -> None:
    """Fail with what to do when the encoder is neither on disk nor downloadable (loads nothing)."""
    check_hf_model("text_features.model", config.model, config.revision)


def load_encoder(config: TextFeaturesConfig) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model by hub id or local directory; never runs remote code."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model, revision=config.revision, trust_remote_code=False)
    if not tokenizer.is_fast:
        raise ConfigError(f"text_features.model {config.model}: a fast tokenizer is needed (for word ids)")
    model = AutoModel.from_pretrained(config.model, revision=config.revision, trust_remote_code=False)
    return tokenizer, model.eval()


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single sequence
    (``[CLS]`` and ``[SEP]`` for BERT)."""
    encoding = tokenizer(["x"], is_split_into_words=True, return_special_tokens_mask=True)
    ids, special = encoding["input_ids"], encoding["special_tokens_mask"]
    content = [i for i, is_special in enumerate(special) if not is_special]
    return ids[: content[0]], ids[content[-1] + 1 :]


@dataclass
class EncodeReport(ExtractionReport):
    words: int = 0
    empty_words: list[str] = field(default_factory=list)  # "<tweet id>:<word index>"
    long_tweets: int = 0  # tweets that needed more than one window
    clues: int = 0  # tweets read with a (non-empty) clue after them
    clues_truncated: int = 0  # clues cut to fit the window after their tweet
    clues_dropped: int = 0  # clues of tweets that needed more than one window (read without)


class WordEncoder:
    """Word vectors ``[n_words, n_layers, hidden]`` from a frozen encoder."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, config: TextFeaturesConfig
    ) -> None:
        self.tokenizer, self.model, self.config = tokenizer, model, config
        self.device = resolve_device(config.device)
        self.model.to(self.device)
        self.prefix, self.suffix = special_tokens_around(tokenizer)
        n_special = len(self.prefix) + len(self.suffix)
        self.inner = config.window - n_special  # content subwords per window
        max_positions = getattr(model.config, "max_position_embeddings", config.window)
        if config.window > max_positions or self.inner <= config.stride:
            raise ConfigError(
                f"text_features: window {config.window} must be at most the model's {max_positions} "
                f"positions and leave more than stride {config.stride} subwords after {n_special} specials"
            )
        n_hidden = model.config.num_hidden_layers + 1
        bad = [i for i in config.layers if not -n_hidden <= i < n_hidden]
        if bad:
            raise ConfigError(
                f"text_features.layers {bad} out of range for a model with {n_hidden} hidden states"
            )
        kept = [i % n_hidden for i in config.layers]
        twice = [i for n, i in enumerate(config.layers) if kept[n] in kept[:n]]
        if twice:
            first = config.layers[kept.index(twice[0] % n_hidden)]
            raise ConfigError(
                f"text_features.layers {list(config.layers)}: {twice[0]} is the same hidden state as "
                f"{first} for a model with {n_hidden} hidden states; list each once"
            )

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def subwords(
        self, words: Sequence[str], tweet_id: str, report: EncodeReport
    ) -> tuple[list[int], list[int]]:
        """Subword ids and their word index; words with no subword become the unknown token."""
        encoding = self.tokenizer(
            list(words), is_split_into_words=True, add_special_tokens=False, verbose=False
        )
        word_ids = encoding.word_ids()
        covered = set(word_ids)
        empty = [i for i in range(len(words)) if i not in covered]
        if empty:
            report.empty_words += [f"{tweet_id}:{i}" for i in empty]
            words = [self.tokenizer.unk_token if i in empty else w for i, w in enumerate(words)]
            encoding = self.tokenizer(
                list(words), is_split_into_words=True, add_special_tokens=False, verbose=False
            )
            word_ids = encoding.word_ids()
        return encoding["input_ids"], word_ids

    def windows(self, n: int) -> tuple[list[int], np.ndarray]:
        """Window starts for ``n`` subwords and, per subword, the window it is read from."""
        if n <= self.inner:
            return [0], np.zeros(n, dtype=np.int64)
        step = self.inner - self.config.stride
        starts = list(range(0, n - self.inner, step)) + [n - self.inner]
        positions = np.arange(n)[:, None]
        start = np.asarray(starts)[None, :]
        context = np.minimum(positions - start, start + self.inner - 1 - positions)  # [n, W]
        return starts, context.argmax(axis=1)

    def clue_ids(self, clue: Sequence[str], room: int, report: EncodeReport) -> list[int]:
        """The subwords read after a tweet for its ``clue`` texts (the context route of ITA and
        PGIM): the separator before each text, then its subwords, cut to ``room`` in all; none
        without a clue, so that such a tweet is read exactly as with no clues at all."""
        ids = []
        for text in (text for text in clue if text.strip()):
            ids += [self.separator] if ids else []
            ids += self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if not ids:
            return []
        report.clues += 1
        report.clues_truncated += len(ids) > room - 1
        return [self.separator, *ids[: room - 1]] if room > 1 else []

    @property
    def separator(self) -> int:
        """The token between a tweet and its clue: the tokenizer's separator (BERT's ``[SEP]``)."""
        return self.tokenizer.sep_token_id if self.tokenizer.sep_token_id is not None else self.suffix[0]

    @torch.inference_mode()
    def encode(
        self,
        tweets: Sequence[tuple[str, Sequence[str]]],
        report: EncodeReport,
        clues: Sequence[Sequence[str]] | None = None,
    ) -> list[np.ndarray]:
        """Word features of a batch of ``(tweet id, words)``: one float16 array each, of the
        tweet's words only; with ``clues`` (each tweet's clue texts), each tweet is read with
        its clue after it."""
        pieces, input_ids, mask, types = self.model_inputs(tweets, report, clues)
        hidden = self.forward(input_ids, mask, types).float().cpu()  # [rows, T, L, D]
        out = [self.word_vectors(hidden, piece).numpy().astype(np.float16) for piece in pieces]
        report.words += sum(len(words) for _, words in tweets)
        return out

    def model_inputs(
        self,
        tweets: Sequence[tuple[str, Sequence[str]]],
        report: EncodeReport,
        clues: Sequence[Sequence[str]] | None = None,
    ) -> tuple[list[tuple], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows of every tweet as padded ``input_ids``, attention ``mask`` and segment
        ``types`` ``[rows, T]`` (1 from a clue on, as BERT's second text of a pair), and per tweet
        (word index per subword, first row, window starts, window per subword). A clue follows
        its tweet in a tweet's one window; a tweet needing several windows is read without."""
        pieces, windows, types = [], [], []
        for k, (tweet_id, words) in enumerate(tweets):
            ids, word_ids = self.subwords(words, tweet_id, report)
            starts, choice = self.windows(len(ids))
            report.long_tweets += len(starts) > 1
            clue = clues[k] if clues else ()
            context = self.clue_ids(clue, self.inner - len(ids), report) if len(starts) == 1 else []
            report.clues_dropped += len(starts) > 1 and any(text.strip() for text in clue)
            pieces.append((np.asarray(word_ids), len(windows), starts, choice))
            for s in starts:
                first = self.prefix + ids[s : s + self.inner] + context[:1]  # through the separator
                windows.append(first + context[1:] + self.suffix)
                types.append(
                    [0] * len(first) + [1] * (len(context) - 1 + len(self.suffix)) if context else []
                )
        length = max(len(w) for w in windows)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([w + [pad] * (length - len(w)) for w in windows], device=self.device)
        mask = torch.tensor([[1] * len(w) + [0] * (length - len(w)) for w in windows], device=self.device)
        types = torch.tensor([t + [0] * (length - len(t)) for t in types], device=self.device)
        return pieces, input_ids, mask, types

    def forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The kept hidden layers ``[rows, T, L, D]`` of the model on padded windows; ``types``
        (segment ids) only where a window holds a clue and the model has segments."""
        extra = {}
        if types is not None and types.any() and getattr(self.model.config, "type_vocab_size", 1) > 1:
            extra["token_type_ids"] = types
        with autocast(self.device, self.config.amp):
            states = self.model(
                input_ids=input_ids, attention_mask=mask, output_hidden_states=True, **extra
            ).hidden_states
        return torch.stack([states[i] for i in self.config.layers], dim=2)  # [rows, T, L, D]

    def clue_cells(
        self, tweets: Sequence[tuple[str, Sequence[str]]], clues: Sequence[Sequence[str]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The clue cells of a batch (the ``clue`` kind of :mod:`mner.tagger`): per tweet, the
        word vectors ``[n, D]`` of its clue texts, each text read alone as its words (split at
        whitespace) and each word the mean of the kept layers, and their mean ``[1, D]``
        (zeros for an empty clue)."""
        texts = [
            (f"{tweet_id}/clue{j}", text.split())
            for (tweet_id, _), clue in zip(tweets, clues)
            for j, text in enumerate(clue)
            if text.split()
        ]
        vectors = iter(self.encode(texts, EncodeReport()) if texts else [])
        cells = []
        for clue in clues:
            words = [next(vectors).astype(np.float32).mean(axis=1) for text in clue if text.split()]
            words = np.concatenate(words) if words else np.zeros((0, self.hidden_size), np.float32)
            whole = words.mean(axis=0, keepdims=True) if len(words) else np.zeros((1, self.hidden_size))
            cells.append((whole.astype(np.float16), words.astype(np.float16)))
        return cells

    def word_vectors(self, hidden: torch.Tensor, piece: tuple) -> torch.Tensor:
        """The word vectors ``[n_words, L, D]`` of one tweet (one of the pieces of
        :meth:`model_inputs`) from the hidden layers of its windows ``[rows, T, L, D]``."""
        word_ids, first_row, starts, choice = piece
        rows = first_row + torch.from_numpy(choice)
        cols = len(self.prefix) + torch.arange(len(choice)) - torch.as_tensor(starts)[choice]
        return self._pool(hidden[rows, cols], torch.from_numpy(word_ids))  # [n_words, L, D]

    def _pool(self, vectors: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        """Subword vectors ``[S, L, D]`` to word vectors ``[n_words, L, D]`` (every word
        has at least one subword)."""
        n_words = int(word_ids.max()) + 1
        if self.config.pooling == "first":
            first = torch.full((n_words,), len(word_ids), dtype=torch.long)
            first.scatter_reduce_(0, word_ids, torch.arange(len(word_ids)), reduce="amin")
            return vectors[first]
        sums = torch.zeros(n_words, *vectors.shape[1:]).index_add_(0, word_ids, vectors)
        counts = torch.bincount(word_ids, minlength=n_words).clamp(min=1)
        return sums / counts[:, None, None]


def extract_text_features(
    config: TextFeaturesConfig,
    prepared_dir: Path | str,
    out_path: Path | str,
    shard: Shard | None = None,
    clues: ClueTexts | None = None,
) -> EncodeReport:
    """Encode every split of a prepared dataset (or the tweets of ``shard``) into one cache
    file; with ``clues`` (a clue set read for it), each tweet is read with its clue texts after
    it, the cache keeping the tweet's words only and recording the clue set."""
    tokenizer, model = load_encoder(config)
    encoder = WordEncoder(tokenizer, model, config)
    inputs, splits = prepared_splits(prepared_dir, shard)
    extra = {"clues": clues.record} if clues else {}
    record = provenance(
        "text_features",
        to_dict(config),
        inputs,
        model=config.model,
        revision=loaded_revision(model, config.revision),
        hidden_size=encoder.hidden_size,
        **model_files(config.model),
        **extra,
    )
    report = EncodeReport()

    def encode_split(cache: CacheWriter, split: str, sentences: Sequence[Sentence]) -> None:
        words = cache.create_field(
            split,
            "words",
            [len(s.tokens) for s in sentences],
            (len(config.layers), encoder.hidden_size),
            np.float16,
        )
        cells = clue_cell_fields(cache, split, [clues.texts[s.id] for s in sentences]) if clues else None
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].tokens))  # less padding
        for b in tqdm(range(0, len(order), config.batch_size), desc=f"text_features {split}", unit="batch"):
            batch = order[b : b + config.batch_size]
            tweets = [(sentences[i].id, sentences[i].tokens) for i in batch]
            texts = [clues.texts[sentences[i].id] for i in batch] if clues else None
            for i, vectors in zip(batch, encoder.encode(tweets, report, texts)):
                words[i] = vectors
            if cells:
                for i, (whole, clue_words) in zip(batch, encoder.clue_cells(tweets, texts)):
                    cells[0][i], cells[1][i] = whole, clue_words

    def clue_cell_fields(cache: CacheWriter, split: str, texts: Sequence[Sequence[str]]) -> tuple:
        """The fields of each tweet's clue mean and clue words (its clue cells)."""
        whole = cache.create_field(split, CLUE_MEAN, [1] * len(texts), (encoder.hidden_size,), np.float16)
        counts = [sum(len(text.split()) for text in clue) for clue in texts]
        return whole, cache.create_field(split, CLUE_WORDS, counts, (encoder.hidden_size,), np.float16)

    return write_cache(out_path, record, splits, encode_split, report)
