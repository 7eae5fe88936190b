"""UMT against its paper (Yu et al., 2020) and its public code (jefferyYu/UMT) where the
equation tests would not notice a change: the defaults are the paper's values, the text
layers are post-norm, the main loss reaches the span-detection branch through ``W^c``, the
span targets are the labels' prefixes, the feed-forwards have no dropout inside, and the
choices kept against the public code (mner/models/umt.py's docstring) stay as stated."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mner.data.labels import SPAN_TAGS, TWITTER_LABELS, bio_labels, entity_tags
from mner.models import InputDims, build_model
from mner.models.umt import UMTConfig, span_targets
from tests.models.equation_batches import spanned_batch, tiny
from tests.models.test_umt_equations import (
    CLOSE,
    EPS,
    attend,
    feed_forward,
    norm,
    reference_text_layer,
    reference_words,
)

PAPER = {  # Yu et al. (2020) as its public code runs it: BERT-base's width, heads and dropout,
    # --layer_num1/2/3=1, and alpha and lambda (its "beta") 0.5 in the model's forward
    "d": 768,
    "heads": 12,
    "cross_layers": 1,  # one CMT layer in each of the three places
    "dropout": 0.1,
    "lambda_span": 0.5,
    "alpha": 0.5,
    "span_detection": True,
    "visual_gate": True,
}


def test_the_defaults_are_the_papers_values():
    """``UMTConfig()`` holds the paper's values, and a model built from it has them in every
    layer: 12 heads over 768, a 3072-wide feed-forward, one layer per CMT, dropout 0.1."""
    config = UMTConfig()
    assert {name: getattr(config, name) for name in PAPER} == PAPER
    assert (config.clue_cells, config.shape_dim, config.decode) == (False, 0, "constrained")
    with torch.device("meta"):
        model = build_model("umt", {}, InputDims(13, 768, 2048), len(TWITTER_LABELS))
    attentions = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert len(attentions) == 3 + 2  # one per CMT, one per text layer
    assert all((m.embed_dim, m.num_heads, m.dropout) == (768, 12, 0.1) for m in attentions)
    assert all(len(cmt.layers) == 1 for cmt in model.interaction_phase()[2:5])
    widths = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths.count((768, 3072)) == widths.count((3072, 768)) == 5  # a feed-forward per layer
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    assert model.input[1].out_features == 768 and model.out.in_features == 2 * 768
    assert model.visual_kind == "grid"  # ResNet's 7x7 cells; clue_cells: a clue set's words
    with torch.device("meta"):
        assert build_model("umt", {"clue_cells": True}, InputDims(13, 768, 384), 9).visual_kind == "clue"


def test_a_width_its_heads_do_not_divide_is_refused_naming_umt():
    import pytest

    from mner.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"^umt: d \(30\) must be a multiple of heads \(4\)$"):
        UMTConfig(d=30, heads=4)


def test_the_text_layers_are_post_norm():
    """Both text layers (the main one and ESD's) are BERT's post-norm layers: each output
    row is layer-normalised (with gain 1 and bias 0: mean 0, variance 1), and the layer is
    ``LN(h + W_2 GELU(W_1 h))`` over ``h = LN(x + MH-SA(x))``, not its pre-norm variant."""
    model = tiny("umt").eval()
    b = spanned_batch()
    n = int(b["mask"][0].sum())
    with torch.no_grad():
        x = reference_words(model, b, 0)
        for layer in (model.text, model.span_text):
            expected = reference_text_layer(layer, x)
            torch.testing.assert_close(layer(x[None])[0], expected, **CLOSE)
            h = x + attend(layer.self_attn, norm(x, layer.norm1), norm(x, layer.norm1))[0]
            pre_norm = h + feed_forward(norm(h, layer.norm2), layer.linear1, layer.linear2)
            assert not torch.allclose(expected, pre_norm, atol=1e-2)  # the test tells them apart
            layer.norm2.weight.fill_(1.0)
            layer.norm2.bias.zero_()
            out = layer(x[None])[0]  # [n, d]
            torch.testing.assert_close(out.mean(-1), torch.zeros(n), atol=1e-5, rtol=0)
            torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(n), atol=1e-3, rtol=0)


def test_the_main_loss_reaches_the_span_branch_through_the_conversion():
    """The final emissions add ``(1 - alpha) W^c`` (ESD scores), so the MNER loss alone trains
    the span branch: every entry of the ESD text layer's and of its output map's parameters,
    but for the attention's key bias, which no loss reaches (a softmax does not change when
    one number is added to all of a query's scores); never the span CRF's transitions, which
    only the span loss reads. With ``alpha`` 1 the branch gets nothing from it."""
    model = tiny("umt")
    b = spanned_batch()
    model.loss(b)["mner"].backward()
    d = model.config.d
    for name, parameter in [*model.span_text.named_parameters(), *model.span_out.named_parameters()]:
        grad = parameter.grad
        if name == "self_attn.in_proj_bias":
            torch.testing.assert_close(grad[d : 2 * d], torch.zeros(d), atol=1e-6, rtol=0)
            grad = torch.cat([grad[:d], grad[2 * d :]])
        assert (grad != 0).all(), name
    assert all(p.grad is None for p in model.span_crf.parameters())

    only_main = tiny("umt", alpha=1.0)
    only_main.loss(b)["mner"].backward()
    for p in [*only_main.span_text.parameters(), *only_main.span_out.parameters()]:
        assert p.grad is None or (p.grad == 0).all()


def test_the_span_loss_stays_on_the_text_side():
    """The ESD loss trains the span branch and the word map both text layers read, never
    the main text layer, the interaction module, the output map or the main CRF."""
    model = tiny("umt")
    model.loss(spanned_batch())["span"].backward()
    assert all(p.grad is not None for p in [*model.span_text.parameters(), *model.span_out.parameters()])
    assert model.input[1].weight.grad.abs().sum() > 0
    for module in (model.text, *model.interaction_phase(), model.out, model.crf):
        assert all(p.grad is None for p in module.parameters())


ODD_LABELS = [
    ["I-PER", "I-PER", "O", "B-LOC", "I-ORG"],  # an orphan I-PER; an I-ORG after a LOC
    ["O", "I-MISC", "B-MISC", "I-MISC"],  # an orphan I-MISC
    ["B-ORG", "I-ORG", "O"],  # valid BIO
]
PREFIXES = [["I", "I", "O", "B", "I"], ["O", "I", "B", "I"], ["B", "I", "O"]]  # the public code's


def test_span_targets_are_the_labels_prefixes():
    """:func:`span_targets` is each label's first letter, whatever the vocabulary's types."""
    for labels in (TWITTER_LABELS, bio_labels(["A", "B", "C", "D", "E", "F"])):
        wanted = torch.tensor([SPAN_TAGS.index(label[0]) for label in labels])
        assert torch.equal(span_targets(torch.arange(len(labels))), wanted)
        assert torch.equal(span_targets(torch.arange(len(labels)).view(-1, 1)), wanted.view(-1, 1))


def test_the_span_loss_reads_the_labels_prefixes_not_the_conlleval_chunks():
    """On an orphan ``I-X`` or an ``I-Y`` after another type the ESD target is I, as in the
    public code (the conlleval chunk of ``batch["span_tags"]`` starts with B there), so that
    ``W^c`` sends it to the gold label's prefix."""
    b = spanned_batch(labels=ODD_LABELS, visual_counts=(3, 1, 2))
    prefixes = torch.zeros_like(b["labels"])
    for i, tags in enumerate(PREFIXES):
        prefixes[i, : len(tags)] = torch.tensor([SPAN_TAGS.index(t) for t in tags])
    chunks = entity_tags(ODD_LABELS[0])[0]
    assert chunks.tolist() != prefixes[0, :5].tolist()  # B at 0 and 4 where the prefixes are I
    model = tiny("umt")
    span_scores = model.scores(b)[1]
    losses = model.loss({**b, "span_tags": (b["span_tags"] + 1) % 3})  # not read
    torch.testing.assert_close(losses["span"], model.span_crf.nll(span_scores, prefixes, b["mask"]))
    assert not torch.allclose(losses["span"], model.span_crf.nll(span_scores, b["span_tags"], b["mask"]))


def feed_forward_pairs(model) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """The (W_1, W_2) linear maps of every feed-forward: the two text layers' and each CMT
    layer's."""
    pairs = [(layer.linear1, layer.linear2) for layer in (model.text, model.span_text)]
    for cmt in model.interaction_phase()[2:5]:
        pairs += [(layer.ff.net[0], layer.ff.net[3]) for layer in cmt.layers]
    return pairs


def test_no_dropout_inside_the_feed_forwards():
    """In training, ``W_2`` reads ``GELU(W_1 x)`` whole in every feed-forward (BERT's
    intermediate layer has no dropout), while the other dropouts act."""
    model = tiny("umt", dropout=0.5).train()
    pairs = feed_forward_pairs(model)
    assert len(pairs) == 2 + 3 * model.config.cross_layers
    seen: dict = {}
    for k, (first, second) in enumerate(pairs):
        first.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__((k, 1), o))
        second.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__((k, 2), i[0]))
    b = spanned_batch()
    torch.manual_seed(0)
    first_run = model.emissions(b)
    for k in range(len(pairs)):
        torch.testing.assert_close(seen[k, 2], F.gelu(seen[k, 1]))
    assert not torch.allclose(first_run, model.emissions(b))  # the other dropouts draw anew


def test_the_choices_kept_against_the_public_code():
    """Layer norm epsilon 1e-5, PyTorch's default (the public code's 1e-12), in every norm;
    PyTorch's default initialisation (the stored losses of tests/models/test_every_model.py
    pin it), whose biases are not the public code's zeros."""
    model = tiny("umt")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 2 * 3 * model.config.cross_layers
    assert {m.eps for m in norms} == {EPS}
    torch.manual_seed(0)
    fresh = build_model("umt", {"d": 16, "heads": 2}, InputDims(2, 12, 10), len(TWITTER_LABELS))
    assert (fresh.out.bias != 0).all() and (fresh.text.linear1.bias != 0).all()
