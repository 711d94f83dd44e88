"""The trace as :func:`archlab.torchio.from_torch` runs it: on zeros of the
input's shape, shapes only where values depend on the input, the model left as
it was found, and every failure one line naming the node or the model's line."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import fx

from archlab.torchio.trace import (
    BATCH, ItemAssignment, NodeRunError, TensorValueControlFlow, concrete_trace,
)
from archlab.torchio.trace_shapes import ValueDependentOp
from archlab.torchio.trace_state import ModuleState

_VALUES_ADVICE = ("archlab follows the model on one example input, so branch on sizes (x.shape) or on module "
                  "attributes, not on tensor values")
"""The advice for a forward that reads the input's values: control flow on them
(:class:`TensorValueControlFlow`) or an op whose result depends on them
(:class:`~archlab.torchio.trace_shapes.ValueDependentOp`)."""


def one_line(e: BaseException) -> str:
    """``TypeError: first line of the message``, at most about 300 characters."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _cause(e: BaseException) -> str:
    """:func:`one_line`, without the type name for the tracer's own refusal."""
    return str(e) if isinstance(e, ValueDependentOp) else one_line(e)


def _advice(e: BaseException, default: str = "check input_shape (batch excluded)") -> str:
    """What to do about ``e``, the error a node (or the model's code) raised under the trace."""
    if isinstance(e, ValueDependentOp):
        return _VALUES_ADVICE
    if "view size is not compatible" in str(e):  # torch refuses it in the model's own forward too
        return "the model's forward fails there under torch as well: use .reshape where it calls .view"
    return default


def import_trace(module: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[fx.Graph, dict[fx.Node, Any]]:
    """:func:`concrete_trace` for :func:`archlab.torchio.from_torch`: the model runs on
    zeros of ``input_shape`` (batch :data:`BATCH`) with the importer's leaves, shapes
    only where values depend on the input (``shapes_only``); the model is
    left as it was (:class:`~archlab.torchio.trace_state.ModuleState`: training flags,
    buffers, attributes and caches). Returns the fx graph and each node's value.

    Raises:
        ImportTorchError: one line naming the failing node or the model's own line;
            where the node's op reads the input's values (``nonzero``, a boolean
            mask, ``.item()``), the advice is control flow's (branch on sizes),
            not to check input_shape.
    """
    from archlab.errors import ImportTorchError, fmt_shape
    from archlab.torchio.import_rules import has_named_rule, is_leaf

    cls = type(module).__qualname__
    if any(d <= 0 for d in input_shape):
        raise ImportTorchError(f"from_torch({cls}): input_shape {fmt_shape(input_shape)} has a size <= 0; give "
                               "one sample's shape without the batch, e.g. (3, 224, 224)")
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) > 1:
        raise ImportTorchError(f"cannot import {cls}: forward takes {len(required)} tensor inputs "
                               f"({', '.join(required)}); from_torch imports single-input models")
    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype, device = (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))
    state = ModuleState(module)  # flags, buffers, caches: the trace leaves the model as it found it
    example = torch.zeros((BATCH, *input_shape), dtype=dtype, device=device)
    try:
        with torch.no_grad():
            gm, tracer = concrete_trace(module, example, is_leaf, keep_wrapped=has_named_rule, shapes_only=True)
            # read now: fx keeps constants it captured (``_tensor_constant0``) on the model until the restore
            values = {n: tracer.value_of(n) for n in gm.nodes if n.op != "output"}
    except TensorValueControlFlow as e:
        raise ImportTorchError(f"cannot import {cls}: {e}; {_VALUES_ADVICE}") from None
    except ItemAssignment as e:
        raise ImportTorchError(
            f"cannot import {cls}: {e}; archlab graphs are functional: build the tensor from ops instead "
            "(torch.where, cat)") from None
    except NodeRunError as e:
        n = e.node
        what = f" (module '{n.target}')" if n.op == "call_module" else ""
        raise ImportTorchError(
            f"cannot import {cls}: running it on a {fmt_shape((BATCH, *input_shape))} input failed at node "
            f"'{n.name}'{what} ({_cause(e.cause)}); {_advice(e.cause)}") from None
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError; the model's own errors
        where = _model_frame(e)
        advice = _advice(e, "check input_shape (batch excluded), or make forward traceable by torch.fx")
        raise ImportTorchError(
            f"cannot import {cls}: running it on a {fmt_shape((BATCH, *input_shape))} input failed{where} "
            f"({_cause(e)}); {advice}") from None
    finally:
        state.restore()
    changed = state.changed_parameters()
    if changed:
        raise ImportTorchError(f"cannot import {cls}: its forward writes parameter(s) {', '.join(changed[:3])} in "
                               "place, so the model's weights have changed; archlab imports a forward that leaves "
                               "its weights as they are")
    return gm, values


def _model_frame(e: BaseException) -> str:
    """`` at torchvision/models/resnet.py:97``: the last frame of the model's own code."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "/torch/" not in f.filename and "/archlab/" not in f.filename]
    return f" at {'/'.join(frames[-1].filename.split('/')[-3:])}:{frames[-1].lineno}" if frames else ""
