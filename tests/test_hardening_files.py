"""Issue 9's description-file and receptive-field reproducers: each is refused in
one line (``archlab: error: ...``, exit 2) or analyzed, quickly, never a
traceback or a hang."""
from __future__ import annotations

import time
from fractions import Fraction

import pytest

from archlab.analysis import analyze
from archlab.analysis.receptive_field import receptive_fields
from archlab.cli.main import main
from archlab.errors import ArchlabError, MAX_MESSAGE, SerializationError, ShapeError, cap_message, short
from archlab.graph import Node
from archlab.lang import load, load_file
from archlab.ops import get_op

HEAD = "format: archlab/1\nname: t\nnodes:\n"
X = "- {name: x, op: input, shape: [3, 8, 8]}\n"


def _cli(tmp_path, capsys, text: str | bytes, *args: str, seconds: float = 5.0) -> tuple[int, str, str]:
    """``archlab analyze FILE ARGS`` in-process: (status, stdout, stderr), timed."""
    path = tmp_path / "net.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    t = time.perf_counter()
    code = main(["analyze", str(path), *args])
    assert time.perf_counter() - t < seconds
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(tmp_path, capsys, text, *args, seconds: float = 5.0) -> str:
    code, out, err = _cli(tmp_path, capsys, text, *args, seconds=seconds)
    assert code == 2, (code, out, err[-2000:])
    assert err.startswith("archlab: error: ") and err.count("\n") == 1 and len(err) < 600, err[:2000]
    return err


# -- the ten traceback kinds of description files --------------------------------------------------

@pytest.mark.parametrize("value", ["true", "false", "{a: b}", "[[x]]", "[true]"])
def test_in_that_is_not_a_name_or_a_list_of_names_is_refused(tmp_path, capsys, value):
    text = HEAD + X + f"- {{name: r, op: relu, in: {value}}}\noutputs: {{out: r}}\n"
    assert "'in' must be a node name or a list of names" in _one_line_error(tmp_path, capsys, text)


def test_in_as_an_int_names_a_node(tmp_path, capsys):
    text = HEAD + X + "- {name: r, op: relu, in: 5}\noutputs: {out: r}\n"
    assert "input '5' does not exist" in _one_line_error(tmp_path, capsys, text)


@pytest.mark.parametrize("key", ["3", "1.5", "null", "true"])
def test_a_non_string_attribute_key_is_refused(tmp_path, capsys, key):
    text = HEAD + X + f"- {{name: r, op: relu, in: [x], {key}: 1}}\noutputs: {{out: r}}\n"
    assert "attribute names must be strings" in _one_line_error(tmp_path, capsys, text)


def test_meta_as_a_list_is_refused(tmp_path, capsys):
    text = "format: archlab/1\nname: t\nmeta: [1, 2]\nnodes:\n" + X + "outputs: {out: x}\n"
    assert "'meta' must be a mapping" in _one_line_error(tmp_path, capsys, text)


@pytest.mark.parametrize("outputs", ["[x]", "{out: [x]}", "true", "{1.5: x}"])
def test_outputs_as_a_list_or_nested_is_refused(tmp_path, capsys, outputs):
    text = HEAD + X + f"outputs: {outputs}\n"
    assert "'outputs' must be a node name or a mapping" in _one_line_error(tmp_path, capsys, text)


def test_a_non_utf8_file_is_refused(tmp_path, capsys):
    err = _one_line_error(tmp_path, capsys, (HEAD + X + "outputs: {out: x}\n# caf\xe9\n").encode("latin-1"))
    assert "not UTF-8 text (byte 0xe9" in err
    with pytest.raises(SerializationError, match="not UTF-8"):
        load_file(tmp_path / "net.yaml")


def test_an_integer_of_4301_digits_is_refused(tmp_path, capsys):
    text = HEAD + "- {name: x, op: input, shape: [3, " + "9" * 5000 + ", 8]}\noutputs: {out: x}\n"
    assert "cannot read a value" in _one_line_error(tmp_path, capsys, text)


@pytest.mark.parametrize("value", ["1" + "0" * 400, ".inf", ".nan", "-.inf"])
def test_a_float_attribute_beyond_a_float_is_refused(tmp_path, capsys, value):
    text = HEAD + X + f"- {{name: b, op: batch_norm2d, in: [x], eps: {value}}}\noutputs: {{out: b}}\n"
    assert "attribute eps: expected a finite number" in _one_line_error(tmp_path, capsys, text)


@pytest.mark.parametrize("op", ["add", "mul", "concat"])
def test_an_empty_input_shape_into_a_merge_is_refused(tmp_path, capsys, op):
    text = (HEAD + "- {name: x, op: input, shape: []}\n- {name: y, op: input, shape: []}\n"
            f"- {{name: m, op: {op}, in: [x, y]}}\noutputs: {{out: m}}\n")
    assert "shape [] has no dimension" in _one_line_error(tmp_path, capsys, text)
    with pytest.raises(ShapeError, match="have no dimension"):  # the merge's own rule, without the input's
        get_op(op).infer_shape(Node("m", op, ("a", "b"), {}), [(), ()])


def test_astronomically_large_shapes_are_refused_in_one_line(tmp_path, capsys):
    """Table, JSON and CSV output used to crash on float(huge): a tensor beyond
    PyTorch's int64 element count is refused at shape inference, written short."""
    text = HEAD + "- {name: x, op: input, shape: [3, 1" + "0" * 300 + ", 7]}\noutputs: {out: x}\n"
    for fmt in ("table", "json", "csv"):
        err = _one_line_error(tmp_path, capsys, text, "--format", fmt)
        assert "3x~1.0e300x7 has more elements than a PyTorch tensor can hold" in err


def test_yaml_alias_bombs_are_refused_at_load_quickly(tmp_path, capsys):
    """A "billion laughs" file: 9 levels of 10 aliases (10**9 values expanded)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    for where in ("in: *a9", "kernel_size: *a9"):
        text = "\n".join(lines) + "\n" + HEAD + X + f"- {{name: r, op: relu, {where}}}\noutputs: {{out: r}}\n"
        assert "expands to more than 1,000,000 values" in _one_line_error(tmp_path, capsys, text)
    text = "\n".join(lines) + "\nformat: archlab/1\nname: *a9\nnodes: *a9\n"
    assert "expands to more than" in _one_line_error(tmp_path, capsys, text)


@pytest.mark.parametrize("text", ["", "# nothing\n", "42\n", "a: &a [1, *a]\nnodes: *a\n", "x: " + "[" * 150 + "]" * 150])
def test_empty_scalar_recursive_and_deep_documents_are_refused(tmp_path, capsys, text):
    """Found by the fuzz test: an empty file (a None document) crashed the alias check."""
    assert "archlab: error: " in _one_line_error(tmp_path, capsys, text)


def test_a_small_alias_is_fine(tmp_path, capsys):
    text = "k: &k {kernel_size: 3, padding: 1}\n" + HEAD + X + \
        "- {name: c, op: conv2d, in: [x], out_channels: 4, <<: *k}\noutputs: {out: c}\n"
    code, out, err = _cli(tmp_path, capsys, text)
    assert code == 0 and "params" in out, err


def test_a_20000_node_cycle_is_reported_in_one_short_line(tmp_path, capsys):
    n = 20_000
    nodes = [X] + [f"- {{name: n{i}, op: relu, in: [n{(i + 1) % n}]}}\n" for i in range(n)]
    text = HEAD + "".join(nodes) + "outputs: {out: n0}\n"
    err = _one_line_error(tmp_path, capsys, text, seconds=60)  # YAML parsing 20,000 lines takes seconds
    assert "cycle" in err and "more)" in err and len(err) < MAX_MESSAGE + 30


def test_every_error_message_is_capped_and_one_line():
    e = ArchlabError("x" * 1_000_000 + "\nsecond line")
    assert len(str(e)) <= MAX_MESSAGE and "\n" not in str(e) and "more characters" in str(e)
    assert cap_message("short") == "short"
    bomb: list = ["x"]
    for _ in range(60):
        bomb = [bomb] * 10
    t = time.perf_counter()
    assert len(short(bomb)) < 100 and len(short(10 ** 5000)) < 20 and time.perf_counter() - t < 0.1


def test_a_huge_node_name_or_op_is_capped(tmp_path, capsys):
    text = HEAD + X + f"- {{name: r, op: {'q' * 200_000}, in: [x]}}\noutputs: {{out: r}}\n"
    assert "unknown op" in _one_line_error(tmp_path, capsys, text)


# -- receptive fields: time independent of strides and sizes -------------------------------------

RF_HANGS = {
    "conv_transpose2d stride 1e9, kernel 1e5": (
        "- {name: x, op: input, shape: [1, 4, 4]}\n"
        "- {name: u, op: conv_transpose2d, in: [x], out_channels: 1, kernel_size: 100000, stride: 1000000000}\n"),
    "unpool after a 1e5 pool": (
        "- {name: x, op: input, shape: [1, 100000, 100000]}\n"
        "- {name: p, op: max_pool2d_with_indices, in: [x], kernel_size: 100000}\n"
        "- {name: u, op: max_unpool2d, in: [p, p]}\n"),
    "upsample to huge sizes": (
        "- {name: x, op: input, shape: [1, 3, 3]}\n"
        "- {name: u, op: upsample, in: [x], size: [999999937, 999999929]}\n"),
    "bilinear upsample to huge sizes": (
        "- {name: x, op: input, shape: [1, 3, 3]}\n"
        "- {name: u, op: upsample, in: [x], size: [999999937, 7], mode: bilinear}\n"),
    "align-corners upsample to huge sizes": (
        "- {name: x, op: input, shape: [1, 3, 3]}\n"
        "- {name: u, op: upsample, in: [x], size: [999999937, 7], mode: bilinear, align_corners: true}\n"),
    "adaptive_avg_pool2d to 999999937": (
        "- {name: x, op: input, shape: [1, 5, 5]}\n"
        "- {name: u, op: adaptive_avg_pool2d, in: [x], output_size: 999999937}\n"),
}


@pytest.mark.parametrize("case", sorted(RF_HANGS))
def test_huge_strides_and_sizes_analyze_in_constant_time(tmp_path, capsys, case):
    text = HEAD + RF_HANGS[case] + "outputs: {out: u}\n"
    t = time.perf_counter()
    g = load(text)
    rf = receptive_fields(g)["u"]
    assert time.perf_counter() - t < 1.0
    assert all(s >= 1 for s in rf.size) and rf.slack[0] >= 0
    code, out, err = _cli(tmp_path, capsys, text, "--format", "json", seconds=5)
    assert code == 0, err


def test_a_field_beyond_2_64_pixels_is_refused_naming_the_node(tmp_path, capsys):
    conv = "op: conv2d, out_channels: 1, kernel_size: 1, stride: 1000000000000"
    text = (HEAD + "- {name: x, op: input, shape: [1, 1, 1]}\n" + f"- {{name: c1, in: [x], {conv}}}\n"
            f"- {{name: c2, in: [c1], {conv}}}\n" + "outputs: {out: c2}\n")
    assert "conv2d 'c2': receptive field beyond 2**64 input pixels" in _one_line_error(tmp_path, capsys, text)


def test_the_closed_form_transposed_conv_rule_is_the_listed_fit():
    """The O(1) rule equals the fit over one listed period (the former rule), k, s, p, d < 7."""
    from archlab.ops.base import Window
    from archlab.ops.resample import spread_window

    for k in range(1, 7):
        for s in range(1, 7):
            for p in range(0, 4):
                for d in range(1, 4):
                    reads = []
                    for o in range(s):
                        read = [(o + p - t * d) // s for t in range(k) if (o + p - t * d) % s == 0]
                        if read:
                            reads.append((o, min(read), max(read)))
                    assert spread_window(k, s, p, d) == Window.fit(Fraction(1, s), reads), (k, s, p, d)


def test_the_closed_form_adaptive_and_bilinear_rules_are_the_listed_fit():
    from archlab.ops.base import Window
    from archlab.ops.pool import adaptive_window
    from archlab.ops.resample import linear_window, nearest_indices, nearest_window

    for h in range(1, 25):
        for o in range(1, 40):
            bins = [(i, (i * h) // o, -((-(i + 1) * h) // o) - 1) for i in range(o)]
            assert adaptive_window(h, o) == Window.fit(Fraction(h, o), bins)
            xs = [Fraction((2 * i + 1) * h - o, 2 * o) for i in range(o)]
            reads = [(i, x.numerator // x.denominator, -(-x.numerator // x.denominator)) for i, x in enumerate(xs)]
            assert linear_window(2 * h, h - o, 2 * o) == Window.fit(Fraction(h, o), reads)
            near = [(i, j, j) for i, j in enumerate(nearest_indices(h, o))]
            assert nearest_window(h, o) == Window.fit(Fraction(h, o), near)
    # Beyond the listed sizes the closed-form nearest window still holds every float32 read.
    for h, o in [(3, 5000), (7, 9001), (100, 10007), (5000, 4500)]:
        w = nearest_window(h, o)
        centre = Fraction(w.kernel - 1, 2) - w.padding
        assert all(abs(j - (centre + i * w.stride)) <= w.slack for i, j in enumerate(nearest_indices(h, o)))


def test_analyze_numbers_stay_plausible_for_a_huge_but_valid_graph():
    text = HEAD + RF_HANGS["conv_transpose2d stride 1e9, kernel 1e5"] + "outputs: {out: u}\n"
    a = analyze(load(text))
    assert a.totals["params"] > 0 and a.totals["macs"] > 0 and a.totals["activation_elements"] > 0
