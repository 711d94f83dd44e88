"""``archlab report`` (archlab/report/): the page and its PNGs for a NAS-Bench-201
study, an NSGA-II study and a trained ``seg`` study (with the median pruner); every figure holds data; the page's
Pareto table is exactly Optuna's ``best_trials``; bad requests are one line."""
from __future__ import annotations

import re

import optuna
import pytest
from PIL import Image

from archlab.cli.main import main
from archlab.report import figures as F

optuna.logging.set_verbosity(optuna.logging.WARNING)



@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root}/r.db"
    runs = [["--space", "nasbench201", "--sampler", "tpe", "--n-trials", "25", "--study", "nb"],
            ["--space", "nasbench201", "--sampler", "nsga2", "--objectives", "reward,params", "--n-trials", "40",
             "--study", "mo"],
            ["--space", "seg", "--sampler", "random", "--n-trials", "12", "--study", "tr", "--max-params", "4M",
             "--data", "scenes:n=16,val=8", "--epochs", "4", "--batch-size", "8", "--pruner", "median"]]
    for argv in runs:
        assert main(["search", "--quiet", "--seed", "0", "--storage", url, *argv]) == 0
    return url


def _has_data(png: str) -> bool:
    """More than a blank canvas: many distinct colours."""
    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def _drawn(fig) -> int:
    """Data-carrying artists on the figure's axes (points, lines with points, bars)."""
    n = 0
    for ax in fig.axes:
        n += sum(len(c.get_offsets()) for c in ax.collections)
        n += sum(len(line.get_xdata()) for line in ax.lines)
        n += sum(p.get_height() != 0 for p in ax.patches if hasattr(p, "get_height"))
    return n


@pytest.mark.parametrize("study,expect,skipped", [
    ("nb", {"history", "importances", "choices", "costs"}, {"pareto", "curves"}),
    ("mo", {"history", "pareto", "importances", "choices", "costs"}, {"curves"}),
    ("tr", {"history", "importances", "choices", "costs", "curves"}, {"pareto"}),
])
def test_report_writes_the_page_and_figures_with_data(study, expect, skipped, db, tmp_path, capsys):
    out = tmp_path / study
    assert main(["report", "--study", study, "--storage", db, "-o", str(out)]) == 0
    assert f"wrote {out}/index.html with {len(expect)} figures" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.png" for n in expect] + ["index.html"])
    page = (out / "index.html").read_text()
    for name in expect:
        assert f"src='{name}.png'" in page and _has_data(str(out / f"{name}.png")), name
    assert page.count("Not drawn:") == len(skipped)
    for name in skipped:
        assert f"src='{name}.png'" not in page
    assert "layer by layer" in page and "<table" in page


def test_every_figure_function_draws_data(db):
    for name in ("nb", "mo", "tr"):
        study = optuna.load_study(study_name=name, storage=db)
        trials = study.get_trials()
        figs = [F.fig_history(study, trials), F.fig_importances(study, trials), F.fig_choices(trials),
                F.fig_costs(trials)]
        if name == "mo":
            figs.append(F.fig_pareto(study, ["reward", "params"]))
        if name == "tr":
            figs.append(F.fig_curves(trials, "validation miou"))
        for fig in figs:
            assert fig is not None and _drawn(fig) > 0, name


def test_pruned_trials_are_marked_where_the_pruner_stopped_them(db):
    study = optuna.load_study(study_name="tr", storage=db)
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    assert pruned  # by the pruner (the constraint's prunes have no curve)
    fig = F.fig_curves(trials, "validation miou")
    marks = [line for line in fig.axes[0].lines if line.get_marker() == "x" and len(line.get_xdata()) == 1]
    assert sorted((float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in marks) == sorted(
        (float(max(t.intermediate_values)), t.intermediate_values[max(t.intermediate_values)]) for t in pruned)


def test_pareto_table_is_exactly_optunas_best_trials(db, tmp_path):
    out = tmp_path / "mo"
    assert main(["report", "--study", "mo", "--storage", db, "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    table = page.split("non-dominated trials")[1].split("</table>")[0]
    numbers = {int(n) for n in re.findall(r"<tr>\s*<td>(\d+)</td>", table)}
    front = optuna.load_study(study_name="mo", storage=db).best_trials
    assert numbers == {t.number for t in front} and len(numbers) >= 2


def test_empty_study_unknown_study_and_unwritable_folder_are_one_line(db, tmp_path, capsys):
    optuna.create_study(study_name="empty", storage=db)
    file = tmp_path / "file"
    file.write_text("")
    for argv, msg in ((["--study", "empty"], "has no completed trial yet"),
                      (["--study", "nbb"], "did you mean nb"),
                      (["--study", "nb", "-o", str(file / "x")], "cannot write the report")):
        capsys.readouterr()
        assert main(["report", "--storage", db, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err
