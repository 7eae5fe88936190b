"""UMT's equations (Yu et al., 2020) and the choices its docstring states, each pinned on a
tiny model with random parameters against a tweet-by-tweet reference written from the
paper in plain tensor operations over the model's weights: the reference calls none of the
model's modules, so a change inside one of them (a norm, a layer, an attention) moves the
model and not the reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from mner.core.config import ConfigError
from mner.data.labels import SPAN_TAGS, TWITTER_LABELS, bio_labels
from mner.models import InputDims, build_model, model_config
from mner.models.umt import UMTConfig, conversion_matrix, span_targets
from tests.models.equation_batches import INPUTS, UMT_TINY, spanned_batch, tiny

CLOSE = {"atol": 1e-4, "rtol": 1e-4}
EPS = 1e-5  # the layer norms' epsilon: PyTorch's default, kept (the public code's: 1e-12)


def linear(x: torch.Tensor, module) -> torch.Tensor:
    """``x W^T + b`` with the weights of the linear map ``module``."""
    return x @ module.weight.T + module.bias


def norm(x: torch.Tensor, module) -> torch.Tensor:
    """Layer norm over the last dimension with the gain and bias of ``module``."""
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + EPS) * module.weight + module.bias


def attend(attention, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention of one tweet's ``queries`` ``[Q, d]`` over its ``keys`` ``[K, d]``
    with the weights of ``attention``: per head ``softmax(q k^T / sqrt(d / h)) v``, the heads
    concatenated and projected. The output ``[Q, d]`` and the head-averaged weights ``[Q, K]``."""
    heads, d = attention.num_heads, queries.shape[-1]
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), heads, d // heads).transpose(0, 1)  # [h, n, d / h]

    q, k, v = split(queries @ w_q.T + b_q), split(keys @ w_k.T + b_k), split(keys @ w_v.T + b_v)
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d // heads), dim=-1)  # [h, Q, K]
    out = (weights @ v).transpose(0, 1).reshape(len(queries), d)
    return linear(out, attention.out_proj), weights.mean(0)


def feed_forward(x: torch.Tensor, first, second) -> torch.Tensor:
    """``W_2 GELU(W_1 x)``, GELU the exact (erf) one, as BERT's."""
    return linear(F.gelu(linear(x, first)), second)


def reference_text_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """A text layer (BERT's, post-norm) over one tweet's unpadded words ``[n, d]``:
    ``h = LN(x + MH-SA(x))``, then ``LN(h + W_2 GELU(W_1 h))``."""
    h = norm(x + attend(layer.self_attn, x, x)[0], layer.norm1)
    return norm(h + feed_forward(h, layer.linear1, layer.linear2), layer.norm2)


def reference_cmt(
    transformer, queries: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-4 over one tweet's unpadded queries and keys, per layer: ``P~ = LN(Q + MH-CA(Q,
    K))``, ``P = LN(P~ + W_2 GELU(W_1 P~))``; with no keys, MH-CA is 0. Returns the outputs
    and the last layer's head-averaged weights ``[Q, K]``."""
    weights = torch.zeros(len(queries), len(keys))
    for layer in transformer.layers:
        attended = torch.zeros_like(queries)
        if len(keys):
            attended, weights = attend(layer.attention, queries, keys)
        p = norm(queries + attended, layer.norm)
        queries = norm(p + feed_forward(p, layer.ff.net[0], layer.ff.net[3]), layer.ff.norm)
    return queries, weights


def reference_words(model, b: dict, i: int) -> torch.Tensor:
    """Tweet ``i``'s word vectors ``[n, d]`` that both text layers read: the softmax-weighted
    mix of the cached layers times its scale (with the word-shape embedding beside it when
    there is one), mapped to d."""
    n = int(b["mask"][i].sum())
    mix = model.words.mix
    layers = torch.softmax(mix.weights, dim=0)
    words = mix.gamma * (b["features"][i, :n] * layers[:, None]).sum(1)  # [n, D]
    if model.words.shapes is not None:
        words = torch.cat([words, model.words.shapes.weight[b["shapes"][i, :n]]], dim=-1)
    return linear(words, model.input[1])


def reference_umt(model, b: dict, i: int) -> dict:
    """Tweet ``i``'s emissions, span scores and word -> region attention from the paper's
    equations over its unpadded words and grid regions (the visual cells after the whole
    image)."""
    c = model.config
    v = int(b["visual_mask"][i].sum())
    x = reference_words(model, b, i)
    words = reference_text_layer(model.text, x)  # C
    grid = b["visual"][i, 1:v]
    regions, coupled = linear(grid, model.regions), linear(grid, model.coupled_regions)  # W_u U, W_u' U
    visual, weights = reference_cmt(model.word_aware_visual, words, regions)  # B
    word_aware, _ = reference_cmt(model.word_aware_regions, coupled, words)
    image_aware, _ = reference_cmt(model.image_aware_words, words, word_aware)  # A
    if c.visual_gate:
        w, d = model.gate.weight, c.d
        g = torch.sigmoid(image_aware @ w[:, :d].T + visual @ w[:, d:].T + model.gate.bias)
        visual = g * visual
    emissions = linear(torch.cat([image_aware, visual], dim=-1), model.out)
    out = {"emissions": emissions, "weights": weights, "spans": None}
    if c.span_detection:
        spans = linear(reference_text_layer(model.span_text, x), model.span_out)
        out["spans"] = spans
        out["emissions"] = c.alpha * emissions + (1 - c.alpha) * spans @ conversion_matrix(
            len(TWITTER_LABELS)
        )
    return out


@pytest.mark.parametrize(
    "switches",
    [{}, {"visual_gate": False}, {"span_detection": False}, {"alpha": 0.3}, {"shape_dim": 3}],
    ids=["umt", "no-gate", "no-esd", "alpha", "shapes"],
)
def test_umt_emissions_follow_the_equations_tweet_by_tweet(switches):
    """The final emissions, span scores and word -> region attention equal the paper's
    equations written out over each unpadded tweet (tweet 1 has no region: its cross-modal
    attention brings nothing)."""
    model = tiny("umt", **switches).eval()
    b = spanned_batch()
    with torch.no_grad():
        emissions, span_scores = model.scores(b)
        weights = model.attention(b).weights
        for i, n in enumerate(b["mask"].sum(1).tolist()):
            ref = reference_umt(model, b, i)
            torch.testing.assert_close(emissions[i, :n], ref["emissions"], **CLOSE)
            if ref["spans"] is not None:
                torch.testing.assert_close(span_scores[i, :n], ref["spans"], **CLOSE)
            v = int(b["visual_mask"][i].sum())
            torch.testing.assert_close(weights[i, :n, 1:v], ref["weights"], **CLOSE)
            assert (weights[i, :, 0] == 0).all() and (weights[i, :, v:] == 0).all()
    assert weights.shape == (*b["mask"].shape, b["visual"].shape[1])  # laid out as the visual cells
    assert (span_scores is None) == (switches.get("span_detection") is False)


def test_the_conversion_matrix_spreads_each_span_tag_over_the_types():
    """O to O; B to every B- type and I to every I- type, each by 1 / the number of types
    (the public code's 0.25 for Twitter's four), whatever the vocabulary."""
    matrix = conversion_matrix(len(TWITTER_LABELS))
    for tag, row in zip(SPAN_TAGS, matrix):
        for label, value in zip(TWITTER_LABELS, row.tolist()):
            wanted = 1.0 if tag == label == "O" else 0.25 if label[:1] == tag != "O" else 0.0
            assert value == wanted, (tag, label)
    six = bio_labels(["A", "B", "C", "D", "E", "F"])
    wanted = torch.tensor([0.0] + [0.0, 1 / 6] * 6)
    torch.testing.assert_close(conversion_matrix(len(six))[SPAN_TAGS.index("I")], wanted)


def test_the_loss_is_the_mner_loss_plus_lambda_times_the_span_loss():
    b = spanned_batch()
    for weight in (0.5, 2.0):
        losses = tiny("umt", lambda_span=weight).loss(b)
        torch.testing.assert_close(losses["loss"], losses["mner"] + weight * losses["span"])
        emissions, span_scores = tiny("umt", lambda_span=weight).scores(b)
        model = tiny("umt", lambda_span=weight)
        torch.testing.assert_close(losses["mner"], model.crf.nll(emissions, b["labels"], b["mask"]))
        targets = span_targets(b["labels"])
        torch.testing.assert_close(losses["span"], model.span_crf.nll(span_scores, targets, b["mask"]))
    without = tiny("umt", span_detection=False).loss(b)
    assert set(without) == {"mner", "loss"} and without["loss"] == without["mner"]


def test_span_detection_is_text_only_and_its_loss_reaches_the_shared_word_map():
    """ESD reads the words alone (its scores do not change with the image); its loss trains
    the word map both branches read, not the interaction module."""
    model = tiny("umt")
    b = spanned_batch()
    other = {**b, "visual": torch.randn_like(b["visual"])}
    torch.testing.assert_close(model.scores(b)[1], model.scores(other)[1])
    model.loss(b)["span"].backward()
    assert model.input[1].weight.grad.abs().sum() > 0
    for module in model.interaction_phase():
        assert all(p.grad is None for p in module.parameters())


def test_the_visual_gate_decides_how_much_of_the_word_aware_visual_part_each_word_takes():
    """A closed gate (bias -inf) removes B from H: the word -> region CMT then changes
    nothing; an open one (bias +inf) keeps B whole."""
    b = spanned_batch()
    for bias, changes in ((-1e4, False), (1e4, True)):
        model = tiny("umt").eval()
        with torch.no_grad():
            model.gate.bias.fill_(bias)
            words = model.encode(b)[0]
            before = model.interact(b, words)[0]
            model.regions.weight.add_(1.0)  # another W_u: another B
            after = model.interact(b, words)[0]
        d = model.config.d
        torch.testing.assert_close(after[..., :d], before[..., :d])  # A does not read W_u
        assert (not torch.allclose(after[..., d:], before[..., d:])) == changes


def test_the_whole_image_vector_is_not_read():
    """Only the grid regions take part: the cached whole-image vector (cell 0) changes
    nothing."""
    model = tiny("umt").eval()
    b = spanned_batch()
    other = {**b, "visual": b["visual"].clone()}
    other["visual"][:, 0] = torch.randn_like(other["visual"][:, 0])
    with torch.no_grad():
        torch.testing.assert_close(model.emissions(b), model.emissions(other))
        changed = {**b, "visual": b["visual"].clone()}
        changed["visual"][0, 1] += 1.0  # a region of tweet 0
        assert not torch.allclose(model.emissions(b)[0], model.emissions(changed)[0])


def test_the_interaction_phase_is_the_multimodal_interaction_module():
    model = tiny("umt")
    assert model.interaction_phase() == [
        model.regions,
        model.coupled_regions,
        model.word_aware_visual,
        model.word_aware_regions,
        model.image_aware_words,
        model.gate,
    ]
    ungated = tiny("umt", visual_gate=False)
    assert ungated.interaction_phase()[-1] is ungated.image_aware_words and not hasattr(ungated, "gate")


def test_the_paper_sizes_are_the_defaults_and_bad_ones_are_refused():
    config = UMTConfig()
    assert (config.d, config.heads, config.cross_layers, config.lambda_span, config.alpha) == (
        768,
        12,
        1,
        0.5,
        0.5,
    )
    with pytest.raises(ConfigError, match="multiple of heads"):
        model_config("umt", {"d": 10, "heads": 4})
    with pytest.raises(
        ConfigError, match="^umt reads visual features: train it with the visual_features cache$"
    ):
        build_model("umt", UMT_TINY, InputDims(2, 12), len(TWITTER_LABELS))


def test_word_shapes_are_read_when_asked_for_and_dropout_reaches_every_layer():
    """``shape_dim`` adds the word-shape embedding to the words; ``dropout`` is the rate of
    every dropout, the attention weights' included (none sits inside a feed-forward:
    tests/models/test_umt_fidelity.py)."""
    model = tiny("umt", shape_dim=3, dropout=0.3).eval()
    assert model.words.dim == INPUTS.text_dim + 3
    b = spanned_batch()
    other = {**b, "shapes": (b["shapes"] + 1) % 3}
    with torch.no_grad():
        assert not torch.allclose(model.emissions(b), model.emissions(other))
    attentions = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert len(attentions) == 3 * UMT_TINY["cross_layers"] + 2  # the CMTs' and the two text layers'
    assert all(m.dropout == 0.3 for m in attentions)
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_the_conversion_matrix_is_no_weight_and_the_interaction_phase_runs_alone():
    """The fixed conversion is not in the state dict (a checkpoint holds only what is
    learned); ``interact`` over ``interaction_inputs`` gives the H the emissions read."""
    model = tiny("umt").eval()
    assert "conversion" not in model.state_dict()
    plain = tiny("umt", span_detection=False).eval()
    b = spanned_batch()
    with torch.no_grad():
        h, _ = plain.interact(*plain.interaction_inputs(b))
        torch.testing.assert_close(plain.out(h), plain.emissions(b))
