"""Counts from peer tools, for ``archlab compare`` and the tests that hold
archlab's conventions to them.

* :func:`flop_counter_macs`: ``torch.utils.flop_counter.FlopCounterMode`` total / 2
  (it reports 2 FLOPs per MAC and counts matrix products and convolutions only).
* :func:`fvcore_macs`: ``fvcore.nn.FlopCountAnalysis(...).total()`` (fvcore counts
  one fused multiply-add as one flop, so its totals are MACs).
* :func:`torchvision_meta`: the ``num_params`` and ``_ops`` (GMACs, rounded to
  3 decimals) torchvision publishes with its weights.

Models are built on the meta device where the tool allows it, so no weights are
allocated and nothing is computed.
"""
from __future__ import annotations

import warnings
from typing import Any


def flop_counter_macs(module, input_shape: tuple[int, ...], *, batch: int = 1, meta: bool = True) -> int:
    """MACs of one forward pass measured by torch's ``FlopCounterMode`` (/2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = "meta" if meta else "cpu"
    module = module.to(device).eval()
    x = torch.zeros((batch, *input_shape), device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


def fvcore_macs(module, input_shape: tuple[int, ...], *, batch: int = 1) -> tuple[int, dict[str, int]]:
    """fvcore's total (MACs) and the unsupported ops it skipped (name -> count)."""
    import torch

    module = module.eval()
    x = torch.zeros((batch, *input_shape))
    with warnings.catch_warnings():
        # fvcore's own import scripts a loss with torch.jit.script, which torch now
        # deprecates (a FutureWarning that is not the user's concern); its counting
        # warns about every unsupported op, which ``unsupported_ops()`` returns anyway.
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        fca = FlopCountAnalysis(module, x)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = fca.total()
        return int(total), dict(fca.unsupported_ops())


def torchvision_meta(name: str) -> dict[str, Any] | None:
    """``{"num_params": int, "gmacs": float}`` from torchvision's weight metadata, or None."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    meta = list(weights)[0].meta
    if "_ops" not in meta:
        return None
    return {"num_params": meta["num_params"], "gmacs": meta["_ops"]}
