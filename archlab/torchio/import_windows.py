"""Import rules for the ops of windowed attention (Swin, MaxViT): ``torch.roll``,
the cyclic shift of shifted windows; ``clamp``/``exp`` of Swin v2's logit scale;
``torch.einsum`` when it is a batched matrix product (MaxViT's attention). The window partition itself (reshapes that
merge windows into the batch dim) and its masks and relative-position biases
are handled by :mod:`archlab.torchio.import_shifted`."""
from __future__ import annotations

import torch

from archlab.torchio.import_rules import Mapped, Rule, Site, Unmapped


def _roll(s: Site) -> Mapped:
    """``torch.roll(x, shifts, dims)`` with constant shifts along given dims (not the batch)."""
    a = s.bind("input", "shifts", "dims", dims=None)
    x = s.tensor(a["input"])
    if a["dims"] is None:
        raise Unmapped("torch.roll without dims rolls the flattened tensor, batch included; give the dims")
    shifts = tuple(a["shifts"]) if isinstance(a["shifts"], (tuple, list)) else (a["shifts"],)
    dims = tuple(a["dims"]) if isinstance(a["dims"], (tuple, list)) else (a["dims"],)
    if len(shifts) != len(dims) or not all(isinstance(v, int) for v in shifts):
        raise Unmapped(f"torch.roll with shifts {a['shifts']!r} for dims {a['dims']!r}; archlab needs one constant "
                       "shift per dim")
    dims = tuple(s.dim(d, x) for d in dims)
    shifts = tuple(v % s.shape(x)[d] for v, d in zip(shifts, dims))
    kept = [(v, d) for v, d in zip(shifts, dims) if v]
    if not kept:
        from archlab.torchio.import_rules import ALIAS

        return Mapped(ALIAS, (x,))
    return Mapped("roll", (x,), {"shifts": tuple(v for v, _ in kept), "dims": tuple(d for _, d in kept)})


def _clamp(s: Site) -> Mapped:
    a = s.bind("input", "min", "max", min=None, max=None)
    bounds = {k: a[k] for k in ("min", "max")}
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in bounds.values()):
        raise Unmapped(f"clamp with bounds {bounds!r}; archlab's clamp takes constant numbers")
    if bounds["min"] is None and bounds["max"] is None:
        raise Unmapped("clamp without bounds")
    return Mapped("clamp", (s.tensor(a["input"]),), {k: None if v is None else float(v) for k, v in bounds.items()})


def _exp(s: Site) -> Mapped:
    a = s.bind("input")
    return Mapped("exp", (s.tensor(a["input"]),))


def einsum_ir(imp, n) -> str:
    """``torch.einsum(eq, a, b)`` that is a batched matrix product (``"bhid,bhjd->bhij"``)
    as ``permute``s around one ``matmul`` on importer ``imp``; returns the IR node.
    FlopCounterMode counts the same product (einsum runs as bmm), and fvcore's
    einsum rule counts one MAC per term of the contraction, as matmul's.

    Raises:
        Unmapped: another equation (three operands, a repeated or summed-out
            letter, an ellipsis, several contracted or free letters).
    """
    eq, *ops = n.args
    if len(ops) == 1 and isinstance(ops[0], (tuple, list)):
        ops = list(ops[0])
    if not isinstance(eq, str) or len(ops) != 2 or n.kwargs or "..." in eq or "->" not in eq:
        raise Unmapped("einsum other than a two-operand equation with an explicit output; archlab maps batched "
                       "matrix products")
    ins, out = eq.replace(" ", "").split("->")
    a, b = ins.split(",")
    letters = [a, b, out]
    if any(len(set(t)) != len(t) for t in letters):
        raise Unmapped(f"einsum {eq!r} repeats a letter within an operand (a diagonal)")
    batch = [c for c in out if c in a and c in b]
    free_a, free_b = [c for c in a if c in out and c not in b], [c for c in b if c in out and c not in a]
    contracted = [c for c in a if c in b and c not in out]
    summed = [c for c in a + b if c not in out and not (c in a and c in b)]
    if len(free_a) != 1 or len(free_b) != 1 or len(contracted) != 1 or summed or not batch             or a[0] != batch[0] or b[0] != batch[0] or out[0] != batch[0]:
        raise Unmapped(f"einsum {eq!r} is not a batched matrix product over the batch dim; archlab maps those")
    imp._consumer = (imp._shifted(n), True)
    x, y = (imp._ir_input(v, len(imp.results[n])) for v in ops)
    left, right = batch + free_a + contracted, batch + contracted + free_b

    def permuted(name: str, have: str, want: list[str]) -> str:
        dims = tuple(have.index(c) for c in want)
        return name if dims == tuple(range(len(dims))) else imp._ir_node(n, "permute", (name,), {"dims": dims})

    prod = imp._ir_node(n, "matmul", (permuted(x, a, left), permuted(y, b, right)), {"fvcore_einsum": True})
    result = permuted(prod, "".join(batch + free_a + free_b), list(out))
    if imp.ir_shapes[result] != imp._ir_shape(n):
        raise Unmapped(f"archlab's matmul gives {imp.ir_shapes[result]} where torch gives {imp._ir_shape(n)}")
    return result


WINDOW_FUNCTION_RULES: dict = {torch.roll: _roll, torch.clamp: _clamp, torch.clip: _clamp, torch.exp: _exp}
WINDOW_METHOD_RULES: dict[str, Rule] = {"roll": _roll, "clamp": _clamp, "clip": _clamp, "exp": _exp}
