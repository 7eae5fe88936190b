import argparse
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

import mner
from mner.cli import build_parser, main
from mner.data.conll import Sentence, write_conll
from mner.data.labels import TWITTER_LABELS
from tests.conftest import DATA, REPO


def test_stats_table_on_real_twitter2017(capsys):
    assert main(["stats", str(DATA / "twitter2017")]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()[1:]
    assert header.split() == [
        "tweets",
        "tokens",
        "PER",
        "LOC",
        "ORG",
        "MISC",
        "entities",
        "orphans",
        "type_switches",
    ]
    assert rows[0].split() == ["train", "3373", "53007", "2943", "731", "1674", "701", "6049", "0", "0"]
    assert rows[-1].split()[:2] == ["total", "4819"]


def test_stats_json_on_real_twitter2015(capsys):
    assert main(["stats", str(DATA / "twitter2015"), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["test"]["tweets"] == 3257
    assert [table[s]["orphans"] for s in ("train", "valid", "test")] == [175, 52, 129]
    assert table["total"]["tweets"] == 8257
    assert main(["stats", str(DATA / "twitter2015"), "--json", "--scheme", "strict"]) == 0
    strict = json.loads(capsys.readouterr().out)
    # each orphan or type-switching I- starts an entity for conlleval and none when strict
    assert table["train"]["entities"] - strict["train"]["entities"] == 175 + 11


def test_score_prints_table_and_json(tmp_path, capsys):
    gold = [Sentence("g", "1", ("Paris", "Hilton", "in", "Rome"), ("B-PER", "I-PER", "O", "B-LOC"))]
    pred = [Sentence("p", "1", ("Paris", "Hilton", "in", "Rome"), ("B-PER", "I-PER", "O", "B-ORG"))]
    write_conll(tmp_path / "gold.txt", gold)
    write_conll(tmp_path / "pred.txt", pred)
    assert main(["score", str(tmp_path / "gold.txt"), str(tmp_path / "pred.txt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scheme"] == "conlleval"
    assert result["overall"]["f1"] == 0.5
    assert result["per_type"]["PER"]["f1"] == 1.0
    assert main(["score", str(tmp_path / "gold.txt"), str(tmp_path / "pred.txt"), "--scheme", "strict"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scheme: strict"
    assert lines[2].split()[:4] == ["overall", "50.00", "50.00", "50.00"]


def test_errors_go_to_stderr_with_exit_2(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("IMGID:1\nA\tX-FOO\n")
    assert main(["score", str(tmp_path / "bad.txt"), str(tmp_path / "bad.txt")]) == 2
    assert f"{tmp_path / 'bad.txt'}:2: malformed label 'X-FOO'" in capsys.readouterr().err


def test_console_script_is_installed():
    mner = shutil.which("mner")
    assert mner, "the mner console script is not on PATH: install the package (see README)"
    result = subprocess.run([mner, "stats", str(DATA / "twitter2017")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3373" in result.stdout


def garbage_weights(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage, not tensors" * 20)
    return ckpt / "model.safetensors"


def garbage_record(ckpt):
    (ckpt / "checkpoint.json").write_text("{'model': 'gei'")
    return ckpt / "checkpoint.json"


def unknown_model(ckpt):
    record = json.loads((ckpt / "checkpoint.json").read_text())
    (ckpt / "checkpoint.json").write_text(json.dumps({**record, "model": "gpt"}))
    return ckpt / "checkpoint.json"


@pytest.mark.parametrize("damage", [garbage_weights, garbage_record, unknown_model])
def test_predict_with_a_broken_checkpoint_says_which_file_with_exit_2(tmp_path, capsys, damage):
    from mner.models import InputDims, build_model, save_checkpoint

    model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    save_checkpoint(tmp_path / "ckpt", "linear-crf", model, InputDims(2, 16), TWITTER_LABELS)
    broken = damage(tmp_path / "ckpt")
    assert (
        main(["predict", "--checkpoint", str(tmp_path / "ckpt"), "--text", "Hi Paris", "--device", "cpu"])
        == 2
    )
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith(f"mner predict: error: {broken}: ")
    assert captured.err.rstrip().endswith("retrain it or pull it again (dvc pull)")


def test_a_closed_stdout_ends_the_command_quietly(tmp_path):
    """`mner score gold pred | head -1`: once the reader has gone, no traceback and no
    "Exception ignored" on stderr, and the status a shell gives a tool stopped by SIGPIPE."""
    gold = [Sentence("g", "1", ("Paris", "Hilton", "in", "Rome"), ("B-PER", "I-PER", "O", "B-LOC"))]
    write_conll(tmp_path / "gold.txt", gold)
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first write, as head's after its line
    try:
        result = subprocess.run(
            [shutil.which("mner"), "score", str(tmp_path / "gold.txt"), str(tmp_path / "gold.txt")],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(writer)
    assert result.stderr == ""
    assert result.returncode == 141


def test_a_broken_pipe_in_any_command_is_caught_in_main(monkeypatch, capsys):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["stats", str(DATA / "twitter2017")]) == 141
    assert capsys.readouterr().err == ""


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"mner {mner.__version__}\n"


def parsers(parser: argparse.ArgumentParser, name: str = "mner"):
    """``parser`` and every subcommand's parser, with their command lines."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from parsers(sub, f"{name} {command}")


def test_every_option_of_every_command_says_what_it_does():
    found = list(parsers(build_parser()))
    assert len(found) > 10
    for name, parser in found:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{name} {action.option_strings or action.dest}"
            )
    score = next(parser for name, parser in found if name == "mner score")
    assert "strict" in score.format_help()  # what --scheme chooses between


def test_params_prints_each_setting_with_its_meaning(capsys):
    """The field comments of the config dataclasses, after each value; the output is the same
    YAML as the settings."""
    from mner.core.config import load_params
    from mner.params import effective_params

    assert main(["params", str(REPO / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == effective_params(load_params(REPO / "params.yaml"))
    lines = out.splitlines()
    assert "  warmup: 0.1  # share of the optimizer steps spent warming up" in lines  # train
    assert "  amp: true  # float16 autocast on cuda" in lines  # a stage's section
    assert "    layers: 6  # HGIN layers" in lines  # a run's model config
    assert "    model: gei  # the registered model" in lines
    visual = next(line for line in lines if line.startswith("    visual: [gei, "))  # a nested dataclass
    assert visual.endswith("umt]  # read the image stages' caches too")
    # a comment above the field (several lines, joined) when it has none on its own lines
    clue_runs = next(line for line in lines if line.startswith("  clue_runs:"))
    assert clue_runs.endswith(
        "# runs trained on each clue set's text cache: runs of runs.text, or runs whose "
        "model reads the clue cells in place of an image's (clue_cells: true), trained over "
        "clue sets only"
    )
    assert (
        "    - format: captions  # captions | pgim | image-text | tweet-text (the module docstring)" in lines
    )


def test_field_notes_read_the_comment_on_above_or_inside_a_field():
    from mner.params import field_notes
    from mner.settings.ground import GroundConfig
    from mner.settings.text import TextFeaturesConfig

    ground = field_notes(GroundConfig)
    assert ground["box_threshold"][0].startswith("A box must score above this for the query. null: ")
    assert ground["max_phrases"][0].startswith("phrase queries per tweet")  # inside its parentheses
    assert ground["revision"] == ("", {})  # no comment: no note
    assert field_notes(TextFeaturesConfig)["layers"][0] == "hidden_states indices kept (0 = embeddings)"


class FakePredictor:
    """A PostPredictor whose model read the blank image for every post with an image."""

    def __init__(self, checkpoint, device, captioner):
        pass

    def predict(self, posts):
        return [self.record(post) for post in posts]

    def stream(self, posts):
        yield from self.predict(posts)

    def record(self, post):
        image = str(post.image) if post.image else None
        return {
            "id": post.id,
            "tokens": list(post.tokens),
            "labels": ["O"] * len(post.tokens),
            "image": image,
            "blank_image": True,
            "image_problem": "missing" if image else None,
            "entities": [],
        }


def test_predict_says_on_stderr_that_a_missing_image_was_read_as_the_blank_one(tmp_path, monkeypatch, capsys):
    import mner.posts

    monkeypatch.setattr(mner.posts, "PostPredictor", FakePredictor)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()  # the fake predictor reads nothing in it
    assert main(["predict", "--checkpoint", "ckpt", "--text", "Hi Paris", "--image", "nothere.jpg"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["image_problem"] == "missing"
    assert captured.err == ("mner predict: warning: image nothere.jpg: missing; the blank image was read\n")
    assert main(["predict", "--checkpoint", "ckpt", "--text", "Hi Paris"]) == 0  # no image: nothing to say
    assert capsys.readouterr().err == ""

    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "Hi Paris", "image": "gone.jpg", "id": "a"}\n{"text": "Hi Rome", "id": "b"}\n')
    assert main(["predict", "--checkpoint", "ckpt", "--input", str(posts)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert (
        captured.err
        == f"{posts}: post 'a': warning: image {tmp_path / 'gone.jpg'}: missing; the blank image was read\n"
    )


def wrong_values(root, checkpoint):
    """Per argument ``(command, dest)`` that takes a value of its own kind (a file, a directory,
    a count, a device, a name), a command line giving it a wrong one, and what the error says.
    Flags and choices are tried by :func:`wrong_value` itself."""
    afile, adir, full, data = root / "afile", root / "adir", root / "full", str(DATA / "twitter2017")
    posts, new = root / "posts.jsonl", str(root / "new")
    ck = ["predict", "--checkpoint", str(checkpoint)]
    return {
        ("stats", "data_dir"): (["stats", afile], f"argument data_dir: {afile}: not a directory"),
        ("score", "gold"): (["score", adir], f"argument gold: {adir}: a directory, not a file"),
        ("score", "pred"): (["score", afile, adir], f"argument pred: {adir}: a directory, not a file"),
        ("offline-workspace", "dest"): (
            ["offline-workspace", afile],
            f"{afile}: exists and is not a directory",
        ),
        ("quickstart", "dest"): (["quickstart", full], f"argument dest: {full}: exists and is not empty"),
        ("train", "data_dir"): (["train", root / "nowhere", new], "argument data_dir: "),
        ("train", "dest"): (["train", data, afile], f"argument dest: {afile}: exists and is not a directory"),
        ("train", "runs"): (["train", data, new, "--runs", "no-such"], "unknown model 'no-such'"),
        ("train", "images"): (["train", data, new, "--images", afile], f"--images: {afile}: not a directory"),
        ("params", "params"): (["params", adir], f"argument params: {adir}: a directory, not a file"),
        ("params", "section"): (
            ["params", REPO / "params.yaml", "--section", "nosuch"],
            "no section 'nosuch'",
        ),
        ("runs", "workspace"): (["runs", afile], f"argument workspace: {afile}: not a directory"),
        ("runs", "compare"): (["runs", full, "--compare", "a", "b"], "no run 'a'; runs there: none"),
        ("predict", "checkpoint"): (["predict", "--checkpoint", afile, "--text", "Hi"], "--checkpoint: "),
        ("predict", "text"): ([*ck, "--text", " "], "the post has no words"),
        ("predict", "input"): ([*ck, "--input", adir], f"argument --input: {adir}: a directory, not a file"),
        ("predict", "image"): ([*ck, "--text", "Hi", "--image", adir], f"{adir}: a directory, not an image"),
        ("predict", "caption"): ([*ck, "--input", posts, "--caption", "a dog"], "--caption go with --text"),
        ("predict", "describe"): ([*ck, "--text", "Hi", "--describe", adir], "--describe: "),
        ("predict", "device"): ([*ck, "--text", "Hi", "--device", "gpu"], "--device: 'gpu' is not a device"),
        ("visual-use", "run_dir"): (["visual-use", afile], f"argument run_dir: {afile}: not a directory"),
        ("visual-use", "device"): (["visual-use", adir, "--device", "cuda:x"], "'cuda:x' is not a device"),
        ("visual-use", "batch_size"): (
            ["visual-use", adir, "--batch-size", "0"],
            "'0' is not a whole number",
        ),
        ("clue-use", "run_dir"): (["clue-use", root / "nowhere"], "nowhere: no such directory"),
        ("clue-use", "device"): (["clue-use", adir, "--device", "gpu"], "'gpu' is not a device"),
        ("merge-shards", "cache"): (["merge-shards", adir, "--shards", "2"], "argument cache: "),
        ("merge-shards", "shards"): (["merge-shards", afile, "--shards", "-1"], "'-1' is not a whole number"),
        ("merge-shards", "prepared"): (
            ["merge-shards", afile, "--shards", "2", "--prepared", afile],
            "--prepared",
        ),
    }


def wrong_value(command, action, table):
    """A command line giving ``action`` of ``command`` a wrong value, and what the error says."""
    words = command.split()[1:]
    if action.nargs == 0:  # a flag (--json, --help, --version): no value
        return [*words, f"{action.option_strings[-1]}=yes"], "ignored explicit argument 'yes'"
    if action.choices is not None and not isinstance(action.choices, dict):  # --bio, --scheme
        return [*words, action.option_strings[-1], "nosuch"], "invalid choice: 'nosuch'"
    if isinstance(action, argparse._SubParsersAction):
        return [*words, "nosuch"], "invalid choice: 'nosuch'"
    argv, says = table.pop((" ".join(words), action.dest))
    return [str(word) for word in argv], says


def test_every_argument_of_every_command_given_a_wrong_value_is_one_line_with_status_2(tmp_path, capsys):
    """A directory where a file goes, a file where a directory goes, a workspace over a file or a
    full directory, a count of 0, an unknown device, name or choice: one line on stderr naming the
    argument (or its value) and exit status 2, no traceback and nothing written. The table of
    wrong values covers every argument of every command: a new argument needs its entry."""
    from mner.models import InputDims, build_model, save_checkpoint

    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "full" / "runs").mkdir(parents=True)
    (tmp_path / "posts.jsonl").write_text('{"text": "Hi Paris"}\n')
    model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    save_checkpoint(tmp_path / "ckpt", "linear-crf", model, InputDims(2, 16), TWITTER_LABELS)
    before = sorted(tmp_path.rglob("*"))
    table = wrong_values(tmp_path, tmp_path / "ckpt")
    tried = 0
    for command, parser in parsers(build_parser()):
        for action in parser._actions:
            argv, says = wrong_value(command, action, table)
            assert main(argv) == 2, argv
            captured = capsys.readouterr()
            (line,) = captured.err.splitlines()  # one line, no traceback
            assert line.startswith(f"{command}: error: ") and says in line, (argv, line)
            assert captured.out == "", argv
            tried += 1
    assert not table, f"entries for no argument: {sorted(table)}"
    assert tried > 40
    assert sorted(tmp_path.rglob("*")) == before  # nothing made, nothing removed
