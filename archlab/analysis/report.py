"""The result of ``archlab analyze``: per-layer rows and totals, in several formats.

Row keys (one row per layer, per node with ``fold=False``, or per scope with
``depth``):
    name, op (``"scope"`` for a scope of several layers), output_shape (list: the
    row's last layer's output), params, buffers, macs, activation_elements,
    activation_bytes: a layer row's own params/MACs (its node and the pointwise
    nodes folded into it) and its output; a scope row sums all four over its
    layers, so every column sums to its total at any depth.
    Receptive field of the row's output units (a number when both axes agree,
    else ``[h, w]``):
      rf_size: side of the field through the spatial paths, in input pixels,
        unclipped (it may exceed the image: 975 for a deep net at 224), so
        sorting by it ranks fields by size; ``null`` when the node has no
        spatial path (after global pooling, flatten, linear).
      rf_stride, rf_start: the effective stride and the centre of the first
        unit's field, for that same field (``null`` with ``rf_size``).
      rf_global: every unit reads the whole input (global pooling, linear, a
        squeeze-and-excitation gate, PSPNet's 1-bin pooling), whatever
        ``rf_size`` says of its spatial paths.
      rf_coverage: fraction of the image covered by the central unit's field,
        clipped to the image (1.0 when global).
      rf_aligned: every merge upstream agrees on stride and centre.
Total keys:
    params, buffers, macs, flops (= 2 x macs), flops_convention,
    activation_elements, activation_bytes, all_node_elements,
    peak_activation_bytes (see :mod:`archlab.analysis.memory` for what it
    counts), peak_node, training_bytes, training_detail, batch, dtype, depth,
    input_shape, unsupported.
All counts are for the whole batch except params/buffers; bytes use ``dtype``.
In CSV a list is ``HxW`` and ``null`` an empty cell.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

COLUMNS = [
    "name", "op", "output_shape", "params", "buffers", "macs", "activation_elements", "activation_bytes",
    "rf_size", "rf_stride", "rf_start", "rf_global", "rf_coverage", "rf_aligned",
]
_RF_NUMBERS = ("rf_size", "rf_stride", "rf_start")


def human(n: float, *, unit: str = "") -> str:
    """One format for every magnitude: an SI prefix and two decimals
    (``15470264320`` -> ``15.47G``, ``2400`` -> ``2.40K``); exact below 1,000."""
    if n is None:
        return "-"
    a = abs(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if a >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def human_bytes(n: float) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


def _shape(s) -> str:
    return "x".join(str(x) for x in s) if s else "-"


def _rf(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "x".join(_num(x) for x in v)
    return _num(v)


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass
class Analysis:
    """Everything ``analyze`` computed. ``rows`` and ``totals`` are plain data
    (JSON-ready); the ``to_*`` methods render them."""

    model: str
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dataframe(self):
        """A pandas DataFrame, one row per layer (``COLUMNS``)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "layers": self.rows, "totals": self.totals, "notes": self.notes}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: "" if v is None else _shape(v) if k == "output_shape" else _rf(v) if k in _RF_NUMBERS else v
                        for k, v in r.items()})
        return buf.getvalue()

    def _table_rows(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            notes = []
            if r.get("rf_global") and r.get("rf_size") is not None:
                notes.append(f"{_rf(r['rf_size'])} local")
            if r.get("rf_aligned") is False:
                notes.append("misaligned")
            rf = ("global" if r.get("rf_global") else _rf(r.get("rf_size"))) + (f" ({', '.join(notes)})" if notes else "")
            out.append([
                r["name"], r["op"], _shape(r["output_shape"]), f"{r['params']:,}" if r["params"] else "",
                human(r["macs"]) if r["macs"] else "", f"{r['activation_elements']:,}",
                human_bytes(r["activation_bytes"]), rf, _rf(r.get("rf_stride")),
            ])
        return out

    HEADERS = ["layer", "op", "output", "params", "MACs", "activations", "act. memory", "RF", "RF stride"]
    """Table headers of a layer table (a row's activations: its output)."""
    SCOPE_HEADERS = ["scope", "op", "output (last)", "params (sum)", "MACs (sum)", "activations (sum)",
                     "act. memory (sum)", "RF (output)", "RF stride"]
    """Table headers with ``depth``: the count columns sum the scope's layers."""

    @property
    def headers(self) -> list[str]:
        return self.SCOPE_HEADERS if self.totals.get("depth") is not None else self.HEADERS

    def _summary(self) -> list[str]:
        t = self.totals
        conv = t["flops_convention"]
        lines = [
            f"params       {t['params']:,} trainable, {t['buffers']:,} buffer elements",
            f"MACs         {t['macs']:,} ({human(t['macs'])}) = {human(t['flops'])} FLOPs, "
            f"'{conv}' convention, batch {t['batch']}",
            f"activations  {t['activation_elements']:,} values ({human_bytes(t['activation_bytes'])}, {t['dtype']}), "
            f"sum of every layer's output",
        ]
        if t.get("peak_activation_bytes") is not None:
            lines.append(f"peak memory  {human_bytes(t['peak_activation_bytes'])} of tensors live at once in an inference "
                         f"forward, input included (kernel workspaces not counted)")
        if t.get("training_bytes") is not None:
            lines.append(f"training     {human_bytes(t['training_bytes'])} ({t.get('training_detail', '')})")
        for n in self.notes:
            lines.append(f"note         {n}")
        return lines

    def to_table(self) -> str:
        from archlab.cli.table import render

        body = render(self.headers, self._table_rows(), align="lllrrrrrr")
        head = f"{self.model}: input {_shape(self.totals['input_shape'])}, batch {self.totals['batch']}, {self.totals['dtype']}"
        return "\n".join([head, "", body, "", *self._summary()])

    def to_markdown(self) -> str:
        rows = self._table_rows()
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join([f"**{self.model}**", "", *lines, "", *[f"- {s}" for s in self._summary()]]) + "\n"

    def render(self, fmt: str) -> str:
        """``table``, ``csv``, ``json`` or ``markdown``."""
        return {"table": self.to_table, "csv": self.to_csv, "json": self.to_json, "markdown": self.to_markdown}[fmt]()
