"""Initialise a compiled graph as torchvision initialises its models.

Compiled modules start with PyTorch's per-layer defaults; torchvision's
ResNet, VGG, MobileNet, DenseNet and segmentation models instead use
Kaiming-normal (fan-out, ReLU) convolutions, batch/group norms at weight 1 and
bias 0, zero conv biases, and a linear init that depends on the family. This
module applies the same, keyed on the graph's ``meta["family"]``.

Three modes (:data:`INITS`, ``TrainConfig.init``): ``"torchvision"`` applies the
family's rule to every graph; ``"pytorch"`` keeps PyTorch's per-layer defaults;
``"auto"`` (the default) applies torchvision's rule to torchvision's models --
the zoo entries that are a torchvision model (``ModelInfo.torchvision``: VGG,
ResNet, DenseNet, GoogLeNet, Inception, MobileNet V2/V3, FCN-ResNet,
DeepLabV3, AlexNet; a description file saved from one keeps its name) and
``torchvision:NAME`` imports -- and keeps PyTorch's defaults for archlab's own
networks (search-space candidates, U-Net, SegNet, PSPNet, FCN-VGG, MobileNet V1,
other description files). (torchvision's FCN/DeepLabV3 heads keep PyTorch's
defaults in torchvision; here they get the backbone's Kaiming rule, a difference
left as is.) Why not Kaiming everywhere: with AdamW, a scale-invariant
(batch-normed) conv learns at a rate ~ lr / |w|, and Kaiming's weights are
~2.4x PyTorch's, so it learns slower; on the embedded ``scenes`` task a
``seg``-space net trained for 768 steps (32x32, flips only) scored mIoU 0.25 with Kaiming and 0.35
with PyTorch's defaults (README, "Training").
"""
from __future__ import annotations

import torch
from torch import nn

from archlab.errors import ArchlabError
from archlab.train.config import INITS

# Per family, torchvision's choices: (conv init, linear init). conv: "kaiming_out"
# (normal, fan-out, ReLU), "kaiming_in" (DenseNet's fan-in), ("trunc", std)
# (GoogLeNet, Inception: truncated normal on [-2, 2]); linear: None keeps
# PyTorch's default, ("normal", std) or ("trunc", std), biases zeroed.
_RULES = {
    "vgg": ("kaiming_out", ("normal", 0.01)),           # torchvision/models/vgg.py
    "mobilenet_v2": ("kaiming_out", ("normal", 0.01)),  # mobilenetv2.py
    "mobilenet_v3": ("kaiming_out", ("normal", 0.01)),  # mobilenetv3.py
    "googlenet": (("trunc", 0.01), ("trunc", 0.01)),    # googlenet.py
    "inception": (("trunc", 0.1), ("trunc", 0.1)),      # inception.py (stddev 0.1 unless a layer sets one)
    "densenet": ("kaiming_in", "bias0"),                # densenet.py: kaiming_normal_ (fan-in), linear bias 0
}
_DEFAULT = ("kaiming_out", None)  # ResNet, torchvision's segmentation models; every family under "torchvision"


def _init_weight(w: torch.Tensor, rule) -> None:
    if rule == "kaiming_out":
        nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    elif rule == "kaiming_in":
        nn.init.kaiming_normal_(w)
    elif rule[0] == "normal":
        nn.init.normal_(w, 0.0, rule[1])
    else:
        nn.init.trunc_normal_(w, mean=0.0, std=rule[1], a=-2.0, b=2.0)


def init_like_torchvision(module: nn.Module, family: str | None) -> nn.Module:
    """Re-initialise ``module`` in place (see the module docstring); returns it.
    AlexNet keeps PyTorch's defaults, as torchvision's does."""
    if family == "alexnet":
        return module
    conv_rule, linear_rule = _RULES.get(family or "", _DEFAULT)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            _init_weight(m.weight, conv_rule)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_rule is not None:
            if linear_rule != "bias0":
                _init_weight(m.weight, linear_rule)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def family_of(graph) -> str | None:
    """The torchvision family a graph's init follows (from ``meta['family']``)."""
    fam = str((graph.meta or {}).get("family", "")).lower()
    for key in (*_RULES, "alexnet"):
        if fam.startswith(key):
            return key
    return fam or None


def torchvision_name(graph) -> str | None:
    """The torchvision model ``graph`` is, or None: ``meta['torchvision']`` (set on
    ``torchvision:NAME`` imports), else the zoo entry of the graph's name when
    that entry is a torchvision model."""
    meta = graph.meta or {}
    if meta.get("torchvision"):
        return str(meta["torchvision"])
    import archlab.zoo  # noqa: F401 (registers the zoo: a description file may come without it)
    from archlab.zoo.registry import find_model

    info = find_model(graph.name)
    return info.torchvision if info is not None else None


def uses_torchvision_init(graph, how: str = "auto") -> bool:
    """Whether :func:`initialise` re-initialises ``graph``'s module (see the module docstring)."""
    if how not in INITS:
        raise ArchlabError(f"init {how!r} is not one of {', '.join(INITS)}")
    return how == "torchvision" or (how == "auto" and torchvision_name(graph) is not None)


@torch.no_grad()
def initialise(module: nn.Module, graph, how: str = "auto") -> nn.Module:
    """:func:`init_like_torchvision` with the graph's family, or PyTorch's
    defaults left in place (``how``: one of :data:`INITS`)."""
    if not uses_torchvision_init(graph, how):
        return module
    return init_like_torchvision(module, family_of(graph))
