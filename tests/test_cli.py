import json
import shutil
import subprocess

import pytest

from mner.cli import main
from mner.data.conll import Sentence, write_conll
from mner.data.labels import TWITTER_LABELS
from tests.conftest import DATA


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
