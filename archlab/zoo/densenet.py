"""DenseNet-BC: every layer of a dense block sees the concatenation of all earlier ones.

Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional
Networks", CVPR 2017 (arXiv:1608.06993). The ImageNet models are DenseNet-BC:
each dense layer is a bottleneck BN-ReLU-conv1x1 (``bn_size * k`` channels) then
BN-ReLU-conv3x3 (``k`` = growth rate channels), and each transition halves the
channels (compression 0.5) and the resolution (2x2 average pool).

Node names follow torchvision's ``densenet.py`` so that its ``state_dict``
loads as is: ``features.conv0``/``norm0``/``pool0``,
``features.denseblock{i}.denselayer{j}.{norm1,conv1,norm2,conv2}``,
``features.transition{i}.{norm,conv,pool}``, ``features.norm5``, ``classifier``.
A dense block's output is the node ``features.denseblock{i}.concat``: the block
input followed by every layer's new features, in that order (as torchvision's
``torch.cat(features, 1)``). As in torchvision's ``forward``, a ReLU follows
``norm5`` before the global average pool.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.registry import register_model

HUANG2017 = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (arXiv:1608.06993)"


def _norm_relu_conv(b: GraphBuilder, x: Ref, out_channels: int, k: int, suffix: str = "") -> Ref:
    """The pre-activation unit BN -> ReLU -> conv (no bias) DenseNet uses everywhere."""
    x = b.relu(b.batch_norm2d(x, name=f"norm{suffix}"), name=f"relu{suffix}")
    return b.conv2d(x, out_channels, k, padding=(k - 1) // 2, bias=False, name=f"conv{suffix}")


def dense_layer(b: GraphBuilder, features: list[Ref], growth_rate: int, bn_size: int, drop_rate: float) -> Ref:
    """Concatenate ``features`` -> 1x1 bottleneck -> 3x3 producing ``growth_rate`` new channels."""
    x = b.concat(features) if len(features) > 1 else features[0]
    x = _norm_relu_conv(b, x, bn_size * growth_rate, 1, "1")
    x = _norm_relu_conv(b, x, growth_rate, 3, "2")
    if drop_rate > 0:
        x = b.dropout(x, drop_rate, name="dropout")
    return x


def dense_block(b: GraphBuilder, x: Ref, num_layers: int, growth_rate: int, bn_size: int, drop_rate: float) -> Ref:
    """``num_layers`` dense layers; returns [input, new_1, ..., new_n] concatenated."""
    features = [x]
    for j in range(1, num_layers + 1):
        with b.scope(f"denselayer{j}"):
            features.append(dense_layer(b, features, growth_rate, bn_size, drop_rate))
    return b.concat(features, name="concat")


def transition(b: GraphBuilder, x: Ref, out_channels: int) -> Ref:
    """BN -> ReLU -> conv1x1 (compression) -> 2x2 average pool, stride 2."""
    x = _norm_relu_conv(b, x, out_channels, 1)
    return b.avg_pool2d(x, 2, stride=2, name="pool")


# name: (growth_rate k, layers per dense block, channels of the stem conv) -- Table 1 of Huang et al.
CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


def densenet(
    *,
    name: str = "densenet",
    growth_rate: int = 32,
    block_config: tuple[int, ...] = (6, 12, 24, 16),
    num_init_features: int = 64,
    bn_size: int = 4,
    drop_rate: float = 0.0,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
) -> Graph:
    """Build a DenseNet-BC graph (torchvision's ``DenseNet``).

    Args:
        growth_rate: ``k``, the channels each dense layer adds.
        block_config: the number of dense layers in each dense block.
        num_init_features: channels of the 7x7 stem convolution (2k in the paper).
        bn_size: bottleneck width factor: the 1x1 conv has ``bn_size * k`` channels.
        drop_rate: dropout after each dense layer (0 = none, as torchvision's default).
    """
    if not block_config:
        raise ValueError("block_config must name at least one dense block")
    b = GraphBuilder(name, meta={"family": "densenet"})
    x = b.input(input_shape)
    with b.scope("features"):
        x = b.conv2d(x, num_init_features, 7, stride=2, padding=3, bias=False, name="conv0")
        x = b.relu(b.batch_norm2d(x, name="norm0"), name="relu0")
        x = b.max_pool2d(x, 3, stride=2, padding=1, name="pool0")
        for i, num_layers in enumerate(block_config, start=1):
            with b.scope(f"denseblock{i}"):
                x = dense_block(b, x, num_layers, growth_rate, bn_size, drop_rate)
            if i != len(block_config):
                with b.scope(f"transition{i}"):
                    x = transition(b, x, x.channels // 2)
        x = b.batch_norm2d(x, name="norm5")
    x = b.relu(x, name="relu")
    x = b.adaptive_avg_pool2d(x, 1, name="avgpool")
    x = b.linear(b.flatten(x), num_classes, name="classifier")
    b.output(x)
    return b.build()


_TV = "torchvision DenseNet{}_Weights.IMAGENET1K_V1.meta['num_params']"
# torchvision's exact counts (the paper's Table 1 gives the layers, not parameter counts)
_PARAMS = {"densenet121": 7_978_856, "densenet161": 28_681_000, "densenet169": 14_149_480, "densenet201": 20_013_928}
for _name, (_k, _blocks, _init) in CONFIGS.items():
    register_model(
        _name, family="densenet", paper=HUANG2017, torchvision=_name,
        ref_params=_PARAMS[_name], ref_source=_TV.format(_name.removeprefix("densenet")),
        defaults={"growth_rate": _k, "block_config": _blocks, "num_init_features": _init},
    )(densenet)
