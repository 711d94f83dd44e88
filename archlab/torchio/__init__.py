"""The bridge to PyTorch: compile graphs to modules, import modules to graphs.

Everything here imports torch lazily, so the IR and analyzers work without it.
"""
from archlab.torchio.compile import to_module

__all__ = ["to_module", "from_torch"]


def from_torch(*args, **kwargs):
    """See :func:`archlab.torchio.importer.from_torch`."""
    from archlab.torchio.importer import from_torch as _from_torch

    return _from_torch(*args, **kwargs)
