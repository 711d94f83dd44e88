"""The HTML of a study report (see :mod:`archlab.report`): plain HTML and pandas'
tables, the PNGs beside it, no scripts or external assets."""
from __future__ import annotations

import os

from archlab.report import _counts, esc, timings

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.skip{color:#777;font-style:italic}h2{margin-top:1.6em;border-bottom:1px solid #ddd}"""

_TITLES = {"history": "Optimisation history", "pareto": "Pareto front", "importances": "What each decision did",
           "choices": "Reward by chosen value", "curves": "Learning curves", "costs": "Reward against cost"}
_COLUMNS = ("number", "reward", "accuracy", "params", "macs", "memory", "rf", "epochs", "eval_s")


def page(study, trials, objectives: list[str], report) -> str:
    """The page's HTML."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>archlab report: {esc(study.study_name)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Study <code>{esc(study.study_name)}</code></h1>", _settings(study, trials, objectives)]
    for name, title in _TITLES.items():
        parts.append(f"<h2>{title}</h2>")
        if name in report.figures:
            parts.append(f"<img src='{esc(os.path.basename(report.figures[name]))}' alt='{esc(title)}'>")
        else:
            parts.append(f"<p class='skip'>Not drawn: {esc(report.skipped.get(name, ''))}.</p>")
        if name == "pareto" and report.pareto:
            front = [t for t in trials if t.number in set(report.pareto)]
            parts.append(f"<p>{len(front)} non-dominated trials (Optuna's <code>best_trials</code>):</p>")
            parts.append(_table(front, objectives))
    best = max((t for t in trials if t.state.name == "COMPLETE" and "reward" in t.user_attrs),
               key=lambda t: (t.user_attrs["reward"], -t.number))
    top = sorted((t for t in trials if t.state.name == "COMPLETE" and "reward" in t.user_attrs),
                 key=lambda t: (-t.user_attrs["reward"], t.number))[:10]
    parts += ["<h2>The best trials</h2>", _table(top, objectives),
              f"<h2>The best architecture (trial {best.number}), layer by layer</h2>", _layers(best),
              "</body></html>"]
    return "\n".join(parts)


def _settings(study, trials, objectives) -> str:
    attrs = study.user_attrs
    rows = [("space", attrs.get("space", "-")), ("sampler", attrs.get("sampler", "-")),
            ("objectives", ", ".join(objectives)),
            ("trials", ", ".join(f"{n} {s.lower()}" for s, n in _counts(trials).items()))]
    for key, value in sorted((attrs.get("training") or {}).items()):
        shown = value if value is not None else {"penalty": "none", "steps": "- (epochs)"}.get(key, "default")
        rows.append((f"training: {key}", shown))
    rows += list(timings(trials).items())
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _table(trials, objectives) -> str:
    import pandas as pd

    rows = []
    for t in trials:
        row = {"number": t.number}
        for c in _COLUMNS[1:]:
            if c in t.user_attrs:
                row[c] = t.user_attrs[c]
        if len(objectives) > 1 and t.values:
            row.update({f"objective {o}": v for o, v in zip(objectives, t.values)})
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)


def _layers(trial) -> str:
    from archlab.analysis import analyze
    from archlab.lang import load
    from archlab.search.trials import arch_text

    try:
        graph = load(arch_text(trial), source=f"trial {trial.number}")
        df = analyze(graph).to_dataframe()
    except Exception as e:  # an architecture this archlab cannot read back: say so, keep the page
        return f"<p class='skip'>Not shown: {esc(type(e).__name__)}: {esc(e)}</p>"
    return df.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}")
