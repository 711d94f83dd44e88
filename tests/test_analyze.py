"""`analyze` and `archlab analyze`: the lecture's VGG16 table, output formats, errors."""
import csv
import io
import json

import pytest

import archlab
from archlab.analysis import analyze
from archlab.cli.main import main

# CS231n VGG16 table (lecture): output values per layer at 224x224, input included.
# The rows sum to 15,237,608 (the slide's "24M" total is a known error: cs231n.github.io #88).
VGG16_LECTURE_ROWS = [
    150_528,
    3_211_264, 3_211_264, 802_816,
    1_605_632, 1_605_632, 401_408,
    802_816, 802_816, 802_816, 200_704,
    401_408, 401_408, 401_408, 100_352,
    100_352, 100_352, 100_352, 25_088,
    4_096, 4_096, 1_000,
]


def test_vgg16_rows_are_the_lecture_table():
    a = analyze(archlab.get_model("vgg16"))
    # torchvision's extra 7x7 -> 7x7 adaptive pool is the identity at 224 and folds into pool5.
    assert next(r for r in a.rows if r["name"] == "features.30")["op"] == "max_pool2d+adaptive_avg_pool2d+flatten"
    assert [r["activation_elements"] for r in a.rows] == VGG16_LECTURE_ROWS
    assert sum(VGG16_LECTURE_ROWS) == 15_237_608
    assert a.totals["params"] == 138_357_544
    conv2_1 = next(r for r in a.rows if r["name"] == "features.5")
    assert conv2_1["params"] == 3 * 3 * 64 * 128 + 128
    assert a.totals["activation_elements"] == 15_237_608


def test_vgg16_receptive_field_of_last_pool_is_212():
    a = analyze(archlab.get_model("vgg16"))
    assert next(r for r in a.rows if r["name"] == "features.30")["rf_size"] == 212


def test_totals_scale_with_batch_and_dtype():
    g = archlab.get_model("resnet18")
    a1, a8 = analyze(g), analyze(g, batch=8, dtype="float16")
    assert a8.totals["macs"] == 8 * a1.totals["macs"]
    assert a8.totals["activation_bytes"] == 8 * a1.totals["activation_bytes"] // 2
    assert a8.totals["params"] == a1.totals["params"]


def test_depth_aggregates_scopes_and_keeps_totals():
    g = archlab.get_model("resnet50")
    flat, deep = analyze(g), analyze(g, depth=1)
    assert [r["name"] for r in deep.rows] == ["x", "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert sum(r["params"] for r in deep.rows) == flat.totals["params"] == 25_557_032
    assert sum(r["macs"] for r in deep.rows) == flat.totals["macs"]


def test_every_node_view_sums_to_the_same_params():
    g = archlab.get_model("mobilenet_v2")
    a = analyze(g, fold=False)
    assert len(a.rows) == len(g)
    assert sum(r["params"] for r in a.rows) == 3_504_872


def test_json_output_has_the_documented_keys(capsys):
    assert main(["analyze", "resnet18", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("name", "op", "output_shape", "params", "macs", "activation_elements", "rf_size", "rf_stride", "rf_start"):
        assert key in doc["layers"][0]
    for key in ("params", "macs", "flops", "flops_convention", "activation_elements", "activation_bytes",
                "peak_activation_bytes", "training_bytes"):
        assert key in doc["totals"]
    assert doc["totals"]["flops"] == 2 * doc["totals"]["macs"] == 2 * 1_814_073_344


def test_csv_and_markdown_outputs(capsys):
    assert main(["analyze", "vgg16", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[1]["name"] == "features.0" and rows[1]["output_shape"] == "64x224x224" and rows[1]["params"] == "1792"
    assert main(["analyze", "vgg16", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| features.30 | max_pool2d+adaptive_avg_pool2d+flatten | 512x7x7 |" in md


def test_table_names_the_convention(capsys):
    assert main(["analyze", "resnet50", "--flops-convention", "fvcore"]) == 0
    out = capsys.readouterr().out
    assert "4,111,512,576" in out and "'fvcore' convention" in out


def test_dataframe():
    df = analyze(archlab.get_model("resnet18")).to_dataframe()
    assert df["params"].sum() == 11_689_512
    assert {"rf_size", "macs", "activation_bytes"} <= set(df.columns)


@pytest.mark.parametrize("args, message", [
    (["analyze", "vgg16", "--input", "3x16x16"], "max_pool2d 'features.30': got input 512x1x1: kernel 2 is larger than the padded input 1"),
])
def test_analyze_user_errors(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_unknown_op_in_a_file(tmp_path, capsys):
    f = tmp_path / "net.yaml"
    f.write_text("nodes:\n- {name: x, op: input, shape: [3, 8, 8]}\n- {name: c, op: conv3d, in: [x]}\noutputs: {out: c}\n")
    assert main(["analyze", str(f)]) == 2
    err = capsys.readouterr().err
    assert "node 'c': unknown op 'conv3d'" in err and len(err.strip().splitlines()) == 1


def test_analyze_does_not_import_torch_for_zoo_models_or_files(tmp_path):
    import subprocess
    import sys

    f = tmp_path / "r.yaml"
    archlab.save(archlab.get_model("resnet18"), f)
    code = (
        "import sys; from archlab.cli.main import main; "
        f"main(['analyze', 'vgg16']); main(['analyze', {str(f)!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# -- receptive-field fields: one meaning whether a node is global or not --------------------
def test_rf_size_is_the_unclipped_spatial_field_also_for_global_nodes():
    rows = {r["name"]: r for r in analyze(archlab.get_model("se_resnet50")).rows}
    # An SE gate makes the block global, but its spatial field is its conv's: 427 > the 224 image,
    # not the image size, so sorting by rf_size ranks it with the local rows.
    conv3, scaled = rows["layer4.2.conv3"], rows["layer4.2.se.scale"]
    assert scaled["rf_global"] and scaled["rf_size"] == conv3["rf_size"] == 427 and scaled["rf_stride"] == 32
    assert scaled["rf_coverage"] == 1.0
    # After global pooling there is no spatial path: null, not the input size.
    assert rows["avgpool"]["rf_global"] and rows["avgpool"]["rf_size"] is None and rows["avgpool"]["rf_stride"] is None
    local = rows["layer1.0.conv1"]
    assert not local["rf_global"] and 0 < local["rf_coverage"] < 1


def test_rf_fields_in_json_csv_and_dataframe(capsys):
    assert main(["analyze", "resnet50", "--format", "json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    last = next(r for r in layers if r["name"] == "layer4.2.conv3")
    assert last["rf_size"] == 427 and not last["rf_global"]  # unclipped: larger than the 224 image
    assert [r["rf_size"] for r in layers][-2:] == [None, None] and all(r["rf_global"] for r in layers[-2:])
    assert "rf_local_size" not in last
    assert main(["analyze", "resnet50", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[-1]["rf_size"] == "" and rows[-1]["rf_global"] == "True" and rows[-1]["rf_coverage"] == "1.0"
    df = analyze(archlab.get_model("resnet50")).to_dataframe()
    assert df["rf_size"].isna().sum() == 2 and df["rf_size"].max() == 427


# -- scope rows: aggregate columns, labelled -----------------------------------------------
def test_scope_rows_sum_every_count_column():
    g = archlab.get_model("resnet18")
    flat, deep = analyze(g), analyze(g, depth=1)
    for key in ("params", "macs", "activation_elements", "activation_bytes"):
        assert sum(r[key] for r in deep.rows) == flat.totals[key], key
    layer1 = next(r for r in deep.rows if r["name"] == "layer1")
    assert layer1["activation_elements"] == sum(r["activation_elements"] for r in flat.rows
                                                if r["name"].startswith("layer1."))
    assert layer1["output_shape"] == [64, 56, 56]  # the scope's last layer


def test_depth_table_headers_say_which_columns_are_sums(capsys):
    assert main(["analyze", "resnet18", "--depth", "1"]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    for label in ("output (last)", "params (sum)", "MACs (sum)", "activations (sum)", "act. memory (sum)"):
        assert label in header
    assert main(["analyze", "resnet18"]) == 0
    assert "(sum)" not in capsys.readouterr().out.splitlines()[2]


def test_macs_column_has_one_format():
    from archlab.analysis.report import human

    assert [human(n) for n in (512, 2400, 512_000, 118_013_952)] == ["512", "2.40K", "512.00K", "118.01M"]
    b = archlab.GraphBuilder("small")
    x = b.flatten(b.input((3, 4, 4)))
    b.output(b.linear(b.linear(x, 50, name="fc1"), 10, name="fc2"))  # 2,400 and 500 MACs
    table = analyze(b.build()).to_table()
    assert " 2.40K " in table and " 500 " in table and " 2400 " not in table
