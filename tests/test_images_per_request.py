"""Requests of several images: the M^X/D/1 law, the images-per-request law, and planning for it.

The law is checked three ways that share no code with it: requests of exactly k images against the M/D/1
law of the whole request (work kS at rate λ/k), the mean against Pollaczek–Khinchine's, and the distribution
against a seeded simulation of the server's rule (a request's images queue together, one served at a time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import genedge_in_process

from genedge.contract.table_file import load_table
from genedge.data import resolve_table
from genedge.optimizer import run_methods
from genedge.optimizer.inputs import problem_from_options, slo_from_options
from genedge.optimizer.model import ONE_IMAGE, Arrivals, ImagesPerRequest, evaluate, workload_from_options
from genedge.optimizer.model import _queue_laws as laws
from genedge.optimizer.model import _queueing as q
from genedge.optimizer.simulation import simulate_arrivals

#: GenTD26's text-to-image requests: the shares of 1, 2, 4 and 8 images (rounded).
GENTD26_LIKE = ImagesPerRequest.parse("1:0.58,2:0.08,4:0.2,8:0.14")


def test_one_image_through_the_batch_chain_is_the_md1_law() -> None:
    rho = np.array([0.3, 0.7, 0.95])
    md1, batch = laws._MD1Law(rho), laws._BatchArrivalLaw(rho, np.array([1.0]))
    xs = np.array([0.0, 0.5, 1.0, 2.3, 7.9, 30.2, 120.0])
    for chain in range(rho.size):
        rows = np.full(xs.size, chain)
        np.testing.assert_allclose(batch.cdf(rows, xs), md1.cdf(rows, xs), rtol=0, atol=1e-13)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("rho", [0.3, 0.8, 0.95])
def test_requests_of_k_images_are_the_md1_queue_of_whole_requests(k: int, rho: float) -> None:
    """X ≡ k: the first image waits the M/D/1 wait of requests of work kS at rate λ/k, the i-th (i − 1)S more."""
    service = 1.5
    rate = rho / service  # images/s
    x = np.array([0.0, 1.5, 2.0, 3.7, 9.0, 16.4, 40.0, 90.0])
    whole = [q.md1_wait_cdf(x - service - i * service, rate / k, k * service) for i in range(k)]
    expected = np.where(x >= service, np.mean(whole, axis=0), 0.0)
    got = q.md1_response_cdf(x, rate, service, ImagesPerRequest.parse(str(k)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho", [0.4, 0.85])
def test_mean_is_the_integral_of_the_distribution(rho: float) -> None:
    service = 2.0
    rate = rho / service
    mean = float(q.md1_mean_response(rate, service, GENTD26_LIKE))
    # Gauss–Legendre inside each service time, where the distribution is smooth (its atoms sit at multiples of S).
    top = float(q.md1_response_quantile(1 - 1e-13, rate, service, GENTD26_LIKE))
    nodes, weights = np.polynomial.legendre.leggauss(12)
    starts = service * np.arange(int(np.ceil(top / service)))
    x = (starts[:, None] + service * (nodes[None, :] + 1) / 2).ravel()
    survival = 1 - q.md1_response_cdf(x, rate, service, GENTD26_LIKE)
    integral = float(np.sum(survival * np.tile(weights, starts.size)) * service / 2)
    assert integral == pytest.approx(mean, rel=1e-9)
    # Longer than M/D/1 at the same image rate: an image waits behind its own request's.
    assert mean > float(q.md1_mean_response(rate, service)) + service


def _simulated_responses(rho: float, images: ImagesPerRequest, service: float, requests: int) -> np.ndarray:
    """Each image's response: Poisson requests of X images, FIFO, one image at a time (the server's rule)."""
    rng = np.random.default_rng(7)
    law = images.array()
    arrivals = np.cumsum(rng.exponential(images.mean * service / rho, requests))
    counts = rng.choice(np.arange(1, law.size + 1), size=requests, p=law)
    free, out = 0.0, []
    for arrival, count in zip(arrivals.tolist(), counts.tolist()):
        start = max(free, arrival)
        out.extend(start - arrival + service * np.arange(1, count + 1))
        free = start + count * service
    return np.asarray(out[len(out) // 10 :])  # past the warm-up


@pytest.mark.parametrize("rho", [0.5, 0.85])
def test_the_law_matches_a_simulation_of_requests_of_several_images(rho: float) -> None:
    service = 1.0
    responses = _simulated_responses(rho, GENTD26_LIKE, service, 300_000)
    x = np.array([1.0, 2.0, 3.5, 6.0, 10.0, 20.0])
    law = q.md1_response_cdf(x, rho / service, service, GENTD26_LIKE)
    simulated = np.array([(responses <= v + 1e-9).mean() for v in x])
    np.testing.assert_allclose(law, simulated, atol=0.012)
    p95 = float(q.md1_response_quantile(0.95, rho / service, service, GENTD26_LIKE))
    assert p95 == pytest.approx(float(np.quantile(responses, 0.95)), rel=0.04)


def test_the_quantile_inverts_the_distribution() -> None:
    rate, service = 0.3, 2.0
    for level in (0.1, 0.5, 0.9, 0.95, 0.999):
        x = float(q.md1_response_quantile(level, rate, service, GENTD26_LIKE))
        assert float(q.md1_response_cdf(x, rate, service, GENTD26_LIKE)) >= level - 1e-12
        assert float(q.md1_response_cdf(x * (1 - 1e-6), rate, service, GENTD26_LIKE)) < level


@pytest.mark.parametrize(
    ("text", "pmf"),
    [("1", (1.0,)), ("4", (0, 0, 0, 1.0)), ("1:3,2:1", (0.75, 0.25)), (" 2:0.5 , 1:0.5 ", (0.5, 0.5))],
)
def test_images_per_request_parse(text: str, pmf: tuple[float, ...]) -> None:
    images = ImagesPerRequest.parse(text)
    assert images.pmf == pytest.approx(pmf)
    assert ImagesPerRequest.from_document(json.loads(json.dumps(images.to_document()))) == images


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "whole numbers ≥ 1"),
        ("1:-1,2:1", "weight ≥ 0"),
        ("1:0", "some weight > 0"),
        ("two", "IMAGES:WEIGHT"),
        ("1:0.5:2", "IMAGES:WEIGHT"),
    ],
)
def test_bad_images_per_request_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImagesPerRequest.parse(text)


@pytest.mark.slow
def test_a_plan_for_requests_of_several_images_holds_in_a_simulation_of_them() -> None:
    """The planner's figures for GenTD26-like requests are the simulated ones of Poisson requests whose images
    arrive together; the same rate of single images promises far less waiting."""
    table = load_table(resolve_table("galaxy-s24"))
    workload = workload_from_options(table.categories, rate=0.15)
    slo = slo_from_options(20)
    problem = problem_from_options(table, workload, slo=slo, images=GENTD26_LIKE)
    result = run_methods(problem, ["genedge"], rng=0)["genedge"]
    plan = result.plan
    assert result.feasible and result.p95_delay_s <= 20 + 1e-6
    one = problem_from_options(table, workload, slo=slo)
    single = evaluate(one, plan.routing_matrix, plan.step_index, plan.share_vector)
    assert single.p95_delay_s < result.p95_delay_s - 2.0

    rng = np.random.default_rng(3)
    requests = 60_000
    times = np.cumsum(rng.exponential(GENTD26_LIKE.mean / 0.15, requests))
    counts = rng.choice(np.arange(1, 9), size=requests, p=GENTD26_LIKE.array())
    category = rng.choice(len(problem.categories), size=requests, p=problem.counts / problem.counts.sum())
    arrivals = Arrivals(np.repeat(times, counts), np.repeat(category, counts), problem.categories, float(times[-1]))
    call_s = result.service_s
    records = simulate_arrivals(arrivals, plan.routing_matrix, call_s)
    response = records.response_s[len(records.response_s) // 10 :]
    assert float(response.mean()) == pytest.approx(result.mean_delay_s, rel=0.05)
    assert float(np.quantile(response, 0.95)) == pytest.approx(result.p95_delay_s, rel=0.05)


@pytest.mark.slow
def test_plan_writes_the_images_per_request_and_refuses_batching_with_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "plan.json"
    args = ("plan", "--table", "galaxy-s24", "--rate", "0.15", "--slo", "20", "--compare", "paper")
    done = genedge_in_process(capsys, *args, "--images-per-request", "1:0.58,2:0.08,4:0.2,8:0.14", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "requests of 1:0.58, 2:0.08, 4:0.20, 8:0.14 images (mean 2.66)" in done.stdout
    from genedge.optimizer.plan_file import load_plan

    plan = load_plan(out)
    assert plan.inputs.images == GENTD26_LIKE
    assert plan.raw["inputs"]["images_per_request"] == {"1": 0.58, "2": 0.08, "4": 0.2, "8": 0.14}
    single = tmp_path / "single.json"
    assert genedge_in_process(capsys, *args, "--out", str(single)).returncode == 0
    assert load_plan(single).inputs.images == ONE_IMAGE and "images_per_request" not in load_plan(single).raw["inputs"]

    bad = genedge_in_process(capsys, *args, "--images-per-request", "1:x")
    assert bad.returncode == 2 and "--images-per-request" in bad.stderr and "IMAGES:WEIGHT" in bad.stderr
    both = genedge_in_process(capsys, *args, "--images-per-request", "2", "--batching")
    assert both.returncode == 2 and "batching off with requests of" in both.stderr
