"""The check an import gets when one example could hide a mistake.

The trace runs at batch 1. Where the importer held values whose dim 0 is not
the batch (windows folded into it, constants, work on parameters alone:
:mod:`archlab.torchio.import_shifted`), batch 1 cannot show a hard-coded size
that merges the batch with other dims, padding across merged samples, or a
constant or buffer the model changes in place after reading it. Such an import
is compiled and run against the model on two different random samples: the
outputs must agree, or the import is refused."""
from __future__ import annotations

from typing import Any

import torch

from archlab.errors import ImportTorchError
from archlab.graph import Graph
from archlab.torchio.trace_state import ModuleState

BATCH = 2


def _outputs(value: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(value, torch.Tensor):
        return {"out": value}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(v, torch.Tensor)}
    return None


def check_at_another_batch(module: torch.nn.Module, graph: Graph, input_shape: tuple[int, ...], cls: str) -> None:
    """Refuse (:class:`ImportTorchError`) an import whose compiled graph and
    ``module`` disagree on a batch of 2 random samples (both in eval mode; the
    model is left as it was)."""
    from archlab.torchio.compile import to_module

    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype, device = (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))
    x = torch.randn((BATCH, *input_shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    state = ModuleState(module)
    try:
        compiled = to_module(graph, state_dict=module.state_dict(), strict=False).to(device).eval()
        module.eval()
        with torch.no_grad():
            want, got = _outputs(module(x.clone())), _outputs(compiled(x.clone()))
    finally:
        state.restore()
    if want is None or got is None:
        return
    worst = 0.0
    for key in set(want) & set(got):
        w, g = want[key].double(), got[key].double()
        if w.shape != g.shape:
            worst = float("inf")
            break
        scale = max(float(w.abs().max()), 1e-12) if w.numel() else 1.0
        worst = max(worst, float((w - g).abs().max()) / scale if w.numel() else 0.0)
    if worst > 1e-4:  # float32 rounding is ~1e-6; mixing samples is of order 1
        raise ImportTorchError(
            f"cannot import {cls}: traced at batch 1, the graph differs from the model at batch {BATCH} (max relative "
            f"difference {worst:.3g}): the model mixes samples in a way one example cannot show (a reshape with a "
            "hard-coded size merging the batch with other dims, padding across merged samples) or changes a constant "
            "or buffer in place after reading it; compute sizes from x.shape and leave constants unchanged")
