"""Plain-text tables for the terminal (no dependencies)."""
from __future__ import annotations

from typing import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str | None = None) -> str:
    """Columns padded to width; ``align`` is one char per column, ``l`` or ``r``
    (default: right for numbers, left otherwise)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join(
            "r" if rows and all(isinstance(r[i], (int, float)) or str(r[i]).replace(",", "").isdigit() for r in rows) else "l"
            for i in range(len(headers))
        )

    def line(items):
        return "  ".join(s.rjust(w) if a == "r" else s.ljust(w) for s, w, a in zip(items, widths, align)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)
