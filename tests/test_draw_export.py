"""``archlab draw`` (archlab/report/draw.py) and ``archlab export --format onnx``:
the picture has one box per layer or scope with shapes on the edges and skip
links drawn; the ONNX file computes what the compiled module computes."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from PIL import Image

import archlab
from archlab.cli.main import main
from archlab.report.draw import blocks


def test_draw_svg_has_a_box_per_scope_and_shapes_on_the_edges(tmp_path, capsys):
    out = tmp_path / "r18.svg"
    assert main(["draw", "resnet18", "--depth", "2", "-o", str(out)]) == 0
    svg = out.read_text()
    named, dag = blocks(archlab.get_model("resnet18"), 2)
    assert [n for n, _ in named] == ["x", "conv1", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                                     "layer3.0", "layer3.1", "layer4.0", "layer4.1", "avgpool", "fc"]
    for name, _ in named:  # matplotlib draws text as paths and keeps each line as a comment
        assert f"<!-- {name} -->" in svg, name
    assert "<!-- 64x56x56 -->" in svg and "<!-- 512x7x7 -->" in svg and dag.number_of_edges() == len(named) - 1
    capsys.readouterr()


def test_draw_png_of_a_unet_draws_its_skip_links(tmp_path, capsys):
    out = tmp_path / "unet.png"
    assert main(["draw", "unet_small", "--depth", "1", "-o", str(out)]) == 0
    named, dag = blocks(archlab.get_model("unet_small"), 1)
    gen = {k: i for i, g in enumerate(nx.topological_generations(dag)) for k in g}
    skips = [(a, b) for a, b in dag.edges if gen[b] - gen[a] > 1]
    assert len(skips) == 3  # down1..3 to up1..3
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    orange = (np.abs(rgb - np.array([0xb0, 0x5a, 0x00])).max(axis=-1) <= 30).sum()
    assert orange > 200  # the skip links' arcs are on the picture
    capsys.readouterr()


def test_draw_at_full_detail_folds_conv_bn_relu_into_one_box():
    named, _ = blocks(archlab.get_model("resnet18"), None)
    first = dict(named)["conv1"]
    assert first == ["conv1", "bn1", "relu"]


@pytest.mark.parametrize("argv,msg", [(["draw", "resnet18", "-o", "x.jpg"], "end the name in .svg, .png or .pdf"),
                                      (["export", "resnet18", "--format", "onnx"], "give it with -o net.onnx")])
def test_bad_requests_are_one_line(argv, msg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_computes_what_the_module_computes(tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="onnx is in the dev extra")
    from onnx.reference import ReferenceEvaluator

    out = tmp_path / "net.onnx"
    assert main(["export", "unet_small", "--input", "3x32x32", "--format", "onnx", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = archlab.get_model("unet_small", input_shape=(3, 32, 32))
    module = archlab.to_module(graph).eval()
    # the exported weights are those of the module torch.onnx compiled: read them back into ours
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    state = {k: torch.from_numpy(np.array(inits[k])) for k in module.state_dict() if k in inits}
    assert state, list(inits)[:5]
    missing, _ = module.load_state_dict(state, strict=False)
    assert not [k for k in missing if "weight" in k or "bias" in k]  # every parameter came from the file
    with torch.no_grad():
        want = module(x).numpy()
    (got,) = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x.numpy()})
    assert got.shape == want.shape == (1, 2, 32, 32)
    assert np.abs(got - want).max() < 1e-4
    capsys.readouterr()
