import numpy as np
import pytest
import torch
from PIL import Image

from mner.core.cache import CacheError, CacheReader, CacheWriter
from mner.core.workspace import Workspace
from mner.data.conll import Sentence
from mner.data.prepared import write_prepared
from mner.features.detect import detect_objects, keep_best
from mner.features.visual import VisualEncoder, extract_visual_features, grid_boxes
from mner.settings.detect import DETECTORS, DetectConfig
from mner.settings.images import ImagesConfig, ImagesMissingError
from mner.settings.visual import VisualConfig
from mner.tagger import VISUAL_KINDS
from mner.tiny import build_tiny_detr


@pytest.fixture(scope="module")
def tiny_detr(tmp_path_factory):
    return build_tiny_detr(tmp_path_factory.mktemp("detr"))


@pytest.fixture
def tweets(tmp_path):
    """Prepared splits whose images include a good one, a CMYK one, a missing and a broken one."""
    images = tmp_path / "images" / "ds"
    images.mkdir(parents=True)
    Image.new("RGB", (120, 80), (200, 30, 30)).save(images / "a.jpg")
    Image.new("CMYK", (60, 90), (0, 0, 255, 0)).save(images / "b.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    splits = {"train": ["a", "b", "none"], "valid": ["broken"], "test": ["a"]}
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for split, ids in splits.items():
        write_prepared(
            prepared / f"{split}.jsonl",
            [Sentence(f"{split}-{i}", image_id, ("w",), ("O",)) for i, image_id in enumerate(ids)],
        )
    return prepared, ImagesConfig(dir=str(tmp_path / "images"), max_side=200)


def test_keep_best_thresholds_sorts_caps_and_normalises():
    boxes = torch.tensor([[0, 0, 50, 20], [10, 10, 100, 40], [0, 0, 300, 300], [1, 1, 2, 2.0]])
    found = keep_best(
        boxes, torch.tensor([0.6, 0.9, 0.7, 0.1]), torch.tensor([3, 1, 2, 0]), (100, 50), 0.5, 2
    )
    assert found.classes.tolist() == [1, 2]
    np.testing.assert_allclose(found.boxes, [[0.1, 0.2, 1.0, 0.8], [0, 0, 1, 1]])
    assert found.boxes.dtype == np.float32 and found.scores.tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("backend", ["hf", "torchvision"])
def test_detect_writes_objects_per_tweet(backend, tiny_detr, tweets, tmp_path):
    prepared, images = tweets
    config = (
        DetectConfig(
            model=str(tiny_detr), revision="main", threshold=0.0, max_objects=3, num_workers=0, device="cpu"
        )
        if backend == "hf"
        else DetectConfig(
            backend="torchvision",
            model="fasterrcnn_mobilenet_v3_large_320_fpn",
            weights="",
            threshold=0.0,
            max_objects=3,
            num_workers=0,
            device="cpu",
        )
    )
    report = detect_objects(config, images, Workspace.of("ds", prepared), tmp_path / "objects.h5")
    cache = CacheReader(tmp_path / "objects.h5")
    assert cache.ids["train"] == ["train-0", "train-1", "train-2"]
    for i in range(3):
        boxes, scores = cache.get("train", "boxes", i), cache.get("train", "scores", i)
        assert boxes.shape[1:] == (4,) and len(boxes) == len(scores) <= 3
        assert ((boxes >= 0) & (boxes <= 1)).all() and (np.diff(scores) <= 0).all()
    assert cache.provenance["classes"][: len(DETECTORS[backend](config).classes)]
    assert report.images.counts["train"]["missing"] == 1 and report.images.counts["valid"]["undecodable"] == 1
    assert report.tweets == 5


def test_detect_needs_the_image_directory(tiny_detr, tweets, tmp_path):
    prepared, _ = tweets
    with pytest.raises(ImagesMissingError, match="images.missing: blank"):
        detect_objects(
            DetectConfig(model=str(tiny_detr), revision="main"),
            ImagesConfig(dir=str(tmp_path / "no")),
            Workspace.of("ds", prepared),
            tmp_path / "o.h5",
        )
    assert not (tmp_path / "o.h5").exists()


BOXES = {"stage": "test"}  # what the visual stage expects of the hand-made box caches


def box_cache(path, boxes_per_split):
    with CacheWriter(path, {"stage": "test", "params": {}}) as cache:
        for split, items in boxes_per_split.items():
            cache.write_ids(split, [f"{split}-{i}" for i in range(len(items))])
            cache.write_field(split, "boxes", [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in items])


def encode(config, images, prepared, tmp_path, out, expect_objects=BOXES, expect_grounding=BOXES):
    """The visual features of dataset ``ds`` from the box caches under ``tmp_path``."""
    return extract_visual_features(
        config,
        images,
        Workspace.of("ds", prepared, objects=tmp_path / "objects.h5", grounding=tmp_path / "grounded.h5"),
        tmp_path / out,
        expect_objects=expect_objects,
        expect_grounding=expect_grounding,
    )


@pytest.mark.parametrize("crop", ["resize", "roi_align"])
def test_visual_features_layout(crop, tweets, tmp_path):
    prepared, images = tweets
    half = [0, 0, 0.5, 1.0]
    box_cache(
        tmp_path / "objects.h5", {"train": [[half, [0.5, 0, 1, 1]], [], []], "valid": [[]], "test": [[half]]}
    )
    box_cache(
        tmp_path / "grounded.h5", {"train": [[[0, 0, 1, 1]], [half], []], "valid": [[half]], "test": [[]]}
    )
    config = VisualConfig(
        model="resnet18", weights="", crop=crop, image_size=64, grid=True, num_workers=0, device="cpu"
    )
    report = encode(config, images, prepared, tmp_path, "visual.h5")
    cache = CacheReader(tmp_path / "visual.h5")
    assert [len(cache.get("train", "objects", i)) for i in range(3)] == [2, 0, 0]
    assert [len(cache.get("train", "grounded", i)) for i in range(3)] == [1, 1, 0]
    assert (
        cache.get("train", "image", 0).shape == (1, 512)
        and cache.get("train", "image", 0).dtype == np.float16
    )
    assert cache.get("test", "grid", 0).shape == (4, 512)  # 64 px / 32 = a 2x2 map
    # a whole-image box gives the whole image's features
    if crop == "resize":
        np.testing.assert_allclose(
            cache.get("train", "grounded", 0), cache.get("train", "image", 0), atol=1e-2
        )
    assert report.images.counts["valid"]["undecodable"] == 1 and report.tweets == 5
    assert cache.provenance["stage"] == "visual_features"
    for kind in (k for k in VISUAL_KINDS.values() if k.cache == "visual"):  # the field each image kind reads
        assert kind.field in cache.fields("train")
        assert kind.source is None or kind.source in cache.provenance


def test_resnet_weights_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    a = VisualEncoder(VisualConfig(model="resnet18", weights=str(tmp_path / "r18.pth"), device="cpu"))
    b = VisualEncoder(VisualConfig(model="resnet18", weights=str(tmp_path / "r18.pth"), device="cpu"))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a.feature_maps(x), b.feature_maps(x))


def test_random_resnet152_stays_in_float16_range():
    encoder = VisualEncoder(VisualConfig(model="resnet152", weights="", device="cpu"))
    maps = encoder.feature_maps(torch.randn(1, 3, 64, 64))
    assert maps.abs().max() < 100  # plain random init reaches ~1e8 after 50 blocks


def test_visual_features_refuse_float16_overflow(tweets, tmp_path):
    import torchvision

    prepared, images = tweets
    state = torchvision.models.resnet18().state_dict()
    state["bn1.bias"] = torch.full_like(state["bn1.bias"], 1e6)
    torch.save(state, tmp_path / "bad.pth")
    empty = {"train": [[], [], []], "valid": [[]], "test": [[]]}
    box_cache(tmp_path / "objects.h5", empty)
    box_cache(tmp_path / "grounded.h5", empty)
    config = VisualConfig(
        model="resnet18", weights=str(tmp_path / "bad.pth"), image_size=64, num_workers=0, device="cpu"
    )
    with pytest.raises(
        ValueError, match=r"train/image item train-0: non-finite values \(beyond the range of float16"
    ):
        encode(config, images, prepared, tmp_path, "v.h5")
    assert not (tmp_path / "v.h5").exists()


def test_random_weights_are_the_same_on_every_load_and_grid_cells_go_row_by_row():
    a, b = (VisualEncoder(VisualConfig(model="resnet18", weights="", device="cpu")) for _ in range(2))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a.feature_maps(x), b.feature_maps(x))
    assert grid_boxes(2).tolist() == [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]]


def test_visual_features_refuse_box_caches_made_otherwise(tweets, tmp_path):
    prepared, images = tweets
    empty = {"train": [[], [], []], "valid": [[]], "test": [[]]}
    box_cache(tmp_path / "objects.h5", empty)
    box_cache(tmp_path / "grounded.h5", empty)
    config = VisualConfig(model="resnet18", weights="", image_size=64, num_workers=0, device="cpu")
    for expect_objects, expect_grounding, stage in (
        ({"stage": "detect"}, BOXES, "detect"),
        (BOXES, {"stage": "ground"}, "ground"),
    ):
        with pytest.raises(
            CacheError, match=rf"stage is 'test', expected '{stage}'. Rerun dvc repro {stage}@ds"
        ):
            encode(config, images, prepared, tmp_path, "v.h5", expect_objects, expect_grounding)
    assert not (tmp_path / "v.h5").exists()


@pytest.mark.parametrize(
    "box",
    [[0.6, 0, 0.2, 1], [0, 0.9, 1, 0.1], [-0.5, 0, 1, 1], [0, 0, 1, 3]],  # NaN: never written
)
def test_visual_features_refuse_boxes_that_are_not_normalised_xyxy(tweets, tmp_path, box):
    """Before any image is encoded, naming the cache, split, item and box; a box of no
    area (a clipped one) is fine."""
    prepared, images = tweets
    fine = [[0.2, 0.2, 0.2, 0.9]]
    box_cache(tmp_path / "objects.h5", {"train": [fine, [], []], "valid": [[]], "test": [fine]})
    box_cache(tmp_path / "grounded.h5", {"train": [[], [], fine], "valid": [[]], "test": [[fine[0], box]]})
    config = VisualConfig(model="resnet18", weights="", image_size=64, num_workers=0, device="cpu")
    with pytest.raises(CacheError) as refused:
        encode(config, images, prepared, tmp_path, "v.h5")
    assert str(refused.value) == (
        f"{tmp_path / 'grounded.h5'}: test/boxes item test-0 holds {[float(v) for v in box]}, not a "
        "normalised xyxy box (0 <= x0 <= x1 <= 1, the same for y); rerun dvc repro ground@ds"
    )
    assert not (tmp_path / "v.h5").exists()
