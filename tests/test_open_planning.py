"""The open-arrival problem: its stability check, the M/G/1 mean beside the M/D/1 one, and rates as workloads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from genedge import data
from genedge.contract.table_file import load_table
from genedge.optimizer.model import Problem, Slo, Workload
from genedge.optimizer.model import _queueing as queueing
from genedge.optimizer.planners import make_result

RATES = {"Basic": 0.05, "Detail": 0.1, "Imagination": 0.03, "Complex": 0.02}


def _edge_problem(**changes) -> Problem:
    table = load_table(data.path("tables", "galaxy-s24.json"))
    return Problem.from_table(table, Workload.from_rates(RATES), arrivals="open", **changes)


def test_the_mg1_mean_is_reported_beside_the_md1_one_where_the_table_gives_a_spread() -> None:
    problem = _edge_problem()
    spread = dataclasses.replace(problem, service_std_s=np.array([0.2, 0.3]))
    routing = np.tile([0.0, 1.0], (4, 1))
    steps = (0, 1)
    plain = make_result(problem, "fixed", routing, steps, np.array([0.0, 1.0]))
    spread_result = make_result(spread, "fixed", routing, steps, np.array([0.0, 1.0]))
    assert plain.mg1_mean_delay_s is None
    service = float(spread.service_at(steps)[1])
    rate = sum(RATES.values())
    expected = queueing.mg1_mean_response(rate, service, 0.3)
    assert spread_result.mg1_mean_delay_s == pytest.approx(float(expected))
    assert spread_result.mg1_mean_delay_s > spread_result.mean_delay_s == pytest.approx(plain.mean_delay_s)
    # Half the share doubles the service time and its spread.
    rate_one = dataclasses.replace(spread, counts=spread.counts / 4)
    halved = make_result(rate_one, "fixed", routing, steps, np.array([0.0, 0.5]))
    assert halved.mg1_mean_delay_s == pytest.approx(float(queueing.mg1_mean_response(rate / 4, 2 * service, 0.6)))


def test_rates_no_plan_can_serve_are_refused_naming_the_fastest_model() -> None:
    table = load_table(data.path("tables", "galaxy-s24.json"))
    with pytest.raises(
        ValueError, match=r"'sd15' at 10 steps \(1\.68 s per image.*ρ = 1\.68 >= 1; lower the rate below"
    ):
        Problem.from_table(table, Workload.from_rates({"Basic": 1.0}), arrivals="open")
    with pytest.raises(ValueError, match="Open arrivals need a workload of rates"):
        Problem.from_table(table, Workload.from_counts({"Basic": 10}), arrivals="open")
    with pytest.raises(ValueError, match="needs requests per window"):
        Problem.from_table(table, Workload.from_rates({"Basic": 0.1}))


def test_an_unstable_plan_evaluates_to_infinite_delay_and_names_its_load() -> None:
    problem = _edge_problem()
    result = make_result(problem, "fixed", np.tile([0.0, 1.0], (4, 1)), (6, 6), np.array([0.0, 1.0]))
    assert not result.stable and not result.feasible
    assert result.utility == -np.inf and result.mean_delay_s == result.p95_delay_s == np.inf
    assert result.utilization[1] == pytest.approx(0.2 * float(problem.service_at((6, 6))[1]))


def test_workloads_of_rates_hash_apart_from_counts_and_convert_from_a_window() -> None:
    counts = Workload.from_counts({"Basic": 10, "Detail": 20})
    rates = counts.as_rates(100.0)
    assert rates.per_second and rates.counts == {"Basic": 0.1, "Detail": 0.2}
    assert Workload.from_rates({"Basic": 10, "Detail": 20}).sha256() != counts.sha256()
    with pytest.raises(ValueError, match="window length > 0"):
        counts.as_rates(0.0)
    with pytest.raises(ValueError, match="workload of counts to scale"):
        rates.scaled(10)


def test_slo_states_one_constraint_two_ways() -> None:
    assert Slo(10.0, 0.95).describe() == "p95 <= 10 s (overall)"
    for bad, message in (
        ({"seconds": 0.0, "attainment": 0.9}, "SLO of seconds > 0"),
        ({"seconds": 1.0, "attainment": 1.0}, "attainment in \\(0, 1\\)"),
        ({"seconds": 1.0, "attainment": 0.9, "scope": "model"}, "SLO scope among"),
    ):
        with pytest.raises(ValueError, match=message):
            Slo(**bad)
    problem = _edge_problem(slo=Slo(20.0, 0.95))
    from genedge.optimizer import propose

    plan = propose(problem, rng=0)
    # Meeting P(T <= 20 s) >= 0.95 is the same as p95 <= 20 s.
    assert plan.feasible and plan.attainment >= 0.95 - 1e-9 and plan.p95_delay_s <= 20 + 1e-6
