"""``mner predict`` end to end: the real extraction stages with tiny random models over a
few real tweets and synthetic images, checkpoints trained by the real trainer, then the
predictor on posts given by text or JSON lines."""

import json
import random
import shutil
import unicodedata

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from mner.cached.dataset import FeatureCaches, collate
from mner.cli import main
from mner.core.cache import directory_sha256
from mner.core.config import to_dict
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS, Sentence, read_conll, sigil_convention
from mner.data.labels import entities
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.features.detect import detect_objects
from mner.features.ground import ground_dataset
from mner.features.phrases import extract_phrases
from mner.features.text import extract_text_features
from mner.features.visual import extract_visual_features
from mner.models import CheckpointError
from mner.posts import (
    Post,
    PostPredictor,
    PostsError,
    checkpoint_dir,
    read_posts,
    tokenize,
)
from mner.settings.detect import DetectConfig
from mner.settings.ground import GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig
from mner.settings.text import TextFeaturesConfig
from mner.settings.visual import VisualConfig, expected_caches
from mner.tiny import build_tiny_detr, build_tiny_grounding_dino
from mner.train import run_training, training_job
from tests.checkpoints import save_weights
from tests.conftest import DATA
from tests.synthetic import image_side

DATASET = "twitter2017"
# the visual models and the kind of visual cells each one reads
KINDS = {"gei": "object", "fmit": "grounded", "fmit-no-obj": "grid", "umt": "grid"}
PER_SPLIT = 4
MODELS = {
    "gei": {"text_hidden": 16, "d_m": 16, "layers": 1, "heads": 2},
    "fmit": {"d": 16, "layers": 1, "heads": 2, "ff": 16, "max_visual": 4},
    "fmit-no-obj": {"model": "fmit", "d": 16, "layers": 1, "heads": 2, "ff": 16, "objects": False},
    "umt": {"d": 16, "heads": 2},
    "linear-crf": {},
    "linear-softmax": {},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_images(prepared, directory):
    """A synthetic image (shapes on a background) for each tweet but the last of each split."""
    rng = random.Random(0)
    directory.mkdir(parents=True)
    for split in SPLITS:
        for sentence in read_prepared(prepared / f"{split}.jsonl")[:-1]:
            image = Image.new("RGB", (rng.randint(96, 200), rng.randint(96, 200)), (200, 200, 40))
            draw = ImageDraw.Draw(image)
            for _ in range(3):
                x, y = rng.randrange(60), rng.randrange(60)
                draw.rectangle((x, y, x + rng.randint(20, 40), y + rng.randint(20, 40)), fill=(30, 60, 200))
            image.save(directory / f"{sentence.image_id}.jpg")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert):
    """Caches made by the real stages and a trained checkpoint of each of :data:`MODELS`."""
    root = tmp_path_factory.mktemp("posts")
    prepared = root / "prepared"
    prepare(PrepareConfig(data_dir=str(DATA), limit=PER_SPLIT), DATASET, prepared)
    write_images(prepared, root / "images" / DATASET)
    cpu = {"device": "cpu", "amp": False}
    text = TextFeaturesConfig(model=str(tiny_bert), layers=(-1, -2), window=64, stride=16, **cpu)
    images = ImagesConfig(dir=str(root / "images"), max_side=320, blank_size=64)
    detr, dino = build_tiny_detr(root / "detr"), build_tiny_grounding_dino(root / "dino")
    detect = DetectConfig(
        model=str(detr), revision="main", threshold=0.0, max_objects=4, num_workers=0, **cpu
    )
    ground = GroundConfig(
        model=str(dino),
        box_threshold=0.0,
        text_threshold=0.0,
        general_words=("person", "location"),
        num_workers=0,
        **cpu,
    )
    torch.manual_seed(0)  # a random ResNet saved as a local weights file, so that it loads the same twice
    torch.save(torchvision.models.resnet18(zero_init_residual=True).state_dict(), root / "resnet18.pth")
    weights = str(root / "resnet18.pth")
    visual = VisualConfig(model="resnet18", weights=weights, image_size=64, grid=True, num_workers=0, **cpu)
    caches = {name: root / f"{name}.h5" for name in ("text", "objects", "phrases", "grounding", "visual")}
    extract_text_features(text, prepared, caches["text"])
    detect_objects(detect, images, Workspace.of(DATASET, prepared), caches["objects"])
    parse = ParseConfig(backend="spacy")
    extract_phrases(parse, prepared, caches["phrases"])
    params = {
        "images": to_dict(images),
        "detect": to_dict(detect),
        "parse": to_dict(parse),
        "ground": to_dict(ground),
        "visual_features": to_dict(visual),
        "text_features": to_dict(text),
        "train": {"epochs": 1, "batch_size": 4, "patience": 0, "device": "cpu"},
        "models": MODELS,
    }
    expected = expected_caches(params)
    ground_dataset(
        ground,
        images,
        Workspace.of(DATASET, prepared, phrases=caches["phrases"]),
        caches["grounding"],
        expect_phrases=expected["phrases"],
    )
    extract_visual_features(
        visual,
        images,
        Workspace.of(DATASET, prepared, objects=caches["objects"], grounding=caches["grounding"]),
        caches["visual"],
        expect_objects=expected["objects"],
        expect_grounding=expected["grounding"],
    )
    workspace = Workspace.of(DATASET, prepared, **caches)
    for name in MODELS:
        out = root / "runs" / name / "seed1" / "checkpoint"
        job = training_job(params, name, image_side(params) if name in KINDS else None)
        run_training(job, workspace, 1, out)
    return {"root": root, "prepared": prepared, "caches": caches, "images": root / "images" / DATASET}


def run_dir(world, name):
    return world["root"] / "runs" / name / "seed1"


def forced(world, name, tmp_path):
    """A copy of a trained checkpoint whose biases make the whole post one PER entity (an
    I-PER chain) and, for GEI, one predicted span: so that every post has an entity."""
    out = tmp_path / f"{name}-forced"
    shutil.copytree(checkpoint_dir(run_dir(world, name)), out)
    labels = json.loads((out / "checkpoint.json").read_text())["labels"]
    state = load_file(out / "model.safetensors")
    state["out.bias"][labels.index("I-PER")] += 30.0
    if "span_out.bias" in state:
        state["span_out.bias"][2] += 30.0  # SPAN_TAGS ("O", "B", "I")
    save_weights(out, state)
    return out


def dataset_posts(world, split="test"):
    """The tweets of a split as posts with their images (the last one has none)."""
    sentences = read_prepared(world["prepared"] / f"{split}.jsonl")
    return [Post(s.tokens, world["images"] / f"{s.image_id}.jpg", s.id) for s in sentences]


def cache_batch(world, predictor, split="test"):
    """The collated split as the trainer and the evaluation read it from the caches."""
    model, expect = predictor.model, predictor.record["caches"]
    caches = FeatureCaches.open(Workspace.of(DATASET, world["prepared"], **world["caches"]), expect)
    data = caches.dataset(model, split, read_prepared(world["prepared"] / f"{split}.jsonl"), predictor.labels)
    return collate([data[i] for i in range(len(data))])


@pytest.fixture(scope="module")
def predictors(world):
    """A predictor of each trained checkpoint, loaded once."""
    return {name: PostPredictor(run_dir(world, name), device="cpu") for name in MODELS}


@pytest.mark.parametrize("name", list(KINDS))
def test_features_are_those_of_the_caches(world, predictors, name):
    """Same recorded params, same extractors: the predictor's items for the test tweets
    (words, and the whole image then the objects or grounded objects with their
    positions) are the cached ones, within float16 rounding."""
    predictor = predictors[name]
    items, cells, images = predictor.items(dataset_posts(world))
    cached = cache_batch(world, predictor)
    ours = collate(items)
    assert [image.problem for image in images] == [None] * (PER_SPLIT - 1) + ["missing"]
    for key in ("features", "visual"):
        assert ours[key].shape == cached[key].shape
        np.testing.assert_allclose(ours[key], cached[key], rtol=2e-3, atol=2e-3)
    for key in ("mask", "visual_mask", "visual_positions", "shapes"):
        assert torch.equal(ours[key], cached[key]), key
    assert [len(c) for c in cells] == ours["visual_mask"].sum(1).tolist()


def cli(capsys, *args):
    """``mner predict ARGS --device cpu``: exit code, stdout and stderr."""
    code = main(["predict", *args, "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_entities(result):
    """Entities consistent with the post's labels and words, confidences in (0, 1]."""
    found = [(e["type"], e["start"], e["end"]) for e in result["entities"]]
    assert found == [tuple(entity) for entity in entities(result["labels"])]
    assert len(result["labels"]) == len(result["tokens"])
    for entity in result["entities"]:
        assert entity["text"] == " ".join(result["tokens"][entity["start"] : entity["end"]])
        assert 0 < entity["confidence"] <= 1


def check_attended(entity, kind):
    """The top visual cells of an entity: described, best first, weights summing to at most 1."""
    cells = entity["attended"]
    weights = [cell["weight"] for cell in cells]
    assert 1 <= len(cells) <= 3 and weights == sorted(weights, reverse=True)
    assert all(w >= 0 for w in weights) and sum(weights) <= 1 + 1e-3
    for cell in cells:
        assert len(cell["box"]) == 4 and all(0 <= v <= 1 for v in cell["box"])
        if cell["index"] == 0:
            assert cell == {**cell, "kind": "image", "box": [0, 0, 1, 1], "label": None}
        else:
            assert cell["kind"] == kind and isinstance(cell["label"], str if kind != "grid" else type(None))
    if kind == "object":
        assert {c["label"] for c in cells if c["index"]} <= {"person", "trophy", "dog"}


@pytest.mark.parametrize("name", list(MODELS))
def test_predictions_are_the_models_decode_over_the_caches(world, predictors, name):
    """The test tweets as posts (the last one's image is missing): labels as the model
    decodes the cached features, entities that agree with them."""
    predictor, sentences = predictors[name], read_prepared(world["prepared"] / "test.jsonl")
    results = predictor.predict(dataset_posts(world))
    with torch.no_grad():
        decoded = predictor.model.decode(cache_batch(world, predictor))
    assert [r["id"] for r in results] == [s.id for s in sentences]
    assert [r["labels"] for r in results] == [[predictor.labels[i] for i in ids] for ids in decoded]
    for result in results:
        check_entities(result)
        if name in KINDS:
            last = result["id"] == sentences[-1].id
            assert (result["blank_image"], result["image_problem"]) == (last, "missing" if last else None)
            for entity in result["entities"]:
                if entity["attended"] or name != "gei":  # GEI: only entities that are a predicted span
                    check_attended(entity, KINDS[name])
        else:
            assert "blank_image" not in result and all("attended" not in e for e in result["entities"])


def test_the_command_on_json_lines(world, predictors, capsys):
    """One JSON object a line, in order; images relative to the file (the last is missing)."""
    posts = world["images"] / "posts.jsonl"
    sentences = read_prepared(world["prepared"] / "test.jsonl")
    lines = [{"id": s.id, "tokens": list(s.tokens), "image": f"{s.image_id}.jpg"} for s in sentences]
    posts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, _ = cli(capsys, "--checkpoint", str(run_dir(world, "linear-crf")), "--input", str(posts))
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in results] == [s.id for s in sentences]
    assert [r["image"] for r in results] == [str(world["images"] / f"{s.image_id}.jpg") for s in sentences]
    assert results == predictors["linear-crf"].predict(dataset_posts(world))


@pytest.mark.parametrize("name", ["gei", "fmit", "umt"])
def test_a_thin_strip_image_is_read_by_every_extractor(world, capsys, name):
    """A 20000x10 image among the test posts: the detector's and the grounder's processors
    resized it to no pixel high and failed, losing the posts after it; padded to 20:1 it
    is read like any other (mner.features.images.MAX_ASPECT)."""
    from PIL import Image

    strip = world["images"] / "strip.png"
    Image.new("RGB", (20000, 10), (200, 30, 30)).save(strip)
    sentences = read_prepared(world["prepared"] / "test.jsonl")
    lines = [{"id": s.id, "tokens": list(s.tokens), "image": f"{s.image_id}.jpg"} for s in sentences]
    lines[1]["image"] = "strip.png"
    posts = world["images"] / "strip-posts.jsonl"
    posts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, _ = cli(capsys, "--checkpoint", str(run_dir(world, name)), "--input", str(posts))
    results = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in results] == [s.id for s in sentences]
    assert results[1]["image_problem"] is None


def test_a_post_that_fails_is_named_and_the_others_printed(world, capsys, monkeypatch):
    """One post whose processing fails (here its image load, forced): its id and cause on
    stderr, every other post on stdout, exit status 2."""
    import mner.posts

    sentences = read_prepared(world["prepared"] / "test.jsonl")
    lines = [{"id": s.id, "tokens": list(s.tokens), "image": f"{s.image_id}.jpg"} for s in sentences]
    posts = world["images"] / "posts-one-bad.jsonl"
    posts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bad = world["images"] / f"{sentences[1].image_id}.jpg"
    load = mner.posts.PostPredictor.load_image

    def load_image(self, post):
        if post.image == bad:
            raise OSError("the disk holding the image went away")
        return load(self, post)

    monkeypatch.setattr(mner.posts.PostPredictor, "load_image", load_image)
    code, out, err = cli(capsys, "--checkpoint", str(run_dir(world, "fmit")), "--input", str(posts))
    assert code == 2
    assert [json.loads(line)["id"] for line in out.splitlines()] == [
        s.id for s in sentences if s != sentences[1]
    ]
    assert f"{posts}: post {sentences[1].id!r}: OSError: the disk holding the image went away" in err
    assert f"{posts}: 1 of {len(sentences)} posts failed (each named above), the rest printed" in err


def test_a_failing_post_costs_only_its_own_record(predictors, monkeypatch):
    """The step is predicted again post by post: the others' records are those of a clean
    run, the failing post's is its error, in its place."""
    predictor = predictors["fmit"]
    posts = [Post.from_text(f"Kevin Durant {i}", id=str(i)) for i in range(5)]
    clean = list(predictor.stream(posts))
    load_image = predictor.load_image

    def fail_on_post_2(post):
        if post.id == "2":
            raise ValueError("no extractor reads this image")
        return load_image(post)

    monkeypatch.setattr(predictor, "load_image", fail_on_post_2)
    results = list(predictor.stream(posts))
    assert results[2] == {"id": "2", "error": "ValueError: no extractor reads this image"}
    assert results[:2] + results[3:] == clean[:2] + clean[3:]


TEXT = "Kevin Durant joins the Warriors in New York !"


@pytest.mark.parametrize("name", ["gei", "fmit", "fmit-no-obj", "umt", "linear-crf"])
def test_a_post_by_text_and_image(world, capsys, tmp_path, name):
    """One post: pretty JSON with its entities (here the whole post, by the forced biases)
    and, for the visual models, the visual cells each entity attended to most."""
    image = world["images"] / f"{read_prepared(world['prepared'] / 'test.jsonl')[0].image_id}.jpg"
    code, out, _ = cli(
        capsys, "--checkpoint", str(forced(world, name, tmp_path)), "--text", TEXT, "--image", str(image)
    )
    assert code == 0 and out.startswith("{\n  ")
    result = json.loads(out)
    assert result["tokens"] == TEXT.split() and result["image"] == str(image)
    check_entities(result)
    (entity,) = result["entities"]
    assert (entity["type"], entity["start"], entity["end"], entity["text"]) == ("PER", 0, 9, TEXT)
    if name in KINDS:
        assert result["blank_image"] is False and result["image_problem"] is None
        check_attended(entity, KINDS[name])
    else:
        assert "attended" not in entity and "blank_image" not in result


@pytest.mark.parametrize("name", ["gei", "fmit", "umt"])
def test_without_an_image_or_with_a_missing_one_the_blank_image_is_read(predictors, tmp_path, name):
    posts = [Post.from_text(TEXT), Post.from_text(TEXT, tmp_path / "no.jpg")]
    results = predictors[name].predict(posts)
    assert [(r["image"], r["image_problem"]) for r in results] == [
        (None, None),
        (str(tmp_path / "no.jpg"), "missing"),
    ]
    assert all(r["blank_image"] for r in results)
    assert results[0]["labels"] == results[1]["labels"]  # the same blank image


def test_tokenize_keeps_twitter_markers_urls_and_abbreviations():
    text = "RT @user: U.S. Army wins 9.30 #GoArmy! https://t.co/x1 don't"
    assert tokenize(text) == [
        "RT", "@user", ":", "U.S.", "Army", "wins", "9.30", "#GoArmy", "!", "https://t.co/x1", "don't"
    ]  # fmt: skip


def test_tokenize_normalises_to_nfc_and_keeps_grapheme_clusters_whole():
    """A decomposed (NFD) text gives the composed words, as the datasets spell them; a flag,
    an emoji ZWJ sequence and a letter with a combining mark of no composed form are one
    token each; control characters are dropped."""
    decomposed = unicodedata.normalize("NFD", "José Müller visits São Paulo")
    assert decomposed != "José Müller visits São Paulo"
    assert tokenize(decomposed) == ["José", "Müller", "visits", "São", "Paulo"]
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert tokenize(f"Go \U0001F1EB\U0001F1F7 team {family} now!") == [
        "Go", "\U0001F1EB\U0001F1F7", "team", family, "now", "!"
    ]  # fmt: skip
    assert tokenize("q\u0303 x\u0000y \u0092") == ["q\u0303", "x", "y"]


def test_read_posts(tmp_path):
    path = tmp_path / "posts.jsonl"
    lines = [
        {"text": "Hello Paris !", "image": "a.jpg"},
        {"tokens": ["New", "York"], "id": "x1", "image": None},
        {"tokens": ["Oslo"], "image": str(tmp_path / "abs.jpg"), "id": 7},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert read_posts(path) == [
        Post(
            ("Hello", "Paris", "!"),
            tmp_path / "a.jpg",
            "1",
            text="Hello Paris !",
            spans=((0, 5), (6, 11), (12, 13)),
        ),
        Post(("New", "York"), None, "x1"),
        Post(("Oslo",), tmp_path / "abs.jpg", "7"),
    ]


def test_hashtags_and_mentions_are_split_as_the_training_data_wrote_them():
    """Twitter-2015 and -2017 write ``#`` and ``@`` as words of their own; a post's text is
    split that way for a checkpoint trained on them, with each word's characters."""
    words = ["Go", "#NBA", "@BarackObama", "@"]
    assert tokenize("Go #NBA @BarackObama @") == words
    assert tokenize("Go #NBA @BarackObama @", "split") == ["Go", "#", "NBA", "@", "BarackObama", "@"]
    post = Post.from_text("Watch #NBA now", sigils="split")
    assert post.tokens == ("Watch", "#", "NBA", "now") and post.characters(2, 3) == (7, 10)
    assert Post.from_text("Watch #NBA now").split_as("split") == post
    assert Post(("a", "#NBA")).split_as("split").tokens == ("a", "#NBA")  # given as tokens: kept
    train = read_conll(DATA / "twitter2017" / "train.txt")
    assert sigil_convention(train) == "split"
    assert sigil_convention([Sentence("t", "i", ("#NBA", "@x", "#"), ("O", "O", "O"))]) == "joined"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"text": "a", "tokens": ["a"]}', 'give either "text" or "tokens"'),
        ('{"image": "a.jpg"}', 'give either "text" or "tokens"'),
        ('{"text": "a", "img": "a.jpg"}', "unknown key.s. img; valid keys: id, text, tokens, image"),
        ('{"text": 3}', '"text" must be a string'),
        ('{"text": "  "}', "the post has no words"),
        ('{"tokens": "New York"}', '"tokens" must be a list'),
        ('{"tokens": ["New York"]}', "every token must be a non-empty string without spaces, got 'New York'"),
        ('{"tokens": ["a", 1]}', "every token must be a non-empty string without spaces, got 1"),
        ('{"text": "a", "image": 3}', '"image" must be a path or null'),
        ('{"text": "a", "id": [1]}', '"id" must be a string or an integer'),
        ('{"text": "a", "id": ' + "9" * 5001 + "}", "Exceeds the limit .4300 digits. for integer string"),
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),
        ('{"tokens": [' + ", ".join(['"w"'] * 281) + "]}", "the post has 281 words, more than 280 .a tweet"),
    ],
    ids=lambda value: value[:40],
)
def test_a_bad_line_fails_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "posts.jsonl"
    path.write_text('{"text": "fine"}\n\n' + line + "\n")
    with pytest.raises(PostsError, match=f"^{path}:3: {message}"):
        read_posts(path)


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "posts.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(
        PostsError, match=rf"^{path}:2: not UTF-8 text \(invalid continuation byte at byte 13\)"
    ):
        read_posts(path)


def test_a_cuda_device_this_machine_lacks_is_one_line(world, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(
        ["predict", "--checkpoint", str(run_dir(world, "linear-crf")), "--text", "Hi", "--device", "cuda"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "device 'cuda': this machine has 0 CUDA device(s); use cpu or auto" in err


def test_the_command_reports_a_bad_line_or_bad_arguments(world, capsys, tmp_path):
    path = tmp_path / "posts.jsonl"
    path.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    checkpoint = str(run_dir(world, "linear-crf"))
    code, out, err = cli(capsys, "--checkpoint", checkpoint, "--input", str(path))
    assert code == 2 and out == "" and f"mner predict: error: {path}:2: unknown key(s) txt" in err
    code, _, err = cli(capsys, "--checkpoint", checkpoint, "--input", str(path), "--image", "a.jpg")
    assert code == 2 and "--image and --caption go with --text" in err
    code, _, err = cli(capsys, "--checkpoint", str(tmp_path), "--text", "Hi")
    assert code == 2 and f"{tmp_path}: no checkpoint.json there nor in {tmp_path / 'checkpoint'}" in err


def test_a_text_encoder_other_than_the_one_trained_on_is_refused(world, tmp_path):
    """The text cache a checkpoint was trained on records the SHA-256 of its local encoder's
    files; predict encodes posts with the encoder at that path only if it is still the same."""
    record = json.loads((checkpoint_dir(run_dir(world, "linear-crf")) / "checkpoint.json").read_text())
    assert record["text_features"]["model_sha256"] == directory_sha256(
        record["text_features"]["params"]["model"]
    )
    PostPredictor(run_dir(world, "linear-crf"), device="cpu")

    def rebuilt(record):
        record["text_features"]["model_sha256"] = "0" * 64

    checkpoint = copy_checkpoint(world, "linear-crf", tmp_path, change_record=rebuilt)
    with pytest.raises(
        CheckpointError, match=r"the text encoder at .* is not the one this model was trained on"
    ):
        PostPredictor(checkpoint, device="cpu")


def test_a_checkpoint_away_from_its_local_encoder_says_so(world, tmp_path):
    """A relative encoder path is read in the checkpoint's workspace: copied out of it, the
    encoder is missing, not another one (as the hash check said)."""

    def relative(record):
        record["text_features"]["params"]["model"] = "models/tiny-bert"

    checkpoint = copy_checkpoint(world, "linear-crf", tmp_path, change_record=relative)
    with pytest.raises(CheckpointError) as refused:
        PostPredictor(checkpoint, device="cpu")
    assert str(refused.value) == (
        f"{checkpoint / 'checkpoint.json'}: its text encoder, the directory models/tiny-bert, is not there "
        "(the checkpoint is outside a workspace); predict from the checkpoint in its workspace, or put "
        "the encoder at that path"
    )


def test_a_checkpoint_dir_or_its_run_dir(world):
    run = run_dir(world, "gei")
    assert checkpoint_dir(run) == checkpoint_dir(run / "checkpoint") == run / "checkpoint"


def test_a_checkpoint_that_records_no_parse_params_says_what_to_rerun(world, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(checkpoint_dir(run_dir(world, "fmit")), old)
    record = json.loads((old / "checkpoint.json").read_text())
    del record["visual_features"]["phrases"]
    (old / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(PostsError, match=r"records no 'phrases' params .*rerun dvc repro ground@twitter2017"):
        PostPredictor(old, device="cpu")


def copy_checkpoint(world, name, tmp_path, change_record=None, change_state=None):
    """A copy of a trained checkpoint with its ``checkpoint.json`` record or its weights changed."""
    out = tmp_path / f"{name}-changed"
    shutil.copytree(checkpoint_dir(run_dir(world, name)), out)
    if change_record:
        record = json.loads((out / "checkpoint.json").read_text())
        change_record(record)
        (out / "checkpoint.json").write_text(json.dumps(record))
    if change_state:
        state = load_file(out / "model.safetensors")
        change_state(state)
        save_weights(out, state)
    return out


def overflow(state):
    """Finite weights whose products overflow float32: every emission is Inf or NaN."""
    state["words.mix.gamma"].fill_(3e38)
    state["out.weight"].fill_(3e38)


def test_emissions_that_overflow_are_refused_and_never_printed(world, capsys, tmp_path):
    checkpoint = copy_checkpoint(world, "linear-crf", tmp_path, change_state=overflow)
    with pytest.raises(CheckpointError, match=rf"^{checkpoint}: the model's emissions for post 'x1' are not"):
        PostPredictor(checkpoint, device="cpu").predict([Post.from_text(TEXT, id="x1")])
    code, out, err = cli(capsys, "--checkpoint", str(checkpoint), "--text", TEXT)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"mner predict: error: {checkpoint}: the model's emissions for post 'post' are not finite" in err


def test_the_command_never_prints_a_nan(world, capsys, monkeypatch):
    monkeypatch.setattr(
        PostPredictor, "predict", lambda self, posts: [{"id": "post", "weight": float("nan")}]
    )
    code, out, err = cli(capsys, "--checkpoint", str(run_dir(world, "linear-crf")), "--text", TEXT)
    assert code == 2 and "NaN" not in out and "Out of range float values are not JSON compliant" in err


@pytest.mark.parametrize(
    "name, key, value, found",
    [
        (
            "linear-crf",
            "text_features.params.layers",
            [-1],
            r"text encoder .* shape \[1, 32\], but the model was trained on \[2, 32\]",
        ),
        (
            "fmit-no-obj",
            "visual_features.params.model",
            "resnet50",
            r"visual encoder .* shape \[2048\], but the model was trained on \[512\]",
        ),
    ],
)
def test_encoders_other_than_the_checkpoint_inputs_are_refused(world, tmp_path, name, key, value, found):
    def change(record):
        *parents, last = key.split(".")
        for part in parents:
            record = record[part]
        record[last] = value
        if last == "model":
            record["weights"] = ""  # random weights of the other network

    checkpoint = copy_checkpoint(world, name, tmp_path, change_record=change)
    with pytest.raises(CheckpointError, match=rf"^{checkpoint}/checkpoint.json: the {found}"):
        PostPredictor(checkpoint, device="cpu")
