import pytest
import torch

from mner.core.config import ConfigError
from mner.data.labels import TWITTER_LABELS, entities
from mner.models import InputDims, build_model, interaction_parameters
from mner.models.gei import span_membership, tag_spans
from tests.models.batches import assert_it_learns, batch

TINY = {"text_hidden": 32, "d_m": 16, "layers": 2, "heads": 2, "dropout": 0.0}
INPUTS = InputDims(text_layers=2, text_dim=12, visual_dim=10)


def gei(**overrides):
    torch.manual_seed(0)
    return build_model("gei", {**TINY, **overrides}, INPUTS, len(TWITTER_LABELS))


def final_tokens(model, b, span_tags):
    tokens, _ = model.encode(b)
    return model.interact(b, tokens, span_tags)[0]


def test_shapes_and_valid_decoding():
    model = gei().eval()
    b = batch()
    paths = model.decode(b)
    assert [len(p) for p in paths] == [5, 3, 4]
    for path in paths:
        labels = [TWITTER_LABELS[i] for i in path]
        assert all(label in TWITTER_LABELS for label in labels)
    tokens, spans = model.encode(b)
    assert tokens.shape == (3, 5, 16) and spans.shape == (3, 5, 3)
    attention = model.attention(b)
    assert attention.weights.shape[0] == 3 and attention.weights.shape[2] == 3
    assert len(attention.spans) == 3
    gold = model.attention(b, b["span_tags"])
    assert gold.spans == [[(0, 3), (4, 5)], [(1, 2)], []] and gold.weights.shape == (3, 2, 3)
    assert model.attention(b, torch.zeros_like(b["span_tags"])) is None  # no entity in the batch


def test_loss_parts_and_it_learns():
    model = gei()
    b = batch()
    losses = model.loss(b)
    assert set(losses) == {"loss", "mner", "sd"}
    torch.testing.assert_close(losses["loss"], 0.5 * losses["mner"] + 0.5 * losses["sd"])
    assert_it_learns(model, b, losses["loss"].item())


@pytest.mark.parametrize("overrides", [{}, {"entity_level_interaction": False}])
def test_tokens_outside_spans_ignore_the_image(overrides):
    model = gei(**overrides).eval()
    b = batch()
    other = {**b, "visual": torch.randn_like(b["visual"]) * 5}
    spans = b["span_tags"]
    a, c = final_tokens(model, b, spans), final_tokens(model, other, spans)
    outside = b["mask"] & (spans == 0)
    inside = spans > 0
    torch.testing.assert_close(a[outside], c[outside])
    assert not torch.allclose(a[inside], c[inside])


def test_without_span_detection_every_token_sees_the_image():
    model = gei(entity_level_interaction=False, span_detection=False).eval()
    b = batch()
    other = {**b, "visual": torch.randn_like(b["visual"]) * 5}
    a, c = final_tokens(model, b, b["span_tags"]), final_tokens(model, other, b["span_tags"])
    outside = b["mask"] & (b["span_tags"] == 0)
    assert not torch.allclose(a[outside], c[outside])


def test_ablations_remove_what_they_name():
    names = {n for n, _ in gei().named_parameters()}
    no_entity = {n for n, _ in gei(entity_level_interaction=False).named_parameters()}
    no_spans = {n for n, _ in gei(entity_level_interaction=False, span_detection=False).named_parameters()}
    assert any(n.startswith("span_crf") for n in names) and any(n.startswith("transformer2") for n in names)
    assert not any(n.startswith(("span_crf", "span_out", "transformer2")) for n in no_spans)
    assert not any("entity_gate" in n for n in no_entity)
    assert "sd" not in gei(entity_level_interaction=False, span_detection=False).loss(batch())
    assert gei(image_region=True).visual_kind == "grid" and gei().visual_kind == "objects"
    with pytest.raises(ConfigError, match="needs entity_level_interaction: false"):
        gei(span_detection=False)
    with pytest.raises(ConfigError, match=r"^gei: d_m \(18\) must be a multiple of heads \(4\)$"):
        gei(d_m=18, heads=4)  # text_hidden 32 is one
    with pytest.raises(ConfigError, match=r"^gei: text_hidden \(33\) must be a multiple of heads \(2\)$"):
        gei(text_hidden=33)


def test_no_entity_batch_blank_image_and_no_objects():
    model = gei().eval()
    b = batch(labels=[["O", "O"], ["O"]], visual_counts=(1, 1))
    assert [len(p) for p in model.decode(b)] == [2, 1]
    model.train()
    assert torch.isfinite(model.loss(b)["loss"])


def test_scheduled_sampling_share():
    model = gei()
    shares = []
    for epoch in range(1, 9):
        model.set_epoch(epoch)
        shares.append(round(model.sampling_share, 3))
    assert shares == [0.0, 0.0, 0.225, 0.45, 0.675, 0.9, 0.9, 0.9]
    model.eval()  # evaluation uses the predicted spans whatever the share
    model.set_epoch(1)
    b = batch()
    _, emissions = model.encode(b)
    predicted = model.graph_spans(b, emissions)
    assert predicted.shape == b["span_tags"].shape


def test_span_helpers():
    assert tag_spans([1, 2, 0, 2, 1]) == [(0, 2), (3, 4), (4, 5)]
    tags = torch.tensor([[1, 2, 0, 1], [0, 0, 0, 0]])
    membership = span_membership(tags, torch.tensor([[True] * 4, [True, True, False, False]]))
    assert membership.shape == (2, 2, 4)
    assert membership[0].tolist() == [[True, True, False, False], [False, False, False, True]]
    assert not membership[1].any()
    assert [(e.start, e.end) for e in entities(["B-X", "I-X", "O", "B-X"])] == tag_spans([1, 2, 0, 1])


def test_interaction_parameters_count_the_object_encoder_and_hgin_layers():
    model = gei()
    expected = sum(p.numel() for m in (model.objects, model.layers) for p in m.parameters())
    assert interaction_parameters(model) == expected > 0
    text_only = build_model("linear-crf", {}, INPUTS, len(TWITTER_LABELS))
    assert interaction_parameters(text_only) is None


def test_span_shared_reads_transformer1():
    own, shared = gei(), gei(span_shared=True)
    assert not any(n.startswith("transformer2") for n, _ in shared.named_parameters())
    for model, reaches in ((own, False), (shared, True)):
        model.zero_grad()
        model.loss(batch())["sd"].backward()
        grad = model.transformer1.self_attn.in_proj_weight.grad
        assert (grad is not None and grad.abs().max() > 0) == reaches
    b = batch()
    losses = shared.loss(b)
    assert set(losses) == {"loss", "mner", "sd"}
    assert_it_learns(shared, b, losses["loss"].item())
