"""archlab: describe, analyze and search convolutional network architectures.

The main entry points::

    from archlab import GraphBuilder, get_model, list_models, to_module, from_torch, dump, load
"""
from archlab.errors import ArchlabError
from archlab.graph import Graph, Node
from archlab.lang import GraphBuilder, dump, load, load_file, save
from archlab.torchio import from_torch, to_module

__version__ = "0.1.0"


def get_model(name: str, **cfg):
    """Build a zoo model's graph; see :func:`archlab.zoo.get_model`."""
    from archlab.zoo import get_model as _get

    return _get(name, **cfg)


def list_models(pattern: str = "*"):
    """Zoo model names matching a glob; see :func:`archlab.zoo.list_models`."""
    from archlab.zoo import list_models as _list

    return _list(pattern)


__all__ = [
    "ArchlabError", "Graph", "Node", "GraphBuilder", "dump", "load", "load_file", "save",
    "to_module", "from_torch", "get_model", "list_models", "__version__",
]
