"""The served plan's Prometheus metrics, read back with ``prometheus_client``'s own text-format parser.

The metrics object is driven as the ingress drives it (requests answered, images routed, refused and
served, the devices' accounts at scrape) on a clock the test moves; the served route is checked on a
running server in ``test_serve_http.py``.
"""

from __future__ import annotations

import math

import pytest

prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="needs genedge[serve]")

from genedge import data  # noqa: E402
from genedge.contract.table_file import load_table  # noqa: E402
from genedge.optimizer import propose  # noqa: E402
from genedge.optimizer.inputs import problem_from_options  # noqa: E402
from genedge.optimizer.model import Slo, workload_from_options  # noqa: E402
from genedge.optimizer.plan_file import plan_from_dict, plan_to_dict  # noqa: E402
from genedge.serve.loadtest_document import document_sha256  # noqa: E402
from genedge.serve.metrics import WINDOWS_S, ServeMetrics  # noqa: E402
from genedge.serve.protocol import ImageTiming  # noqa: E402

SLO_S = 20.0
ACCOUNTS = {
    "sd15": {"queued": 2, "calls": 3, "device_s": 1.5, "rejected": 1, "planned_share": 0.4, "realized_share": 0.38},
    "sd21": {"queued": 0, "calls": 5, "device_s": 4.0, "rejected": 0, "planned_share": 0.6, "realized_share": None},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def plans():
    """The phone table's plan at 0.2 requests/s (open arrivals), with an SLO of 20 s and without one."""
    table = load_table(data.resolve_table("galaxy-s24"))
    made = {}
    for slo in (Slo(SLO_S, 0.95), None):
        problem = problem_from_options(
            table, workload_from_options(table.categories, rate=0.2), arrivals="open", slo=slo
        )
        made[slo is not None] = plan_from_dict(plan_to_dict(problem, propose(problem, rng=0)), "plan")
    return made


def _metrics(plans, clock: Clock, slo: bool = True) -> ServeMetrics:
    return ServeMetrics(
        plans[slo],
        categories=("Basic", "Detail"),
        routes={"Basic": ["sd15", "sd21"], "Detail": ["sd21"]},
        models={"sd15": 0, "sd21": 0},
        clock=clock,
    )


def _samples(metrics: ServeMetrics) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) → value, parsed from the exposition as Prometheus would."""
    text = metrics.exposition(ACCOUNTS).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def _record(response_s: float) -> ImageTiming:
    return ImageTiming("sd15", 10, queue_wait_s=response_s / 4, service_s=response_s / 2, response_s=response_s)


def test_every_routed_pair_starts_at_zero_and_the_plan_is_named(plans) -> None:
    samples = _samples(_metrics(plans, Clock()))
    for category, model in (("Basic", "sd15"), ("Basic", "sd21"), ("Detail", "sd21")):
        labels = (("category", category), ("model", model))
        for name in (
            "genedge_image_arrivals_total",
            "genedge_image_completions_total",
            "genedge_image_rejections_total",
        ):
            assert samples[(name, labels)] == 0.0
    assert (("genedge_image_arrivals_total", (("category", "Detail"), ("model", "sd15")))) not in samples
    info = [labels for name, labels in samples if name == "genedge_plan_info"]
    assert info == [(("method", "genedge"), ("plan_sha256", document_sha256(plans[True].raw)), ("slo_s", "20"))]


def test_counts_histograms_and_device_accounts_as_served(plans) -> None:
    clock = Clock()
    metrics = _metrics(plans, clock)
    for response_s in (0.5, 1.5, 3.0):
        metrics.arrived("Basic", "sd15")
        metrics.completed("Basic", "sd15", _record(response_s))
    metrics.arrived("Detail", "sd21")
    metrics.refused("Detail", "sd21")
    metrics.request("/v1/generate", 200, 1)
    metrics.request("/v1/images/generations", 200, 4)
    metrics.request("/v1/generate", 503, 1)
    metrics.request("/v1/generate", 400, None)
    samples = _samples(metrics)
    basic = (("category", "Basic"), ("model", "sd15"))
    detail = (("category", "Detail"), ("model", "sd21"))
    assert samples[("genedge_image_arrivals_total", basic)] == 3
    assert samples[("genedge_image_completions_total", basic)] == 3
    assert samples[("genedge_image_rejections_total", detail)] == 1
    assert samples[("genedge_image_response_seconds_count", basic)] == 3
    assert samples[("genedge_image_response_seconds_sum", basic)] == pytest.approx(5.0)
    # Cumulative buckets: 0.5 ≤ 0.5, 1.5 ≤ 2.5, 3.0 ≤ 5.
    for le, count in (("0.5", 1), ("2.5", 2), ("+Inf", 3)):
        bucket = tuple(sorted((*basic, ("le", le))))
        assert samples[("genedge_image_response_seconds_bucket", bucket)] == count
    assert samples[("genedge_image_queue_wait_seconds_sum", (("model", "sd15"),))] == pytest.approx(1.25)
    outcome = {labels: value for (name, labels), value in samples.items() if name == "genedge_http_requests_total"}
    assert outcome[(("outcome", "ok"), ("route", "/v1/generate"))] == 1
    assert outcome[(("outcome", "overloaded"), ("route", "/v1/generate"))] == 1
    assert outcome[(("outcome", "bad_request"), ("route", "/v1/generate"))] == 1
    assert samples[("genedge_request_images_sum", ())] == 6  # the 400 asked for nothing parsed
    device = (("device", "0"), ("model", "sd15"))
    assert samples[("genedge_model_queue_length", device)] == 2
    assert samples[("genedge_model_calls_total", device)] == 3
    assert samples[("genedge_model_device_seconds_total", device)] == 1.5
    assert samples[("genedge_model_planned_share", device)] == 0.4
    assert ("genedge_model_realized_share", (("device", "0"), ("model", "sd21"))) not in samples  # none reported


def test_windows_compare_what_happened_with_the_plan(plans) -> None:
    clock = Clock()
    metrics = _metrics(plans, clock)
    short, long = (f"{w:g}s" for w in WINDOWS_S)
    for response_s in (40.0, 60.0):  # an old pair, outside the short window by the scrape
        metrics.arrived("Basic", "sd15")
        metrics.completed("Basic", "sd15", _record(response_s))
    clock.now += WINDOWS_S[0] + 1
    for response_s in (5.0, 10.0, 15.0, 50.0):
        metrics.arrived("Basic", "sd21")
        metrics.completed("Basic", "sd21", _record(response_s))
    samples = _samples(metrics)
    assert samples[("genedge_arrival_rate", (("window", short),))] == pytest.approx(4 / WINDOWS_S[0])
    assert samples[("genedge_arrival_rate", (("window", long),))] == pytest.approx(6 / WINDOWS_S[1])
    mean = ("genedge_observed_response_seconds", (("statistic", "mean"), ("window", short)))
    assert samples[mean] == pytest.approx(20.0)
    assert samples[(mean[0], (("statistic", "mean"), ("window", long)))] == pytest.approx(30.0)
    assert samples[("genedge_slo_attainment", (("window", short),))] == pytest.approx(3 / 4)
    assert samples[("genedge_slo_attainment", (("window", long),))] == pytest.approx(3 / 6)
    predicted = plans[True].predicted
    for statistic, value in (("mean", predicted.mean_delay_s), ("p95", predicted.p95_delay_s)):
        assert samples[("genedge_predicted_response_seconds", (("statistic", statistic),))] == pytest.approx(value)
    assert samples[("genedge_planned_arrival_rate", ())] == pytest.approx(0.2)
    clock.now += WINDOWS_S[1] + 1  # nothing left in either window: NaN, not a stale figure
    samples = _samples(metrics)
    assert math.isnan(samples[mean])
    assert samples[("genedge_arrival_rate", (("window", short),))] == 0.0


def test_no_slo_no_attainment(plans) -> None:
    samples = _samples(_metrics(plans, Clock(), slo=False))
    assert not any(name == "genedge_slo_attainment" for name, _ in samples)


def test_the_recalibrated_prediction_is_the_plans_own_law_at_the_served_times(plans) -> None:
    """At the planned rates and the table's times it is the plan's own prediction; with every call served
    twice as slow it is the same law at twice the call times."""
    import hashlib

    import numpy as np

    from genedge.contract.table_file import read_table_file
    from genedge.optimizer.model import md1_mean_response
    from genedge.serve.loop import ServedPlans
    from genedge.serve.spec import serve_spec

    table, table_bytes = read_table_file(data.resolve_table("galaxy-s24"))
    workload = workload_from_options(table.categories, rate=0.2)
    problem = problem_from_options(
        table, workload, arrivals="open", table_sha256=hashlib.sha256(table_bytes).hexdigest()
    )
    plan = plan_from_dict(plan_to_dict(problem, propose(problem, rng=0)), "plan")
    deployed = list(plan.deployed)
    spec = serve_spec(plan, table, table_bytes, model_specs={key: "replica:tiny" for key in deployed})
    served = ServedPlans(spec, {m.name: None for m in spec.models}, [])
    rates = {
        (category, model): workload.counts[category] * p
        for category, row in plan.routing.items()
        for model, p in row.items()
        if p > 0
    }
    at_table = served.predict(rates)
    assert at_table["mean"] == pytest.approx(plan.predicted.mean_delay_s, rel=1e-9)
    assert at_table["p95"] == pytest.approx(plan.predicted.p95_delay_s, rel=1e-6)
    for model in spec.models:
        for _ in range(5):
            served.times.add(model.key, model.steps, 2 * model.service_s, model.service_s)
    assert served.times.load_factor() == pytest.approx(2.0)
    slow = served.predict(rates)
    loads = {m.name: sum(r for (_, name), r in rates.items() if name == m.name) for m in spec.models}
    expected = sum(loads[m.name] * md1_mean_response(loads[m.name], 2 * m.service_s) for m in spec.models) / sum(
        loads.values()
    )
    assert slow["mean"] == pytest.approx(float(np.asarray(expected)), rel=1e-9)
    # Routed by the active plan, whichever replica served the window's images (after a switch, one the plan may
    # give no share): only each category's rate counts.
    elsewhere: dict[tuple[str, str], float] = {}
    for (category, _), rate in rates.items():
        key = (category, "a replica of an earlier plan")
        elsewhere[key] = elsewhere.get(key, 0.0) + rate
    assert served.predict(elsewhere) == pytest.approx(slow, rel=1e-12)
    assert served.predict({("NoSuchCategory", spec.models[0].name): 1.0}) is None


def test_the_category_mix_is_exported_observed_and_planned(plans) -> None:
    from genedge.serve.controller import CategoryMix, ControllerSettings

    mix = CategoryMix({"Basic": 1.0, "Detail": 3.0}, ControllerSettings())
    for i in range(40):
        mix.arrived(float(i), "Basic" if i % 2 else "Detail")
    metrics = _metrics(plans, Clock())
    text = metrics.exposition(ACCOUNTS, mix=mix.update(40.0)).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("genedge_category_share", (("category", "Basic"), ("source", "observed")))] == 0.5
    assert samples[("genedge_category_share", (("category", "Basic"), ("source", "planned")))] == 0.25
    assert 0 < samples[("genedge_category_mix_p_value", ())] < 0.05  # 20 of 40 where 10 were expected
