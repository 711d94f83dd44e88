"""`archlab train`: the JSON record, saved weights, and bad input refused in one line before training."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from archlab.cli.main import main
from archlab.lang import GraphBuilder, dump
from archlab.torchio.compile import to_module

DATA = "scenes:n=48,val=16"  # 4 shapes + background = 5 classes


def tiny(classes: int = 5, size: int = 32):
    b = GraphBuilder("tiny")
    x = b.input((3, size, size))
    h = b.relu(b.batch_norm2d(b.conv2d(x, 8, 3, padding=1, name="c1"), name="bn1"))
    b.output(b.conv2d(h, classes, 1, name="head"))
    return b.build()


@pytest.fixture
def net(tmp_path):
    p = tmp_path / "net.yaml"
    p.write_text(dump(tiny()))
    return p


def run(capsys, *argv):
    rc = main(["train", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_record_and_saved_weights_load_strictly(net, tmp_path, capsys):
    w = tmp_path / "w.pt"
    rc, out, err = run(capsys, net, "--data", DATA, "--epochs", 2, "--batch-size", 8, "--device", "cpu",
                       "--save", w, "--format", "json")
    assert rc == 0, err
    r = json.loads(out)
    for key in ("model", "data", "device", "epochs", "steps", "images_per_s", "train_s", "history", "final"):
        assert key in r
    assert r["data"] == DATA and r["device"] == "cpu" and r["epochs"] == 2 and r["steps"] == 2 * (48 // 8)
    assert [h["epoch"] for h in r["history"]] == [1, 2]
    assert set(r["history"][0]) >= {"epoch", "loss", "val"}
    assert set(r["final"]) == {"miou", "pixel_acc", "mean_acc"}
    state = torch.load(w, weights_only=True)
    to_module(tiny()).load_state_dict(state, strict=True)


def test_table_summary_names_the_final_metrics(net, capsys):
    rc, out, err = run(capsys, net, "--data", DATA, "--steps", 3, "--batch-size", 8)
    assert rc == 0, err
    assert "final: miou" in out and "images/s" in out and "training tiny" in err


def test_a_zoo_model_takes_the_datas_size_and_classes(capsys):
    rc, out, err = run(capsys, "resnet18", "--data", "shapes:n=32,val=8", "--steps", 2, "--batch-size", 8,
                       "--format", "json")
    assert rc == 0, err
    assert set(json.loads(out)["final"]) == {"top1"}


@pytest.mark.parametrize("argv, message", [
    (["--save", "/nonexistent/dir/w.pt"], "folder '/nonexistent/dir' does not exist"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--data", "voc:/nonexistent/VOC"], "/nonexistent/VOC"),
    (["--data", "scenes:n=48,val=16,classes=2"], "but data scenes:n=48,val=16,classes=2 needs 3x32x32"),
    (["--data", "nosuchdata"], "unknown data set 'nosuchdata'"),
    (["--batch-size", "1"], "batch_size must be an integer >= 2"),
    (["--scale", "2,1"], "LO must be <= HI"),
    (["--init", "xavier"], "invalid choice: 'xavier'"),
])
def test_bad_input_is_one_line_exit_2_before_training(net, capsys, argv, message):
    if argv[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, out, err = run(capsys, net, *(["--data", DATA] if "--data" not in argv else []), *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archlab: error:"), err
    import re
    assert re.search(message, lines[0]), lines[0]
    assert "epoch" not in out


def test_a_zoo_segmentation_model_refuses_a_size_it_cannot_take(capsys):
    rc, out, err = run(capsys, "unet_same", "--data", DATA, "--input", "3x20x20", "--steps", 1)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err


def test_the_command_runs_as_a_subprocess_with_a_progress_bar_off_a_terminal(net):
    p = subprocess.run([sys.executable, "-m", "archlab", "train", str(net), "--data", DATA, "--steps", "2",
                        "--batch-size", "8"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "final: miou" in p.stdout


def test_the_readmes_example_net_is_the_one_described_and_trains(capsys):
    """README, "Training": docs/examples/seg_small.yaml, 123,605 parameters, 3x64x64."""
    from pathlib import Path

    from archlab.lang import load_file

    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "seg_small.yaml"
    assert load_file(path).num_params() == 123_605
    rc, out, err = run(capsys, path, "--data", "scenes:n=16,val=8", "--steps", 1, "--batch-size", 8,
                       "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["steps"] == 1
