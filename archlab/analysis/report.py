"""The result of ``archlab analyze``: per-layer rows and totals, in several formats.

Row keys (one row per node, or per scope with ``depth``):
    name, op, output_shape (list), params, buffers, macs, activation_elements,
    activation_bytes, rf_size, rf_stride, rf_start (a number when both axes
    agree, else ``[h, w]``; ``rf_global`` is true when the unit sees the whole
    input), rf_aligned.
Total keys:
    params, buffers, macs, flops (= 2 x macs), flops_convention,
    activation_elements, activation_bytes, peak_activation_bytes,
    training_bytes, batch, dtype, input_shape, unsupported.
All counts are for the whole batch except params/buffers; bytes use ``dtype``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

COLUMNS = [
    "name", "op", "output_shape", "params", "buffers", "macs", "activation_elements", "activation_bytes",
    "rf_size", "rf_stride", "rf_start", "rf_global", "rf_local_size", "rf_aligned",
]


def human(n: float, *, unit: str = "") -> str:
    """``15470264320`` -> ``15.47G``; exact below 10,000."""
    if n is None:
        return "-"
    a = abs(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if a >= 10 * div if div == 1e3 else a >= div:
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
            w.writerow({k: (_shape(v) if k == "output_shape" else _rf(v) if k in ("rf_size", "rf_stride", "rf_start", "rf_local_size") else v)
                        for k, v in r.items()})
        return buf.getvalue()

    def _table_rows(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            notes = []
            if r.get("rf_local_size") is not None:
                notes.append(f"{_rf(r['rf_local_size'])} local")
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
            lines.append(f"peak memory  {human_bytes(t['peak_activation_bytes'])} live at once in an inference forward pass")
        if t.get("training_bytes") is not None:
            lines.append(f"training     {human_bytes(t['training_bytes'])} ({t.get('training_detail', '')})")
        for n in self.notes:
            lines.append(f"note         {n}")
        return lines

    def to_table(self) -> str:
        from archlab.cli.table import render

        body = render(self.HEADERS, self._table_rows(), align="lllrrrrrr")
        head = f"{self.model}: input {_shape(self.totals['input_shape'])}, batch {self.totals['batch']}, {self.totals['dtype']}"
        return "\n".join([head, "", body, "", *self._summary()])

    def to_markdown(self) -> str:
        rows = self._table_rows()
        lines = ["| " + " | ".join(self.HEADERS) + " |", "|" + "---|" * len(self.HEADERS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join([f"**{self.model}**", "", *lines, "", *[f"- {s}" for s in self._summary()]]) + "\n"

    def render(self, fmt: str) -> str:
        """``table``, ``csv``, ``json`` or ``markdown``."""
        return {"table": self.to_table, "csv": self.to_csv, "json": self.to_json, "markdown": self.to_markdown}[fmt]()
