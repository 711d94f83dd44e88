"""Activation memory: the CS231n VGG16 table, and byte-exact agreement with the
tensors PyTorch holds and saves when it runs the compiled module."""
from __future__ import annotations

import pytest
import torch
import torch.fx

import archlab
from archlab.analysis.measure import allocator_peak_bytes, saved_tensor_bytes, tensor_peak_bytes
from archlab.analysis.memory import activation_memory, training_memory, unsupported_ops
from archlab.errors import ArchlabError
from archlab.ops.base import Op, all_ops, register_op

# CS231n "VGGNet" slide (lecture 9, cs231n.github.io/convolutional-networks):
# values per image of INPUT, the 13 CONV3 rows, the 5 POOL2 rows and the 3 FC
# rows. They sum to 15,237,608, not the slide's "24M" (cs231n.github.io issue #88).
VGG16_ROWS = [150_528] + [3_211_264] * 2 + [802_816] + [1_605_632] * 2 + [401_408] + [802_816] * 3 + [200_704] \
    + [401_408] * 3 + [100_352] + [100_352] * 3 + [25_088] + [4_096, 4_096, 1_000]
VGG16_TOTAL = 15_237_608

MODELS = ["resnet18", "vgg11_bn", "mobilenet_v2", "densenet121", "googlenet", "se_resnet50", "mobilenet_v3_small"]
SMALL = (3, 64, 64)
# Segmentation nets, at small inputs their geometry accepts: size references (FCN's and
# U-Net's crops, the upsampling "to the image" of PSPNet and DeepLabV3) and SegNet's
# max-pool indices, which live until their unpooling.
SEG = {"fcn8s": (3, 64, 64), "segnet": (3, 45, 61), "unet": (3, 188, 188), "pspnet": (3, 64, 64),
       "deeplabv3_resnet50": (3, 64, 64)}
BATCH = 2


# -- what PyTorch really does ----------------------------------------------------------
class LiveBytes(torch.fx.Interpreter):
    """Runs a GraphModule and records, after each node, the bytes of the distinct
    storages held in its environment (the Interpreter drops a value after its
    last use) together with the node's result and the inputs the caller holds;
    tensors inside tuples (a max pool's values and indices) and dicts count."""

    def run_node(self, n):
        result = super().run_node(n)
        storages = {a.untyped_storage().data_ptr(): a.untyped_storage().nbytes() for a in self.held}

        def hold(v):
            if isinstance(v, torch.Tensor):
                storages[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
            elif isinstance(v, (tuple, list, dict)):
                for t in (v.values() if isinstance(v, dict) else v):
                    hold(t)

        for v in [*self.env.values(), result]:
            hold(v)
        self.live.append((n.name, sum(storages.values())))
        return result


def measured_live_bytes(module: torch.fx.GraphModule, x: torch.Tensor) -> list[tuple[str, int]]:
    """(fx node, bytes live after it) for each fx node of an inference forward."""
    module.eval()
    interp = LiveBytes(module)
    interp.live, interp.held = [], [x]
    with torch.no_grad():
        interp.run(x)
    return interp.live


def measured_peak_bytes(module: torch.fx.GraphModule, x: torch.Tensor) -> int:
    return max(b for _, b in measured_live_bytes(module, x))


def measured_live_bytes_per_node(graph, module, x) -> dict[str, int]:
    """Graph node -> the most bytes live while the fx nodes it compiled to ran (a
    node's first fx node is named after it; the rest follow it, e.g. a max pool's
    ``getitem``s)."""
    from archlab.torchio.compile import fx_name

    names = {fx_name(n.name): n.name for n in graph}
    out, node = {}, None
    for fx, nbytes in measured_live_bytes(module, x):
        if fx == "output":
            continue
        node = names.get(fx, node)
        out[node] = max(out.get(node, 0), nbytes)
    return out


@pytest.fixture(scope="module", params=[*MODELS, *SEG])
def compiled(request):
    torch.manual_seed(0)
    shape = SEG.get(request.param, SMALL)
    graph = archlab.get_model(request.param, input_shape=shape)
    return graph, archlab.to_module(graph), torch.randn(BATCH, *shape)


# -- (a) output sizes ---------------------------------------------------------------------
def test_vgg16_table_rows_match_the_cs231n_slide():
    report = activation_memory(archlab.get_model("vgg16"))
    assert list(report.table_rows.values()) == VGG16_ROWS
    assert report.table_elements == VGG16_TOTAL


def test_output_total_counts_every_materialised_tensor_once():
    g = archlab.get_model("vgg16")
    report = activation_memory(g, batch=4, dtype="fp16")
    assert report.out_bytes["flatten"] == 0 and report.alias_of["flatten"] == "avgpool"
    assert report.out_elements["flatten"] == 25_088  # a view still has a shape
    # ReLUs run out of place (the slide folds them into the conv rows); the
    # 7x7 adaptive pool is an identity at 224 and no row of the table.
    relus = sum(v for k, v in report.out_elements.items() if g[k].op == "relu")
    assert report.total_out_elements == VGG16_TOTAL + relus + 25_088
    assert report.total_out_bytes == 4 * 2 * report.total_out_elements
    assert g["features.0"].meta["memory"]["out_bytes"] == 4 * 2 * 3_211_264


# -- (b) peak live memory at inference --------------------------------------------------------
def test_peak_inference_memory_equals_the_measured_peak(compiled):
    graph, module, x = compiled
    report = activation_memory(graph, batch=BATCH)
    assert report.peak_bytes == measured_peak_bytes(module, x)
    assert report.live_bytes[report.peak_node] == report.peak_bytes == max(report.live_bytes.values())


def test_live_bytes_at_every_node_equal_the_measured(compiled):
    graph, module, x = compiled
    assert dict(activation_memory(graph, batch=BATCH).live_bytes) == measured_live_bytes_per_node(graph, module, x)


REAL_FORWARD_FAST = {"resnet18", "segnet"}  # the rest: slow (the tracking runs Python per aten op)


@pytest.mark.parametrize("name", [m if m in REAL_FORWARD_FAST else pytest.param(m, marks=pytest.mark.slow)
                                  for m in [*MODELS, *SEG]])
def test_peak_equals_the_tensors_a_real_forward_holds(name):
    """Not an fx Interpreter's model of the run: the compiled module's own
    forward, every tensor its aten ops return (see archlab.analysis.measure)."""
    torch.manual_seed(0)
    shape = SEG.get(name, SMALL)
    graph = archlab.get_model(name, input_shape=shape)
    module = archlab.to_module(graph)
    assert activation_memory(graph, batch=BATCH).peak_bytes == tensor_peak_bytes(module, torch.randn(BATCH, *shape))


def test_the_input_is_live_for_the_whole_forward():
    """The caller holds the input: a conv's input is not freed after the conv."""
    b = archlab.GraphBuilder("two_convs")
    x = b.input((3, 32, 32))
    b.output(b.conv2d(b.conv2d(x, 8, 3, padding=1, name="c1"), 8, 3, padding=1, name="c2"))
    g = b.build()
    report = activation_memory(g, batch=1)
    image, feat = 4 * 3 * 32 * 32, 4 * 8 * 32 * 32
    assert report.live_bytes["c2"] == image + 2 * feat
    assert report.peak_bytes == image + 2 * feat == tensor_peak_bytes(archlab.to_module(g), torch.randn(1, 3, 32, 32))


def _three_way_add(*, keep: bool):
    """Three 3x3 convs of the image summed by one 3-input add; with ``keep`` the
    first two conv outputs are read again afterwards (concatenated with the sum)."""
    b = archlab.GraphBuilder("three_way_add")
    x = b.input((3, 16, 16))
    a, c, d = (b.conv2d(x, 4, 3, padding=1, name=n) for n in ("a", "b", "c"))
    s = b.add(a, c, d, name="total")
    b.output(b.concat(s, a, c, name="cat") if keep else s)
    return b.build()


@pytest.mark.parametrize("keep", [False, True])
def test_a_three_input_add_counts_its_partial_sum(keep):
    """The compiled add is ``(a + b) + c``: the partial sum ``a + b`` is live beside
    the output. When the first addition was the last reader of ``a`` and ``b``,
    their freeing makes room for it; when ``a`` and ``b`` are read later, it
    adds one output's size to the node's live bytes."""
    g = _three_way_add(keep=keep)
    report = activation_memory(g, batch=2)
    image, feat = 2 * 4 * 3 * 16 * 16, 2 * 4 * 4 * 16 * 16
    # image + a, b, c + the partial sum + the output (a and b still live when kept)
    assert report.live_bytes["total"] == image + 3 * feat + feat + (feat if keep else 0)
    module, x = archlab.to_module(g), torch.randn(2, 3, 16, 16)
    assert dict(report.live_bytes) == measured_live_bytes_per_node(g, module, x)
    assert report.peak_bytes == tensor_peak_bytes(module, x)


def test_the_allocator_peak_is_at_least_the_counted_peak():
    """What the count leaves out (kernel workspaces) only adds: the CPU
    allocator's peak is never below it."""
    g = archlab.get_model("resnet18", input_shape=SMALL)
    x = torch.randn(1, *SMALL)
    assert allocator_peak_bytes(archlab.to_module(g), x) >= activation_memory(g, batch=1).peak_bytes


def _pool_conv_unpool():
    """4x32x32 -> 2x2 max pool keeping indices -> 3x3 conv -> unpool with them."""
    b = archlab.GraphBuilder("pool_conv_unpool")
    pool = b.max_pool2d_with_indices(b.input((4, 32, 32)), 2, name="pool")
    b.output(b.max_unpool2d(b.conv2d(pool, 4, 3, padding=1, name="conv"), pool, name="unpool"))
    return b.build()


def test_max_pool_indices_live_until_their_unpooling():
    g = _pool_conv_unpool()
    report = activation_memory(g, batch=2)
    image, pooled, indices = 2 * 4 * 32 * 32 * 4, 2 * 4 * 16 * 16 * 4, 2 * 4 * 16 * 16 * 8  # fp32, int64
    assert report.side_bytes["pool"] == indices and report.out_bytes["pool"] == pooled
    assert report.live_bytes["pool"] == image + pooled + indices
    # The conv frees the pooled values (the unpooling reads only the indices); the indices stay.
    # The input stays live (the caller holds it).
    assert report.live_bytes["conv"] == image + pooled + indices + pooled
    assert report.live_bytes["unpool"] == image + pooled + indices + image
    assert report.peak_bytes == 2 * image + pooled + indices \
        == measured_peak_bytes(archlab.to_module(g), torch.randn(2, 4, 32, 32))


def test_a_size_reference_is_not_kept_alive():
    """``upsample(y, like=x)`` reads only ``x``'s size, when the module is built:
    ``x`` is freed after ``conv2``, its last reader of values."""
    b = archlab.GraphBuilder("size_reference")
    image = b.input((3, 32, 32))
    x = b.conv2d(image, 8, 3, stride=2, padding=1, name="conv")
    y = b.conv2d(x, 8, 3, stride=2, padding=1, name="conv2")  # 8x8
    b.output(b.upsample(y, x, name="up"))  # to x's 16x16, reading only its size
    g = b.build()
    report = activation_memory(g, batch=1)
    image = 4 * 3 * 32 * 32
    assert report.live_bytes["up"] == image + 4 * (8 * 8 * 8 + 8 * 16 * 16)  # conv2 output + upsampled, not x
    module, inp = archlab.to_module(g), torch.randn(1, 3, 32, 32)
    assert report.peak_bytes == measured_peak_bytes(module, inp) == tensor_peak_bytes(module, inp)


def test_fcn8s_peak_holds_the_image_the_caller_holds():
    # Measured 70,389,760 bytes at batch 2 (test_peak_equals_the_tensors_a_real_forward_holds):
    # 70,291,456 of the net's own tensors + the 98,304-byte 2x3x64x64 fp32 image.
    assert activation_memory(archlab.get_model("fcn8s", input_shape=(3, 64, 64)), batch=2).peak_bytes == 70_389_760


def test_reading_a_side_output_that_does_not_exist_is_an_error(monkeypatch):
    from archlab.ops import get_op

    monkeypatch.setattr(type(get_op("max_pool2d_with_indices")), "memory", type(get_op("max_pool2d")).memory)
    with pytest.raises(ArchlabError, match="max_unpool2d 'unpool': reads the 'indices' of input 'pool'"):
        activation_memory(_pool_conv_unpool())


def test_peak_holds_inputs_and_output_of_the_running_node():
    report = activation_memory(archlab.get_model("vgg16"), batch=1)
    # The first ReLU runs with its input (conv1_1's output) and its output live,
    # beside the image the caller holds.
    assert report.peak_node == "features.1"
    assert report.peak_bytes == 4 * 150_528 + 2 * 4 * 3_211_264
    assert report.live_bytes["features.0"] == 4 * (150_528 + 3_211_264)


# -- (c) training memory ----------------------------------------------------------------------
def test_saved_for_backward_equals_what_autograd_saves(compiled):
    graph, module, x = compiled
    assert training_memory(graph, batch=BATCH, dtype="float32", optimizer="sgd").activations == \
        saved_tensor_bytes(module, x)


def test_resnet50_training_memory_is_the_sum_of_its_parts():
    g = archlab.get_model("resnet50")
    fp32 = training_memory(g, batch=32, dtype="float32", optimizer="adam")
    params = 25_557_032 * 4  # torchvision's num_params, fp32
    assert (fp32.params, fp32.grads, fp32.optimizer_state) == (params, params, 2 * params)
    assert fp32.buffers == 4 * (g.num_buffers() - 53) + 8 * 53  # 53 int64 num_batches_tracked
    assert fp32.total == fp32.activations + 4 * params + fp32.buffers
    assert sum(fp32.saved_bytes.values()) == fp32.activations
    bf16 = training_memory(g, batch=32, dtype="bf16", optimizer="adam")
    # bf16 halves what is stored in the activation dtype; max-pool's int64
    # indices and batch norm's fp32 statistics stay as they are.
    assert 2 * bf16.saved_activations == fp32.saved_activations
    indices, stats = 8 * 32 * 64 * 56 * 56, 4 * (g.num_buffers() - 53)  # 2 x C fp32 per batch norm
    assert bf16.saved_other == fp32.saved_other == indices + stats
    assert bf16.total == fp32.total - fp32.saved_activations // 2


def test_optimizer_state_buffers_per_parameter():
    g = archlab.get_model("resnet18", input_shape=SMALL)
    states = {o: training_memory(g, batch=1, optimizer=o).optimizer_state for o in ("sgd", "sgd_momentum", "adam")}
    p = training_memory(g, batch=1).params
    assert states == {"sgd": 0, "sgd_momentum": p, "adam": 2 * p}


def test_a_tensor_saved_by_two_ops_counts_once():
    # resnet18's stem ReLU output is saved by the ReLU (its result) and by the
    # max pool (its input): one tensor.
    g = archlab.get_model("resnet18", input_shape=SMALL)
    t = training_memory(g, batch=1, optimizer="sgd")
    relu = 64 * 32 * 32 * 4
    assert t.saved_bytes["relu"] == relu
    # The max pool's own saves are its int64 indices; its output, saved by the
    # next conv, is attributed to it as its producer.
    assert t.saved_bytes["maxpool"] == 64 * 16 * 16 * 8 + 64 * 16 * 16 * 4


# -- rules -----------------------------------------------------------------------------------
def test_every_registered_op_has_a_memory_rule():
    missing = [n for n, op in all_ops().items() if type(op).memory is Op.memory]
    assert missing == []


def test_an_op_without_a_memory_rule_is_reported_not_counted_as_zero(monkeypatch):
    import archlab.ops.base as base

    class _NoRule(Op):
        name = "no_memory_rule_op"
        doc = "test op"

        def infer_shape(self, node, shapes):
            return shapes[0]

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_op(_NoRule)
    g = archlab.Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    g.add_node("mystery", "no_memory_rule_op", ["x"])
    g.set_output("mystery")
    assert unsupported_ops(g) == ["no_memory_rule_op 'mystery'"]
    with pytest.raises(ArchlabError, match="no memory rule for op.*no_memory_rule_op.*mystery"):
        activation_memory(g)
    with pytest.raises(ArchlabError, match="no_memory_rule_op"):
        training_memory(g, batch=1)
