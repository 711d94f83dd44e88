"""Output-size arithmetic shared by convolution and pooling ops (PyTorch's rules)."""
from __future__ import annotations

import math


def window_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, *, ceil_mode: bool = False) -> int:
    """Output length of a sliding window along one axis, as ``torch.nn.Conv2d``
    and ``MaxPool2d`` compute it.

    Returns a value <= 0 when the (dilated) kernel does not fit the padded input;
    callers turn that into a ShapeError naming the node.
    """
    span = dilation * (kernel - 1) + 1
    num = size + 2 * padding - span
    if num < 0:
        return 0
    if ceil_mode:
        out = math.ceil(num / stride) + 1
        # PyTorch: the last window must start inside the input or the left padding.
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return num // stride + 1
