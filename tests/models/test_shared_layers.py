"""The shared parts of every model: the CRF (likelihood and Viterbi against enumeration),
the text input, the text-only baselines and the registry and checkpoint format."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from mner.core.config import ConfigError
from mner.data.labels import TWITTER_LABELS, WORD_SHAPES
from mner.models import (
    MODELS,
    CheckpointError,
    InputDims,
    build_model,
    interaction_parameters,
    load_checkpoint,
    model_config,
    register,
    save_checkpoint,
)
from mner.models.baselines import LinearConfig, TransformerCRFConfig
from mner.models.crf import CRF
from mner.models.layers import ScalarMix, TextInput
from tests.models.equation_batches import FMIT_TINY, GEI_TINY, INPUTS, spanned_batch


def random_crf(num_tags: int = 3, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    for parameter in crf.parameters():
        torch.nn.init.normal_(parameter)
    return crf


def path_score(crf: CRF, emissions: torch.Tensor, path) -> torch.Tensor:
    """A linear-chain CRF's score of one tag path: start + emissions + transitions + end."""
    inner = crf.crf
    score = inner.start_transitions[path[0]] + inner.end_transitions[path[-1]]
    score = score + sum(emissions[t, k] for t, k in enumerate(path))
    return score + sum(inner.transitions[i, j] for i, j in zip(path, path[1:]))


def test_crf_nll_is_the_batch_mean_of_minus_log_p_of_the_gold_path():
    """``nll`` is ``-log p(y | x)`` of each real sequence, averaged over the batch."""
    crf = random_crf()
    emissions = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    tags = torch.tensor([[0, 2, 1], [1, 1, 0]])
    expected = []
    for b, n in enumerate([3, 2]):
        scores = torch.stack(
            [path_score(crf, emissions[b], p) for p in itertools.product(range(3), repeat=n)]
        )
        gold = path_score(crf, emissions[b], tags[b, :n].tolist())
        expected.append(torch.logsumexp(scores, 0) - gold)
    torch.testing.assert_close(crf.nll(emissions, tags, mask), torch.stack(expected).mean())


def test_crf_decode_is_the_best_path_of_each_real_length():
    """``decode`` is the highest-scoring path of each sequence (Viterbi), of its real length."""
    crf = random_crf(4, seed=1)
    emissions = torch.randn(2, 4, 4)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    decoded = crf.decode(emissions, mask)
    for b, n in enumerate([4, 3]):
        best = max(itertools.product(range(4), repeat=n), key=lambda p: path_score(crf, emissions[b], p))
        assert decoded[b] == list(best)


def test_marginals_of_a_one_word_batch_are_a_softmax_of_start_emission_end():
    """With one step, ``p(y_1 = k | x)`` is the softmax of start + emission + end."""
    crf = random_crf()
    emissions = torch.randn(2, 1, 3)
    marginals = crf.marginals(emissions, torch.ones(2, 1, dtype=torch.bool))
    inner = crf.crf
    expected = torch.softmax(inner.start_transitions + emissions[:, 0] + inner.end_transitions, dim=-1)
    torch.testing.assert_close(marginals[:, 0], expected)


def test_text_input_is_the_scalar_mix_then_the_shape_embedding():
    """The word input is ``[ScalarMix(layers); shape embedding]`` (the mix first), of
    width ``text_dim + shape_dim``; without a shape size, the mix alone."""
    torch.manual_seed(0)
    module = TextInput(num_layers=2, text_dim=5, shape_dim=3)
    assert module.dim == 8 and module.shapes.num_embeddings == len(WORD_SHAPES)
    b = {"features": torch.randn(1, 4, 2, 5), "shapes": torch.tensor([[0, 1, 9, 10]])}
    out = module(b)
    torch.testing.assert_close(out[..., :5], module.mix(b["features"]))
    torch.testing.assert_close(out[..., 5:], module.shapes.weight[b["shapes"]])
    plain = TextInput(num_layers=2, text_dim=5)
    assert plain.shapes is None and plain.dim == 5
    torch.testing.assert_close(plain(b), plain.mix(b["features"]))


def test_scalar_mix_starts_as_the_mean_of_the_layers():
    """The mix starts at equal weights and scale 1: the mean of the cached layers."""
    mix = ScalarMix(4)
    layers = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(mix(layers), layers.mean(dim=2))
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([1.0, 2.0, 0.0, -1.0]))
        mix.gamma.fill_(0.5)
    weights = torch.softmax(torch.tensor([1.0, 2.0, 0.0, -1.0]), 0)
    torch.testing.assert_close(mix(layers), 0.5 * (layers * weights[:, None]).sum(dim=2))


def text_batch() -> dict:
    b = spanned_batch()
    return {k: b[k] for k in ("index", "features", "labels", "shapes", "mask")}


def test_linear_softmax_is_cross_entropy_over_the_real_words():
    """linear-softmax: a linear layer over the word input, cross-entropy over the real
    words only, and (decoding free) the argmax of each real word at decoding."""
    torch.manual_seed(0)
    values = {"dropout": 0.4, "decode": "free"}
    model = build_model("linear-softmax", values, InputDims(2, 12), len(TWITTER_LABELS)).eval()
    assert (
        model.dropout.p == 0.4
        and model.out.in_features == 12
        and model.out.out_features == len(TWITTER_LABELS)
    )
    b = text_batch()
    logits = model.out(model.words(b))
    torch.testing.assert_close(model.emissions(b), logits)
    mask = b["mask"]
    expected = torch.nn.functional.cross_entropy(logits[mask], b["labels"][mask])
    torch.testing.assert_close(model.loss(b)["loss"], expected)
    best = logits.argmax(-1)
    assert model.decode(b) == [best[i, :n].tolist() for i, n in enumerate(mask.sum(1).tolist())]


@pytest.mark.parametrize("name", ["linear-crf", "transformer-crf"])
def test_crf_baselines_are_their_crfs_nll_and_viterbi(name):
    """linear-crf and transformer-crf: the CRF's NLL of the gold labels and its Viterbi
    paths over the emissions."""
    torch.manual_seed(0)
    config = {"hidden": 8, "layers": 1, "heads": 2, "ff": 16} if name == "transformer-crf" else {}
    model = build_model(name, config, InputDims(2, 12), len(TWITTER_LABELS)).eval()
    b = text_batch()
    emissions = model.emissions(b)
    torch.testing.assert_close(model.loss(b)["loss"], model.crf.nll(emissions, b["labels"], b["mask"]))
    assert model.decode(b) == model.crf.decode(emissions, b["mask"])


def test_transformer_crf_is_built_as_the_config_says():
    """transformer-crf: dropout, a projection to ``hidden``, pre-norm Transformer layers
    that ignore the padding, and a linear layer to the labels."""
    torch.manual_seed(0)
    config = {"hidden": 8, "layers": 3, "heads": 2, "ff": 16, "dropout": 0.3, "shape_dim": 2}
    model = build_model("transformer-crf", config, InputDims(2, 12), len(TWITTER_LABELS)).eval()
    assert (
        model.project[0].p == 0.3
        and model.project[1].in_features == 14
        and model.project[1].out_features == 8
    )
    assert len(model.encoder.layers) == 3
    layer = model.encoder.layers[0]
    assert layer.self_attn.num_heads == 2 and layer.linear1.out_features == 16 and layer.norm_first
    assert layer.dropout.p == 0.3 and layer.self_attn.batch_first
    assert model.out.in_features == 8 and model.out.out_features == len(TWITTER_LABELS)
    b = text_batch()
    alone = {k: v[1:2, :3] if v.dim() > 1 else v[1:2] for k, v in b.items()}
    torch.testing.assert_close(model.emissions(b)[1, :3], model.emissions(alone)[0], atol=1e-5, rtol=1e-5)
    assert TransformerCRFConfig() == TransformerCRFConfig(256, 2, 4, 1024, 0.1, 0)
    assert LinearConfig() == LinearConfig(0.1, 0)


def test_model_config_refuses_unknown_models_and_keys_naming_them():
    """An unknown model name lists the known ones; an unknown key names where it was."""
    with pytest.raises(KeyError, match=r"unknown model 'gie'; valid: fmit, gei, linear-crf"):
        model_config("gie", {})
    with pytest.raises(ConfigError, match=r"params.yaml:models.gei"):
        model_config("gei", {"no_such_key": 1})
    with pytest.raises(ConfigError, match=r"here.yaml"):
        model_config("gei", {"no_such_key": 1}, "here.yaml")
    assert model_config("gei", {"d_m": 8}).d_m == 8


def test_build_model_takes_a_config_or_its_plain_values():
    """``build_model`` accepts the config dataclass or a dict of its values."""
    torch.manual_seed(0)
    from_values = build_model("fmit", FMIT_TINY, INPUTS, len(TWITTER_LABELS))
    from_config = build_model("fmit", model_config("fmit", FMIT_TINY), INPUTS, len(TWITTER_LABELS))
    assert from_values.config == from_config.config == model_config("fmit", FMIT_TINY)


def test_register_adds_a_model_under_its_name():
    """``register(name, config)`` records the class under its name and returns it."""

    class Toy(torch.nn.Module):
        def __init__(self, config, inputs, num_labels):
            super().__init__()
            self.config, self.num_labels = config, num_labels

    try:
        assert register("toy-model", LinearConfig)(Toy) is Toy
        assert MODELS["toy-model"] == (LinearConfig, Toy)
        assert build_model("toy-model", {}, INPUTS, 7).num_labels == 7
    finally:
        MODELS.pop("toy-model", None)


def test_interaction_parameters_count_every_interaction_parameter_once():
    """FMIT's Table 3 count: the parameters of its interaction-phase modules."""
    torch.manual_seed(0)
    model = build_model("fmit", FMIT_TINY, INPUTS, len(TWITTER_LABELS))
    expected = sum(p.numel() for m in model.interaction_phase() for p in m.parameters())
    assert interaction_parameters(model) == expected
    gei = build_model("gei", GEI_TINY, INPUTS, len(TWITTER_LABELS))
    assert interaction_parameters(gei) == sum(p.numel() for p in gei.objects.parameters()) + sum(
        p.numel() for p in gei.layers.parameters()
    )


def test_a_checkpoint_is_json_and_safetensors_that_load_back_in_eval_mode(tmp_path):
    """``checkpoint.json`` holds the model, config, inputs, labels and metadata;
    ``model.safetensors`` the state; loading gives the same model in eval mode."""
    torch.manual_seed(0)
    model = build_model("gei", GEI_TINY, INPUTS, len(TWITTER_LABELS))
    out = tmp_path / "nested" / "ckpt"
    save_checkpoint(out, "gei", model, INPUTS, TWITTER_LABELS, dataset="twitter2017", seed=4)
    record = json.loads((out / "checkpoint.json").read_text())
    assert (out / "checkpoint.json").read_text() == json.dumps(record, indent=2) + "\n"  # reviewable
    assert record["model"] == "gei" and record["labels"] == list(TWITTER_LABELS)
    assert record["inputs"] == {"text_layers": 2, "text_dim": 12, "visual_dim": 10}
    assert record["config"]["d_m"] == 8 and record["dataset"] == "twitter2017" and record["seed"] == 4
    loaded, loaded_record = load_checkpoint(str(out))
    assert not loaded.training and loaded_record == record
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert InputDims(2, 12).visual_dim == 0


def test_a_checkpoint_with_a_bad_config_names_its_file(tmp_path):
    """A checkpoint whose config has an unknown key is refused naming its checkpoint.json."""
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path,
        "linear-crf",
        build_model("linear-crf", {}, InputDims(2, 12), 3),
        InputDims(2, 12),
        ("O", "B-X", "I-X"),
    )
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    record["config"]["bogus"] = 1
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"checkpoint.json:config"):
        load_checkpoint(tmp_path)
