"""The command line: outputs, exit codes, one-line errors without tracebacks."""
import subprocess
import sys

import pytest

import archlab
from archlab.cli.main import main


def run(*args):
    p = subprocess.run([sys.executable, "-m", "archlab", *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_zoo_lists_models_with_parameter_counts(capsys):
    assert main(["zoo", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet50 " in out and "25,557,032" in out and "vgg16" not in out


def test_show_prints_one_line_per_node(capsys):
    assert main(["show", "resnet18", "--full"]) == 0
    out = capsys.readouterr().out
    assert "%layer1.0.conv1 = conv2d[out_channels=64, kernel_size=3, padding=1, bias=False](%maxpool) -> 64x56x56" in out
    assert out.count("\n  %") == len(archlab.get_model("resnet18")) - 1


def test_export_then_show_the_file(tmp_path, capsys):
    f = tmp_path / "net.yaml"
    assert main(["export", "resnet18", "-o", str(f), "--input", "3x128x128"]) == 0
    assert archlab.load_file(f).shape("fc") == (1000,)
    assert main(["show", str(f)]) == 0
    assert "64x64x64" in capsys.readouterr().out


def test_compare_against_torchvision(capsys):
    assert main(["compare", "resnet18", "--against", "torchvision", "--input", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "11,689,512" in out and "identical" in out


def test_show_imports_torchvision_models(capsys):
    assert main(["show", "torchvision:resnet50", "--input", "3x64x64"]) == 0
    assert "25,557,032 parameters" in capsys.readouterr().out


def test_show_imports_a_user_callable(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def build_net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["show", "my_nets:build_net", "--input", "3x32x32"]) == 0
    assert "linear[out_features=10]" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["show", "resnet5"], "no zoo model named 'resnet5'; did you mean resnet50"),
    (["show", "missing.yaml"], "cannot read missing.yaml"),
    (["show", "torchvision:nonet"], "torchvision has no model 'nonet'"),
    (["show", "no_such_pkg.mod:fn"], "cannot import module 'no_such_pkg.mod'"),
    (["show", "vgg16", "--input", "3x16x16"], "max_pool2d 'features.30': got input 512x1x1"),
    (["show", "resnet18", "--input", "3xax8"], "cannot read input shape"),
    (["compare", "se_resnet50", "--against", "torchvision"], "no torchvision counterpart"),
])
def test_user_errors_print_one_line_and_exit_2(args, message):
    code, out, err = run(*args)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archlab: error: ") and message in lines[0], err


def test_archlab_warnings_print_one_line_others_keep_their_origin(tmp_path, monkeypatch, capsys):
    import warnings

    from archlab.search import worker_storage

    def unsupported():
        warnings.warn("a torch-side note", FutureWarning)  # stands for a third-party warning: shown as usual
        return "pretend"

    monkeypatch.setattr(worker_storage, "_unsupported_optuna", unsupported)
    with pytest.warns(FutureWarning, match="a torch-side note") as passed_on:  # Python's own handler got it
        assert main(["search", "--space", "nasbench201", "--n-trials", "2", "--quiet",
                     "--storage", f"sqlite:///{tmp_path}/w.db", "--study", "w"]) == 0
    assert [w.filename for w in passed_on] == [__file__]
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("archlab: warning: ")]
    assert len(ours) == 1 and "does not support Optuna" in ours[0] and "(pretend)" in ours[0], err
    assert "torch-side" not in err and "worker_storage.py" not in err


def test_usage_error_exits_2():
    code, _, err = run("show")
    assert code == 2 and "Traceback" not in err


def test_compare_shows_counts_from_every_peer(capsys):
    assert main(["compare", "googlenet"]) == 0
    out = capsys.readouterr().out
    for text in ("'torchvision' convention", "'fvcore' convention", "'full' convention", "FlopCounterMode / 2",
                 "fvcore FlopCountAnalysis", "torchvision metadata (googlenet)", "1,498,376,192", "verdict           identical"):
        assert text in out
    assert "FAIL" not in out


def test_compare_counts_for_a_model_torchvision_lacks(capsys):
    assert main(["compare", "mobilenet_v1", "--input", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "on archlab's compiled module" in out and "verdict" not in out
