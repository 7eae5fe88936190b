"""FMIT's equations (Lu et al., 2022) and the choices its docstring states, each pinned on
a tiny model with random parameters against a tweet-by-tweet reference written from the
paper."""

from __future__ import annotations

import math

import pytest
import torch

from mner.core.config import ConfigError
from mner.data.labels import BOUNDARY_TAGS, TWITTER_LABELS
from mner.models import InputDims, build_model, model_config
from mner.models.fmit import (
    FMITConfig,
    LatticeAttention,
    RelativeFlatTransformer,
    RelativePositions,
    sinusoid,
)
from tests.models.equation_batches import FMIT_TINY, spanned_batch, tiny

CLOSE = {"atol": 1e-4, "rtol": 1e-4}


def grounded(b: dict) -> dict:
    """``b`` with grounded positions: tweet 0's visual cells 1-2 from the phrases at words
    0-1 and 3-4, every other visual cell (the whole image first) spanning its tweet."""
    n = b["mask"].sum(dim=1)
    b["visual_positions"][:, :, 1] = (n - 1)[:, None]
    b["visual_positions"][0, 1:3] = torch.tensor([[0, 1], [3, 4]])
    return b


def reference_cells(model, b: dict, i: int, visual: bool = True) -> dict:
    """Tweet ``i``'s unpadded lattice from Eq. 1-2: ``[CLS]``, ``W_0 ReLU(W_1 x)`` of each
    word, ``[SEP]``, then ``W_0 ReLU(W_2 v)`` of each visual vector; heads and tails are
    lattice indices (a word its own, a visual cell its phrase's first and last word)."""
    n, v = int(b["mask"][i].sum()), int(b["visual_mask"][i].sum())
    one = {"features": b["features"][i : i + 1, :n], "shapes": b["shapes"][i : i + 1, :n]}
    w1, w2, w0 = model.word_in[0], model.visual_in[0], model.shared_out
    words = torch.relu(model.words(one)[0] @ w1.weight.T + w1.bias) @ w0.weight.T + w0.bias
    cells = [model.cls[None], words, model.sep[None]]
    heads = list(range(n + 2))
    tails = list(range(n + 2))
    if visual:
        objects = torch.relu(b["visual"][i, :v] @ w2.weight.T + w2.bias) @ w0.weight.T + w0.bias
        cells.append(objects)
        heads += (b["visual_positions"][i, :v, 0] + 1).tolist()
        tails += (b["visual_positions"][i, :v, 1] + 1).tolist()
    return {"cells": torch.cat(cells), "heads": torch.tensor(heads), "tails": torch.tensor(tails)}


def reference_transformer(transformer, lattice: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat Transformer over one unpadded lattice: relative positions once for all
    layers (or sinusoidal absolute ones added to the cells), then per layer
    ``x = LN(x + Att(x))`` and ``LN(x + W_b ReLU(W_a x))``."""
    x = lattice["cells"][None]
    mask = torch.ones(1, len(lattice["cells"]), dtype=torch.bool)
    positions = None
    if isinstance(transformer, RelativeFlatTransformer):
        positions = transformer.relative(lattice["heads"][None], lattice["tails"][None])
    else:
        x = x + sinusoid(torch.arange(x.shape[1]), x.shape[-1])
    for layer in transformer.layers:
        attended, weights = layer.attention(x, mask, positions)
        x = layer.norm1(x + attended)
        first, last = layer.ff[0], layer.ff[3]
        x = layer.norm2(x + last(torch.relu(first(x))))
    return x[0], weights[0]


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_fmit_emissions_follow_the_lattice_equations_tweet_by_tweet(relative):
    """The label scores of the word cells equal Eq. 1-13 written out over each unpadded
    tweet's lattice (``[CLS]``, words, ``[SEP]``, visual cells)."""
    model = tiny("fmit", relative=relative).eval()
    b = grounded(spanned_batch())
    with torch.no_grad():
        emissions = model.emissions(b)
        _, weights = model.interact(b)
        for i, n in enumerate(b["mask"].sum(1).tolist()):
            out, ref_weights = reference_transformer(model.transformer, reference_cells(model, b, i))
            torch.testing.assert_close(emissions[i, :n], model.out(out[1 : n + 1]), **CLOSE)
            v = int(b["visual_mask"][i].sum())
            torch.testing.assert_close(weights[i, :n, :v], ref_weights[1 : n + 1, n + 2 :], **CLOSE)


def test_words_and_visual_cells_share_the_output_layer_w_0():
    """Eq. 1-2: words and visual vectors have their own ReLU projection W_1, W_2 and one
    shared output layer W_0; ``[CLS]`` and ``[SEP]`` are learned cells at 0 and n + 1."""
    model = tiny("fmit").eval()
    b = grounded(spanned_batch())
    with torch.no_grad():
        lattice = model.lattice(b)
        longest = b["mask"].shape[1]
        for i, n in enumerate(b["mask"].sum(1).tolist()):
            v = int(b["visual_mask"][i].sum())
            ref = reference_cells(model, b, i)
            torch.testing.assert_close(lattice["cells"][i, : n + 1], ref["cells"][: n + 1], **CLOSE)
            torch.testing.assert_close(lattice["cells"][i, longest + 1], ref["cells"][n + 1], **CLOSE)
            visual = lattice["cells"][i, longest + 2 : longest + 2 + v]
            torch.testing.assert_close(visual, ref["cells"][n + 2 :], **CLOSE)
            cells = slice(longest + 2, longest + 2 + v)
            assert lattice["heads"][i, cells].tolist() == ref["heads"][n + 2 :].tolist()
            assert lattice["tails"][i, cells].tolist() == ref["tails"][n + 2 :].tolist()
            assert lattice["order"][i, cells].tolist() == list(range(n + 2, n + 2 + v))
    assert model.interaction_phase() == [model.word_in, model.visual_in, model.shared_out, model.transformer]


def test_the_crf_reads_the_word_cells_only():
    """The CRF's emissions are the output layer over the word cells 1..n, not ``[CLS]``,
    ``[SEP]`` or the visual cells."""
    model = tiny("fmit").eval()
    b = grounded(spanned_batch())
    with torch.no_grad():
        out, weights = model.transformer(model.lattice(b))
        longest = b["mask"].shape[1]
        torch.testing.assert_close(model.emissions(b), model.out(out[:, 1 : longest + 1]))
        words, word_visual = model.interact(b)
        torch.testing.assert_close(words, out[:, 1 : longest + 1])
        torch.testing.assert_close(word_visual, weights[:, 1 : longest + 1, longest + 2 :])
        assert model.decode(b) == model.crf.decode(model.emissions(b), b["mask"])
    assert model.attention(b).visual_mask is b["visual_mask"]
    torch.testing.assert_close(model.attention(b).weights, word_visual)


def test_the_loss_is_nll_y_plus_lambda_nll_z():
    """Eq. 15: ``L = nll(Y) + lambda * nll(Z)``, Z the boundary tags of the EBD CRF."""
    model = tiny("fmit", lambda_ebd=0.6).train()
    b = grounded(spanned_batch())
    losses = model.loss(b)
    longest = b["mask"].shape[1]
    mner = model.crf.nll(model.emissions(b), b["labels"], b["mask"])
    text, _ = model.ebd_transformer(model.lattice(b, visual=False))
    ebd = model.ebd_crf.nll(model.ebd_out(text[:, 1 : longest + 1]), b["boundary_tags"], b["mask"])
    torch.testing.assert_close(losses["mner"], mner)
    torch.testing.assert_close(losses["ebd"], ebd)
    torch.testing.assert_close(losses["loss"], mner + 0.6 * ebd)


def test_ebd_sees_no_visual_cell():
    """FMIT's EBD sees no visual cell: its lattice is ``[CLS]``, words, ``[SEP]`` and its
    loss does not change with the image."""
    model = tiny("fmit").train()
    b = grounded(spanned_batch())
    lattice = model.lattice(b, visual=False)
    longest = b["mask"].shape[1]
    assert lattice["cells"].shape[1] == longest + 2
    assert set(lattice) == {"cells", "mask", "heads", "tails", "order"}
    moved = torch.zeros_like(b["visual_positions"])
    other = {**b, "visual": torch.randn_like(b["visual"]) * 3, "visual_positions": moved}
    torch.testing.assert_close(model.loss(b)["ebd"], model.loss(other)["ebd"])
    assert not torch.allclose(model.loss(b)["mner"], model.loss(other)["mner"])
    for i, n in enumerate(b["mask"].sum(1).tolist()):
        ref = reference_cells(model, b, i, visual=False)
        out, _ = reference_transformer(model.ebd_transformer, ref)
        boundaries = model.ebd_out(model.ebd_transformer(lattice)[0][i, 1 : n + 1])
        torch.testing.assert_close(boundaries, model.ebd_out(out[1 : n + 1]), **CLOSE)


def test_the_ebd_loss_has_a_gradient_into_the_shared_word_projection():
    """The EBD loss trains the shared word projection (W_1, W_0) and its own Transformer,
    and not the visual projection."""
    model = tiny("fmit").train()
    b = grounded(spanned_batch())
    model.loss(b)["ebd"].backward()
    for module in (model.word_in, model.shared_out, model.ebd_transformer, model.ebd_out, model.words):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.visual_in.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.transformer.parameters())


def test_ebd_has_its_own_transformer_and_w_r():
    """The EBD Transformer has its own layers and W_r (same structure), and its CRF tags
    the three boundary tags."""
    model = tiny("fmit")
    assert model.ebd_transformer is not model.transformer
    assert model.ebd_transformer.relative is not model.transformer.relative
    assert len(model.ebd_transformer.layers) == len(model.transformer.layers) == FMIT_TINY["layers"]
    assert model.ebd_out.out_features == len(BOUNDARY_TAGS) == 3
    assert model.ebd_crf.crf.num_tags == 3 and model.crf.crf.num_tags == len(TWITTER_LABELS)


def test_relative_positions_are_computed_once_for_all_layers():
    """One W_r for all layers (Eq. 9 has one): the same R feeds every layer."""
    model = tiny("fmit", layers=3).eval()
    b = grounded(spanned_batch())
    seen = []
    hooks = [
        layer.attention.register_forward_hook(lambda _m, args, _o: seen.append(args[2]))
        for layer in model.transformer.layers
    ]
    with torch.no_grad():
        model.interact(b)
    for hook in hooks:
        hook.remove()
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2] and seen[0].shape[-1] == FMIT_TINY["d"]
    assert len(list(model.transformer.relative.parameters())) == 2  # one W_r and its bias


def test_plain_attention_is_scaled_dot_product_over_real_cells():
    """w/o Rel: ``softmax(q k^T / sqrt(d_head))`` per head over the real cells, then W_t."""
    torch.manual_seed(0)
    d, heads = 8, 2
    attention = LatticeAttention(d, heads, 0.0).eval()
    x, mask = torch.randn(1, 4, d), torch.tensor([[True, True, True, False]])
    out, weights = attention(x, mask, None)
    q, k, v = (f(x[0, :3]).view(3, heads, 4) for f in (attention.q, attention.k, attention.v))
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(4)
    probabilities = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(weights[0, :3, :3], probabilities.mean(0))
    assert torch.all(weights[0, :, 3] == 0)
    heads_out = torch.einsum("hij,jhd->ihd", probabilities, v).reshape(3, d)
    torch.testing.assert_close(out[0, :3], attention.out(heads_out))


def test_relative_positions_cover_the_largest_distance():
    """R is defined for the farthest pair of cells too (the table reaches the largest
    head or tail), and is a ReLU (never negative)."""
    torch.manual_seed(0)
    relative = RelativePositions(4)
    heads, tails = torch.tensor([[0, 9]]), torch.tensor([[0, 9]])
    r = relative(heads, tails)
    far = torch.relu(relative.w_r(torch.cat([sinusoid(torch.tensor([float(-9)]), 4)[0] for _ in range(4)])))
    torch.testing.assert_close(r[0, 0, 1], far)
    assert r.shape == (1, 2, 2, 4) and (r >= 0).all()
    empty = relative(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long))
    assert empty.shape == (1, 0, 0, 4)


def test_sinusoid_frequencies_fall_as_10000_to_the_2k_over_d():
    """Eq. 7-8: ``sin(p / 10000^(2k/d))`` on even and ``cos`` on odd dimensions."""
    p = torch.tensor([[2.0, 1000.0]])
    table = sinusoid(p, 6)
    assert table.shape == (1, 2, 6)
    for k in range(3):
        angle = 1000.0 / 10000 ** (2 * k / 6)
        torch.testing.assert_close(table[0, 1, 2 * k], torch.tensor(math.sin(angle)), atol=1e-4, rtol=0)
        torch.testing.assert_close(table[0, 1, 2 * k + 1], torch.tensor(math.cos(angle)), atol=1e-4, rtol=0)


def test_the_model_is_built_as_the_config_says():
    """Widths, depth, heads, feed-forward and dropout of every part are the config's."""
    torch.manual_seed(0)
    config = {**FMIT_TINY, "dropout": 0.3, "heads": 4, "ff": 24, "layers": 3}
    model = build_model("fmit", config, InputDims(2, 12, 10), len(TWITTER_LABELS))
    assert (model.word_in[0].in_features, model.word_in[0].out_features) == (12, 8)
    assert (model.visual_in[0].in_features, model.visual_in[0].out_features) == (10, 8)
    assert model.cls.shape == model.sep.shape == (8,) and model.dropout.p == 0.3
    assert model.cls.abs().max() < 0.2 and model.sep.abs().max() < 0.2  # small random cells
    assert not torch.equal(model.cls, model.sep)
    for transformer in (model.transformer, model.ebd_transformer):
        assert len(transformer.layers) == 3
        layer = transformer.layers[0]
        assert (
            layer.attention.heads == 4
            and layer.attention.d_head == 2
            and layer.attention.k_r.shape == (4, 2, 8)
        )
        assert layer.ff[0].out_features == 24 and layer.ff[2].p == 0.3 and layer.dropout.p == 0.3
        assert layer.attention.dropout.p == 0.3
        assert torch.equal(layer.attention.u, torch.zeros(4, 2))
        assert torch.equal(layer.attention.v_bias, torch.zeros(4, 2))
    assert model.out.out_features == len(TWITTER_LABELS)
    with_shapes = build_model(
        "fmit", {**FMIT_TINY, "shape_dim": 3}, InputDims(2, 12, 10), len(TWITTER_LABELS)
    )
    assert with_shapes.words.dim == 15 and with_shapes.word_in[0].in_features == 15


def test_config_errors_name_the_rule():
    """An impossible width or no visual cell is refused with a message naming the rule."""
    with pytest.raises(ConfigError, match=r"fmit: d \(9\) must be even and a multiple of heads \(3\)"):
        FMITConfig(d=9, heads=3)
    with pytest.raises(ConfigError, match="must be even"):
        FMITConfig(d=7, heads=7)  # a multiple of heads, but odd
    with pytest.raises(ConfigError, match="multiple of heads"):
        FMITConfig(d=8, heads=3)  # even, but no multiple of heads
    with pytest.raises(
        ConfigError, match=r"models\.fmit\.max_visual: 0 is out of range; allowed: at least 1$"
    ):
        model_config("fmit", {"max_visual": 0})
    assert FMITConfig(max_visual=1).max_visual == 1
    with pytest.raises(
        ConfigError, match="^fmit reads visual features: train it with the visual_features cache$"
    ):
        build_model("fmit", FMIT_TINY, InputDims(2, 12), len(TWITTER_LABELS))


def test_without_ebd_the_loss_is_the_label_nll():
    """w/o EBD: ``L = nll(Y)`` and no EBD parts."""
    model = tiny("fmit", ebd=False).train()
    b = grounded(spanned_batch())
    losses = model.loss(b)
    assert set(losses) == {"loss", "mner"}
    torch.testing.assert_close(losses["loss"], model.crf.nll(model.emissions(b), b["labels"], b["mask"]))
    assert model.interaction_inputs(b) == (b,)


def test_the_lattice_is_built_on_the_device_of_the_batch():
    """Every lattice tensor (indices, masks, positions) lives on the batch's device
    (checked on PyTorch's meta device, which refuses to mix with CPU tensors)."""
    model = tiny("fmit", relative=False).to("meta")
    b = grounded(spanned_batch())
    meta = {k: v.to("meta") for k, v in b.items()}
    lattice = model.lattice(meta)
    assert all(t.device.type == "meta" for t in lattice.values())
    assert sinusoid(lattice["order"], 8).device.type == "meta"


def test_fmit_builds_every_tensor_on_the_batchs_device_not_the_default_one():
    """FMIT's lattice, relative positions and outputs follow the batch's device whatever
    torch's default device is (meta here: a tensor built there cannot mix with the batch's)."""
    model = tiny("fmit").eval()
    b = grounded(spanned_batch())
    with torch.no_grad():
        expected = model.emissions(b)
        with torch.device("meta"):
            emissions = model.emissions(b)
            positions = model.transformer.relative(
                b["visual_positions"][..., 0], b["visual_positions"][..., 1]
            )
    assert emissions.device == positions.device == b["mask"].device
    torch.testing.assert_close(emissions, expected)
