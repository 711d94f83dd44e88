"""Import rules for layers of timm that ``torch.nn`` has no class for, matched
by qualified class name (timm is never imported here): weight-standardised
convolutions (``StdConv2d`` in BiT ResNet-V2s, ``ScaledStdConv2d`` in
NF-ResNets). Exact classes only: a subclass may compute something else."""
from __future__ import annotations

from archlab.torchio.import_rules import Mapped, Rule, Site, Unmapped, conv2d_attrs


def _std_conv2d(gain: bool) -> Rule:
    def rule(s: Site) -> Mapped:
        m = s.module
        if m.padding_mode != "zeros":
            raise Unmapped(f"padding_mode={m.padding_mode!r}; archlab's std_conv2d pads with zeros")
        attrs = conv2d_attrs(tuple(m.weight.shape), m.bias is not None, m.stride, m.padding, m.dilation, m.groups)
        extra = {"eps": float(m.eps), "gain": gain}
        if gain:
            if tuple(m.gain.shape) != (m.out_channels, 1, 1, 1):
                raise Unmapped(f"its gain has shape {tuple(m.gain.shape)}; archlab's is one per filter")
            extra["scale"] = float(m.scale)
        return Mapped("std_conv2d", (s.module_input(),), {**attrs, **extra})

    return rule


NAMED_MODULE_RULES: dict[str, Rule] = {
    "timm.layers.std_conv.StdConv2d": _std_conv2d(gain=False),
    "timm.layers.std_conv.ScaledStdConv2d": _std_conv2d(gain=True),
}
