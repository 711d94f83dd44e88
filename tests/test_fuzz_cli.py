"""Fuzzing the command line: random argument vectors built from the real
subcommands and options, with valid and invalid values (negative, zero, nan,
inf, huge, empty, junk, paths that do not exist or cannot be written).

The property, for every vector, run in-process through ``main()`` under a
time bound: exit 0 with plausible output (no negative, nan or inf numbers in
what ``analyze`` prints), or exit 2 with exactly one stderr line
``archlab: error: ...`` under 500 characters; never an uncaught exception or
an internal error, never a hang. ``compare`` may also exit 1, when a check it
ran failed and its report says so.

The default run tries ``FAST_EXAMPLES`` vectors (about 20 s on one core); the
slow-marked run tries ``SLOW_EXAMPLES``. Models are tiny (a 6-node description
file, zoo models at small inputs) so a valid vector finishes in well under a
second; the commands that run real forward passes (``erf``, ``compare``) only
get small inputs when their input is valid.
"""
from __future__ import annotations

import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archlab.cli.main import main

FAST_EXAMPLES = 200
SLOW_EXAMPLES = 1500
CASE_SECONDS = 30  # a case that runs longer is a hang (tiny models: valid cases take < 2 s)

TINY_YAML = """\
format: archlab/1
name: tiny
nodes:
- {name: x, op: input, shape: [3, 16, 16]}
- {name: conv1, op: conv2d, in: [x], out_channels: 4, kernel_size: 3, padding: 1}
- {name: relu1, op: relu, in: [conv1]}
- {name: pool, op: max_pool2d, in: [relu1], kernel_size: 2}
- {name: gap, op: adaptive_avg_pool2d, in: [pool], output_size: 1}
- {name: flat, op: flatten, in: [gap]}
- {name: fc, op: linear, in: [flat], out_features: 3}
outputs: {out: fc}
"""

JUNK = ["-1", "0", "-0", "nan", "inf", "-inf", "1e400", "1e3", "99999999999999999999", "", " ", "abc",
        "0x10", "1_0", "3.5", "--", "-", "%s", "\x00", "3x", "x", "3x0x0", "3x-4x4", "3x224", "1x3x8x8",
        "\u00e9", "'", "[", "*"]
# what a mistyped or hostile number looks like
NUMBERS = ["-1", "-4", "0", "-0", "nan", "inf", "-inf", "1e400", "1e3", "99999999999999999999", "2.5", "", "0x10"]
SIDES = ["8", "16", "32", "3x16x16", "1x16x16", "3x15x17", "3x1x1", "3x2x2"]
HUGE_SIDES = ["3x100000x100000", "3x999999937x1", "4096", str(2**62)]


def opt(valid: list[str], bad: list[str] = JUNK):
    """An option: (strategy of valid values, strategy of bad ones: ``bad`` or arbitrary short text)."""
    return st.sampled_from(valid), st.one_of(st.sampled_from(bad), st.text(max_size=6))


def num(valid: list[str], bad: list[str] = ()):
    """A numeric option: its bad values are ``NUMBERS`` plus ``bad`` (out of range)."""
    return opt(valid, NUMBERS + list(bad))


FLAG = (st.none(), st.none())


@contextmanager
def time_bound(seconds: int):
    """Fail (rather than hang the suite) when the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@st.composite
def argv(draw, tmp: Path):
    """One argument vector: a subcommand, a model and some of its options, in any
    order. At most one thing is wrong in it (the model, or one option's value),
    so valid vectors are common and each bad value is judged on its own."""
    yaml = str(tmp / "tiny.yaml")
    light_models = [yaml, "mobilenet_v1", "resnet18", "alexnet", "unet", "ResNet18"]
    bad_models = [":", "", "nope", "resnet", "net.py", str(tmp / "net.py"), "missing.yaml", "a.b:c",
                  "os:getcwd", "os.path:sep", "torchvision:nonet", "nb201:", "nb201:garbage", str(tmp), "/dev/null",
                  f"{tmp}/net.py:build", f"{tmp}/net.py:crash", f"{tmp}/net.py:nothing", "a" * 300,
                  "x/" + "a" * 300 + ".py:f", "\u00e9.yaml", "-"]
    bad_outputs = ["/nonexistent/x", str(tmp), "", "/dev/full", str(tmp / "a" / "b"), "a" * 300]
    # analyze (the most options, the numbers to check) three times as often as the rest
    command = draw(st.sampled_from(["analyze"] * 3 + ["show", "export", "erf", "compare", "zoo", "ops", "bogus"]))
    if command in ("ops", "bogus"):
        return [command, *draw(st.lists(st.sampled_from(["--full", "-x", "1"]), max_size=1))]
    if command == "zoo":
        valid, bad = opt(["resnet*", "VGG1?", "*net*", "mobilenet_v1"])
        return ["zoo", *draw(st.lists(st.one_of(valid, bad), max_size=1))]
    heavy = command in ("erf", "compare")  # real forward passes: valid inputs stay small
    options = {
        "--input": opt(SIDES if heavy else SIDES + HUGE_SIDES, JUNK + (HUGE_SIDES if heavy else [])),
        "--num-classes": num(["1", "10", "1000"]),
    }
    if command == "analyze":
        options.update({
            "--batch": num(["1", "4", "1000000000"]),
            "--dtype": opt(["float32", "bf16", "fp16"]),
            "--depth": num(["1", "2", "9"]),
            "--flops-convention": opt(["torchvision", "fvcore", "full"]),
            "--format": opt(["table", "csv", "json", "markdown"]),
            "--optimizer": opt(["sgd", "adam"]),
            "-o": opt([str(tmp / "out.txt"), "-"], bad_outputs),
            "--all-nodes": FLAG,
        })
    elif command == "show":
        options["--full"] = FLAG
    elif command == "export":
        options["-o"] = opt([str(tmp / "out.yaml"), "-"], bad_outputs)
    elif command == "erf":
        del options["--num-classes"]
        options.update({
            "--samples": num(["1", "2"], ["4097", "100000"]),
            "--seed": num(["0", "7", str(2**32 - 1)], [str(2**32)]),
            "--node": opt(["conv1", "pool", "relu1"], ["nope", "fc", "x"]),
            "--png": opt([str(tmp / "erf.png")], bad_outputs),
            "--weights": opt([], [str(tmp / "missing.pt"), yaml, "/dev/null"]),
        })
    else:  # compare
        options.update({
            "--batch": num(["1", "2"], ["1025", "5000"]),
            "--dtype": opt(["float64", "float32"]),
            "--tolerance": num(["1e-5", "0", "1"]),
            "--against": opt(["none"], ["torchvision"]),  # the tiny file has no torchvision twin
            "--weights-only": FLAG,
        })
    chosen = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=4))
    wrong = draw(st.sampled_from([None, "model", *[o for o in chosen if options[o] is not FLAG]]))
    model = draw(st.sampled_from(bad_models if wrong == "model" else [yaml] if heavy else light_models))
    args = [command, model]
    for o in chosen:
        valid, bad = options[o]
        if o == "--weights" and o != wrong:
            continue  # no valid weights file to offer
        value = draw(bad if o == wrong else valid)
        args += [o] if value is None else [f"{o}={value}"] if draw(st.booleans()) else [o, value]
    if draw(st.booleans()) and not model.startswith("-"):  # options before the positional argument are legal too
        args = [command, *args[2:], model]
    return args


NEGATIVE = re.compile(r"(?<![\w.\-])-\d")  # a minus sign starting a number (not a name like conv-1)
NONFINITE = re.compile(r"\b(nan|inf|infinity)\b", re.I)


def check(args: list[str], capsys, tmp: Path, outcomes: dict) -> None:
    """Run one vector and assert the property."""
    capsys.readouterr()
    with time_bound(CASE_SECONDS):
        code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, (args, err)
    assert "internal error" not in err, (args, err)
    outcomes[code] = outcomes.get(code, 0) + 1
    outcomes.setdefault("by_command", {}).setdefault(args[0], []).append(code)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (args, err)
        assert lines[0].startswith("archlab: error: ") and len(lines[0]) < 500, (args, lines[0][:600])
        return
    if code == 1:
        assert args[0] == "compare" and ("DIFFERENT" in out or "FAIL" in out), (args, out, err)
        return
    assert code == 0, (args, code, err)
    assert all(line.startswith(("wrote ", "archlab: warning: ")) for line in err.splitlines()), (args, err)
    if args[0] == "analyze":
        written = [a.split("=", 1)[-1] for a in args if a.startswith("-o")]
        text = out
        if "-o" in args:
            written.append(args[args.index("-o") + 1])
        for path in written:
            if path not in ("-o", "-") and Path(path).is_file():
                text += Path(path).read_text()
        assert text.strip(), args
        assert not NEGATIVE.search(text), (args, NEGATIVE.search(text))
        assert not NONFINITE.search(text), (args, NONFINITE.search(text))


def run_fuzz(tmp_path: Path, capsys, examples: int) -> dict:
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    (tmp_path / "net.py").write_text("def build():\n    raise SystemExit(3)\n"
                                     "def crash():\n    return 1 / 0\n"
                                     "def nothing():\n    return None\n")
    outcomes: dict = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(args=argv(tmp_path))
    def case(args):
        check(args, capsys, tmp_path, outcomes)

    case()
    by_command = outcomes.pop("by_command", {})
    tally = ", ".join(f"{c}: {len(v)} ({v.count(0)} ok)" for c, v in sorted(by_command.items()))
    print(f"fuzzed {sum(outcomes.values())} argument vectors: exit codes {sorted(outcomes.items())}; {tally}",
          file=sys.__stderr__)
    return outcomes


def test_fuzzed_argument_vectors_exit_0_or_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output paths the fuzzer makes up land in tmp_path
    outcomes = run_fuzz(tmp_path, capsys, FAST_EXAMPLES)
    assert sum(outcomes.values()) >= FAST_EXAMPLES
    assert outcomes.get(0, 0) > 0 and outcomes.get(2, 0) > 0  # both sides of the property were exercised


@pytest.mark.slow
def test_fuzzed_argument_vectors_long_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcomes = run_fuzz(tmp_path, capsys, SLOW_EXAMPLES)
    assert sum(outcomes.values()) >= SLOW_EXAMPLES
