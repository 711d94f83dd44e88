"""AlexNet, in torchvision's single-tower variant.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NeurIPS 2012. torchvision follows Krizhevsky's "One weird trick
for parallelizing convolutional neural networks" (arXiv:1404.5997): one tower,
64-192-384-256-256 filters, no local response normalisation, and an adaptive
average pool to 6x6 before the classifier. Node names are torchvision's
``features.N`` / ``classifier.N`` indices (the ReLUs, pools and dropouts take
their indices too), so its ``state_dict`` loads as is.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder
from archlab.zoo.registry import register_model

KRIZHEVSKY2012 = (
    "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional Neural Networks, "
    "NeurIPS 2012; single-GPU variant of Krizhevsky, One weird trick for parallelizing convolutional "
    "neural networks (arXiv:1404.5997)"
)

# Convolutional stage, one row per conv layer (each followed by a ReLU):
# (out_channels, kernel, stride, padding, followed by a 3x3/2 max pool)
FEATURES = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


def alexnet(
    *,
    name: str = "alexnet",
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
    dropout: float = 0.5,
) -> Graph:
    """Build AlexNet (torchvision layout; minimum input 63x63).

    Args:
        num_classes: outputs of the last linear layer.
        dropout: probability of the two dropouts in the classifier.
    """
    b = GraphBuilder(name, meta={"family": "alexnet"})
    x = b.input(input_shape)
    with b.scope("features"):
        i = 0
        for out, k, stride, padding, pool in FEATURES:
            x = b.conv2d(x, out, k, stride=stride, padding=padding, name=i)
            x = b.relu(x, name=i + 1)
            i += 2
            if pool:
                x = b.max_pool2d(x, 3, stride=2, name=i)
                i += 1
    x = b.adaptive_avg_pool2d(x, (6, 6), name="avgpool")
    x = b.flatten(x)
    with b.scope("classifier"):
        x = b.dropout(x, dropout, name=0)
        x = b.relu(b.linear(x, 4096, name=1), name=2)
        x = b.dropout(x, dropout, name=3)
        x = b.relu(b.linear(x, 4096, name=4), name=5)
        x = b.linear(x, num_classes, name=6)
    b.output(x)
    return b.build()


register_model(
    "alexnet", family="alexnet", paper=KRIZHEVSKY2012, torchvision="alexnet",
    ref_params=61_100_840, ref_source="torchvision AlexNet_Weights.IMAGENET1K_V1.meta['num_params']",
)(alexnet)
