"""torch modules that archlab ops compile to when ``torch.nn`` has no class
for them. Each keeps the parameter names of the layer it reproduces, so a
strict ``load_state_dict`` of the original model's weights works."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StdConv2d(nn.Conv2d):
    """A conv2d whose filters are standardised before use (weight
    standardisation, Qiao et al. 2019), optionally times a learned per-filter
    ``gain`` and a constant ``scale`` (scaled weight standardisation of
    NF-ResNets, Brock et al. 2021). The computation is timm's
    ``StdConv2d``/``ScaledStdConv2d``: a training-mode ``F.batch_norm`` over each
    filter (biased variance, ``eps`` added to it), so outputs match to the bit."""

    def __init__(self, *args, eps: float = 1e-6, gain: bool = False, scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps, self.scale = eps, scale
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1)) if gain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        affine = (self.gain * self.scale).view(-1) if self.gain is not None else None
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, weight=affine,
                              training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
