"""Output-size arithmetic shared by convolution and pooling ops (PyTorch's rules)."""
from __future__ import annotations


def window_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, *, ceil_mode: bool = False) -> int:
    """Output length of a sliding window along one axis, as ``torch.nn.Conv2d``
    and ``MaxPool2d`` compute it.

    Returns a value <= 0 when the (dilated) kernel does not fit the padded input;
    callers turn that into a ShapeError naming the node.
    """
    # ATen's pooling_output_shape: floor division (rounding toward -inf), so a
    # ceil-mode window may hang over the input's end, as long as it starts inside.
    num = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or the left padding
    return out
