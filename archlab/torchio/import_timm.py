"""Import rules for layers of timm that ``torch.nn`` has no class for, matched
by qualified class name (timm is never imported here): weight-standardised
convolutions (``StdConv2d`` in BiT ResNet-V2s, ``ScaledStdConv2d`` in
NF-ResNets). Exact classes only: a subclass may compute something else."""
from __future__ import annotations

import dataclasses

from archlab.torchio.import_rules import (
    Mapped,
    Rule,
    Site,
    Unmapped,
    conv2d_attrs,
    conv_module,
)


def _std_conv2d(gain: bool) -> Rule:
    conv = conv_module("std_conv2d", conv2d_attrs)  # the convolution's attributes and its zero-padding check

    def rule(s: Site) -> Mapped:
        m, mapped = s.module, conv(s)
        extra = {"eps": float(m.eps), "gain": gain}
        if gain:
            if tuple(m.gain.shape) != (m.out_channels, 1, 1, 1):
                raise Unmapped(f"its gain has shape {tuple(m.gain.shape)}; archlab's is one per filter")
            extra["scale"] = float(m.scale)
        return dataclasses.replace(mapped, attrs={**mapped.attrs, **extra})

    return rule


NAMED_MODULE_RULES: dict[str, Rule] = {
    "timm.layers.std_conv.StdConv2d": _std_conv2d(gain=False),
    "timm.layers.std_conv.ScaledStdConv2d": _std_conv2d(gain=True),
}
