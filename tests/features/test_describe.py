"""The describe stage: a tiny random BLIP, saved and loaded back by path, captions every
distinct image of a prepared dataset into a captions clue file that the clue reader aligns
with the tweets; a missing model stops it with the pre-flight message."""

import json
import shutil
import sys

import pytest
from dvc.repo import Repo
from huggingface_hub import constants
from PIL import Image

from mner.clues import read_clue_set, read_clues, write_captions
from mner.core.cache import CacheError, check_provenance
from mner.core.config import ConfigError, load_params
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS, Sentence
from mner.data.prepared import write_prepared
from mner.features.describe import Captioner, caption_images, check_ready, describe_dataset, read_record
from mner.runner.preflight import PreflightError
from mner.runs import Pipeline
from mner.settings.clues import ClueSource, check_tracked, clue_set
from mner.settings.describe import CAPTIONS, DescribeConfig, captions_file, expected_provenance
from mner.settings.images import ImagesConfig
from mner.sources import import_closure
from mner.tiny import build_tiny_blip
from tests.conftest import REPO
from tests.synthetic import sentences
from tests.test_stage_deps import covered, file_deps, modules_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTS = {"train": 4, "valid": 2, "test": 3}  # tweet i of each split has image str(i): 4 images, shared


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("blip"))


def config(tiny_blip, **overrides) -> DescribeConfig:
    settings = {"max_new_tokens": 5, "num_beams": 1, "batch_size": 2, "num_workers": 0, "device": "cpu"}
    return DescribeConfig(model=str(tiny_blip), **{**settings, **overrides})


@pytest.fixture
def dataset(tmp_path):
    """A workspace root with dataset ``ds`` prepared (images 0-3, shared across splits) and
    its images: 0 and 1 good, 2 broken, 3 missing."""
    splits = {split: sentences(split, n) for split, n in COUNTS.items()}
    (tmp_path / "prepared/ds").mkdir(parents=True)
    for split, tweets in splits.items():
        write_prepared(tmp_path / f"prepared/ds/{split}.jsonl", tweets)
    images = tmp_path / "data/images/ds"
    images.mkdir(parents=True)
    Image.new("RGB", (80, 60), (200, 30, 30)).save(images / "0.jpg")
    Image.new("L", (40, 90), 90).save(images / "1.jpg")
    (images / "2.jpg").write_bytes(b"\xff\xd8 broken")
    return tmp_path, splits


def test_every_image_gets_one_caption_that_the_clue_reader_aligns(tiny_blip, dataset):
    root, splits = dataset
    images, settings = ImagesConfig(dir=str(root / "data/images"), max_side=200), config(tiny_blip)
    out = captions_file("ds", root)
    report = describe_dataset(settings, images, Workspace("ds", root), out)

    lines = out.read_text(encoding="utf-8").splitlines()
    assert [line.split(".jpg :")[0] for line in lines] == ["0", "1", "2", "3"]  # one per image, in order
    assert all(line.split(".jpg :")[1] for line in lines)  # the tiny BLIP writes words, never nothing
    assert (report.tweets, report.captions, report.empty) == (9, 4, 0)
    assert report.images.counts["train"]["missing"] == 1 and report.images.counts["train"]["undecodable"] == 1
    assert report.images.counts["test"]["images"] == 3 and report.images.blank("valid") == 0

    clues = read_clues(ClueSource("captions", CAPTIONS), "ds", splits, root, name="described")
    by_image = {line.split(".jpg :")[0]: line.split(".jpg :")[1] for line in lines}
    for split in SPLITS:
        assert clues.texts[split] == tuple(by_image[s.image_id] for s in splits[split])
    assert clues.missing == dict.fromkeys(SPLITS, 0) and clues.ignored == 0

    record = read_record(out)
    check_provenance(out, record, expected_provenance(settings, images), "dvc repro describe@ds")
    with pytest.raises(CacheError, match=r"params.prompt is '', expected 'a photo of'"):
        check_provenance(out, record, expected_provenance(config(tiny_blip, prompt="a photo of"), images), "")
    assert not list(out.parent.glob(".*tmp*"))  # written under a temporary name, renamed


def test_captions_are_one_line_the_prompt_begins_them_and_batching_changes_nothing(tiny_blip):
    images = [Image.new("RGB", (64, 48), colour) for colour in ((255, 0, 0), (0, 0, 255), (250, 250, 250))]
    captioner = Captioner(config(tiny_blip))
    batched = caption_images(captioner, images)  # batches of 2: 2 + 1
    assert batched == [captioner([image])[0] for image in images]
    assert all(caption and caption == " ".join(caption.split()) for caption in batched)
    prompted = caption_images(Captioner(config(tiny_blip, prompt="a photo of")), images)
    assert all(caption.startswith("a photo of") for caption in prompted)
    assert caption_images(captioner, []) == []


def test_the_stage_writes_the_clue_file_of_a_clue_set(tiny_blip, dataset, monkeypatch, capsys):
    from stages.describe import main

    root, splits = dataset
    params = {
        "describe": {
            "model": str(tiny_blip),
            "max_new_tokens": 4,
            "num_beams": 2,
            "num_workers": 0,
            "device": "cpu",
        },
        "images": {"max_side": 200},
        "clues": {"described": {"format": "captions", "path": CAPTIONS}},
    }
    (root / "params.yaml").write_text(json.dumps(params))
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["describe", "--dataset", "ds"])
    main()
    assert "4 images of 9 tweets captioned" in capsys.readouterr().out
    assert (root / "data/ds/clues/described-captions.json").is_file()

    sources = clue_set(load_params(), "described")
    check_tracked("described", sources)  # where the clue_files stage sees it change
    read = read_clue_set("described", sources, "ds", splits)
    assert set(read.texts) == {s.id for split in splits.values() for s in split}
    assert read.texts["train-1"] == read.texts["valid-1"]  # tweets that share an image share its caption


def test_a_missing_model_stops_with_the_pre_flight_message(tiny_blip, dataset, tmp_path, monkeypatch):
    from stages.describe import main

    root, _ = dataset
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no request
    images = ImagesConfig(dir=str(root / "data/images"))
    with pytest.raises(PreflightError, match=r"^describe.model: '/\S+/nowhere' is neither a local directory"):
        check_ready(DescribeConfig(model=str(tmp_path / "nowhere")), images, "ds")
    with pytest.raises(PreflightError, match=r"has no config.json"):
        check_ready(DescribeConfig(model=str(root / "data")), images, "ds")
    check_ready(DescribeConfig(model=str(tiny_blip)), images, "ds")

    (root / "params.yaml").write_text(json.dumps({"describe": {"model": "models/tiny-blip"}}))
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["describe", "--dataset", "ds"])
    with pytest.raises(SystemExit) as stop:
        main()
    message = str(stop.value.code)
    assert message.startswith("error: describe.model: 'models/tiny-blip' (revision main) is neither a local")
    assert "HF_HUB_OFFLINE is set" in message and "mner offline-workspace DIR" in message
    assert not (root / "data/ds/clues").exists()


def test_write_captions_reads_back_and_refuses_an_id_it_cannot_key(tmp_path):
    path = tmp_path / "captions.txt"
    write_captions(path, {"17_06_1": "  a dog\n on\tthe  beach ", "x.jpg": "", "9": "two\u2028lines"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["17_06_1.jpg :a dog on the beach", "x.jpg.jpg :", "9.jpg :two lines"]
    tweets = {
        "train": [Sentence(f"t{i}", image_id, ("w",), ("O",)) for i, image_id in enumerate(["9", "x.jpg"])]
    }
    clues = read_clues(ClueSource("captions", str(path)), "ds", tweets)
    assert clues.texts == {"train": ("two lines", "")} and clues.blank == {"train": 1} and clues.ignored == 1
    for image_id in ("", "a\nb", "a.jpg :b"):
        with pytest.raises(ValueError, match="cannot key a captions line"):
            write_captions(path, {image_id: "text"})


def test_pipeline_describe_names_datasets_of_the_pipeline():
    pipeline = load_params(REPO / "params.yaml")["pipeline"]
    assert Pipeline.from_params({"pipeline": {**pipeline, "describe": ["twitter2017"]}}).describe == (
        "twitter2017",
    )
    with pytest.raises(ConfigError, match=r"pipeline.describe: twitter2099 is not one of pipeline.datasets"):
        Pipeline.from_params({"pipeline": {**pipeline, "describe": ["twitter2099"]}})


def test_the_stage_lists_its_imports_and_feeds_the_clue_files_stage(tmp_path):
    """With pipeline.describe set, dvc.yaml's describe stage depends on exactly the mner files
    its script imports, and its output inside data/<dataset>/clues/ makes clue_files run after it."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = (REPO / "configs/offline.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params.replace("  describe: []", "  describe: [twitter2017]  #"))
    Repo.init(str(tmp_path), no_scm=True)
    index = Repo(str(tmp_path)).index
    (stage,) = [s for s in index.stages if s.name.startswith("describe@")]
    deps = file_deps(stage)
    closure = import_closure(REPO / "stages/describe.py", REPO)
    assert not [m for m in closure if not covered(m, deps)]
    assert not [d for d in deps if d.parts[0] == "mner" and modules_in(d) - closure]
    assert "python -m stages.describe --dataset twitter2017" in stage.cmd
    clue_files = [s for s in index.stages if s.name == "clue_files@twitter2017-captions"]
    assert clue_files and stage in index.graph.successors(clue_files[0])  # an edge: clue_files -> describe
