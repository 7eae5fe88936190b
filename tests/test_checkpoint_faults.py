"""Checkpoints travel between teammates through a DVC remote: a damaged or hostile one is
refused with a :class:`CheckpointError` that names the file at fault, never a traceback
from deep inside torch or safetensors."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mner.core.cache import file_sha256
from mner.core.config import ConfigError
from mner.data.labels import TWITTER_LABELS
from mner.models import (
    CheckpointError,
    InputDims,
    build_model,
    differing,
    load_checkpoint,
    read_header,
    read_state,
    save_checkpoint,
    shown_json,
)
from mner.models.crf import DISALLOWED
from tests.checkpoints import save_weights

JSON, WEIGHTS = "checkpoint.json", "model.safetensors"


@pytest.fixture
def intact(tmp_path_factory):
    """A small real checkpoint: a linear CRF over 2 layers of 16-dimensional features (saved
    for each test, so that mutation testing maps every test that reads it to the save)."""
    torch.manual_seed(0)
    model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    out = tmp_path_factory.mktemp("intact") / "checkpoint"
    save_checkpoint(out, "linear-crf", model, InputDims(2, 16), TWITTER_LABELS, seed=1)
    return out


def edit_record(change):
    def damage(ckpt):
        record = json.loads((ckpt / JSON).read_text())
        change(record)
        (ckpt / JSON).write_text(json.dumps(record))

    return damage


def rehash(ckpt):
    """Record the SHA-256 of the weights as they are now: a checkpoint.json consistent with
    damaged weights, so that the checks behind the hash are what refuses them."""
    edit_record(lambda r: set_key(r, "weights_sha256", file_sha256(ckpt / WEIGHTS)))(ckpt)


def edit_state(change, keep_metadata=True):
    """The weights changed by ``change`` and saved again, with the metadata that says what
    model they are (unless ``keep_metadata`` is false), and their hash recorded."""

    def damage(ckpt):
        state = load_file(ckpt / WEIGHTS)
        change(state)
        save_weights(ckpt, state, keep_metadata)

    return damage


def write(file, content):
    def damage(ckpt):
        (ckpt / file).write_bytes(content)
        if file == WEIGHTS:
            rehash(ckpt)

    return damage


def truncate(ckpt):
    data = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(data[: len(data) // 2])
    rehash(ckpt)


def weights_of_another_config(ckpt):
    """The weights (and hash) of a run of the same shapes and another dropout."""
    other = ckpt.parent / "other"
    save_checkpoint(
        other,
        "linear-crf",
        build_model("linear-crf", {"dropout": 0.3}, InputDims(2, 16), 9),
        InputDims(2, 16),
        TWITTER_LABELS,
    )
    shutil.copy(other / WEIGHTS, ckpt / WEIGHTS)
    rehash(ckpt)


def another_runs_weights(ckpt):
    """The weights of another run of the same model (same names and shapes), as a swap
    inside a shared remote leaves them."""
    torch.manual_seed(1)
    other = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, ckpt / WEIGHTS)


def flip_a_byte_of_the_last_weight(ckpt):
    """A same-size edit: one byte of the last tensor's data changed."""
    data = bytearray((ckpt / WEIGHTS).read_bytes())
    data[-2] ^= 0x01
    (ckpt / WEIGHTS).write_bytes(bytes(data))


def replace_with_a_directory(ckpt):
    (ckpt / WEIGHTS).unlink()
    (ckpt / WEIGHTS).mkdir()


def set_key(record, path, value):
    *parents, last = path.split(".")
    for part in parents:
        record = record[part]
    record[last] = value


# (name, damage, the file at fault, what the message says is wrong)
HOSTILE = [
    ("no json", lambda ckpt: (ckpt / JSON).unlink(), JSON, "not found"),
    ("json not json", write(JSON, b"{not json"), JSON, "not valid JSON"),
    ("json nested too deep", write(JSON, b"[" * 100_000), JSON, "not valid JSON"),
    ("json not an object", write(JSON, b"[1, 2]"), JSON, "expected a JSON object, got list"),
    ("json not utf-8", write(JSON, b'{"model": "\xff\xfe"}'), JSON, "not UTF-8"),
    (
        "json without inputs and labels",
        edit_record(lambda r: [r.pop("labels"), r.pop("inputs")]),
        JSON,
        r"missing key\(s\) inputs, labels;",
    ),
    (
        "unknown model",
        edit_record(lambda r: set_key(r, "model", "bert-crf")),
        JSON,
        "unknown model 'bert-crf'; valid: fmit, gei, linear-crf",
    ),
    ("model not a string", edit_record(lambda r: set_key(r, "model", ["gei"])), JSON, "unknown model"),
    (
        "config unknown key",
        edit_record(lambda r: set_key(r, "config.hiden", 3)),
        JSON,
        r"config: unknown key\(s\) hiden",
    ),
    (
        "config wrong type",
        edit_record(lambda r: set_key(r, "config.dropout", "high")),
        JSON,
        "config.dropout: expected float",
    ),
    ("config not a mapping", edit_record(lambda r: set_key(r, "config", 3)), JSON, "expected a mapping"),
    (
        "config its dataclass refuses",
        edit_record(lambda r: r.update(model="fmit", config={"d": 15})),
        JSON,
        r"config: fmit: d \(15\) must be even",
    ),
    (
        "config value out of range",
        edit_record(lambda r: set_key(r, "config.dropout", 2.0)),
        JSON,
        r"checkpoint.json:config.dropout: 2.0 is out of range; allowed: at least 0 and below 1",
    ),
    (
        "inputs not ints",
        edit_record(lambda r: set_key(r, "inputs.text_dim", "16")),
        JSON,
        "inputs.text_dim: expected int",
    ),
    ("inputs negative", edit_record(lambda r: set_key(r, "inputs.text_dim", -16)), JSON, "must be positive"),
    (
        "inputs wrong keys",
        edit_record(lambda r: set_key(r, "inputs", {"layers": 2, "dim": 16})),
        JSON,
        r"inputs: unknown key\(s\) dim, layers",
    ),
    (
        "inputs not a mapping",
        edit_record(lambda r: set_key(r, "inputs", [2, 16])),
        JSON,
        "expected a mapping",
    ),
    (
        "inputs other than the weights",
        edit_record(lambda r: set_key(r, "inputs.text_dim", 8)),
        WEIGHTS,
        r"out.weight has shape \[9, 16\], .* expects \[9, 8\]",
    ),
    (
        "labels repeated",
        edit_record(lambda r: set_key(r, "labels", ["O", "O", *r["labels"][2:]])),
        JSON,
        "unique",
    ),
    ("labels not a list", edit_record(lambda r: set_key(r, "labels", "O B-PER")), JSON, "list of unique"),
    ("labels not strings", edit_record(lambda r: set_key(r, "labels", list(range(9)))), JSON, "strings"),
    ("labels empty", edit_record(lambda r: set_key(r, "labels", [])), JSON, "non-empty"),
    (
        "labels with an empty one",
        edit_record(lambda r: r["labels"].__setitem__(1, "")),
        JSON,
        "non-empty str",
    ),
    (
        "labels numbers from 1",
        edit_record(lambda r: set_key(r, "labels", list(range(1, 10)))),
        JSON,
        "list of unique non-empty strings",
    ),
    (
        "a visual model without visual inputs",
        edit_record(lambda r: r.update(model="gei", config={})),
        JSON,
        r"cannot build gei from its config and inputs \(gei reads visual features",
    ),
    (
        "labels not a BIO vocabulary",
        edit_record(lambda r: r["labels"].pop()),
        JSON,
        "O, then B- and I- of each",
    ),
    (
        "labels other than the outputs",
        edit_record(lambda r: set_key(r, "labels", r["labels"][:7])),  # MISC dropped
        WEIGHTS,
        r"out.weight has shape \[9, 16\], the model its checkpoint.json describes \(7 labels\) expects",
    ),
    (
        "config edited, same shapes",
        edit_record(lambda r: set_key(r, "config.dropout", 0.4)),
        JSON,
        r"config.dropout is 0.4, but its weights were saved with 0.1: this file was edited, or is another",
    ),
    (
        "config edited, a key dropped",
        edit_record(lambda r: r["config"].pop("dropout")),
        JSON,
        r"config.dropout is \"absent\", but its weights were saved with 0.1",
    ),
    (
        "labels relabelled",
        edit_record(
            lambda r: set_key(r, "labels", [label.replace("MISC", "PRODUCT") for label in r["labels"]])
        ),
        JSON,
        r'labels\[7\] is "B-PRODUCT", but its weights were saved with "B-MISC": this file',
    ),
    (
        "weights of a run of another config",
        weights_of_another_config,
        JSON,
        "config.dropout is 0.1, but its weights were saved with 0.3",
    ),
    (
        "no weights hash",
        edit_record(lambda r: r.pop("weights_sha256")),
        JSON,
        "records no weights_sha256 .the SHA-256 of its model.safetensors., so any weights",
    ),
    (
        "weights without the model they hold",
        edit_state(lambda s: None, keep_metadata=False),
        WEIGHTS,
        "its metadata does not say which model it holds",
    ),
    ("no weights", lambda ckpt: (ckpt / WEIGHTS).unlink(), WEIGHTS, "not found"),
    ("weights of another run", another_runs_weights, WEIGHTS, "SHA-256 is not the one its checkpoint.json"),
    (
        "weights edited in place",
        flip_a_byte_of_the_last_weight,
        WEIGHTS,
        "another checkpoint's or were changed",
    ),
    ("weights a directory", replace_with_a_directory, WEIGHTS, "safetensors: not a file;"),
    ("weights empty", write(WEIGHTS, b""), WEIGHTS, "not a readable safetensors file"),
    ("weights garbage", write(WEIGHTS, b"PK\x03\x04 a zip, not tensors" * 40), WEIGHTS, "not a readable"),
    ("weights truncated", truncate, WEIGHTS, "not a readable safetensors file"),
    (
        "tensor missing",
        edit_state(lambda s: s.pop("crf.crf.transitions")),
        WEIGHTS,
        r"lacks tensor\(s\) crf.crf.transitions for the model",
    ),
    (
        "tensors unexpected",
        edit_state(lambda s: s.update({f"extra.{i}": torch.zeros(1) for i in range(4)})),
        WEIGHTS,
        r"has unexpected tensor\(s\) extra.0, extra.1, extra.2 and 1 more for the model",
    ),
    (
        "three tensors unexpected",
        edit_state(lambda s: s.update({f"extra.{i}": torch.zeros(1) for i in range(3)})),
        WEIGHTS,
        r"has unexpected tensor\(s\) extra.0, extra.1, extra.2 for the model",
    ),
    (
        "tensor of another shape",
        edit_state(lambda s: s.update({"out.bias": torch.zeros(3)})),
        WEIGHTS,
        r"out.bias has shape \[3\]",
    ),
    (
        "int weights",
        edit_state(lambda s: s.update({"out.weight": s["out.weight"].to(torch.int64)})),
        WEIGHTS,
        "out.weight is torch.int64, expected torch.float32",
    ),
    (
        "half weights",
        edit_state(lambda s: s.update({"out.bias": s["out.bias"].half()})),
        WEIGHTS,
        "out.bias is torch.float16",
    ),
    (
        "nan weight",
        edit_state(lambda s: s["crf.crf.transitions"].__setitem__((2, 3), float("nan"))),
        WEIGHTS,
        r"crf.crf.transitions holds non-finite values \(NaN or Inf\)",
    ),
    (
        "inf weight",
        edit_state(lambda s: s["words.mix.gamma"].fill_(float("inf"))),
        WEIGHTS,
        "words.mix.gamma holds non-finite values",
    ),
]


def test_the_intact_checkpoint_loads(intact):
    model, record = load_checkpoint(intact)
    assert record["model"] == "linear-crf" and record["seed"] == 1
    assert record["weights_sha256"] == file_sha256(intact / WEIGHTS)
    for name, tensor in load_file(intact / WEIGHTS).items():
        assert torch.equal(model.state_dict()[name], tensor)


@pytest.mark.parametrize("damage, file, wrong", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_checkpoint_is_refused_naming_the_file(intact, tmp_path, damage, file, wrong):
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(intact, ckpt)
    damage(ckpt)
    with pytest.raises(CheckpointError, match=wrong) as caught:
        load_checkpoint(ckpt)
    message = str(caught.value)
    assert message.count(str(ckpt)) == 1  # the file named once, at the start
    assert message.startswith(f"{ckpt / file}:") and message.endswith(
        "retrain it or pull it again (dvc pull)"
    )
    assert len(message) < 600  # a summary, not torch's list of every tensor


def test_a_save_the_disk_refuses_is_one_line_and_keeps_the_previous_checkpoint(intact, tmp_path, monkeypatch):
    import errno

    ckpt = tmp_path / "checkpoint"
    shutil.copytree(intact, ckpt)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mner.models.save_file", full)
    model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    cause = r"\(No space left on device\); the previous one is unchanged$"
    with pytest.raises(CheckpointError, match=rf"^{ckpt}: cannot write the checkpoint {cause}"):
        save_checkpoint(ckpt, "linear-crf", model, InputDims(2, 16), TWITTER_LABELS)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before


def test_an_interrupted_save_leaves_the_old_checkpoint_or_none(intact, tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(intact, ckpt)
    old = load_file(ckpt / WEIGHTS)
    torch.manual_seed(1)
    other = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mner.models.json.dumps", fail)  # fails after the weights are written
    with pytest.raises(
        CheckpointError, match=r"cannot write the checkpoint \(disk full\); the previous one is unchanged"
    ):
        save_checkpoint(ckpt, "linear-crf", other, InputDims(2, 16), TWITTER_LABELS)
    monkeypatch.undo()
    model, _ = load_checkpoint(ckpt)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in old.items())
    assert sorted(p.name for p in ckpt.iterdir()) == [JSON, WEIGHTS]

    renames = []

    def replace_once(src, dst):  # the weights are renamed, then the save stops
        if renames:
            raise OSError("killed")
        renames.append(dst)
        os.rename(src, dst)

    monkeypatch.setattr(os, "replace", replace_once)
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint \(killed\); none is left"):
        save_checkpoint(ckpt, "linear-crf", other, InputDims(2, 16), TWITTER_LABELS)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=f"^{ckpt / JSON}: not found"):
        load_checkpoint(ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == [WEIGHTS]


def test_a_record_asking_for_another_model_is_refused_before_its_weights_are_allocated(
    intact, tmp_path, monkeypatch
):
    """An edited checkpoint.json asking for a large model (here 100M parameters; the issue's
    allocated 13 GB) is checked against the weights file's header on a data-free (meta)
    model: refused without building the model for real."""
    import mner.models

    ckpt = tmp_path / "checkpoint"
    shutil.copytree(intact, ckpt)
    large = {"hidden": 2048, "layers": 2, "heads": 8, "ff": 8192}
    edit_record(lambda r: r.update(model="transformer-crf", config=large))(ckpt)
    built, real = [], mner.models.model_of_record

    def model_of_record(record, path):
        built.append(torch.empty(0).device.type)  # where the model's tensors would go
        return real(record, path)

    monkeypatch.setattr(mner.models, "model_of_record", model_of_record)
    with pytest.raises(CheckpointError, match=rf"^{ckpt / WEIGHTS}: lacks tensor\(s\) "):
        load_checkpoint(ckpt)
    assert built == ["meta"]


def test_the_decoding_asked_for_overrides_the_recorded_one(intact, tmp_path):
    """The grammar's penalties follow the decoding asked for: the weights hold none."""
    assert json.loads((intact / JSON).read_text())["config"]["decode"] == "constrained"
    assert not [name for name in load_file(intact / WEIGHTS) if "penalty" in name]
    model, record = load_checkpoint(intact, decode="free")
    assert model.config.decode == "free" and record["config"]["decode"] == "free"
    assert not model.crf.start_penalty.any() and not model.crf.move_penalty.any()
    assert load_checkpoint(intact)[0].config.decode == "constrained"
    save_checkpoint(tmp_path / "free", "linear-crf", model, InputDims(2, 16), TWITTER_LABELS)
    constrained = load_checkpoint(tmp_path / "free", decode="constrained")[0]
    assert constrained.crf.start_penalty[2] == DISALLOWED and constrained.crf.move_penalty[0, 2] == DISALLOWED


def test_weights_of_another_run_are_refused_showing_the_recorded_hash(intact, tmp_path):
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(intact, ckpt)
    recorded = json.loads((ckpt / JSON).read_text())["weights_sha256"]
    another_runs_weights(ckpt)
    with pytest.raises(CheckpointError, match=rf"records \({recorded[:12]}\.\.\.\): these weights"):
        load_checkpoint(ckpt)


def out_bias_half_weight_int(state):
    return {"out.bias": state["out.bias"].half(), "out.weight": state["out.weight"].long()}


def test_the_header_declares_each_tensors_dtype_before_any_weight_is_read(intact, tmp_path):
    """Half or integer weights are refused from the header, as wrong shapes are."""
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(intact, ckpt)
    edit_state(lambda s: s.update(out_bias_half_weight_int(s)))(ckpt)
    header, _ = read_header(ckpt / WEIGHTS)
    assert header["out.bias"].dtype == torch.float16 and header["out.weight"].dtype == torch.int64
    assert header["crf.crf.transitions"].dtype == torch.float32 and header["out.weight"].is_meta


def test_unreadable_weights_are_refused_naming_the_file(tmp_path):
    garbage = tmp_path / WEIGHTS
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match=rf"^{garbage}: not a readable safetensors file \("):
        read_state(garbage)


def test_the_smallest_inputs_a_checkpoint_may_record_load(tmp_path):
    """One layer of one-dimensional word vectors is a model (the bounds are at 1, not 2)."""
    torch.manual_seed(0)
    model = build_model("linear-crf", {}, InputDims(1, 1), len(TWITTER_LABELS))
    save_checkpoint(tmp_path / "ckpt", "linear-crf", model, InputDims(1, 1), TWITTER_LABELS, seed=1)
    loaded, record = load_checkpoint(tmp_path / "ckpt")
    assert record["inputs"]["text_layers"] == 1 and record["inputs"]["text_dim"] == 1


@pytest.mark.parametrize(
    ("found", "saved", "said"),
    [
        ({"heads": 4, "d": 8}, {"heads": 2, "d": 8}, ("config.heads is 4", "2")),
        ({"a": {"b": 1}}, {"a": {"b": 2}}, ("config.a.b is 1", "2")),
        ({}, {"a": None}, ('config.a is "absent"', "null")),
        ({"a": None}, {}, ("config.a is null", '"absent"')),
        ({"a": 1}, {}, ("config.a is 1", '"absent"')),
        ({"a": 1}, [1], ('config is {"a": 1}', "[1]")),
        (["O", "B-X"], ["O", "B-Y"], ('config[1] is "B-X"', '"B-Y"')),
        ([1], [1, 2], ("config is [1]", "[1, 2]")),
        ([1, 2], "x", ("config is [1, 2]", '"x"')),
    ],
)
def test_the_first_difference_of_a_record_and_what_the_weights_were_saved_with(found, saved, said):
    assert differing(found, saved, "config") == said


def test_a_long_value_is_cut_after_80_characters():
    assert shown_json("x" * 78) == json.dumps("x" * 78)  # 80 characters with its quotes
    assert shown_json("x" * 79) == json.dumps("x" * 79)[:80] + "..."


def test_a_recorded_config_runs_on_the_device_asked_for_with_its_encoder_in_its_workspace(tmp_path):
    """The config of an extraction stage a checkpoint records, rebuilt for mner predict: a
    relative encoder directory is read in the workspace that recorded it, when it is there."""
    from mner.models import recorded
    from mner.settings.text import TextFeaturesConfig

    (tmp_path / "models" / "bert").mkdir(parents=True)
    params = {"model": "models/bert", "layers": [-1], "device": "cuda", "batch_size": 4}
    config = recorded(TextFeaturesConfig, params, "x.json", "cpu", tmp_path)
    assert (config.model, config.device, config.layers, config.batch_size) == (
        str(tmp_path / "models/bert"),
        "cpu",
        (-1,),
        4,
    )
    for model, root in (("models/other", tmp_path), ("models/bert", None), ("bert-base-cased", tmp_path)):
        assert recorded(TextFeaturesConfig, {**params, "model": model}, "x.json", "cpu", root).model == model
    from mner.settings.detect import DetectConfig
    from mner.settings.images import ImagesConfig

    workers = recorded(DetectConfig, {"num_workers": 8}, "x.json", "cpu")
    assert (workers.num_workers, workers.device) == (0, "cpu")
    assert recorded(ImagesConfig, {"max_side": 320}, "x.json", "cpu", tmp_path).max_side == 320  # no model
    with pytest.raises(ConfigError, match=r"^x\.json: unknown key\(s\) colour"):
        recorded(TextFeaturesConfig, {"colour": 1}, "x.json", "cpu")


def test_a_rebuilt_encoder_of_other_sizes_is_refused_naming_both():
    from mner.models import check_size

    check_size("c.json", "text", (2, 16), (2, 16))
    with pytest.raises(CheckpointError) as refused:
        check_size("c.json", "visual", (512,), (2048,))
    assert str(refused.value) == (
        "c.json: the visual encoder its provenance records gives features of shape [512], but the model was "
        "trained on [2048]; retrain it or pull it again (dvc pull)"
    )
