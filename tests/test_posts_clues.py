"""``mner predict`` with a post's clue: checkpoints trained over a clue set's text cache (the
context route, and FMIT over its clue cells) read a post's caption as they read the cache."""

import json
import shutil

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from mner.api import load
from mner.cached.dataset import FeatureCaches
from mner.cli import main
from mner.clue_use import clue_use, format_clue_use
from mner.clues import read_clue_set, write_image_text
from mner.core.config import to_dict
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.evaluation import evaluate_checkpoint
from mner.features.text import extract_text_features
from mner.metrics import score
from mner.posts import Post, PostPredictor, PostsError, read_posts
from mner.settings.clues import clue_set
from mner.settings.text import TextFeaturesConfig, expected_text
from mner.train import run_training, training_job
from tests.checkpoints import save_weights
from tests.conftest import DATA

DATASET = "twitter2017"
MODELS = {"linear-crf": {}, "fmit-clue-cells": {"model": "fmit", "d": 16, "layers": 1, "heads": 2, "ff": 16}}
MODELS["fmit-clue-cells"]["clue_cells"] = True

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert):
    """A clue set of captions, the text cache read with it, and a checkpoint of each of
    :data:`MODELS` trained over it (plus linear-crf over the plain cache)."""
    root = tmp_path_factory.mktemp("clued")  # a workspace: prepared/, data/ and runs/ as the pipeline's
    prepared = root / "prepared" / DATASET
    prepare(PrepareConfig(data_dir=str(DATA), limit=4), DATASET, prepared)
    sentences = {split: read_prepared(prepared / f"{split}.jsonl") for split in SPLITS}
    captions = {
        s.image_id: f"a photo of {s.tokens[0]} at a stadium" for split in SPLITS for s in sentences[split]
    }
    (root / "data" / DATASET / "clues").mkdir(parents=True)
    write_image_text(root / "data" / DATASET / "clues" / "own.tsv", captions)
    text = TextFeaturesConfig(
        model=str(tiny_bert), layers=(-1, -2), window=64, stride=16, device="cpu", amp=False
    )
    params = {
        "text_features": to_dict(text),
        "clues": {"own": {"format": "image-text", "path": "data/{dataset}/clues/own.tsv"}},
        "train": {"epochs": 1, "batch_size": 4, "patience": 0, "device": "cpu"},
        "models": MODELS,
    }
    clues = read_clue_set("own", clue_set(params, "own"), DATASET, sentences, root)
    plain, clued = root / "text.h5", root / "text.own.h5"
    extract_text_features(text, prepared, plain)
    extract_text_features(text, prepared, clued, clues=clues)
    expect = expected_text(params, "own", DATASET, root)
    workspace = Workspace.of(DATASET, prepared, text=clued, cells=clued)
    for name in MODELS:
        caches = {"text": expect} | ({"cells": expect} if name == "fmit-clue-cells" else {})
        out = run(root, f"{name}+own") / "checkpoint"
        run_training(training_job(params, name, caches), workspace, 1, out)
    plain_run = run(root, "linear-crf") / "checkpoint"
    run_training(
        training_job(params, "linear-crf"), Workspace.of(DATASET, prepared, text=plain), 1, plain_run
    )
    return {"root": root, "prepared": prepared, "workspace": workspace, "captions": captions}


def run(root, name):
    return root / "runs" / DATASET / name / "seed1"


def test_a_post_with_its_caption_gets_the_features_of_the_clue_sets_cache(world):
    """Context and cells: the predictor's items for the test tweets with their captions are
    the cached dataset's (up to float16 rounding of batches padded otherwise)."""
    for name in MODELS:
        predictor = PostPredictor(run(world["root"], f"{name}+own"), device="cpu")
        sentences = read_prepared(world["prepared"] / "test.jsonl")
        posts = [Post(s.tokens, None, s.id, (world["captions"][s.image_id],)) for s in sentences]
        items, cells, _ = predictor.items(posts)
        caches = FeatureCaches.open(world["workspace"], predictor.record["caches"])
        data = caches.dataset(predictor.model, "test", sentences, predictor.labels)
        for item, cached in zip(items, data):
            np.testing.assert_allclose(item["features"].float(), cached["features"].float(), atol=2e-2)
            if name == "fmit-clue-cells":
                np.testing.assert_allclose(item["visual"].float(), cached["visual"].float(), atol=2e-2)
        if name == "fmit-clue-cells":
            assert [c["label"] for c in cells[0]][:3] == [
                "a photo of " + posts[0].tokens[0] + " at a stadium",
                "a",
                "photo",
            ]
        record = predictor.predict(posts[:1])[0]
        assert record["clue"] == [world["captions"][sentences[0].image_id]]


def test_the_caption_changes_what_the_context_model_reads(world):
    predictor = PostPredictor(run(world["root"], "linear-crf+own"), device="cpu")
    post = Post(("Kevin", "Durant", "joins", "Golden", "State"))
    with_caption = Post(post.tokens, clue=("a basketball player in a jersey",))
    (plain,), _, _ = predictor.items([post])
    (clued,), _, _ = predictor.items([with_caption])
    assert (plain["features"] - clued["features"]).abs().max() > 1e-3


def test_a_post_without_a_caption_is_captioned_from_its_image_when_a_captioner_is_given(world):
    seen = []

    def captioner(images):
        seen.extend(images)
        return ["a basketball player in a jersey"] * len(images)

    predictor = PostPredictor(run(world["root"], "fmit-clue-cells+own"), device="cpu", captioner=captioner)
    given = Post(("Durant", "joins"), clue=("a basketball player in a jersey",))
    (record,) = predictor.predict([Post(given.tokens)])
    assert record["clue"] == ["a basketball player in a jersey"] and len(seen) == 1
    assert record == {**predictor.predict([given])[0], "image": None}
    predictor.predict([given])
    assert len(seen) == 1  # a post with its caption is not captioned


def test_a_caption_for_a_checkpoint_trained_without_clues_is_refused(world):
    predictor = PostPredictor(run(world["root"], "linear-crf"), device="cpu")
    with pytest.raises(PostsError, match="post 'p': this checkpoint was trained without clues"):
        predictor.predict([Post(("Durant",), id="p", clue=("a player",))])
    assert "clue" not in predictor.predict([Post(("Durant",))])[0]


def test_the_command_takes_a_caption_by_flag_and_by_json_key(world, capsys, tmp_path):
    checkpoint = str(run(world["root"], "fmit-clue-cells+own"))
    main(
        [
            "predict",
            "--checkpoint",
            checkpoint,
            "--device",
            "cpu",
            "--text",
            "Durant joins",
            "--caption",
            "a man",
        ]
    )
    assert json.loads(capsys.readouterr().out)["clue"] == ["a man"]
    posts = tmp_path / "posts.jsonl"
    posts.write_text(
        '{"text": "Durant joins", "caption": "a man"}\n{"tokens": ["Durant"], "caption": ["a man", "NBA"]}\n'
    )
    assert [p.clue for p in read_posts(posts)] == [("a man",), ("a man", "NBA")]
    main(["predict", "--checkpoint", checkpoint, "--device", "cpu", "--input", str(posts)])
    assert [json.loads(line)["clue"] for line in capsys.readouterr().out.splitlines()] == [
        ["a man"],
        ["a man", "NBA"],
    ]
    posts.write_text('{"text": "Durant", "caption": 3}\n')
    with pytest.raises(
        PostsError, match=r'posts\.jsonl:1: "caption" must be a string or a list of strings, got 3'
    ):
        read_posts(posts)


@pytest.mark.parametrize("name", MODELS)
def test_the_clue_diagnostic_scores_own_none_and_another_tweets_clue(world, name):
    """``own`` is the evaluation over the clue set's cache; ``none`` reads each tweet alone."""
    result = clue_use(run(world["root"], f"{name}+own"), device="cpu")
    assert (result.clues, result.cells, result.tweets) == ("own", name == "fmit-clue-cells", 4)
    assert list(result.conditions) == ["own", "none", "deranged"] and result.with_clue == 4
    scores, _ = evaluate_checkpoint(run(world["root"], f"{name}+own") / "checkpoint", world["workspace"])
    assert result.conditions["own"].f1 == pytest.approx(scores.overall.f1, abs=1e-9)
    predictor = PostPredictor(run(world["root"], f"{name}+own"), device="cpu")
    sentences = read_prepared(world["prepared"] / "test.jsonl")
    alone = [r["labels"] for r in predictor.predict([Post(s.tokens, None, s.id) for s in sentences])]
    gold = [s.labels for s in sentences]
    assert result.conditions["none"].f1 == pytest.approx(score(gold, alone, "conlleval").overall.f1)
    assert "own: each tweet with its own clue" in format_clue_use(result)


def test_the_clue_diagnostic_refuses_a_run_without_clues_and_an_edited_clue_file(world):
    with pytest.raises(ValueError, match="trained without a clue set"):
        clue_use(run(world["root"], "linear-crf"), device="cpu")
    clue_file = world["root"] / "data" / DATASET / "clues" / "own.tsv"
    kept = clue_file.read_bytes()
    try:
        clue_file.write_bytes(kept.replace(b"stadium", b"station", 1))
        with pytest.raises(ValueError, match="the files of clue set 'own' changed since"):
            clue_use(run(world["root"], "linear-crf+own"), device="cpu")
    finally:
        clue_file.write_bytes(kept)


def test_the_python_api_tags_texts_dicts_and_posts_with_character_offsets(world, tmp_path):
    """mner.api: load once, tag a text or many posts; entities with character and word spans
    (a checkpoint whose bias makes every post one PER entity, so that there is one)."""
    tagger = load(run(world["root"], "fmit-clue-cells+own"), device="cpu")
    posts = ["Watch #NBA with Kevin Durant", {"text": "Durant joins", "caption": "a man"}, Post(("Oslo",))]
    records = tagger.tag_many(posts)
    assert [r["id"] for r in records] == ["0", "1", "post"] and records[1]["clue"] == ["a man"]
    assert records[0]["entities"] == tagger("Watch #NBA with Kevin Durant")
    with pytest.raises(PostsError, match="post 0: unknown key.s. img"):
        tagger.tag_many([{"text": "a", "img": "x.jpg"}])

    checkpoint = forced_per(run(world["root"], "linear-crf") / "checkpoint", tmp_path)
    record = json.loads((checkpoint / "checkpoint.json").read_text())
    (checkpoint / "checkpoint.json").write_text(json.dumps({**record, "sigils": "split"}))
    tagger = load(checkpoint, device="cpu")
    (entity,) = tagger("Watch  #NBA, Kevin")  # two spaces: offsets into the text as written
    assert (entity["start"], entity["end"], entity["start_char"], entity["end_char"]) == (0, 5, 0, 18)
    assert entity["text"] == "Watch  #NBA, Kevin"
    (entity,) = tagger.tag_many([Post(("Watch", "#NBA"))])[0]["entities"]
    assert (entity["start_char"], entity["text"]) == (None, "Watch #NBA")


def forced_per(checkpoint, tmp_path):
    """A copy of ``checkpoint`` whose output bias makes every post one PER entity."""
    out = tmp_path / "forced"
    shutil.copytree(checkpoint, out)
    record = json.loads((out / "checkpoint.json").read_text())
    state = load_file(out / "model.safetensors")
    state["out.bias"][record["labels"].index("I-PER")] += 30.0
    state["out.bias"][record["labels"].index("B-PER")] += 15.0
    save_weights(out, state)
    return out


def test_a_checkpoint_of_a_dataset_that_splits_sigils_reads_a_post_that_way(world, tmp_path):
    """The checkpoint records how its training data wrote #tags; a post's text follows it."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(run(world["root"], "linear-crf") / "checkpoint", checkpoint)
    record = json.loads((checkpoint / "checkpoint.json").read_text())
    assert record["sigils"] in ("split", "joined")  # the first 4 tweets of each split decide
    (checkpoint / "checkpoint.json").write_text(json.dumps({**record, "sigils": "split"}))
    (result,) = PostPredictor(checkpoint, device="cpu").predict([Post.from_text("Go #NBA now")])
    assert result["tokens"] == ["Go", "#", "NBA", "now"]


def test_the_command_captions_a_posts_image_with_the_describe_model_of_a_params_file(world, capsys, tmp_path):
    """``predict --describe PARAMS``: the post without a caption reads the caption that the
    describe model of PARAMS (a tiny random BLIP here) writes of its image."""
    from PIL import Image

    from mner.features.describe import Captioner, caption_images
    from mner.features.images import load_image
    from mner.settings.describe import DescribeConfig
    from mner.settings.images import ImagesConfig
    from mner.tiny import build_tiny_blip

    describe = {"model": str(build_tiny_blip(tmp_path / "blip")), "max_new_tokens": 4, "num_beams": 1}
    describe |= {"num_workers": 0, "device": "cpu", "amp": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"describe": describe}))
    Image.new("RGB", (64, 48), (30, 60, 200)).save(tmp_path / "post.jpg")
    checkpoint = str(run(world["root"], "fmit-clue-cells+own"))
    command = ["predict", "--checkpoint", checkpoint, "--device", "cpu", "--text", "Durant joins"]
    main([*command, "--image", str(tmp_path / "post.jpg"), "--describe", str(tmp_path / "params.yaml")])
    (clue,) = json.loads(capsys.readouterr().out)["clue"]
    images = ImagesConfig()  # a clue-cells checkpoint records no images section: the defaults
    image = load_image(tmp_path / "post.jpg", images.max_side, images.blank_size, images.max_pixels).image
    assert clue and [clue] == caption_images(Captioner(DescribeConfig(**describe)), [image])
