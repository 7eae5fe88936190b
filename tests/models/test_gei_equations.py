"""GEI's equations (Zhao et al., 2022) and the choices its docstring states, each pinned on
a tiny model with random parameters against a tweet-by-tweet reference written from the
paper."""

from __future__ import annotations

import pytest
import torch

from mner.core.config import ConfigError
from mner.data.labels import SPAN_TAGS, TWITTER_LABELS
from mner.models import InputDims, build_model
from mner.models.gei import Gate, GEIConfig, SelfAttention, max_pool, span_membership, tag_spans
from mner.models.layers import FeedForward, cross_attention
from tests.models.equation_batches import (
    GEI_TINY,
    multihead,
    padded,
    span_emissions_for,
    spanned_batch,
    tiny,
)

CLOSE = {"atol": 1e-4, "rtol": 1e-4}


def gate(module: Gate, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9-10 written out: ``a * x + (1 - a) * y`` with ``a = sigmoid(W1 x + W2 y)``."""
    a = torch.sigmoid(x @ module.w1.weight.T + module.w1.bias + y @ module.w2.weight.T)
    return a * x + (1 - a) * y


def reference_layer(layer, h_t, h_v, text, spans, mode):
    """One HGIN layer over one tweet (unpadded): Eq. 7-12, feed-forward, and the text-only
    stream of the tokens outside every span. Returns tokens, objects, text stream and the
    entity -> object attention ``[E, V]`` (None without entity nodes)."""
    ones_t, ones_v = torch.ones(1, len(h_t), dtype=torch.bool), torch.ones(1, len(h_v), dtype=torch.bool)
    d_t = layer.token_attention(h_t[None], ones_t)[0]  # Eq. 7
    d_v = layer.object_attention(h_v[None], ones_v)[0]
    in_span = torch.zeros(len(h_t), dtype=torch.bool)
    for start, end in spans:
        in_span[start:end] = True
    if mode == "all":
        in_span[:] = True
    m_t, m_v, weights = d_t.clone(), d_v, None
    if mode == "entity" and spans:
        h_e = torch.stack([h_t[start:end].max(dim=0).values for start, end in spans])  # max-pool
        r_e, weights = multihead(layer.to_objects, h_e, d_v)  # Eq. 8
        m_e = gate(layer.entity_gate, r_e, h_e)  # Eq. 9-10
        r_v, _ = multihead(layer.from_objects, d_v, h_e)  # object -> entity
        m_v = gate(layer.object_gate, r_v, d_v)
        for j, (start, end) in enumerate(spans):  # Eq. 11-12: each entity into its own tokens
            m_t[start:end] = gate(layer.token_gate, m_e[j].expand(end - start, -1), d_t[start:end])
    elif mode != "entity" and in_span.any():
        r_t, _ = multihead(layer.to_objects, d_t, d_v)
        m_t = torch.where(in_span[:, None], gate(layer.token_gate, r_t, d_t), d_t)
        r_v, _ = multihead(layer.from_objects, d_v, d_t[in_span])
        m_v = gate(layer.object_gate, r_v, d_v)
    new_t = layer.token_ff(m_t[None])[0]
    if mode != "all":
        text = layer.token_ff(layer.token_attention(text[None], ones_t))[0]
        new_t = torch.where(in_span[:, None], new_t, text)
    return new_t, layer.object_ff(m_v[None])[0], text, weights


def reference_gei(model, b: dict, span_tags: torch.Tensor) -> tuple[list, list, list]:
    """Per tweet: the span emissions, the final token nodes and the last layer's entity ->
    object attention, from the paper's equations over the unpadded tweet."""
    c = model.config
    mode = "entity" if c.entity_level_interaction else ("token" if c.span_detection else "all")
    spans_out, tokens_out, attention_out = [], [], []
    for i in range(len(b["mask"])):
        n, v = int(b["mask"][i].sum()), int(b["visual_mask"][i].sum())
        one = {"features": b["features"][i : i + 1, :n], "shapes": b["shapes"][i : i + 1, :n]}
        words = model.input(model.words(one))
        h_t = model.to_multimodal(model.transformer1(words))[0]  # token nodes
        if c.span_detection:
            spans_out.append(model.span_out(model.transformer2(words))[0])
        linear = model.objects[0]
        h_v = torch.relu(b["visual"][i, :v] @ linear.weight.T + linear.bias)  # Eq. 6
        spans = tag_spans(span_tags[i, :n].tolist())
        text, weights = h_t, None
        for layer in model.layers:
            h_t, h_v, text, weights = reference_layer(layer, h_t, h_v, text, spans, mode)
        tokens_out.append(h_t)
        attention_out.append(weights)
    return spans_out, tokens_out, attention_out


def assert_matches_reference(model, b: dict, span_tags: torch.Tensor) -> None:
    tokens, span_emissions = model.encode(b)
    final, attentions = model.interact(b, tokens, span_tags)
    spans_ref, tokens_ref, attention_ref = reference_gei(model, b, span_tags)
    for i, n in enumerate(b["mask"].sum(1).tolist()):
        torch.testing.assert_close(final[i, :n], tokens_ref[i], **CLOSE)
        if spans_ref:
            torch.testing.assert_close(span_emissions[i, :n], spans_ref[i], **CLOSE)
        if attention_ref[i] is not None:
            e, v = attention_ref[i].shape
            torch.testing.assert_close(attentions[-1][i, :e, :v], attention_ref[i], **CLOSE)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"entity_level_interaction": False}, {"entity_level_interaction": False, "span_detection": False}],
    ids=["entity", "token", "all"],
)
def test_hgin_layers_follow_eq_6_to_12_tweet_by_tweet(overrides):
    """The HGIN over the gold spans equals Eq. 6-12 written out for each unpadded tweet
    (object encoder, self-attention, gated cross-attention, entity -> own tokens fusion)."""
    model = tiny("gei", **overrides).eval()
    b = spanned_batch()
    with torch.no_grad():
        assert_matches_reference(model, b, b["span_tags"])


def test_a_batch_with_a_single_entity_still_interacts():
    """One entity in the whole batch is an entity node like any other (the no-entity
    shortcut is for a batch with none)."""
    model = tiny("gei").eval()
    b = spanned_batch(labels=[["O", "B-PER", "O"], ["O", "O"]], visual_counts=(2, 3))
    with torch.no_grad():
        assert_matches_reference(model, b, b["span_tags"])


def test_a_batch_without_entities_leaves_every_token_text_only():
    """No span in the batch: the final token nodes are the text-only stream, and the
    graph has no entity node."""
    model = tiny("gei").eval()
    b = spanned_batch(labels=[["O", "O", "O"], ["O", "O"]], visual_counts=(2, 3))
    other = {**b, "visual": torch.randn_like(b["visual"])}
    with torch.no_grad():
        tokens, _ = model.encode(b)
        final, attentions = model.interact(b, tokens, b["span_tags"])
        torch.testing.assert_close(final, model.interact(other, tokens, b["span_tags"])[0])
        assert_matches_reference(model, b, b["span_tags"])
    assert all(a is None or a.shape[1] == 0 for a in attentions)
    assert span_membership(b["span_tags"], b["mask"]).shape == (2, 0, 3)


def test_without_entity_nodes_the_layers_report_no_entity_attention():
    """-entity-level interaction and -span detection have no entity nodes, so no entity ->
    object attention."""
    for overrides in (
        {"entity_level_interaction": False},
        {"entity_level_interaction": False, "span_detection": False},
    ):
        model = tiny("gei", **overrides).eval()
        b = spanned_batch()
        with torch.no_grad():
            tokens, _ = model.encode(b)
            _, attentions = model.interact(b, tokens, b["span_tags"])
        assert attentions == [None] * GEI_TINY["layers"]


def test_an_empty_batch_has_an_empty_membership():
    """No tweet, no entity: the membership of an empty batch is empty."""
    membership = span_membership(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.bool))
    assert membership.shape == (0, 0, 3)


def test_graph_spans_are_built_on_the_batchs_device_not_the_default_one():
    """The span tags of the graph (predicted, or drawn by scheduled sampling) live on the
    batch's device whatever torch's default device is (meta here: a tensor built there
    cannot mix with the batch's)."""
    model = tiny("gei", seed=1).train()
    model.sampling_share = 0.5
    b = spanned_batch()
    with torch.no_grad():
        _, span_emissions = model.encode(b)
        with torch.device("meta"):
            drawn = model.graph_spans(b, span_emissions)
            model.eval()
            predicted = model.graph_spans(b, span_emissions)
    assert drawn.device == predicted.device == b["mask"].device
    assert predicted.any()


def test_evaluation_builds_the_graph_from_predicted_spans_never_the_gold_ones():
    """GEI at evaluation builds its graph from the predicted spans, never the gold ones:
    changing the gold span tags changes nothing in the emissions."""
    model = tiny("gei", seed=1).eval()  # a seed whose untrained model predicts spans
    b = spanned_batch()
    with torch.no_grad():
        _, span_emissions = model.encode(b)
        predicted = padded(model.span_crf.decode(span_emissions, b["mask"]), b["span_tags"])
        assert predicted.any() and not torch.equal(predicted, b["span_tags"])  # the test means something
        torch.testing.assert_close(model.graph_spans(b, span_emissions), predicted, rtol=0, atol=0)
        model.sampling_share = 0.0  # whatever the schedule says
        torch.testing.assert_close(model.graph_spans(b, span_emissions), predicted, rtol=0, atol=0)
        gold_swapped = {**b, "span_tags": torch.where(b["mask"], 2 - b["span_tags"].clamp(max=2), 0)}
        torch.testing.assert_close(model.emissions(b), model.emissions(gold_swapped))
        tokens, _ = model.encode(b)
        expected = model.out(model.interact(b, tokens, predicted)[0])
        torch.testing.assert_close(model.emissions(b), expected)
        assert model.decode(b) == model.crf.decode(expected, b["mask"])


def test_interaction_inputs_are_the_tokens_and_the_graph_spans():
    """``interact(*interaction_inputs(batch))`` is the interaction phase of ``emissions``."""
    model = tiny("gei", seed=1).eval()
    b = spanned_batch()
    with torch.no_grad():
        inputs = model.interaction_inputs(b)
        assert inputs[0] is b and inputs[2].any()  # over the predicted spans
        final, _ = model.interact(*inputs)
        torch.testing.assert_close(model.out(final), model.emissions(b))


@pytest.mark.parametrize(("share", "expected"), [(0.0, "gold"), (1.0, "predicted")])
def test_scheduled_sampling_uses_predicted_spans_with_the_share_probability(share, expected):
    """In training, a tweet's graph uses its predicted spans with probability
    ``sampling_share`` and its gold spans otherwise."""
    model = tiny("gei").train()
    b = spanned_batch()
    model.sampling_share = share
    every_b = torch.where(b["mask"], 1, 0)  # emissions that predict a one-word entity per word
    chosen = model.graph_spans(b, span_emissions_for(every_b))
    assert torch.equal(chosen, every_b if expected == "predicted" else b["span_tags"])


def test_scheduled_sampling_share_is_the_fraction_of_tweets_with_predicted_spans():
    """With ``sampling_share`` 0.3, about 30% of a large batch's tweets take their
    predicted spans, the others their gold spans, whole tweet by whole tweet."""
    model = tiny("gei").train()
    b = spanned_batch(labels=[["O", "O"]] * 400, visual_counts=[1] * 400)
    model.sampling_share = 0.3
    torch.manual_seed(0)
    chosen = model.graph_spans(b, span_emissions_for(torch.ones_like(b["span_tags"])))
    assert set(chosen.sum(1).tolist()) <= {0, 2}
    assert 0.22 < (chosen.sum(1) == 2).float().mean().item() < 0.38


@pytest.mark.parametrize(
    ("schedule", "shares"),
    [
        ({"sampling_start": 2, "sampling_end": 4, "sampling_max": 0.8}, [0.0, 0.0, 0.4, 0.8, 0.8]),
        ({"sampling_start": 3, "sampling_end": 3, "sampling_max": 0.6}, [0.0, 0.0, 0.0, 0.6, 0.6]),
    ],
)
def test_the_sampling_share_rises_linearly_from_start_to_end(schedule, shares):
    """The share of predicted spans is 0 up to ``sampling_start`` and rises linearly to
    ``sampling_max`` at ``sampling_end`` (a schedule with start == end jumps)."""
    model = tiny("gei", **schedule)
    got = []
    for epoch in range(1, 6):
        model.set_epoch(epoch)
        got.append(model.sampling_share)
    assert got == pytest.approx(shares)
    assert GEIConfig().sampling_start == 2 and GEIConfig().sampling_end == 6  # the paper's epochs
    assert GEIConfig().sampling_max == 0.9


def test_the_loss_is_lambda_sd_times_l_sd_plus_lambda_mner_times_l_mner():
    """``L = lambda_sd L_sd + lambda_mner L_mner``: L_sd the span CRF's NLL of the gold span
    tags, L_mner the label CRF's NLL over the graph of the gold spans (share 0)."""
    model = tiny("gei", lambda_sd=0.3, lambda_mner=0.7).train()
    b = spanned_batch()
    losses = model.loss(b)
    tokens, span_emissions = model.encode(b)
    mner = model.crf.nll(model.out(model.interact(b, tokens, b["span_tags"])[0]), b["labels"], b["mask"])
    sd = model.span_crf.nll(span_emissions, b["span_tags"], b["mask"])
    torch.testing.assert_close(losses["mner"], mner)
    torch.testing.assert_close(losses["sd"], sd)
    torch.testing.assert_close(losses["loss"], 0.3 * sd + 0.7 * mner)


def test_without_span_detection_the_loss_is_lambda_mner_times_l_mner():
    """-span detection: no L_sd term at all."""
    model = tiny("gei", entity_level_interaction=False, span_detection=False, lambda_mner=0.7).train()
    b = spanned_batch()
    losses = model.loss(b)
    assert set(losses) == {"loss", "mner"}
    torch.testing.assert_close(losses["loss"], 0.7 * losses["mner"])
    untyped = model.graph_spans(b, None)
    assert untyped.dtype == torch.long and torch.equal(untyped, torch.zeros_like(b["span_tags"]))


def test_the_gate_is_a_x_plus_1_minus_a_y():
    """The gate is ``a*x + (1-a)*y`` with ``a = sigmoid(W1 x + W2 y)``, one bias."""
    torch.manual_seed(0)
    module = Gate(6)
    with torch.no_grad():
        module.w1.bias.normal_()
    x, y = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    torch.testing.assert_close(module(x, y), gate(module, x, y))
    assert module.w2.bias is None and module.w1.in_features == module.w2.in_features == 6


def test_max_pool_takes_each_spans_maximum_and_zero_for_no_span():
    """An entity node is the element-wise max of its span's tokens (negative values kept);
    an entity slot without tokens is zero."""
    tokens = torch.tensor([[[-1.0, 5.0], [-3.0, -2.0], [4.0, -7.0]]])  # [1, 3, 2]
    membership = torch.tensor([[[True, True, False], [False, True, False], [False, False, False]]])
    pooled = max_pool(tokens, membership)
    assert pooled.tolist() == [[[-1.0, 5.0], [-3.0, -2.0], [0.0, 0.0]]]


def test_cross_attention_masks_keys_and_zeroes_rows_without_keys():
    """Cross-attention reads only the real keys; a tweet with no key gets zeros, not NaN."""
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(4, 2, batch_first=True)
    queries, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    key_mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    out, weights = cross_attention(attention, queries, keys, key_mask)
    alone, alone_weights = multihead(attention, queries[0], keys[0, :2])
    torch.testing.assert_close(out[0], alone)
    torch.testing.assert_close(weights[0, :, :2], alone_weights)
    assert torch.all(weights[0, :, 2:] == 0)
    assert torch.all(out[1] == 0) and torch.all(weights[1] == 0)
    assert not key_mask[1].any()  # the caller's mask is left alone


def test_self_attention_is_residual_then_layer_norm_over_real_cells():
    """Eq. 7's multi-head self-attention: ``LayerNorm(x + MultiHead(x, x, x))`` over the
    real cells only."""
    torch.manual_seed(0)
    module = SelfAttention(4, 2, 0.0).eval()
    x = torch.randn(1, 4, 4)
    mask = torch.tensor([[True, True, True, False]])
    attended, _ = multihead(module.attention, x[0, :3], x[0, :3])
    torch.testing.assert_close(module(x, mask)[0, :3], module.norm(x[0, :3] + attended))


def test_feed_forward_is_4d_wide_gelu_residual_then_layer_norm():
    """The feed-forward: ``LayerNorm(x + W2 GELU(W1 x))``, 4 * d_m wide."""
    torch.manual_seed(0)
    module = FeedForward(4, 0.0).eval()
    first, last = module.net[0], module.net[3]
    assert (first.in_features, first.out_features, last.out_features) == (4, 16, 4)
    x = torch.randn(2, 4)
    expected = module.norm(x + last(torch.nn.functional.gelu(first(x))))
    torch.testing.assert_close(module(x), expected)


def test_object_encoder_is_relu_of_an_affine_map_into_d_m():
    """Eq. 6: ``ReLU(W_v V + b_v)`` of each visual vector, into the d_m space."""
    model = tiny("gei")
    visual = torch.randn(2, 3, 10)
    linear = model.objects[0]
    assert (linear.in_features, linear.out_features) == (10, GEI_TINY["d_m"])
    torch.testing.assert_close(model.objects(visual), torch.relu(visual @ linear.weight.T + linear.bias))
    assert (model.objects(visual) == 0).any()  # the ReLU clips


def test_the_model_is_built_as_the_config_says():
    """Widths, depth, heads and dropout of every part are the config's."""
    config = {**GEI_TINY, "dropout": 0.3, "layers": 3, "heads": 4}
    torch.manual_seed(0)
    model = build_model("gei", config, InputDims(2, 12, 10), len(TWITTER_LABELS))
    assert len(model.layers) == 3
    assert model.input[1].in_features == 12 and model.input[1].out_features == 16
    assert model.input[0].p == 0.3
    assert (model.to_multimodal.in_features, model.to_multimodal.out_features) == (16, 8)
    for transformer in (model.transformer1, model.transformer2):
        assert transformer.self_attn.num_heads == 4 and transformer.linear1.out_features == 64
        assert transformer.dropout.p == 0.3 and transformer.self_attn.batch_first
    assert model.span_out.out_features == len(SPAN_TAGS) == 3
    assert model.out.in_features == 8 and model.out.out_features == len(TWITTER_LABELS)
    layer = model.layers[0]
    for attention in (layer.to_objects, layer.from_objects, layer.token_attention.attention):
        assert attention.num_heads == 4 and attention.dropout == 0.3 and attention.batch_first
    assert layer.token_attention.dropout.p == 0.3 and layer.token_ff.dropout.p == 0.3
    assert layer.object_ff.net[2].p == 0.3 and layer.object_attention.attention.embed_dim == 8
    assert model.interaction_phase() == [model.objects, model.layers]
    assert model.sampling_share == 0.0
    with_shapes = build_model("gei", {**GEI_TINY, "shape_dim": 3}, InputDims(2, 12, 10), len(TWITTER_LABELS))
    assert with_shapes.words.dim == 15 and with_shapes.input[1].in_features == 15


def test_gei_refuses_to_run_without_visual_features():
    """GEI without the visual_features cache is a config error that says so."""
    with pytest.raises(
        ConfigError, match="^gei reads visual features: train it with the visual_features cache$"
    ):
        build_model("gei", GEI_TINY, InputDims(2, 12), len(TWITTER_LABELS))
    with pytest.raises(
        ConfigError, match="^gei: span_detection: false .*needs entity_level_interaction: false$"
    ):
        GEIConfig(span_detection=False)


def test_attention_reports_the_spans_and_the_last_layers_entity_object_weights():
    """For Figure 4: the spans (gold when given, predicted otherwise) and the last HGIN
    layer's entity -> object attention."""
    model = tiny("gei", seed=1).eval()
    b = spanned_batch()
    given = model.attention(b, b["span_tags"])
    assert given.spans == [[(0, 3), (4, 5)], [(1, 2)], []]
    _, _, reference = reference_gei(model, b, b["span_tags"])
    torch.testing.assert_close(given.weights[0, :2, :3], reference[0], **CLOSE)
    with torch.no_grad():
        _, span_emissions = model.encode(b)
        predicted = model.graph_spans(b, span_emissions)
    own = model.attention(b)
    n = b["mask"].sum(1).tolist()
    assert own.spans == [tag_spans(predicted[i, : n[i]].tolist()) for i in range(3)]


def test_tag_spans_chunk_as_conlleval_and_membership_marks_each_spans_tokens():
    """Untyped tags chunk like conlleval (an I after O starts a span), and only the real
    words of a tweet count."""
    assert tag_spans([2, 2, 0, 1, 1, 2]) == [(0, 2), (3, 4), (4, 6)]
    assert tag_spans([]) == []
    tags = torch.tensor([[0, 1, 2, 0, 1], [1, 1, 0, 0, 0]])
    mask = torch.tensor([[True] * 5, [True, False, False, False, False]])
    membership = span_membership(tags, mask)
    assert membership.dtype == torch.bool and membership.shape == (2, 2, 5)
    assert membership[0].long().tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert membership[1].long().tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def test_at_share_one_the_training_loss_follows_the_predicted_spans():
    """Scheduled sampling reaches the loss: at share 1 the MNER loss is that of a graph
    over the spans the model predicts, not over the gold ones."""
    model = tiny("gei").train()
    b = spanned_batch()
    with torch.no_grad():
        _, span_emissions = model.encode(b)
        predicted = torch.zeros_like(b["span_tags"])
        for row, tags in enumerate(model.span_crf.decode(span_emissions, b["mask"])):
            predicted[row, : len(tags)] = torch.tensor(tags)
    assert not torch.equal(predicted, b["span_tags"])  # else the test could not tell them apart
    model.sampling_share = 1.0
    sampled = model.loss(b)["mner"]
    model.sampling_share = 0.0
    over_gold = model.loss(b)["mner"]
    over_predicted = model.loss({**b, "span_tags": predicted})["mner"]
    torch.testing.assert_close(sampled, over_predicted)
    assert not torch.isclose(sampled, over_gold)


def test_the_span_tags_that_build_the_graph_keep_to_bio_under_constrained_decoding():
    """GEI's span CRF decodes as the model's ``decode`` says: constrained, no ``I`` opens a
    span (whatever its transitions and emissions); free, the same weights do emit some."""
    invalid = {}
    for decode in ("constrained", "free"):
        model = tiny("gei", seed=4, decode=decode).eval()
        with torch.no_grad():
            for parameter in model.span_crf.parameters():
                parameter.normal_(0.0, 5.0)
        torch.manual_seed(5)
        mask = torch.arange(9)[None] < torch.randint(1, 10, (64, 1))
        batch = {"mask": mask, "span_tags": torch.zeros(64, 9, dtype=torch.long)}
        tags = model.graph_spans(batch, torch.randn(64, 9, len(SPAN_TAGS)) * 5).tolist()
        previous = [["O", *(SPAN_TAGS[t] for t in row)] for row in tags]
        invalid[decode] = sum(
            tag == "I" and before == "O"
            for row, n in zip(previous, mask.sum(1).tolist())
            for before, tag in zip(row[:n], row[1 : n + 1])
        )
    assert invalid["constrained"] == 0 and invalid["free"] > 0


def test_cross_attention_over_a_batch_without_any_key():
    """A batch where no tweet has a key at all (no region anywhere): zero outputs and an
    empty weight matrix per word, ``[B, T, 0]``."""
    attention = torch.nn.MultiheadAttention(4, 2, batch_first=True)
    queries = torch.randn(2, 3, 4)
    out, weights = cross_attention(
        attention, queries, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)
    )
    assert torch.all(out == 0) and out.shape == queries.shape
    assert weights.shape == (2, 3, 0)
