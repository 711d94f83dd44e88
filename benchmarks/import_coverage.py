"""Benchmark: how much of torchvision and timm ``from_torch`` imports, and how exactly.

Run: ``python benchmarks/import_coverage.py [--source torchvision|timm|all] [--only resnet18,timm:resnet18d]
[--skip-outputs] [--max-params N] [--json PATH] [--table]`` (exits 0 whatever the models do).

Each model is built with fresh weights (torchvision ``weights=None``, timm
``pretrained=False``) at its default input and checked by
:func:`archlab.torchio.coverage.check_model`: imported at all, then exact on
parameters, ``torchvision`` MACs (FlopCounterMode / 2), ``fvcore`` MACs
(FlopCountAnalysis) and float64 outputs (relative difference <= 1e-6). The
raw results go to ``--json`` (default ``benchmarks/results/import_coverage.json``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "import_coverage.json"


def yes(v) -> str:
    return "-" if v is None else "yes" if v else "NO"


CHECKS = ("params_ok", "torchvision_ok", "fvcore_ok", "outputs_ok")


def short_of(r, checks=CHECKS) -> bool:
    """``r`` imported but one of the checks that ran is not ``True``."""
    return r.imported and any(getattr(r, k) is not True for k in checks)


def reason_of(r, checks=CHECKS) -> str:
    """The table's reason column: the unsupported kinds, the import error, or why checks failed."""
    if not r.built or not r.imported:
        if r.kinds:
            return "unsupported: " + ", ".join(f"{k} x{n}" for k, n in r.kinds.items())
        return r.reason
    if not short_of(r, checks):
        return ""
    return "; ".join(n for n in r.notes if not n.startswith("the forward never touches")) or "(no note)"


def table(results, checks=CHECKS) -> str:
    rows = ["| model | input | imported | params | torchvision | fvcore | outputs | reason |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        shape = "x".join(map(str, r.input_shape))
        cells = [f"{r.source}:{r.name}", shape, yes(r.imported)]
        cells += [yes(getattr(r, k)) if r.imported else "" for k in CHECKS]
        cells.append(reason_of(r, checks).replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["torchvision", "timm", "all"], default="all")
    ap.add_argument("--only", help="comma-separated names: resnet18 (every list that has it) or timm:resnet18")
    ap.add_argument("--skip-outputs", action="store_true", help="no float64 output comparison (faster)")
    ap.add_argument("--max-params", type=int, help="skip models with more parameters (counted on the meta device)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"raw results (default {DEFAULT_JSON})")
    ap.add_argument("--table", action="store_true", help="print the per-model markdown table")
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm

    from archlab.torchio.coverage import check_all, meta_params, model_specs, summarize

    torch.set_num_threads(2)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    specs = model_specs(args.source, only)
    if only:
        missing = sorted(set(only) - {s.name for s in specs} - {f"{s.source}:{s.name}" for s in specs})
        if missing:
            print(f"not in the {args.source} list(s), ignored: {', '.join(missing)}", file=sys.stderr)
    skipped = []
    if args.max_params is not None:
        def size(spec) -> int:
            try:
                return meta_params(spec)
            except Exception:  # noqa: BLE001 - a builder that fails: check() records why
                return 0

        counted = [(s, size(s)) for s in specs]
        skipped = [(s, n) for s, n in counted if n > args.max_params]
        specs = [s for s, n in counted if n <= args.max_params]
    t0 = time.perf_counter()
    with tqdm(total=len(specs), unit="model", file=sys.stderr) as bar:
        def progress(spec):  # called before each model: the previous one is done
            if spec is not specs[0]:
                bar.update()
            bar.set_description(f"{spec.source}:{spec.name}")

        results = check_all(specs, outputs=not args.skip_outputs, progress=progress)
        bar.update(len(specs) - bar.n)
    wall = time.perf_counter() - t0
    summary = summarize(results)

    checks = CHECKS[:3] if args.skip_outputs else CHECKS
    if args.table:
        print(table(results, checks))
        print()
    print(summary.line() + (" (outputs not checked: --skip-outputs)" if args.skip_outputs else ""))
    if skipped:
        print(f"skipped (more than {args.max_params:,} parameters): "
              + ", ".join(f"{s.source}:{s.name} ({n / 1e6:.0f} M)" for s, n in skipped))
    if summary.not_built:
        print("not built: " + "; ".join(summary.not_built))
    if summary.failures:
        print("import failures by reason:")
        for key, models in summary.failures.items():
            print(f"  {key} ({len(models)}): {', '.join(models)}")
    inexact = [r for r in results if short_of(r, checks)]
    if inexact:
        print("imported but not exact:")
        for r in inexact:
            print(f"  {r.source}:{r.name}: {reason_of(r, checks)}")
    crashes = [r for r in results if r.crashed]
    if crashes:
        print("importer crashes (bugs): " + ", ".join(f"{r.source}:{r.name}" for r in crashes))
    print(f"{len(results)} model(s) in {wall:.0f} s")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "argv": sys.argv[1:] if argv is None else argv,
        "torch": torch.__version__, "torchvision": version("torchvision"), "timm": version("timm"),
        "python": platform.python_version(),
        "wall_s": wall,
        "summary": {k: v for k, v in vars(summary).items()} | {"import_rate": summary.import_rate},
        "skipped": [{"source": s.source, "name": s.name, "params": n} for s, n in skipped],
        "results": [r.to_dict() for r in results],
    }, indent=1))
    print(f"raw results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
