"""One delay model interface (optimizer/model/_delay.py): the planner's and the served prediction are one code path,
and no module of the package, its benchmarks or its scripts outside the delay models' module
(optimizer/model/_delay_models.py) branches on a delay model's name."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from genedge import data
from genedge.contract.table_file import load_table, save_table, table_from_dict, table_to_dict
from genedge.optimizer.model import Problem, Slo, Workload, evaluate
from genedge.optimizer.model import _queueing as queueing
from genedge.optimizer.model._delay import ARRIVAL_MODELS, REALIZATIONS, DelayModel
from genedge.optimizer.model._delay_models import OpenQueue, WindowFifo, WindowRandom, delay_model
from genedge.optimizer.plan_file import plan_from_dict, plan_to_dict
from genedge.optimizer.planners import make_result
from genedge.serve.predict import predict_at_demand, predict_at_rates, predict_for_window

ROOT = Path(__file__).resolve().parents[1]
# The package's stages and the benchmarks and scripts that drive them; the delay models' module is the one
# place that may tell the models apart.
SCANNED_DIRS = ("genedge", "optimizer", "calibrate", "profiler", "router", "serve", "benchmarks", "scripts")
DELAY_MODULE = ROOT / "optimizer" / "model" / "_delay_models.py"
DELAY_NAMES = frozenset(ARRIVAL_MODELS) | frozenset(REALIZATIONS)

RATES = {"Basic": 0.05, "Detail": 0.1, "Imagination": 0.03, "Complex": 0.02}
COUNTS = {"Basic": 5, "Detail": 9, "Imagination": 3, "Complex": 2}


@pytest.fixture(scope="module")
def batched_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Galaxy S24 table with batch-2 and batch-4 lines per model (1.6× and 2.9× the batch-1 call)."""
    path = tmp_path_factory.mktemp("tables") / "batched.json"
    document = table_to_dict(load_table(data.path("tables", "galaxy-s24.json")))
    for model in document["models"].values():
        line = {**model["latency"], "batch_size": 1}
        lines = {"1": line}
        for size, factor in ((2, 1.6), (4, 2.9)):
            lines[str(size)] = {
                **line,
                "overhead_s": factor * line["overhead_s"],
                "per_step_s": factor * line["per_step_s"],
                "batch_size": size,
            }
        model["batch_latency"] = lines
        model["latency"] = line
    return save_table(table_from_dict(document, where=str(path)), path)


# (table, arrivals, realization, SLO, batching): window and open, both realizations, with and without
# batching and SLO, on three tables (the reference A100's with an energy price: it carries energy).
CASES = [
    ("galaxy-s24", "open", "deterministic", None, False),
    ("galaxy-s24", "open", "random", Slo(25.0, 0.9), False),
    ("x-elite-crd", "open", "deterministic", Slo(30.0, 0.95, "category"), False),
    ("reference-a100", "open", "deterministic", Slo(15.0, 0.9), False),
    ("reference-a100", "window", "deterministic", None, False),
    ("reference-a100", "window", "random", Slo(20.0, 0.9), False),
    ("x-elite-crd", "window", "deterministic", Slo(40.0, 0.8, "category"), False),
    ("batched", "open", "deterministic", Slo(25.0, 0.9), True),
    ("batched", "window", "deterministic", None, True),
    ("batched", "window", "random", Slo(30.0, 0.9), True),
]


def _problem(case: tuple, batched_table: Path) -> tuple[Problem, object]:
    name, arrivals, realization, slo, batching = case
    table = load_table(batched_table if name == "batched" else data.path("tables", f"{name}.json"))
    workload = Workload.from_rates(RATES) if arrivals == "open" else Workload(counts=dict(COUNTS))
    energy_price = 0.01 if name == "reference-a100" else 0.0
    problem = Problem.from_table(
        table,
        workload,
        arrivals=arrivals,
        realization=realization,
        slo=slo,
        batching=batching,
        energy_price=energy_price,
    )
    return problem, table


def _random_plan(problem: Problem, rng: np.random.Generator) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """A routing (some categories whole, some split), steps, batch sizes and shares that keep every queue stable."""
    c, m = len(problem.categories), len(problem.models)
    routing = rng.dirichlet(np.ones(m), size=c)
    whole = rng.random(c) < 0.4
    routing[whole] = np.eye(m)[rng.integers(m, size=int(whole.sum()))]
    steps = [int(rng.integers(g.size)) for g in problem.steps]
    batches = [int(rng.integers(n)) for n in problem.batch_grid_sizes]
    loads = (problem.counts[:, None] * routing).sum(axis=0)
    full = problem.call_service_at(steps, batches)
    edge = np.where(loads > 0, loads * full / problem.max_batch_at(batches), 0.0) if problem.delay.steady_state else 0
    spare = problem.budget - float(np.sum(edge))
    shares = edge + max(spare, 0.0) * rng.dirichlet(np.ones(m)) * (loads > 0)
    return routing, steps, shares * problem.budget / shares.sum() * 0.999, batches


def _case_id(case: tuple) -> str:
    name, arrivals, realization, slo, batching = case
    return "-".join([name, arrivals, realization] + ["slo"] * (slo is not None) + ["batching"] * batching)


def _same(a: float | None, b: float | None) -> bool:
    """Equal as numbers (==), with NaN equal to NaN."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_served_prediction_is_the_planners_evaluation(case, batched_table):
    problem, table = _problem(case, batched_table)
    rng = np.random.default_rng(20)
    checked = 0
    for _ in range(3):
        routing, steps, shares, batches = _random_plan(problem, rng)
        result = make_result(problem, "random", routing, steps, shares, batch_index=batches)
        if not result.stable:
            continue
        document = plan_to_dict(problem, result)
        demand = document["inputs"]["workload"]
        served = predict_at_demand(plan_from_dict(document, "plan"), table, demand, arrivals=problem.arrivals)
        ours = evaluate(problem, routing, steps, shares, batches, groups=True)
        # The served figures are the planner's, number for number.
        for planned in (result, ours):
            assert _same(served.overall.mean_response_s, planned.mean_delay_s)
            assert _same(served.overall.p95_response_s, planned.p95_delay_s)
            assert _same(served.overall.p99_response_s, planned.p99_delay_s)
            assert _same(served.overall.slo_attainment, planned.attainment)
            assert _same(served.overall.mean_clipscore, planned.mean_quality)
            assert _same(served.utility, planned.utility)
            assert served.stable == planned.stable and served.feasible == planned.feasible
        for m, key in enumerate(problem.models):
            if key not in ours.per_model:
                assert not result.deployed[m]
                continue
            group, figures = served.per_model[key], ours.per_model[key]
            assert _same(group.service_s, float(result.service_s[m]))
            assert _same(group.utilization, None if result.utilization is None else float(result.utilization[m]))
            assert _same(group.rate, figures.demand)
            assert _same(group.mean_response_s, figures.mean_delay_s)
            assert _same(group.p95_response_s, figures.p95_delay_s)
            assert _same(group.slo_attainment, figures.attainment)
        for c, category in enumerate(problem.categories):
            group, figures = served.per_category[category], ours.per_category[category]
            planned = None if result.category_attainment is None else float(result.category_attainment[c])
            assert _same(group.slo_attainment, planned)
            assert _same(group.p99_response_s, figures.p99_delay_s)
            assert _same(group.mean_response_s, figures.mean_delay_s)
            assert _same(group.mean_clipscore, figures.mean_quality)
        checked += 1
    assert checked >= 2  # most random plans are stable by construction


def test_group_figures_agree_with_the_whole(batched_table):
    """Each category's and each model's figures are mixtures of the same laws as the whole plan's."""
    for case in CASES:
        problem, _ = _problem(case, batched_table)
        routing, steps, shares, batches = _random_plan(problem, np.random.default_rng(3))
        ours = evaluate(problem, routing, steps, shares, batches, groups=True)
        if not ours.stable:
            continue
        loads = {k: g.demand for k, g in ours.per_model.items()}
        mean = sum(loads[k] * g.mean_delay_s for k, g in ours.per_model.items()) / sum(loads.values())
        assert mean == pytest.approx(ours.mean_delay_s, rel=1e-9)
        groups = [*ours.per_model.values(), *ours.per_category.values()]
        assert all(g.p95_delay_s <= g.p99_delay_s for g in groups)
        assert min(g.p95_delay_s for g in ours.per_model.values()) <= ours.p95_delay_s * (1 + 1e-9)
        assert ours.p95_delay_s <= max(g.p95_delay_s for g in ours.per_model.values()) * (1 + 1e-9)
        if problem.slo is not None:
            attained = sum(loads[k] * g.attainment for k, g in ours.per_model.items()) / sum(loads.values())
            assert attained == pytest.approx(ours.attainment, rel=1e-9)


def test_an_overloaded_plan_is_served_unstable_with_its_quality():
    table = load_table(data.path("tables", "galaxy-s24.json"))
    problem = Problem.from_table(table, Workload.from_rates(RATES), arrivals="open")
    routing = np.tile([1.0, 0.0], (len(problem.categories), 1))
    result = make_result(problem, "sd15 only", routing, [0, 0], np.array([1.0, 0.0]))
    document = plan_to_dict(problem, result)
    heavy = {c: 8 * v for c, v in RATES.items()}  # past what the whole device serves on sd15
    served = predict_at_rates(plan_from_dict(document, "plan"), table, heavy)
    assert not served.stable and not served.feasible and served.utility == -np.inf
    assert math.isinf(served.overall.mean_response_s) and math.isinf(served.overall.p95_response_s)
    assert served.per_model["sd15"].utilization >= 1
    assert served.overall.mean_clipscore == pytest.approx(result.mean_quality, rel=1e-12)


def test_one_window_model_is_fifo_per_model():
    table = load_table(data.path("tables", "galaxy-s24.json"))
    problem = Problem.from_table(table, Workload(counts={"Basic": 4}))
    document = plan_to_dict(problem, make_result(problem, "sd21", [[0.0, 1.0]], [0, 0], np.array([0.0, 1.0])))
    served = predict_for_window(plan_from_dict(document, "plan"), table, {"Basic": 4})
    group = served.per_model["sd21"]
    assert group.mean_response_s == pytest.approx(group.service_s * (4 + 1) / 2)
    assert group.p95_response_s == pytest.approx(4 * group.service_s)  # the 4th request of 4
    assert group.p99_response_s == served.overall.p99_response_s


# --------------------------------------------------------------------------- the interface


@pytest.mark.parametrize(
    ("arrivals", "realization", "expected"),
    [
        ("window", "deterministic", WindowFifo),
        ("window", "random", WindowRandom),
        ("open", "deterministic", OpenQueue),
        ("open", "random", OpenQueue),
    ],
)
def test_each_arrival_model_and_realization_has_one_delay_model(arrivals, realization, expected):
    model = delay_model(arrivals, realization, np.array([3.0, 4.0]))
    assert type(model) is expected and isinstance(model, DelayModel)
    assert model.arrivals.name == arrivals
    assert model.steady_state == model.arrivals.per_second
    assert (model.beyond_paper == ()) == (expected is WindowFifo)


def test_unknown_models_and_fractional_random_windows_are_refused():
    with pytest.raises(ValueError, match=r"Expected a delay model among \['window', 'open'\], but got 'closed'"):
        delay_model("closed", "deterministic", np.ones(2))
    with pytest.raises(ValueError, match=r"Expected a routing realization among .* but got 'sticky'"):
        delay_model("open", "sticky", np.ones(2))
    with pytest.raises(ValueError, match="Expected whole request counts for random routing"):
        delay_model("window", "random", np.array([1.5, 2.0]))


def test_a_mixture_quantile_with_its_own_rates_as_weights_is_the_plain_one():
    rates, service = np.array([0.2, 0.1]), np.array([2.0, 3.5])
    plain = queueing.mixture_response_quantile(0.95, rates, service)
    assert queueing.mixture_response_quantile(0.95, rates, service, weights=rates) == plain
    # All the weight on one queue: that queue's own quantile.
    alone = queueing.mixture_response_quantile(0.95, rates, service, weights=np.array([0.0, 1.0]))
    assert alone == pytest.approx(float(queueing.md1_response_quantile(0.95, 0.1, 3.5)), rel=1e-9)


def test_an_overloaded_queue_makes_a_group_quantile_infinite_only_past_its_share():
    model = OpenQueue(np.array([1.0, 1.0]), "deterministic")
    requests = np.array([[0.98, 0.0], [0.0, 0.02]])  # 98 % on a stable queue, 2 % on one at ρ = 2
    call, batch = np.array([0.5, 100.0]), np.ones(2, dtype=int)
    whole, second = model.groups(requests, call, batch, [requests, requests * [[0, 0], [0, 1]]], slo_s=2.0)
    assert math.isfinite(whole.p95_s) and math.isinf(whole.p99_s) and math.isinf(whole.mean_s)
    assert math.isinf(second.p95_s) and second.attainment == 0.0
    stable = float(queueing.md1_response_quantile(0.95 / 0.98, 0.98, 0.5))
    assert whole.p95_s == pytest.approx(stable, rel=1e-9)


# --------------------------------------------------------------------------- no branching on the name


def name_branches(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` compares a value with a delay model's name (==, !=, in, not in) or matches on one.

    Dispatch goes through the problem's :class:`~genedge.optimizer.model.DelayModel`; a comparison with
    ``"open"``, ``"window"``, ``"deterministic"`` or ``"random"`` is a second place that tells the models apart.
    """

    def names(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & DELAY_NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(names(e) for e in node.elts)) if node.elts else set()
        return set()

    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare):
            hit = set().union(*(names(n) for n in (node.left, *node.comparators)))
        elif isinstance(node, ast.MatchValue):
            hit = names(node.value)
        else:
            continue
        if hit:
            found.append((node.lineno, f"{filename}:{node.lineno}: {sorted(hit)}"))
    return [where for _, where in sorted(found)]


def test_the_scanner_catches_a_planted_branch():
    planted = """
if problem.arrivals == "open":
    pass
scale = 1.0 if "window" != schedule["arrivals"] else 2.0
ok = realization in ("deterministic", "random")
match problem.realization:
    case "random":
        pass
    case _:
        pass
problem = Problem(arrivals="open", realization="random")  # naming a model is no branch
if problem.delay.steady_state and mode == "fast":
    pass
"""
    found = name_branches(planted)
    assert [f.split(":")[1] for f in found] == ["2", "4", "5", "7"]


def test_no_module_outside_the_delay_model_branches_on_its_name():
    found = []
    for folder in SCANNED_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != DELAY_MODULE:
                found += name_branches(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []
