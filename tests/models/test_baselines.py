import pytest
import torch

from mner.cached.dataset import collate
from mner.data.labels import TWITTER_LABELS, WORD_SHAPES, word_shape
from mner.models import MODELS, InputDims, build_model, load_checkpoint, save_checkpoint
from mner.models.layers import ScalarMix

BASELINES = ["linear-softmax", "linear-crf", "transformer-crf"]
TINY = {
    "transformer-crf": {"hidden": 32, "layers": 2, "heads": 2, "ff": 64, "shape_dim": 4},
    "linear-crf": {"shape_dim": 3},
}


def batch(lengths=(5, 3, 1), layers=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = [
        {
            "index": i,
            "features": torch.randn(n, layers, dim, generator=g).half(),
            "labels": torch.randint(0, len(TWITTER_LABELS), (n,), generator=g),
            "shapes": torch.randint(0, len(WORD_SHAPES), (n,), generator=g),
            "span_tags": torch.randint(0, 3, (n,), generator=g),
            "boundary_tags": torch.randint(0, 3, (n,), generator=g),
        }
        for i, n in enumerate(lengths)
    ]
    return collate(items)


def test_collate_pads_right_with_a_mask():
    b = batch()
    assert b["features"].shape == (3, 5, 2, 16) and b["features"].dtype == torch.float32
    assert b["mask"].tolist()[2] == [True, False, False, False, False]
    assert b["labels"][2, 1:].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("name", BASELINES)
def test_shapes_decode_and_loss_decreases(name):
    torch.manual_seed(0)
    model = build_model(name, TINY.get(name, {}), InputDims(2, 16), len(TWITTER_LABELS))
    b = batch()
    paths = model.decode(b)
    assert [len(p) for p in paths] == [5, 3, 1]
    assert all(0 <= t < len(TWITTER_LABELS) for p in paths for t in p)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(b)["loss"].item()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(b)["loss"].backward()
        optimizer.step()
    assert model.loss(b)["loss"].item() < 0.5 * first


@pytest.mark.parametrize("name", BASELINES)
def test_padding_does_not_change_real_outputs(name):
    torch.manual_seed(0)
    model = build_model(name, TINY.get(name, {}), InputDims(2, 16), len(TWITTER_LABELS)).eval()
    b = batch()
    alone = {k: v[2:3, :1] if k != "index" else v[2:3] for k, v in b.items()}
    assert model.decode(b)[2] == model.decode(alone)[0]


@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_round_trip(name, tmp_path):
    model = build_model(name, TINY.get(name, {}), InputDims(2, 16), len(TWITTER_LABELS)).eval()
    save_checkpoint(tmp_path, name, model, InputDims(2, 16), TWITTER_LABELS, dataset="d", seed=3)
    loaded, record = load_checkpoint(tmp_path)
    assert type(loaded) is MODELS[name][1] and loaded.config == model.config
    assert record["labels"] == list(TWITTER_LABELS) and record["seed"] == 3
    b = batch()
    assert loaded.decode(b) == model.decode(b)
    assert (tmp_path / "model.safetensors").is_file()


def test_scalar_mix_is_a_softmax_weighted_sum():
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 100.0]))
        mix.gamma.fill_(2.0)
    layers = torch.randn(2, 4, 3, 8)
    torch.testing.assert_close(mix(layers), 2 * layers[:, :, 2])


@pytest.mark.parametrize(
    ("token", "shape"),
    [
        ("paris", "lower"),
        ("Paris", "title"),
        ("NASA", "upper"),
        ("iPhone", "mixed"),
        ("2015", "digits"),
        (":)", "punct"),
        ("@JayKenMinaj", "mention"),
        ("#Oscars", "hashtag"),
        ("http://t.co/Z3", "url"),
        ("#", "punct"),
        ("RT", "upper"),
        ("C3PO", "upper"),
    ],
)
def test_word_shapes(token, shape):
    assert WORD_SHAPES[word_shape(token)] == shape


def test_word_shape_embedding_changes_the_input():
    torch.manual_seed(0)
    model = build_model("linear-crf", {"shape_dim": 3}, InputDims(2, 16), len(TWITTER_LABELS)).eval()
    b = batch()
    other = {**b, "shapes": (b["shapes"] + 1) % len(WORD_SHAPES)}
    assert not torch.equal(model.emissions(b), model.emissions(other))
    assert model.words.dim == 19


def test_a_transformer_width_its_heads_do_not_divide_is_refused():
    from mner.core.config import ConfigError

    message = r"^transformer-crf: hidden \(33\) must be a multiple of heads \(2\)$"
    with pytest.raises(ConfigError, match=message):
        build_model("transformer-crf", {**TINY["transformer-crf"], "hidden": 33}, InputDims(2, 16), 9)
