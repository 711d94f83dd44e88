"""VGG: configurations A, B, D and E, with and without batch norm.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (Table 1). Every conv is 3x3, stride 1, padding 1, with a
bias, followed by a ReLU (batch norm in between for the ``_bn`` variants, which
postdate the paper); ``"M"`` is a 2x2/2 max pool. Node names are torchvision's
``features.N`` / ``classifier.N`` indices (ReLUs, pools and dropouts take theirs
too), so its ``state_dict`` loads as is; the adaptive 7x7 average pool before the
classifier is torchvision's, making any input of 32x32 or more valid.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder
from archlab.zoo.registry import register_model

SIMONYAN2015 = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, "
    "ICLR 2015 (arXiv:1409.1556)"
)
WITH_BN = "; with batch norm after every conv (Ioffe & Szegedy, ICML 2015), as torchvision's vgg*_bn"

# Table 1 of the paper: conv output channels in order, "M" = 2x2/2 max pool.
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG-11
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG-13
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # VGG-16
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],  # VGG-19
}
DEPTH_CFG = {11: "A", 13: "B", 16: "D", 19: "E"}


def vgg(
    *,
    name: str = "vgg",
    cfg: str | list[int | str] = "D",
    batch_norm: bool = False,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
    dropout: float = 0.5,
) -> Graph:
    """Build a VGG graph from a configuration list.

    Args:
        cfg: a key of :data:`CFGS` (``"A"``, ``"B"``, ``"D"``, ``"E"``) or a list
            of conv widths and ``"M"`` pools in the same format.
        batch_norm: insert a batch norm after every conv (torchvision's ``vgg*_bn``).
        num_classes: outputs of the last linear layer.
        dropout: probability of the two dropouts in the classifier.

    Raises:
        ValueError: an unknown cfg key or an entry that is neither an int nor "M".
    """
    if isinstance(cfg, str):
        if cfg not in CFGS:
            raise ValueError(f"cfg must be one of {sorted(CFGS)} or a list like [64, 'M', 128, ...], got {cfg!r}")
        cfg = CFGS[cfg]
    b = GraphBuilder(name, meta={"family": "vgg"})
    x = b.input(input_shape)
    with b.scope("features"):
        i = 0  # the index torchvision's nn.Sequential gives the next layer
        for v in cfg:
            if v == "M":
                x = b.max_pool2d(x, 2, stride=2, name=i)
                i += 1
            elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
                x = b.conv2d(x, v, 3, padding=1, name=i)
                if batch_norm:
                    x = b.batch_norm2d(x, name=i + 1)
                    i += 1
                x = b.relu(x, name=i + 1)
                i += 2
            else:
                raise ValueError(f"cfg entries must be positive ints (conv widths) or 'M' (max pool), got {v!r}")
    x = b.adaptive_avg_pool2d(x, (7, 7), name="avgpool")
    x = b.flatten(x)
    with b.scope("classifier"):
        x = b.dropout(b.relu(b.linear(x, 4096, name=0), name=1), dropout, name=2)
        x = b.dropout(b.relu(b.linear(x, 4096, name=3), name=4), dropout, name=5)
        x = b.linear(x, num_classes, name=6)
    b.output(x)
    return b.build()


_TV_META = "torchvision {}_Weights.IMAGENET1K_V1.meta['num_params']"
# depth: (params without BN, params with BN); BN adds 2 per conv channel.
_PARAMS = {
    11: (132_863_336, 132_868_840),
    13: (133_047_848, 133_053_736),
    16: (138_357_544, 138_365_992),
    19: (143_667_240, 143_678_248),
}
for _depth, (_plain, _bn) in _PARAMS.items():
    for _suffix, _batch_norm, _params in (("", False, _plain), ("_bn", True, _bn)):
        _name = f"vgg{_depth}{_suffix}"
        register_model(
            _name, family="vgg", paper=SIMONYAN2015 + (WITH_BN if _batch_norm else ""),
            torchvision=_name, ref_params=_params, ref_source=_TV_META.format(_name.upper()),
            defaults={"cfg": DEPTH_CFG[_depth], "batch_norm": _batch_norm},
        )(vgg)
