import math

import pytest
import torch

from mner.core.config import ConfigError
from mner.data.labels import BOUNDARY_TAGS, TWITTER_LABELS, entity_tags
from mner.models import InputDims, build_model
from mner.models.fmit import RelativeLatticeAttention, RelativePositions, sinusoid
from tests.models.batches import SENTENCES, assert_it_learns, batch

TINY = {"d": 16, "layers": 2, "heads": 2, "ff": 32, "dropout": 0.0}
INPUTS = InputDims(text_layers=2, text_dim=12, visual_dim=10)


def fmit(**overrides):
    torch.manual_seed(0)
    return build_model("fmit", {**TINY, **overrides}, INPUTS, len(TWITTER_LABELS))


def grounded_batch(**kwargs):
    """The hand-made batch with grounded-object positions: tweet 0's second and third
    visual cells come from the phrases at words 0-1 and 4-4."""
    b = batch(**kwargs)
    n = b["mask"].sum(dim=1)
    b["visual_positions"][:, :, 1] = (n - 1)[:, None]  # whole image: the whole tweet
    b["visual_positions"][0, 1:3] = torch.tensor([[0, 1], [4, 4]])
    return b


@pytest.mark.parametrize("layers", [1, 3, 6, 12])
def test_shapes_for_each_depth(layers):
    model = fmit(layers=layers).eval()
    b = grounded_batch()
    assert len(model.transformer.layers) == layers and len(model.ebd_transformer.layers) == layers
    words, weights = model.interact(b)
    assert words.shape == (3, 5, 16) and weights.shape == (3, 5, 3)
    paths = model.decode(b)
    assert [len(p) for p in paths] == [5, 3, 4]
    attention = model.attention(b).weights
    real = b["visual_mask"][:, None, :].expand_as(attention)
    assert torch.all(attention[~real] == 0) and torch.all(attention[real] > 0)


def test_lattice_positions():
    model = fmit().eval()
    b = grounded_batch()
    lattice = model.lattice(b)
    # tweet 1 has 3 words: [CLS] 0, words 1-3, padding, [SEP] 4, then its visual cell
    heads, tails, mask = lattice["heads"][1], lattice["tails"][1], lattice["mask"][1]
    assert heads[:4].tolist() == [0, 1, 2, 3] and heads[6].item() == 4 and tails[6].item() == 4
    assert mask.tolist() == [True] * 4 + [False, False] + [True] + [True, False, False]
    assert (heads[7].item(), tails[7].item()) == (1, 3)  # whole image: first and last word
    assert lattice["heads"][0, 8:10].tolist() == [1, 5] and lattice["tails"][0, 8:10].tolist() == [2, 5]
    assert lattice["order"][1, 7].item() == 5  # [CLS] w w w [SEP] then the image


def test_relative_encoding_equals_the_materialised_equations():
    torch.manual_seed(1)
    d, heads = 8, 2
    relative, attention = RelativePositions(d), RelativeLatticeAttention(d, heads, 0.0)
    with torch.no_grad():
        attention.u.normal_(), attention.v_bias.normal_()
    head = torch.tensor([[0, 1, 2, 3, 1, 2]])
    tail = torch.tensor([[0, 1, 2, 3, 2, 3]])
    x, mask = torch.randn(1, 6, d), torch.tensor([[True] * 5 + [False]])
    r = relative(head, tail)
    out, weights = attention(x, mask, r)

    def p(distance):  # Eq. 7-8 written out
        k = torch.arange(d)
        angle = distance / 10000 ** ((k - k % 2) / d)
        return torch.where(k % 2 == 0, torch.sin(angle), torch.cos(angle))

    direct_r = torch.zeros(6, 6, d)
    for i in range(6):
        for j in range(6):
            distances = [head[0, i] - head[0, j], head[0, i] - tail[0, j], tail[0, i] - head[0, j]]
            distances.append(tail[0, i] - tail[0, j])
            concatenated = torch.cat([p(float(v)) for v in distances])  # [4d], Eq. 9
            direct_r[i, j] = torch.relu(relative.w_r(concatenated))
    torch.testing.assert_close(r[0], direct_r, atol=1e-5, rtol=1e-5)

    d_head = d // heads
    q, k, v = (f(x[0]).view(6, heads, d_head) for f in (attention.q, attention.k, attention.v))
    scores = torch.zeros(heads, 6, 6)
    for h in range(heads):
        k_r = attention.k_r[h]  # [d_head, d]
        for i in range(6):
            for j in range(6):
                scores[h, i, j] = (  # Eq. 10
                    q[i, h] @ k[j, h]
                    + q[i, h] @ (k_r @ direct_r[i, j])
                    + attention.u[h] @ k[j, h]
                    + attention.v_bias[h] @ (k_r @ direct_r[i, j])
                )
    scores = scores.masked_fill(~mask[0], float("-inf"))
    probabilities = torch.softmax(scores / math.sqrt(d_head), dim=-1)  # Eq. 11
    heads_out = torch.einsum("hij,jhd->ihd", probabilities, v).reshape(6, d)
    torch.testing.assert_close(weights[0], probabilities.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0], attention.out(heads_out), atol=1e-5, rtol=1e-5)  # Eq. 12


@pytest.mark.parametrize("relative", [True, False])
def test_padding_cells_change_nothing(relative):
    model = fmit(relative=relative).eval()
    alone = batch(labels=[SENTENCES[1]], visual_counts=(2,))
    alone["visual_positions"][0] = torch.tensor([[0, 2], [1, 2]])  # the image, a phrase
    padded = batch(labels=[SENTENCES[1], ["O"] * 9], visual_counts=(2, 7))
    for name in ("features", "shapes", "visual", "visual_positions"):
        padded[name][0, : alone[name].shape[1]] = alone[name][0]
    a, a_weights = model.interact(alone)
    b, b_weights = model.interact(padded)
    torch.testing.assert_close(a[0], b[0, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a_weights[0], b_weights[0, :3, :2], atol=1e-5, rtol=1e-5)
    assert model.decode(alone)[0] == model.decode(padded)[0]


def test_boundary_labels():
    def boundaries(labels):
        return [BOUNDARY_TAGS[i] for i in entity_tags(labels)[1].tolist()]

    assert boundaries(["B-PER", "I-PER", "I-PER", "O", "B-LOC", "O"]) == ["B", "O", "E", "O", "B", "O"]
    assert boundaries(["B-ORG", "I-ORG", "B-ORG"]) == ["B", "E", "B"]  # a one-word entity is its head
    assert boundaries(["O", "I-MISC", "I-MISC"]) == ["O", "B", "E"]  # chunked as conlleval does
    assert boundaries(["B-PER", "I-LOC"]) == ["B", "B"]  # a type switch starts an entity


def test_loss_parts_and_it_learns():
    model = fmit()
    b = grounded_batch()
    losses = model.loss(b)
    assert set(losses) == {"loss", "mner", "ebd"}
    torch.testing.assert_close(losses["loss"], losses["mner"] + 0.25 * losses["ebd"])
    assert_it_learns(model, b, losses["loss"].item())


def test_ablations_do_what_they_name():
    names = {n for n, _ in fmit().named_parameters()}
    assert {"transformer.relative.w_r.weight", "transformer.layers.0.attention.k_r"} <= names
    assert any(n.startswith("ebd_") for n in names)
    assert fmit().visual_kind == "grounded" and fmit(objects=False).visual_kind == "grid"

    no_rel = fmit(relative=False).eval()
    relative_names = ("k_r", "relative", "v_bias", "attention.u")
    assert not any(key in n for n, _ in no_rel.named_parameters() for key in relative_names)
    b = grounded_batch()
    moved = {**b, "visual_positions": torch.zeros_like(b["visual_positions"])}
    torch.testing.assert_close(no_rel.interact(b)[0], no_rel.interact(moved)[0])  # no head/tail scheme
    with_rel = fmit().eval()
    assert not torch.allclose(with_rel.interact(b)[0], with_rel.interact(moved)[0])

    no_ebd = fmit(ebd=False)
    assert not any(n.startswith("ebd_") for n, _ in no_ebd.named_parameters())
    losses = no_ebd.loss(b)
    assert "ebd" not in losses and torch.equal(losses["loss"], losses["mner"])


def test_image_only_many_cells_and_no_entity():
    model = fmit().eval()
    b = batch(labels=[["O", "O"], ["O"], ["B-PER"]], visual_counts=(1, 1, 30))
    assert [len(p) for p in model.decode(b)] == [2, 1, 1]
    model.train()
    assert torch.isfinite(model.loss(b)["loss"])
    with pytest.raises(ConfigError, match="multiple of heads"):
        fmit(d=18, heads=4)


def test_sinusoid_is_eq_7_8():
    table = sinusoid(torch.tensor([3]), 4)[0]
    expected = [math.sin(3), math.cos(3), math.sin(3 / 100), math.cos(3 / 100)]
    torch.testing.assert_close(table, torch.tensor(expected))


def auxiliary_gradient(model, names, loss_key):
    """The largest gradient the auxiliary loss ``loss_key`` alone puts on the parameters
    whose names start with one of ``names``."""
    model.zero_grad()
    model.loss(grounded_batch())[loss_key].backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith(names) and p.grad is not None]
    return max((g.abs().max().item() for g in grads), default=0.0)


def test_ebd_shared_runs_through_the_lattice_transformer():
    own, shared = fmit(), fmit(ebd_shared=True)
    assert not any(n.startswith("ebd_transformer") for n, _ in shared.named_parameters())
    assert any(n.startswith("ebd_transformer") for n, _ in own.named_parameters())
    assert auxiliary_gradient(own, ("transformer.",), "ebd") == 0.0
    assert auxiliary_gradient(shared, ("transformer.",), "ebd") > 0.0
    b = grounded_batch()
    losses = shared.loss(b)
    torch.testing.assert_close(losses["loss"], losses["mner"] + 0.25 * losses["ebd"])
    assert_it_learns(shared, b, losses["loss"].item())
