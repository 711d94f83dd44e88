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

    from archlab.search import optuna_tables

    def unsupported():
        warnings.warn("a torch-side note", FutureWarning)  # stands for a third-party warning: shown as usual
        return "pretend"

    monkeypatch.setattr(optuna_tables, "unsupported_optuna", unsupported)
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


# -- hardening (issue 9): every mistake one line, exit 2; nothing written half-way -----------------------
def one_line_error(capsys, args, code=2):
    """Run ``archlab ARGS`` in-process; its stderr must be one ``archlab: error:`` line under 500 chars."""
    assert main(args) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 500 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["analyze", "resnet18", "-o", "/nonexistent/x"], "argument -o/--output: cannot write '/nonexistent/x': folder '/nonexistent' does not exist"),
    (["erf", "resnet18", "--png", "/nonexistent/x.png"], "cannot write '/nonexistent/x.png'"),
    (["show", ":"], "cannot read model ':': an import spec is MODULE:CALLABLE"),
    (["show", ""], "empty model name"),
    (["show", "a" * 300], "no zoo model named 'aaaa"),  # a name the OS refuses as a path
    (["show", "/"], "/ is a folder; give a description file (.yaml) inside it"),
    (["show", "resnet18", "--num-classes", "-1"], "argument --num-classes: must be an integer >= 1, got '-1'"),
    (["compare", "resnet18", "--batch", "0"], "argument --batch: must be an integer in [1, 1,024], got '0'"),
    (["analyze", "resnet18", "--batch", "-4"], "argument --batch: must be an integer >= 1, got '-4'"),
    (["analyze", "resnet18", "--batch", "0"], "argument --batch: must be an integer >= 1, got '0'"),
    (["analyze", "resnet18", "--input", "3x224"], "'3x224' has two sizes, which could mean CxS or HxW; write all three, e.g. 3x224x224"),
    (["analyze", "resnet18", "--input", ""], "cannot read input shape ''"),
    (["analyze", "resnet18", "--input", "1x3x224x224"], "write CxHxW without the batch"),
    (["analyze", "resnet18", "--depth", "-1"], "argument --depth: must be an integer >= 1, got '-1'"),
    (["erf", "resnet18", "--samples", "0"], "argument --samples: must be an integer in [1, 4,096]"),
    (["erf", "resnet18", "--seed", str(2**32)], "argument --seed: must be an integer in [0, 4,294,967,295]"),
    (["compare", "resnet18", "--tolerance", "nan"], "argument --tolerance: must be a finite number >= 0, got 'nan'"),
    (["zoo", "["], "no zoo model matches '['"),
    (["zoo", "resnet"], "no zoo model matches 'resnet'; for every name starting with it: 'resnet*'"),
    (["show"], "the following arguments are required: model; see `archlab show --help`"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_bad_arguments_are_one_line_with_exit_2(capsys, args, message):
    line = one_line_error(capsys, args)
    assert line.startswith("archlab: error: ") and message in line, line


def test_an_unwritable_output_is_refused_before_any_work(capsys, monkeypatch, tmp_path):
    from archlab.analysis import erf

    def no_work(*a, **k):
        raise AssertionError("the ERF was computed although its PNG cannot be written")

    monkeypatch.setattr(erf, "effective_receptive_field", no_work)
    assert "cannot write" in one_line_error(capsys, ["erf", "resnet18", "--png", "/nonexistent/x.png"])
    line = one_line_error(capsys, ["export", "resnet18", "-o", str(tmp_path)])
    assert f"'{tmp_path}' is a folder; give a file name inside it" in line


def test_a_write_that_fails_midway_is_one_line(capsys):
    # /dev/full accepts the open and fails the write: a full disk.
    line = one_line_error(capsys, ["export", "resnet18", "-o", "/dev/full"])
    assert line == "archlab: error: cannot write /dev/full: No space left on device"


def test_zoo_patterns_are_case_insensitive(capsys):
    assert main(["zoo", "RESNET1*"]) == 0
    assert "resnet18 " in capsys.readouterr().out
    assert main(["show", "ResNet18", "--input", "32"]) == 0
    assert "11,689,512 parameters" in capsys.readouterr().out


def test_version_and_help_text(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"archlab {archlab.__version__}"
    assert main(["erf", "--help"]) == 0
    out = capsys.readouterr().out
    assert "20/50/95% of the gradient mass" in " ".join(out.split()) and "%%" not in out


def test_a_single_side_input_means_a_square_rgb_image(capsys):
    assert main(["show", "resnet18", "--input", "64", "--full"]) == 0
    assert "%x: 3x64x64" in capsys.readouterr().out


USER_MODULE = (
    "import torch.nn as nn\n"
    "def build_net():\n"
    "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())\n"
    "def broken_net():\n"
    "    raise ValueError('width must be even, got 3')\n"
)


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """``tmp_path/hard_pkg/nets.py`` with a working and a raising builder; cwd is tmp_path."""
    (tmp_path / "hard_pkg").mkdir()
    (tmp_path / "hard_pkg" / "__init__.py").write_text("")
    (tmp_path / "hard_pkg" / "nets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    for name in [m for m in sys.modules if m.startswith("hard_pkg")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path


def test_the_current_folder_is_importable_as_the_readme_promises(user_package, capsys):
    assert main(["show", "hard_pkg.nets:build_net", "--input", "3x16x16"]) == 0
    assert "conv2d[out_channels=8, kernel_size=3]" in capsys.readouterr().out


def test_a_file_path_names_a_callable(user_package, capsys):
    assert main(["show", "hard_pkg/nets.py:build_net", "--input", "3x16x16"]) == 0
    assert "224 parameters" in capsys.readouterr().out


def test_a_python_file_without_a_callable_gets_a_hint(user_package, capsys):
    line = one_line_error(capsys, ["analyze", "hard_pkg/nets.py"])
    assert "hard_pkg/nets.py is Python code, not a description file" in line and "hard_pkg/nets.py:CALLABLE" in line


def test_an_exception_in_user_code_is_one_line_naming_the_callable(user_package, capsys):
    line = one_line_error(capsys, ["show", "hard_pkg.nets:broken_net"])
    assert line == ("archlab: error: hard_pkg.nets:broken_net raised ValueError: width must be even, got 3; "
                    "run with --traceback for the full trace")


def test_user_code_calling_exit_is_one_line(tmp_path, capsys):
    (tmp_path / "quits.py").write_text("def build():\n    raise SystemExit(3)\n")
    line = one_line_error(capsys, ["show", f"{tmp_path}/quits.py:build"])
    assert line.endswith(f"{tmp_path}/quits.py:build raised SystemExit: 3; run with --traceback for the full trace")


@pytest.mark.parametrize("how", ["flag-first", "flag-after", "env"])
def test_traceback_shows_the_user_code_frame(user_package, capsys, monkeypatch, how):
    args = ["show", "hard_pkg.nets:broken_net"]
    if how == "env":
        monkeypatch.setenv("ARCHLAB_TRACEBACK", "1")
    args = ["--traceback", *args] if how == "flag-first" else [*args, "--traceback"] if how == "flag-after" else args
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "nets.py\", line 5, in broken_net" in err
    assert err.strip().splitlines()[-1].startswith("archlab: error: hard_pkg.nets:broken_net raised ValueError")


def test_an_internal_bug_is_reported_as_one_and_not_hidden(capsys, monkeypatch):
    from archlab.cli import commands

    def buggy(args):
        return {}["missing"]

    monkeypatch.setattr(commands, "cmd_ops", buggy)
    line = one_line_error(capsys, ["ops"], code=1)
    assert line.startswith("archlab: internal error: KeyError: 'missing'; this is a bug in archlab, please report it")
    assert main(["--traceback", "ops"]) == 1
    assert "in buggy" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["fcn_resnet50", "fasterrcnn_resnet50_fpn"])
def test_torchvision_models_never_download_backbone_weights(monkeypatch, name):
    import torch.hub

    from archlab.resolve import _torchvision_model

    def no_network(*a, **k):
        raise AssertionError(f"{name} tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert _torchvision_model(name, {}).training  # built, randomly initialised


def test_fvcore_import_warning_is_not_shown():
    code = ("import torch; from archlab.torchio.peers import fvcore_macs; "
            "print(fvcore_macs(torch.nn.Conv2d(3, 4, 3), (3, 8, 8))[0])")
    p = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "3888", p.stderr  # 4x6x6 outputs x 3x3x3 taps
    assert "Warning" not in p.stderr, p.stderr


class _Terminal:
    """A stderr that says it is a terminal and records what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_slow_imports_show_a_transient_status_line_on_a_terminal(user_package, capsys, monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["show", "hard_pkg.nets:build_net", "--input", "3x16x16"]) == 0
    assert term.text == "archlab: importing hard_pkg.nets:build_net (torch, torch.fx trace) ...\r\r\x1b[K"


def test_an_option_a_file_cannot_take_is_refused_not_ignored(tmp_path, capsys):
    f = tmp_path / "net.yaml"
    assert main(["export", "mobilenet_v1", "--input", "32", "-o", str(f)]) == 0
    capsys.readouterr()
    line = one_line_error(capsys, ["show", str(f), "--num-classes", "5"])
    assert f"num_classes=5 cannot be applied to {f}" in line
