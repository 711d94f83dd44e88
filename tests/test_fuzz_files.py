"""Fuzzing description files (issue 9): mutated valid files are loaded,
validated, printed, dumped and analyzed, some through ``archlab analyze`` in
process. The property: success with plausible numbers (finite, non-negative),
or an :class:`~archlab.errors.ArchlabError` whose message is one line under
~500 characters (exit 2 from the CLI) -- never another exception -- and every
case within a time bound.

The seeds are small graphs that between them use every op (a decoder with
transposed convs, upsampling, unpooling and crops; a classifier with a
squeeze-and-excitation gate; a tiny transformer with the ops on tensors of
any rank) and zoo models at small sizes, exported with
:func:`archlab.lang.dump`. The default run tries :data:`DEFAULT_CASES` cases
from a fixed seed; ``-m slow`` tries :data:`SLOW_CASES` random ones.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archlab import GraphBuilder
from archlab.analysis import analyze
from archlab.cli.main import main
from archlab.errors import ArchlabError, MAX_MESSAGE
from archlab.graph.text import graph_text
from archlab.lang import dump, load
from archlab.ops.base import all_ops
from archlab.resolve import resolve_model

DEFAULT_CASES = 200
SLOW_CASES = 2000
SECONDS_PER_CASE = 3.0  # each case takes well under 0.5 s alone; the margin is for a loaded machine
TRIED = {"cases": 0, "ok": 0, "refused": 0}


def _decoder() -> str:
    b = GraphBuilder("decoder")
    x = b.input((3, 32, 32))
    c1 = b.relu(b.batch_norm2d(b.conv2d(x, 8, 3, padding=1)))
    p1 = b.max_pool2d_with_indices(c1, 2)
    c2 = b.conv2d(p1, 8, 3, padding=1, dilation=1)
    u1 = b.max_unpool2d(c2, p1)
    t = b.conv_transpose2d(b.avg_pool2d(u1, 2), 8, 2, stride=2)
    up = b.upsample(b.adaptive_avg_pool2d(t, 5), c1, mode="bilinear")
    near = b.upsample(b.max_pool2d(c1, 3, stride=3, ceil_mode=True), scale_factor=3)  # 11 -> 33
    crop = b.crop2d(near, c1)
    m = b.concat([b.add(up, c1), crop])
    b.output(b.conv2d(b.dropout(m), 4, 1), "seg")
    return dump(b.build())


def _classifier() -> str:
    b = GraphBuilder("se_classifier")
    x = b.input((3, 24, 24))
    x = b.hardswish(b.conv2d(x, 16, 3, stride=2, padding=1, groups=1))
    g = b.hardsigmoid(b.conv2d(b.relu6(b.conv2d(b.adaptive_avg_pool2d(x, 1), 4, 1)), 16, 1))
    x = b.silu(b.mul(x, g))
    x = b.sigmoid(b.identity(x))
    b.output(b.linear(b.flatten(b.adaptive_avg_pool2d(x, 1)), 10))
    return dump(b.build())


def _transformer() -> str:
    """A tiny vision transformer using the ops on tensors of any rank."""
    b = GraphBuilder("transformer")
    x = b.input((3, 16, 16))
    t = b.permute(b.flatten(b.conv2d(x, 8, 4, stride=4), 2), [0, 2, 1])  # 16 x 8 tokens
    t = b.concat([b.parameter(t, shape=[1, 8], stored=[8]), t], dim=1)
    t = b.add(t, b.parameter(t, shape=[17, 8]))
    a = b.multihead_attention(b.layer_norm(t), 8, 2)
    t = b.add(t, b.mul(a, b.parameter(a, shape=[1, 8])))
    q = b.permute(b.reshape(b.linear(t, 8), [17, 2, 4]), [0, 2, 1, 3])
    s = b.reshape(b.permute(b.sdpa(q, q, q, is_causal=True), [0, 2, 1, 3]), [17, 8])
    s = b.matmul(b.softmax(b.matmul(s, b.permute(s, [0, 2, 1])), -1), s)
    h = b.gelu(b.linear(t, 16), approximate="tanh")
    h = b.softplus(b.elu(b.hardtanh(b.tanh(b.mish(b.leaky_relu(h))))))
    h = b.linear(h, 8)
    d = b.div(b.sub(h, s), b.scalar(b.reduce(h, "amax", [2], keepdim=True), "add", 1.0))
    g = b.group_norm(b.pad(b.stack([d, t], dim=1), [1, 1]), 1)
    sel = b.select(b.select(b.slice(g, 3, 1, -1), 2, 0), 1, 0)
    b.output(b.linear(b.batch_norm1d(sel), 10))
    return dump(b.build())


def _modern() -> str:
    """Modern ConvNet pieces: weight standardisation, ECA, GRN, cosine attention, a shared layer."""
    b = GraphBuilder("modern")
    x = b.input((3, 16, 16))
    x = b.std_conv2d(x, 8, 3, padding=1, gain=True, scale=0.2, name="stem")
    x = b.conv2d(b.conv2d(x, 8, 3, padding=1, groups=8, name="dw"), 8, 3, padding=1, groups=8, shares="dw")
    e = b.sigmoid(b.conv1d(b.reshape(b.reduce(x, "mean", [2, 3]), [1, 8]), 1, 3, padding=1, bias=False))
    x = b.mul(x, b.reshape(e, [8, 1, 1]))
    g = b.reduce(x, "norm", [2, 3], keepdim=True)
    x = b.addcmul(b.parameter(x, shape=[8, 1, 1]), b.parameter(x, shape=[8, 1, 1]), b.mul(x, g), value=0.5)
    t = b.normalize(b.flatten(x, 2), -1)
    t = b.roll(b.exp(b.clamp(t, max=1.0)), shifts=[1], dims=[2])  # Swin's shifted windows, v2's logit scale
    from archlab.ops.constant import encode

    mask = b.constant(t, shape=[1, 256], dtype="float32", data=encode(np.full(256, -1.0, np.float32).tobytes()))
    index = b.constant(t, shape=[4], dtype="int64", data=encode(np.array([3, 0, 0, 255], np.int64).tobytes()))
    t = b.index_select(b.add(t, mask), index, dim=2)
    b.output(b.linear(b.flatten(t), 10))
    return dump(b.build())


def _seeds() -> list[str]:
    seeds = [_decoder(), _classifier(), _transformer(), _modern()]
    for name, size in [("alexnet", 64), ("segnet", 32), ("unet_same", 16), ("mobilenet_v3_small", 32)]:
        seeds.append(dump(resolve_model(name, input_shape=(3, size, size))))
    return seeds


SEEDS = _seeds()
OPS = sorted(all_ops())

# -- values and mutations -------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-3, 70), st.sampled_from([0, -1, 2**31, 2**63, 10**9, 999999937, 10**30, -(10**18), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, -0.0, 1e308, 1e-320]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=30),
                    st.sampled_from(["x", "nearest", "bilinear", "", "in", "name", "op"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
KEYS = st.sampled_from(["name", "op", "in", "shape", "out_channels", "kernel_size", "stride", "padding", "dilation",
                        "groups", "bias", "size", "scale_factor", "mode", "align_corners", "output_size",
                        "out_features", "offset", "output_padding", "ceil_mode", "eps", "p", "momentum", "dim",
                        "dims", "pads", "fn", "value", "start", "stop", "index", "normalized_dims", "num_groups",
                        "num_heads", "is_causal", "scale", "stored", "keepdim", "zzz"])


def _mutate(doc: dict, data) -> tuple[dict | list | Any, str | None]:
    """One mutation of a parsed description; returns the new document, or text
    when the mutation is textual (``None`` otherwise)."""
    nodes = doc["nodes"]
    kind = data.draw(st.sampled_from(["set", "set", "tweak", "tweak", "tweak", "drop", "op", "in", "node", "top",
                                      "text", "alias"]))
    i = data.draw(st.integers(0, len(nodes) - 1))
    node = nodes[i]
    if not isinstance(node, dict):  # an earlier mutation replaced it: mutate what is there
        node = nodes[i] = {"name": "n", "op": "relu", "in": node}
    if kind == "set":
        node[data.draw(KEYS)] = data.draw(VALUES)
    elif kind == "tweak":  # a plausible edit: an int attribute to another small or large int
        ints = sorted(k for k, v in node.items() if type(v) is int or type(v) is list and v and type(v[0]) is int)
        if ints:
            node[data.draw(st.sampled_from(ints))] = data.draw(st.one_of(st.integers(0, 9), NUMBERS))
    elif kind == "drop":
        keys = sorted(node, key=str)
        node.pop(data.draw(st.sampled_from(keys)), None)
    elif kind == "op":
        node["op"] = data.draw(st.sampled_from(OPS))
    elif kind == "in":
        names = [n.get("name") for n in nodes if isinstance(n, dict)] or ["x"]  # "replace" may leave non-nodes
        node["in"] = data.draw(st.lists(st.sampled_from(names), max_size=3))
    elif kind == "node":
        action = data.draw(st.sampled_from(["delete", "duplicate", "swap", "replace"]))
        if action == "delete":
            del nodes[i]
        elif action == "duplicate":
            nodes.insert(i, dict(node))
        elif action == "swap":
            j = data.draw(st.integers(0, len(nodes) - 1))
            nodes[i], nodes[j] = nodes[j], nodes[i]
        else:
            nodes[i] = data.draw(VALUES)
    elif kind == "top":
        doc[data.draw(st.sampled_from(["name", "meta", "outputs", "format", "nodes", "extra"]))] = data.draw(VALUES)
    elif kind == "alias":
        shared = data.draw(st.lists(SCALARS, min_size=1, max_size=5))
        for _ in range(data.draw(st.integers(1, 12))):
            shared = [shared] * data.draw(st.integers(2, 10))
        node[data.draw(KEYS)] = shared  # safe_dump writes anchors and aliases for the repeats
    if kind == "text":
        text = yaml.safe_dump(doc, sort_keys=False, width=10**6)
        raw = text.encode()
        pos = data.draw(st.integers(0, len(raw)))
        cut = data.draw(st.sampled_from(["bytes", "truncate", "digits", "delete"]))
        if cut == "bytes":
            raw = raw[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + raw[pos:]
        elif cut == "truncate":
            raw = raw[:pos]
        elif cut == "digits":
            raw = raw[:pos] + b"9" * data.draw(st.sampled_from([5, 30, 400, 4301, 6000])) + raw[pos:]
        else:
            raw = raw[:pos] + raw[pos + data.draw(st.integers(1, 20)):]
        return doc, raw.decode("utf-8", errors="surrogateescape")
    return doc, None


def _check_plausible(a) -> None:
    for row in [a.totals, *a.rows]:
        for key, value in row.items():
            if type(value) in (int, float) and key not in ("rf_start",):
                assert math.isfinite(value) and value >= 0, (key, value)


def _check_error(e: ArchlabError) -> None:
    text = str(e)
    assert "\n" not in text and 0 < len(text) <= MAX_MESSAGE, text[:1000]


def _run_case(text: str, use_cli: bool) -> None:
    t = time.perf_counter()
    TRIED["cases"] += 1
    if use_cli:
        fd, path = tempfile.mkstemp(suffix=".yaml")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode("utf-8", errors="surrogateescape"))
            import contextlib
            import io

            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["analyze", path, "--format", "json"])
            assert code in (0, 2), err.getvalue()
            if code == 2:
                line = err.getvalue()
                assert line.startswith("archlab: error: ") and line.count("\n") == 1, line[:1000]
                assert len(line) < MAX_MESSAGE + 40, line[:1000]
            TRIED["ok" if code == 0 else "refused"] += 1
        finally:
            os.unlink(path)
    else:
        try:
            g = load(text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace"))
            graph_text(g)
            dump(g)
            _check_plausible(analyze(g, batch=2))
            TRIED["ok"] += 1
        except ArchlabError as e:
            _check_error(e)
            TRIED["refused"] += 1
    assert time.perf_counter() - t < SECONDS_PER_CASE


def _property(data) -> None:
    seed = data.draw(st.sampled_from(SEEDS))
    doc = yaml.safe_load(seed)
    text = None
    for _ in range(data.draw(st.integers(1, 3))):
        doc, text = _mutate(doc, data)
        if text is not None or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
            break
    if text is None:
        text = yaml.safe_dump(doc, sort_keys=False, width=10**6)
    _run_case(text, use_cli=data.draw(st.integers(0, 4)) == 0)


_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@settings(max_examples=DEFAULT_CASES, derandomize=True, **_COMMON)
@given(st.data())
def test_mutated_description_files_analyze_or_refuse_in_one_line(data):
    _property(data)


@pytest.mark.slow
@settings(max_examples=SLOW_CASES, **_COMMON)
@given(st.data())
def test_mutated_description_files_analyze_or_refuse_in_one_line_long_run(data):
    _property(data)


def test_the_fuzz_seeds_are_valid_and_cover_every_op():
    used = set()
    for text in SEEDS:
        g = load(text)
        used |= {n.op for n in g.nodes}
        _check_plausible(analyze(g))
    assert used >= set(OPS) - {"zero"}, sorted(set(OPS) - used)


def test_report_fuzz_case_counts():
    """Runs last in this file: the counts the fuzz tests tried (``-s`` shows them)."""
    print(f"\nfuzz: {TRIED['cases']} cases, {TRIED['ok']} analyzed, {TRIED['refused']} refused in one line")
    assert TRIED["ok"] + TRIED["refused"] <= TRIED["cases"]
