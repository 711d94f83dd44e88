"""``archlab compare``'s side-by-side counts: archlab's conventions against the
peer tools that define them, with the differences explained by op kind."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from archlab.analysis.counts import mac_counts
from archlab.ops.base import CONVENTIONS


@dataclass
class CountRow:
    source: str
    params: int | None
    macs: int | None
    note: str = ""


@dataclass
class CountComparison:
    model: str
    rows: list[CountRow] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)

    def report(self) -> str:
        from archlab.cli.table import render

        table = render(
            ["source", "params", "MACs", "note"],
            [[r.source, f"{r.params:,}" if r.params is not None else "", f"{r.macs:,}" if r.macs is not None else "", r.note]
             for r in self.rows],
            align="lrrl",
        )
        checks = [f"  {'ok  ' if ok else 'FAIL'} {text}" for text, ok in self.checks]
        return "\n".join([f"{self.model}: parameters and MACs (1 MAC = 1 multiply-add = 2 FLOPs), batch 1", "", table, "", *checks])


def _by_op(graph, convention: str) -> Counter:
    per = mac_counts(graph, convention).per_node
    out: Counter = Counter()
    for name, n in per.items():
        if n:
            out[graph[name].op] += n
    return out


def explain(graph, a: str, b: str) -> str:
    """``'+ batch_norm2d 22,478,848, adaptive_avg_pool2d 100,352'``: what convention
    ``b`` counts beyond ``a``, by op."""
    ca, cb = _by_op(graph, a), _by_op(graph, b)
    parts = [f"{op} {cb[op] - ca.get(op, 0):+,}" for op in cb if cb[op] != ca.get(op, 0)]
    return ", ".join(parts) or "no difference"


def compare_counts(graph, *, reference: Any = None, torchvision_name: str | None = None) -> CountComparison:
    """Count ``graph`` under each convention and with FlopCounterMode, fvcore and
    torchvision's metadata.

    Args:
        reference: an ``nn.Module`` to run the peer tools on (e.g. torchvision's
            model); default: archlab's own compiled module.
        torchvision_name: read torchvision's ``num_params``/``_ops`` metadata.
    """
    from archlab.torchio.compile import to_module
    from archlab.torchio.peers import flop_counter_macs, fvcore_macs, torchvision_meta

    shape = tuple(graph.input_nodes[0].attrs["shape"])
    mine = {c: mac_counts(graph, c).total for c in CONVENTIONS}
    params = graph.num_params()
    cmp = CountComparison(graph.name)
    notes = {
        "torchvision": "conv + linear multiply-adds only",
        "fvcore": "+ " + explain(graph, "torchvision", "fvcore"),
        "full": "+ " + explain(graph, "fvcore", "full"),
    }
    for c in CONVENTIONS:
        cmp.rows.append(CountRow(f"archlab, '{c}' convention", params if c == "torchvision" else None, mine[c], notes[c]))
    module = reference if reference is not None else to_module(graph)
    ref_name = "reference module" if reference is not None else "archlab's compiled module"
    fc = flop_counter_macs(module, shape, meta=False)
    cmp.rows.append(CountRow("torch FlopCounterMode / 2", None, fc, f"on {ref_name}"))
    cmp.checks.append((f"FlopCounterMode / 2 == archlab 'torchvision' ({fc:,})", fc == mine["torchvision"]))
    fv, skipped = fvcore_macs(module, shape)
    skipped_text = ", ".join(f"{k.replace('aten::', '')} x{v}" for k, v in sorted(skipped.items()))
    cmp.rows.append(CountRow("fvcore FlopCountAnalysis", None, fv, f"skips (counts 0): {skipped_text or 'nothing'}"))
    cmp.checks.append((f"fvcore total == archlab 'fvcore' ({fv:,})", fv == mine["fvcore"]))
    if reference is not None:
        ref_params = sum(p.numel() for p in reference.parameters())
        cmp.checks.append((f"reference parameters == archlab ({ref_params:,})", ref_params == params))
    meta = torchvision_meta(torchvision_name) if torchvision_name else None
    if meta:
        cmp.rows.append(CountRow(f"torchvision metadata ({torchvision_name})", meta["num_params"],
                                 int(round(meta["gmacs"] * 1e9)), f"_ops = {meta['gmacs']} G, rounded to 3 decimals"))
        cmp.checks.append((f"torchvision _ops {meta['gmacs']} G == archlab 'torchvision' rounded",
                           round(mine["torchvision"] / 1e9, 3) == meta["gmacs"]))
        if meta["num_params"] != params:
            cmp.rows[-1].note += "; its num_params counts the aux heads" if meta["num_params"] > params else ""
    return cmp
