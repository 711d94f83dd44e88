"""Building blocks shared by several zoo families."""
from __future__ import annotations

from archlab.lang import GraphBuilder, Ref


def conv_bn(
    b: GraphBuilder,
    x: Ref,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | tuple[int, int] | None = None,
    groups: int = 1,
    dilation: int = 1,
    act: str | None = "relu",
    names: tuple[str, str] = ("conv", "bn"),
    eps: float = 1e-5,
) -> Ref:
    """conv (no bias) -> batch norm -> activation (``act=None`` for none).

    ``padding=None`` means "same" for odd kernels: ``(k - 1) // 2 * dilation``.
    ``names`` are the conv and norm node names inside the current scope
    (torchvision uses ``conv``/``bn`` in Inception, ``0``/``1`` in MobileNet).
    """
    if padding is None:
        k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        padding = (k - 1) // 2 * dilation
    x = b.conv2d(x, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, bias=False, name=names[0])
    x = b.batch_norm2d(x, eps=eps, name=names[1])
    if act is not None:
        x = b.node(act, x)
    return x


def classifier_head(b: GraphBuilder, x: Ref, num_classes: int, *, dropout: float | None = None, fc: str = "fc") -> Ref:
    """Global average pool -> flatten -> [dropout] -> linear."""
    x = b.adaptive_avg_pool2d(x, 1, name="avgpool")
    x = b.flatten(x)
    if dropout:
        x = b.dropout(x, dropout)
    return b.linear(x, num_classes, name=fc)
