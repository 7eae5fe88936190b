"""Open-vocabulary grounding of each tweet's noun phrases and of four general words in
its image (the ``ground`` stage; FMIT section 3.1).

The queries of a tweet are its noun phrases (from the phrases cache, in its order; the
text of a phrase is its words joined by spaces) followed by the general words (person,
location, organization, miscellaneous). With ``select: best`` (as FMIT's grounder, which
returns a box for every phrase) each query keeps its ``top_k`` best boxes whatever their
score; with ``select: threshold`` only those above the backend's thresholds, so a query
may contribute nothing. Every box carries the head and
tail word index of its lattice cell as FMIT defines them: the first and last word of its
noun phrase, or the first and last word of the sentence (0 and n - 1) for a general word.

Cache fields per tweet (``g`` boxes, grouped by query in query order, best first)::

    boxes      float32 [g, 4]  xyxy, normalised by the image size, clipped to [0, 1]
    scores     float32 [g]     the box's score for its query (sigmoid of the logits)
    query      int32   [g]     index into the tweet's queries: phrases first, then general words
    positions  int32   [g, 2]  head and tail word index of the lattice cell
    n_phrases  int32   [1]     phrase queries of the tweet (after max_phrases), so query < n_phrases
                               is phrase ``query`` of the phrases cache, else a general word

Boxes are clipped, not dropped: a box may have zero area after clipping (OWLv2 predicts
boxes in the padding below or beside a non-square image); consumers that crop must
enforce a minimum size.

Backends (``GROUNDERS``), all through transformers' zero-shot detection classes:

- ``grounding-dino``: all queries of a tweet go into one prompt, ``[CLS] q1 . q2 . ... [SEP]``,
  which is the layout the model was trained on (its text encoder restricts attention to
  each ``.``-delimited phrase and restarts positions there) and costs one forward pass per
  image instead of one per query. The prompt's token ids are built from each query's own
  tokenization, so the token span of every query is known by construction: the mapping
  of boxes to queries is exact, with no decoding of labels and no string matching. Tokens
  the model treats as delimiters ([CLS], [SEP], ``.``, ``?``) are dropped from inside a
  query so that a phrase such as "U.S." stays one phrase. When a tweet's queries exceed
  the model's text length (256 tokens) they are split over several prompts with the image
  repeated. A box grounds query q when its best token score over the whole prompt exceeds
  ``box_threshold`` (the box is an object) and the best score of q's tokens exceeds
  ``text_threshold`` (q is among its labels): Grounding DINO's own two-threshold rule,
  with query indices instead of decoded label strings. The box's score for q is the best
  score of q's tokens.
- ``owlv2`` and ``owlvit``: one text query per class, logits per query; a box grounds q
  when its score for q exceeds ``box_threshold`` (``text_threshold`` is not used).

OWL boxes come from the processor's post-processing (which knows OWLv2's square padding)
with the image sizes as target sizes, then are divided by the image size. Grounding DINO
predicts boxes relative to the image (its pixel mask hides the batch padding), so they go
through the same centre-to-corners conversion as in its post-processing and nothing more:
that post-processing would scale them to pixels only for us to divide again, and it
decodes labels for each of the 900 boxes in a Python loop, a synchronisation per box on
cuda. A test checks that both give the same boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from mner.core.cache import (
    CacheError,
    CacheReader,
    CacheWriter,
    loaded_revision,
    provenance,
    rerun_hint,
)
from mner.core.config import (
    ConfigError,
    autocast,
    resolve_device,
    to_dict,
)
from mner.core.workspace import Workspace
from mner.data.conll import Sentence
from mner.features.images import ImageReport, ImageSource, image_batches
from mner.runner.extraction import ExtractionReport, prepared_splits, write_cache
from mner.runner.preflight import check_hf_model
from mner.runner.shards import Shard
from mner.settings.ground import GROUNDERS, GroundConfig
from mner.settings.images import ImagesConfig, dataset_image_dir

if TYPE_CHECKING:  # transformers is imported where it is used: it is slow to import
    from PIL import Image
    from transformers import PreTrainedModel, ProcessorMixin

log = logging.getLogger(__name__)
FIELDS = ("boxes", "scores", "query", "positions", "n_phrases")


@dataclass
class Queries:
    """The queries of one tweet: phrases first, then the general words."""

    texts: list[str]
    positions: np.ndarray  # [q, 2] int32 head and tail word index
    n_phrases: int
    capped: bool = False  # phrases beyond max_phrases were left out


def tweet_queries(words: Sequence[str], spans: np.ndarray, config: GroundConfig) -> Queries:
    """Queries of a tweet from its words and phrase ``spans`` ``[k, 2]`` (word start, end
    exclusive)."""
    kept = spans[: config.max_phrases]
    texts = [" ".join(words[start:end]) for start, end in kept] + list(config.general_words)
    heads = [(start, end - 1) for start, end in kept] + [(0, len(words) - 1)] * len(config.general_words)
    positions = np.asarray(heads, dtype=np.int32).reshape(-1, 2)
    return Queries(texts, positions, len(kept), capped=len(spans) > len(kept))


@dataclass
class Grounding:
    """The boxes of one tweet, grouped by query in query order, best first."""

    boxes: np.ndarray  # [g, 4] float32 normalised xyxy
    scores: np.ndarray  # [g] float32
    query: np.ndarray  # [g] int32

    @classmethod
    def empty(cls) -> Grounding:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def concat(cls, parts: Sequence[Grounding]) -> Grounding:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("boxes", "scores", "query")))


def top_k_per_query(
    scores: torch.Tensor, keep: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best ``top_k`` kept boxes of each query from ``scores`` and ``keep`` ``[N, Q]``:
    box index, query index and score ``[g]``, ordered by query, then by score."""
    k = min(top_k, scores.shape[0])
    masked = scores.float().masked_fill(~keep, float("-inf"))  # [N, Q]
    values, boxes = masked.topk(k, dim=0)  # [k, Q], sorted best first
    valid = ~values.T.isneginf()  # [Q, k]
    queries = torch.arange(scores.shape[1], device=scores.device)[:, None].expand(-1, k)  # [Q, k]
    return boxes.T[valid], queries[valid], values.T[valid]


def normalise(boxes: torch.Tensor, image: Image.Image) -> torch.Tensor:
    """Pixel xyxy boxes ``[N, 4]`` divided by the image size and clipped to [0, 1]."""
    width, height = image.size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    return (boxes.float() / scale).clamp(0.0, 1.0)


def check_ready(config: GroundConfig, images: ImagesConfig, dataset: str) -> None:
    """Fail with what to do when the images, then the grounder's model (a Hugging Face model
    for every backend), are neither on disk nor downloadable (loads nothing)."""
    dataset_image_dir(images, dataset)
    check_hf_model("ground.model", config.model, config.revision)


def load_detector(config: GroundConfig, model_types: Sequence[str]) -> tuple[ProcessorMixin, PreTrainedModel]:
    """Processor and zero-shot detection model by hub id or local directory; never runs
    remote code. A model of another architecture than the backend's fails before loading."""
    from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

    kwargs = {"revision": config.revision, "trust_remote_code": False}
    model_config = AutoConfig.from_pretrained(config.model, **kwargs)
    if model_config.model_type not in model_types:
        raise ConfigError(
            f"ground.backend {config.backend} needs a {' or '.join(model_types)} model; "
            f"ground.model {config.model} is a {model_config.model_type} model"
        )
    processor = AutoProcessor.from_pretrained(config.model, **kwargs)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(config.model, config=model_config, **kwargs)
    return processor, model.eval()


class Grounder:
    """Loads a backend's model; subclasses ground a batch of images, each with its own
    queries: ``ground(images, queries) -> [Grounding]``."""

    model_types: tuple[str, ...] = ()
    default_box_threshold = 0.1

    def __init__(self, config: GroundConfig) -> None:
        self.config = config
        self.processor, self.model = load_detector(config, self.model_types)
        self.device = resolve_device(config.device)
        self.model.to(self.device)
        self.box_threshold = (
            self.default_box_threshold if config.box_threshold is None else config.box_threshold
        )
        self.truncated_queries = 0

    @property
    def revision(self) -> str:
        return loaded_revision(self.model, self.config.revision)

    def selected(self, scores: torch.Tensor, over_thresholds: torch.Tensor) -> torch.Tensor:
        """Which of the ``[N, Q]`` box-query pairs may be kept: those over the thresholds,
        or (``select: best``) every pair with a finite score."""
        return over_thresholds if self.config.select == "threshold" else scores.isfinite()

    def forward(self, **inputs: torch.Tensor):
        with autocast(self.device, self.config.amp):
            return self.model(**{k: v.to(self.device) for k, v in inputs.items()})

    def ground(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[Grounding]:
        raise NotImplementedError


@dataclass
class Prompt:
    """One Grounding DINO prompt: the token ids and, per query, (query index, first token,
    end token) of its span in ``ids``."""

    tweet: int
    ids: list[int]
    spans: list[tuple[int, int, int]]


def pack_prompts(
    tweet: int, query_ids: Sequence[Sequence[int]], budget: int, cls: int, sep: int, dot: int
) -> tuple[list[Prompt], int]:
    """``[CLS] q1 . q2 . ... [SEP]`` prompts of at most ``budget`` tokens for the tokenized
    queries of one tweet, in query order, and the number of queries cut to fit alone."""
    prompts, ids, spans, truncated = [], [cls], [], 0
    room = budget - 3  # [CLS], '.', [SEP]
    for q, tokens in enumerate(query_ids):
        truncated += len(tokens) > room
        tokens = list(tokens[:room])
        if spans and len(ids) + len(tokens) + 2 > budget:
            prompts.append(Prompt(tweet, ids + [sep], spans))
            ids, spans = [cls], []
        spans.append((q, len(ids), len(ids) + len(tokens)))
        ids += tokens + [dot]
    if spans:
        prompts.append(Prompt(tweet, ids + [sep], spans))
    return prompts, truncated


def query_scores(probs: torch.Tensor, prompt: Prompt) -> torch.Tensor:
    """Each query's score ``[N, Q]`` (the best of its tokens; -1 for a query without
    tokens) from the token probabilities ``[N, T]`` of ``prompt``'s boxes."""
    n_queries = len(prompt.spans)
    owner = torch.full((probs.shape[1],), n_queries, dtype=torch.long)  # [T], n_queries: no query
    for local, (_, start, end) in enumerate(prompt.spans):
        owner[start:end] = local
    owner = owner.to(probs.device)[None].expand(probs.shape[0], -1)  # [N, T]
    out = torch.full((probs.shape[0], n_queries + 1), -1.0, device=probs.device)
    return out.scatter_reduce(1, owner, probs.float(), reduce="amax")[:, :n_queries]  # [N, Q]


@GROUNDERS.register("grounding-dino")
class GroundingDinoGrounder(Grounder):
    model_types = ("grounding-dino", "mm-grounding-dino")
    default_box_threshold = 0.35

    def __init__(self, config: GroundConfig) -> None:
        super().__init__(config)
        tokenizer = self.processor.tokenizer
        vocab = tokenizer.get_vocab()
        if "." not in vocab:
            raise ConfigError(
                f"ground.model {config.model}: its tokenizer has no '.' token to separate queries"
            )
        self.cls, self.sep, self.dot = tokenizer.cls_token_id, tokenizer.sep_token_id, vocab["."]
        self.delimiters = {self.cls, self.sep, self.dot, vocab.get("?", self.dot)}  # the model's phrase ends
        self.budget = self.model.config.max_text_len

    def prompts(self, queries: Sequence[Sequence[str]]) -> list[Prompt]:
        """The prompts of a batch of tweets, tweet after tweet."""
        flat = [q.lower() for qs in queries for q in qs]
        tokenized = self.processor.tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        tokenized = [[t for t in ids if t not in self.delimiters] for ids in tokenized]
        prompts, start = [], 0
        for tweet, qs in enumerate(queries):
            packed, truncated = pack_prompts(
                tweet, tokenized[start : start + len(qs)], self.budget, self.cls, self.sep, self.dot
            )
            prompts += packed
            self.truncated_queries += truncated
            start += len(qs)
        return prompts

    def model_inputs(
        self, images: Sequence[Image.Image], prompts: Sequence[Prompt]
    ) -> dict[str, torch.Tensor]:
        """The model's inputs: one row per prompt, with its tweet's image."""
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt", device=self.device)
        rows = torch.tensor([p.tweet for p in prompts])
        length = max(len(p.ids) for p in prompts)
        pad = self.processor.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([p.ids + [pad] * (length - len(p.ids)) for p in prompts])  # [R, T]
        mask = torch.tensor([[1] * len(p.ids) + [0] * (length - len(p.ids)) for p in prompts])  # [R, T]
        return {
            "pixel_values": pixels["pixel_values"][rows],
            "pixel_mask": pixels["pixel_mask"][rows],
            "input_ids": input_ids,
            "token_type_ids": torch.zeros_like(input_ids),
            "attention_mask": mask,
        }

    @torch.inference_mode()
    def ground(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[Grounding]:
        from transformers.image_transforms import center_to_corners_format

        prompts = self.prompts(queries)
        if not prompts:
            return [Grounding.empty() for _ in images]
        inputs = self.model_inputs(images, prompts)
        length = inputs["input_ids"].shape[1]
        outputs = self.forward(**inputs)
        # the processor's own conversion; its post-processing would only add scaling to pixels
        # (undone at once) and decode labels for every box in a Python loop (slow on cuda)
        relative = center_to_corners_format(outputs.pred_boxes.float()).clamp(0.0, 1.0)  # [R, N, 4]
        probs = outputs.logits.float().sigmoid()  # [R, N, max_text_len]
        objectness = probs.max(dim=-1).values  # [R, N], as the processor scores a box
        parts: list[list[Grounding]] = [[] for _ in images]
        for r, prompt in enumerate(prompts):
            scores = query_scores(probs[r, :, :length], prompt)  # [N, Q]
            over = (objectness[r, :, None] > self.box_threshold) & (scores > self.config.text_threshold)
            keep = self.selected(scores, over)
            boxes, local, values = top_k_per_query(scores, keep, self.config.top_k)
            global_query = torch.tensor([q for q, _, _ in prompt.spans], device=local.device)[local]
            parts[prompt.tweet].append(_grounding(relative[r, boxes], values, global_query))
        return [Grounding.concat(p) for p in parts]


class OwlGrounder(Grounder):
    """OWL-ViT and OWLv2: one text query per class, logits ``[B, N, Q]``."""

    @torch.inference_mode()
    def ground(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[Grounding]:
        out = [Grounding.empty() for _ in images]
        active = [i for i, qs in enumerate(queries) if qs]
        if not active:
            return out
        max_length = self.model.config.text_config.max_position_embeddings
        texts = [list(queries[i]) for i in active]
        lengths = self.processor.tokenizer([q for qs in texts for q in qs])["input_ids"]
        self.truncated_queries += sum(len(ids) > max_length for ids in lengths)
        inputs = self.processor(
            text=texts,
            images=[images[i] for i in active],
            return_tensors="pt",
            padding="max_length",
            truncation=True,
            max_length=max_length,
            device=self.device,  # resize and normalise the images there
        )
        outputs = self.forward(**inputs)
        sizes = [(images[i].height, images[i].width) for i in active]
        converted = self.processor.post_process_grounded_object_detection(
            outputs, threshold=float("-inf"), target_sizes=sizes
        )  # every box, in model order
        for row, i in enumerate(active):
            scores = outputs.logits[row, :, : len(queries[i])].float().sigmoid()  # [N, Q]
            boxes, query, values = top_k_per_query(
                scores, self.selected(scores, scores > self.box_threshold), self.config.top_k
            )
            pixels_xyxy = _all_boxes(converted[row], scores.shape[0])
            out[i] = _grounding(normalise(pixels_xyxy[boxes], images[i]), values, query)
        return out


@GROUNDERS.register("owlv2")
class Owlv2Grounder(OwlGrounder):
    model_types = ("owlv2",)


@GROUNDERS.register("owlvit")
class OwlVitGrounder(OwlGrounder):
    model_types = ("owlvit",)


def _all_boxes(result: dict, n_boxes: int) -> torch.Tensor:
    """The pixel boxes ``[N, 4]`` of a post-processing result that kept every box."""
    boxes = result["boxes"]
    if len(boxes) != n_boxes:  # a NaN score fails every threshold and would shift the indices
        raise RuntimeError(f"post-processing kept {len(boxes)} of {n_boxes} boxes (NaN scores?)")
    return boxes


def _grounding(boxes: torch.Tensor, scores: torch.Tensor, query: torch.Tensor) -> Grounding:
    return Grounding(
        boxes.cpu().numpy().astype(np.float32),
        scores.float().cpu().numpy().astype(np.float32),
        query.cpu().numpy().astype(np.int32),
    )


@dataclass
class GroundReport(ExtractionReport):
    queries: int = 0
    boxes: int = 0
    empty_tweets: int = 0  # tweets with no box at all (g = 0)
    capped_tweets: int = 0  # tweets with more than max_phrases phrases
    truncated_queries: int = 0  # queries cut to the model's text length


def read_phrase_spans(cache: CacheReader, split: str, sentences: Sequence[Sentence]) -> list[np.ndarray]:
    """The phrase spans ``[k, 2]`` of every sentence of a split (looked up by tweet id, so a
    shard job reads the full cache), checked against it."""
    where = f"{cache.path}: split {split!r}"
    rows = cache.rows(split, [s.id for s in sentences])
    if rows and ("spans" not in cache.fields(split) or cache.row_shape(split, "spans") != (2,)):
        raise CacheError(f"{where}: needs a field 'spans' of rows [start, end); rerun {cache.rerun}")
    spans = [cache.get(split, "spans", row).astype(np.int64) for row in rows]
    for sentence, found in zip(sentences, spans):
        if ((found[:, 0] < 0) | (found[:, 1] <= found[:, 0]) | (found[:, 1] > len(sentence.tokens))).any():
            raise CacheError(
                f"{where}: tweet {sentence.id} has phrase spans outside its {len(sentence.tokens)} words; "
                f"rerun {cache.rerun}"
            )
    return spans


def ground_split(
    grounder: Grounder,
    split: str,
    sentences: Sequence[Sentence],
    spans: Sequence[np.ndarray],
    source: ImageSource,
    report: GroundReport,
) -> tuple[list[Queries], list[Grounding]]:
    """Queries and groundings of every tweet of a split, in tweet order."""
    config = grounder.config
    queries = [tweet_queries(s.tokens, k, config) for s, k in zip(sentences, spans)]
    groundings: list[Grounding] = [Grounding.empty()] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda i: len(queries[i].texts))  # less padding
    ids = [s.image_id for s in sentences]
    batches = image_batches(source, ids, config.batch_size, config.num_workers, order=order)
    for batch in tqdm(batches, desc=f"ground {split}", unit="batch"):
        for i, image in batch:
            report.images.add(split, sentences[i].id, sentences[i].image_id, image)
        results = grounder.ground([image.image for _, image in batch], [queries[i].texts for i, _ in batch])
        for (i, _), grounding in zip(batch, results):
            groundings[i] = grounding
    return queries, groundings


def ground_dataset(
    config: GroundConfig,
    images: ImagesConfig,
    workspace: Workspace,
    out_path: Path | str,
    shard: Shard | None = None,
    *,
    expect_phrases: Mapping[str, Any],
) -> GroundReport:
    """Ground every tweet (or those of ``shard``) of every split of ``workspace``'s prepared
    dataset into one cache file, from its phrases cache, which must meet ``expect_phrases``."""
    dataset = workspace.dataset
    source = ImageSource(images, dataset)  # fails at once when images are absent and required
    inputs, splits = prepared_splits(workspace.prepared, shard)
    phrases = CacheReader(workspace.cache("phrases"), expect_phrases, rerun=rerun_hint("parse", dataset))
    spans = {split: read_phrase_spans(phrases, split, s) for split, s in splits.items()}
    parse_params = phrases.provenance.get("params")
    phrases.close()
    grounder = GROUNDERS[config.backend](config)
    log.info(
        "grounding %s with %s %s on %s, box threshold %s",
        dataset,
        config.backend,
        config.model,
        grounder.device,
        grounder.box_threshold,
    )
    record = provenance(
        "ground",
        to_dict(config),
        [*inputs, workspace.cache("phrases")],
        backend=config.backend,
        model=config.model,
        revision=grounder.revision,
        box_threshold=grounder.box_threshold,
        images=to_dict(images),
        phrases=parse_params,
    )
    report = GroundReport(images=ImageReport(no_directory=source.directory is None))

    def encode_split(cache: CacheWriter, split: str, sentences: Sequence[Sentence]) -> None:
        queries, groundings = ground_split(grounder, split, sentences, spans[split], source, report)
        write_split(cache, split, queries, groundings)
        report.queries += sum(len(q.texts) for q in queries)
        report.boxes += sum(len(g.query) for g in groundings)
        report.empty_tweets += sum(len(g.query) == 0 for g in groundings)
        report.capped_tweets += sum(q.capped for q in queries)
        report.truncated_queries = grounder.truncated_queries

    return write_cache(out_path, record, splits, encode_split, report)


def write_split(
    cache: CacheWriter, split: str, queries: Sequence[Queries], groundings: Sequence[Grounding]
) -> None:
    cache.write_field(split, "boxes", [g.boxes for g in groundings], np.float32)
    cache.write_field(split, "scores", [g.scores for g in groundings], np.float32)
    cache.write_field(split, "query", [g.query for g in groundings], np.int32)
    positions = [q.positions[g.query].reshape(-1, 2) for q, g in zip(queries, groundings)]
    cache.write_field(split, "positions", positions, np.int32)
    cache.write_field(split, "n_phrases", [np.array([q.n_phrases], np.int32) for q in queries], np.int32)
