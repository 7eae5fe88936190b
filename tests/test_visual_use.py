"""The visual-use diagnostic on a workspace where the image decides the entity type: the
word "X" is a person when its tweet's image is of kind A and a location when of kind B."""

import json
import shutil

import numpy as np
import pytest
import torch

from mner.cli import main
from mner.core.cache import CacheWriter, provenance
from mner.core.config import to_dict
from mner.core.workspace import Workspace, run_dir
from mner.data.conll import SPLITS, Sentence
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import write_labels, write_prepared
from mner.settings.detect import DetectConfig
from mner.settings.ground import GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig
from mner.settings.text import TextFeaturesConfig
from mner.settings.visual import VisualConfig
from mner.train import run_training, training_job
from mner.visual_use import SwappedVisual, derangement, visual_use
from tests.synthetic import image_side

TEXT = TextFeaturesConfig(model="synthetic", layers=(-1, -2))
# the blank image is encoded by a random ResNet-18 at 32 px (512 features, fast on a CPU)
VISUAL = VisualConfig(model="resnet18", weights="", image_size=32, grid=False, num_workers=0, device="cpu")
IMAGES = ImagesConfig(blank_size=32, missing="blank")
DIM, FEATURES = 8, 512
WORDS = ("a", "X", "b", "c")
PATTERNS = (("X", "a", "b"), ("a", "X", "b", "c"), ("a", "b", "c", "X"))
SIZES = {"train": 48, "valid": 16, "test": 40}
FAST = {"lr": 0.01, "epochs": 4, "batch_size": 8, "patience": 0, "device": "cpu", "warmup": 0.0}


def tweets(split: str, n: int) -> list[Sentence]:
    """Tweet i has an image of kind A (i even: X is B-PER) or B (i odd: X is B-LOC)."""
    out = []
    for i in range(n):
        tokens = PATTERNS[(i // 2) % len(PATTERNS)]
        labels = tuple(("B-PER" if i % 2 == 0 else "B-LOC") if t == "X" else "O" for t in tokens)
        out.append(Sentence(f"{split}-{i}", f"{split}-{i}", tokens, labels))
    return out


def write_workspace(root, dataset="d", seed=0, constant_images=False):
    """Prepared splits, a text cache (word vectors by word, not by label), a visual cache
    (image, one object, one or two grounded objects at X: the vector of the image's kind)
    and a grounding cache, where the pipeline keeps them under ``root``."""
    rng = np.random.default_rng(seed)
    word_codes = rng.standard_normal((len(WORDS), 2, DIM))
    kinds = rng.standard_normal((2, FEATURES))  # A, B
    images, ground_params, phrases = to_dict(IMAGES), to_dict(GroundConfig()), to_dict(ParseConfig())
    records = {
        "text": provenance("text_features", to_dict(TEXT), hidden_size=DIM),
        "visual": {
            "stage": "visual_features",
            "params": to_dict(VISUAL),
            "images": images,
            "objects": to_dict(DetectConfig()),
            "grounding": ground_params,
            "phrases": phrases,
            "feature_dim": FEATURES,
        },
        "grounding": {"stage": "ground", "params": ground_params, "images": images, "phrases": phrases},
    }
    workspace = Workspace(dataset, root)
    paths = {kind: workspace.cache(kind) for kind in ("text", "visual", "grounding")}
    workspace.prepared.mkdir(parents=True, exist_ok=True)
    write_labels(workspace.prepared, TWITTER_LABELS)
    with (
        CacheWriter(paths["text"], records["text"]) as text,
        CacheWriter(paths["visual"], records["visual"]) as visual,
        CacheWriter(paths["grounding"], records["grounding"]) as ground,
    ):
        for split in SPLITS:
            items = tweets(split, SIZES[split])
            write_prepared(workspace.prepared / f"{split}.jsonl", items)
            for cache in (text, visual, ground):
                cache.write_ids(split, [s.id for s in items])
            text.write_field(
                split,
                "words",
                [
                    (
                        np.stack([word_codes[WORDS.index(t)] for t in s.tokens])
                        + 0.1 * rng.standard_normal((len(s.tokens), 2, DIM))
                    ).astype(np.float16)
                    for s in items
                ],
            )
            vectors = [kinds[0 if constant_images else i % 2] for i in range(len(items))]
            n_grounded = [1 + (i // 3) % 2 for i in range(len(items))]
            at = [s.tokens.index("X") for s in items]
            for field, counts in (
                ("image", [1] * len(items)),
                ("objects", [1] * len(items)),
                ("grounded", n_grounded),
            ):
                visual.write_field(
                    split, field, [np.tile(v, (n, 1)).astype(np.float16) for v, n in zip(vectors, counts)]
                )
            ground.write_field(
                split, "positions", [np.tile([x, x], (n, 1)).astype(np.int32) for x, n in zip(at, n_grounded)]
            )
            ground.write_field(
                split, "boxes", [np.tile([0, 0, 1, 1], (n, 1)) for n in n_grounded], np.float32
            )
            ground.write_field(split, "scores", [np.ones(n) for n in n_grounded], np.float32)
            ground.write_field(split, "query", [np.arange(n) for n in n_grounded], np.int32)
            ground.write_field(split, "n_phrases", [np.array([n]) for n in n_grounded], np.int32)
    return paths


def params():
    return {
        "text_features": to_dict(TEXT),
        "images": to_dict(IMAGES),
        "visual_features": to_dict(VISUAL),
        "train": FAST,
        "models": {
            "fmit": {"d": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0},
            "gei": {"text_hidden": 16, "d_m": 16, "layers": 1, "heads": 2, "dropout": 0.0},
            "linear-crf": {},
        },
    }


def train_run(root, name, dataset="d", visual=True, epochs=FAST["epochs"]):
    out = root / run_dir(dataset, name, 1)
    settings = params()
    settings["train"] = {**FAST, "epochs": epochs}
    job = training_job(settings, name, image_side(settings) if visual else None)
    run_training(job, Workspace(dataset, root), 1, out / "checkpoint")
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace with a trained FMIT (grounded cells) and GEI (objects) run."""
    root = tmp_path_factory.mktemp("ws")
    write_workspace(root)
    runs = {name: train_run(root, name) for name in ("fmit", "gei")}
    return root, runs


def test_the_derangement_moves_every_item_and_is_the_same_every_time():
    for n in (2, 3, 10, 257):
        order = derangement(n)
        assert sorted(order.tolist()) == list(range(n))
        assert (order != np.arange(n)).all()
        assert (order == derangement(n)).all()
    assert (derangement(50, seed=1) != derangement(50, seed=2)).any()
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


@pytest.mark.parametrize("name", ["fmit", "gei"])
def test_a_model_that_reads_the_image_loses_f1_without_its_own(workspace, name):
    _, runs = workspace
    result = visual_use(runs[name], device="cpu")
    own, blank, deranged = (result.conditions[c] for c in ("own", "blank", "deranged"))
    assert result.visual_kind == {"fmit": "grounded", "gei": "objects"}[name]
    assert result.tweets == SIZES["test"]
    assert own.f1 >= 0.9 and own.delta_f1 == 0 and own.changed_tweets == 0 and own.changed_words == 0
    for swapped in (blank, deranged):
        assert swapped.f1 <= own.f1 - 0.2
        assert swapped.changed_tweets > 0.2 and swapped.changed_words > 0
    assert result.to_dict()["conditions"]["deranged"]["delta_f1"] == pytest.approx(deranged.f1 - own.f1)


def test_with_the_same_image_everywhere_the_derangement_changes_nothing(workspace, tmp_path):
    """The tweets' visual vectors all alike: the deranged inputs are the own ones (the
    grounded cells keep their number and word positions), so not one prediction changes."""
    root, runs = workspace
    write_workspace(tmp_path, constant_images=True)
    for name, run in runs.items():
        copy = tmp_path / run.relative_to(root)
        shutil.copytree(run / "checkpoint", copy / "checkpoint")
        deranged = visual_use(copy, device="cpu").conditions["deranged"]
        assert deranged.changed_tweets == 0 and deranged.delta_f1 == 0, name


def test_the_swapped_items_keep_their_grounded_cells_and_take_the_other_image(workspace):
    from mner.cached.dataset import CachedMultimodalDataset
    from mner.core.cache import CacheReader
    from mner.data.prepared import read_prepared

    root = workspace[0]
    workspace = Workspace("d", root)
    readers = [CacheReader(workspace.cache(kind)) for kind in ("text", "visual", "grounding")]
    gold = read_prepared(workspace.prepared / "test.jsonl")
    own = CachedMultimodalDataset(*readers, "test", gold, TWITTER_LABELS, "grounded", 4)
    partners = derangement(len(own))
    swapped = SwappedVisual(own, partners=partners)
    for i in range(len(own)):
        mine, theirs, got = own[i], own[int(partners[i])], swapped[i]
        assert (got["visual_positions"] == mine["visual_positions"]).all()
        assert (got["visual"][0] == theirs["visual"][0]).all()
        assert (got["visual"][1:] == theirs["visual"][1]).all()  # its first grounded vector, in turn


def test_a_text_only_run_is_refused(workspace):
    root, _ = workspace
    run = train_run(root, "linear-crf", visual=False, epochs=1)
    with pytest.raises(ValueError, match="linear-crf is a text-only model"):
        visual_use(run, device="cpu")


def test_the_command_prints_the_table_or_json_and_names_a_bad_path(workspace, tmp_path, capsys):
    _, runs = workspace
    assert main(["visual-use", str(runs["fmit"]), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert all(f"\n{c} " in table for c in ("own", "blank", "deranged")) and "changed tweets" in table
    assert main(["visual-use", str(runs["fmit"]), "--device", "cpu", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["conditions"]) == {"own", "blank", "deranged"}
    missing = tmp_path / "runs" / "d" / "fmit" / "seed9"
    assert main(["visual-use", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["visual-use", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_the_blank_vector_is_the_recorded_encoder_on_the_blank_image(workspace):
    """The blank condition reads what the visual cache's own encoder makes of the blank image."""
    import torchvision

    from mner.features.images import blank_image
    from mner.features.visual import load_resnet, normalise
    from mner.visual_use import blank_features

    root, runs = workspace
    record = json.loads((runs["fmit"] / "checkpoint" / "checkpoint.json").read_text())
    image, grid = blank_features(record, "checkpoint.json", "cpu", root)
    trunk, _ = load_resnet(VISUAL)
    pixels = torchvision.transforms.functional.pil_to_tensor(blank_image(IMAGES.blank_size))
    with torch.no_grad():
        expected = trunk.eval()(normalise(pixels)[None]).mean(dim=(2, 3))  # [1, C]
    assert image.shape == (1, FEATURES) and grid.shape == (1, FEATURES)  # 32 px: a 1x1 grid
    assert np.allclose(image, expected.numpy().astype(np.float16), atol=1e-3)
