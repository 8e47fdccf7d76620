"""``genedge serve``: a two-model plan of tiny replicas served on a local Ray instance, driven over HTTP.

One server (a ``genedge serve`` subprocess on 127.0.0.1) serves the demo's plan with fractional
routing written into it; the tests send it requests through genedge's route, the OpenAI-compatible
one (with the official ``openai`` client) and ``genedge loadtest``, and the last one stops it with
SIGTERM while requests are in flight. Refusals at start run without Ray.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path

import pytest
from conftest import DemoRun, free_port, run_genedge, serve_plan

pytestmark = pytest.mark.usefixtures("serving_extras")
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}
# Basic is split between the models so that the deterministic routing fractions can be checked.
BASIC_SPLIT = {"replica:tiny": 0.25, "replica:tiny-xl": 0.75}
QUEUE_BOUND_S = 1.5


def _genedge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_genedge(*args, env=CPU_ONLY, timeout=timeout)


def _post(url: str, body: object, timeout: float = 60) -> tuple[int, dict, Message]:
    """Status, JSON body and headers (case-insensitive) of a POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def demo(demo_run: DemoRun) -> Path:
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    plan = json.loads((folder / "plan.json").read_text())
    plan["routing"]["Basic"] = dict(BASIC_SPLIT)
    for key in BASIC_SPLIT:  # both models must be deployed for the split to be servable
        assert plan["models"][key]["deployed"]
    (folder / "split-plan.json").write_text(json.dumps(plan))
    return folder


@pytest.fixture(scope="module")
def server(demo: Path):
    options = ("--queue-bound-s", str(QUEUE_BOUND_S), "--openapi-docs")
    with serve_plan(demo / "split-plan.json", *options) as served:
        yield served.url, served.process, demo


@pytest.mark.slow
def test_routes_each_category_by_the_plans_fractions_with_the_planned_steps(server) -> None:
    url, _, demo = server
    plan = json.loads((demo / "split-plan.json").read_text())
    served = Counter()
    for i in range(20):
        status, body, _ = _post(
            f"{url}/v1/generate", {"prompt": f"a red cube number {i}", "category": "Basic", "seed": i}
        )
        assert status == 200, body
        record = body["record"]
        served[record["model"]] += 1
        assert record["steps"] == plan["models"][record["model"]]["steps"]
        assert record["category"] == "Basic" and record["category_source"] == "given"
        assert record["category_probability"] is None and record["seed"] == i
        assert 0 <= record["queue_wait_s"] <= record["response_s"]
        assert 0 < record["service_s"] <= record["response_s"]
        png = base64.b64decode(body["image_png_b64"])
        assert png.startswith(b"\x89PNG") and hashlib.sha256(png).hexdigest() == record["image_sha256"]
    # Smooth weighted round robin: exactly 5 and 15 of 20 (every prefix within one request).
    assert served == {"replica:tiny": 5, "replica:tiny-xl": 15}
    # A category the plan gives wholly to one model goes only there.
    whole = next(c for c, row in plan["routing"].items() if max(row.values()) == 1.0)
    owner = max(plan["routing"][whole], key=plan["routing"][whole].get)
    for i in range(3):
        _, body, _ = _post(f"{url}/v1/generate", {"prompt": f"prompt {i}", "category": whole})
        assert body["record"]["model"] == owner


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    """``GET /metrics`` read with Prometheus' own text-format parser: (sample, sorted labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        assert response.headers.get_content_type() == "text/plain"
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_the_metrics_route_counts_what_was_served(server) -> None:
    url, _, demo = server
    from genedge.serve.loadtest_document import document_sha256
    from genedge.serve.protocol import public_document

    before = _metrics(url)
    answers = [
        _post(f"{url}/v1/generate", {"prompt": f"metrics {i}", "category": "Basic", "seed": i}) for i in range(4)
    ]
    bad = _post(f"{url}/v1/generate", {"prompt": "no such category", "category": "Nope"})
    after = _metrics(url)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    served = Counter(body["record"]["model"] for status, body, _ in answers if status == 200)
    assert sum(served.values()) == 4 and bad[0] == 400
    for model in BASIC_SPLIT:
        pair = {"category": "Basic", "model": model}
        assert grew("genedge_image_arrivals_total", **pair) == served[model]
        assert grew("genedge_image_completions_total", **pair) == served[model]
        assert grew("genedge_image_response_seconds_count", **pair) == served[model]
    assert grew("genedge_http_requests_total", route="/v1/generate", outcome="ok") == 4
    assert grew("genedge_http_requests_total", route="/v1/generate", outcome="bad_request") == 1
    calls = {labels: value for (name, labels), value in after.items() if name == "genedge_model_calls_total"}
    assert {dict(labels)["model"] for labels in calls} == set(BASIC_SPLIT)
    assert sum(calls.values()) >= 4  # one image per call in this plan, and earlier tests served more
    info = next(dict(labels) for name, labels in after if name == "genedge_plan_info")
    # The plan GET /v1/plan answers: the file's, its absolute table path cut to the file name.
    served = _get(f"{url}/v1/plan")["plan"]
    assert info["plan_sha256"] == document_sha256(served)
    assert served == public_document(json.loads((demo / "split-plan.json").read_text()))
    assert after[("genedge_observed_response_seconds", (("statistic", "mean"), ("window", "60s")))] > 0
    # The category mix: observed beside the plan's, every planned category present.
    planned = {dict(labels)["category"] for name, labels in after if name == "genedge_category_share"}
    observed_basic = ("genedge_category_share", (("category", "Basic"), ("source", "observed")))
    assert planned >= {"Basic"} and after[observed_basic] > 0
    mix = _get(f"{url}/v1/plan")["served"]["category_mix"]
    assert mix["requests"] > 0 and set(mix["planned"]) <= planned and mix["observed"]["Basic"] > 0


@pytest.mark.slow
def test_prompts_without_a_category_are_routed_by_the_prompt_router(server) -> None:
    url, _, _ = server
    from genedge.router.model import load_router

    router = load_router("paper4-tfidf")
    prompt = "a cat sitting on a mat"
    status, body, _ = _post(f"{url}/v1/generate", {"prompt": prompt})
    assert status == 200
    categories, probabilities = router.route([prompt])
    record = body["record"]
    assert record["category_source"] == "router"
    assert record["category"] == categories[0]
    assert record["category_probability"] == pytest.approx(float(probabilities[0]))


@pytest.mark.slow
def test_the_openai_client_gets_images_from_the_compatible_route(server) -> None:
    openai = pytest.importorskip("openai")
    url, _, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
    result = client.images.generate(
        prompt="a blue sphere", n=2, response_format="b64_json", size="64x64", extra_body={"category": "Basic"}
    )
    assert len(result.data) == 2
    for item in result.data:
        assert base64.b64decode(item.b64_json).startswith(b"\x89PNG")
    records = result.model_extra["genedge"]
    assert [r["category"] for r in records] == ["Basic", "Basic"]
    # A bad field is the client's BadRequestError, and the server names it.
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a blue sphere", response_format="jpeg")
    assert caught.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a blue sphere", size="1024x1024")
    assert caught.value.body["param"] == "size"


@pytest.mark.slow
def test_fastapis_docs_are_served_when_asked_for(server) -> None:
    url, _, _ = server
    schema = _get(f"{url}/openapi.json")
    assert {"/v1/generate", "/v1/images/generations", "/v1/plan", "/v1/images/{image_id}.png"} <= set(schema["paths"])
    assert not {"/docs", "/redoc", "/openapi.json"} & set(schema["paths"])
    for page in ("/docs", "/redoc"):
        with urllib.request.urlopen(url + page, timeout=30) as response:
            assert response.headers.get_content_type() == "text/html" and b"/openapi.json" in response.read()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"category": "Basic"}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "category": "Nonsense"}, "category"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        (["not", "an", "object"], None),
        (b"{not json", None),
    ],
)
def test_malformed_requests_get_400_naming_the_field(server, body, param) -> None:
    url, _, _ = server
    status, answer, _ = _post(f"{url}/v1/generate", body)
    assert status == 400
    assert answer["error"]["param"] == param
    assert answer["error"]["message"]


@pytest.mark.slow
def test_a_queue_past_its_bound_gets_503_with_retry_after(server) -> None:
    url, _, _ = server
    # 40 at once at one model: its bound is what it serves within QUEUE_BOUND_S at the plan's pace.
    with ThreadPoolExecutor(40) as pool:
        answers = list(
            pool.map(lambda i: _post(f"{url}/v1/generate", {"prompt": f"p{i}", "category": "Basic"}), range(40))
        )
    refused = [(body, headers) for status, body, headers in answers if status == 503]
    served = [status for status, _, _ in answers if status == 200]
    assert refused and served, Counter(status for status, _, _ in answers)
    body, headers = refused[0]
    assert body["error"]["type"] == "server_overloaded"
    assert int(headers.get("Retry-After")) >= 1
    stats = _get(f"{url}/v1/stats")
    rejected = sum(m["rejected"] for d in stats["devices"] for m in d["models"].values())
    assert rejected == len(refused)


@pytest.mark.slow
def test_loadtest_measures_the_served_plan(server, tmp_path: Path) -> None:
    url, _, _ = server
    prompts = tmp_path / "prompts.csv"
    import pandas as pd

    pd.DataFrame({"Prompt": [f"a photo of thing {i}" for i in range(6)], "Challenge": ["Basic"] * 6}).to_csv(
        prompts, index=False
    )
    done = _genedge(
        "loadtest",
        url,
        "--prompts",
        str(prompts),
        "--request-rate",
        "4",
        "--num-prompts",
        "12",
        "--seed",
        "1",
        "--save-result",
        "--result-dir",
        str(tmp_path / "result"),
    )
    assert done.returncode == 0, done.stderr
    records = pd.read_parquet(tmp_path / "result" / "records")
    assert len(records) == 12 and (records["status"] == "ok").all()
    assert set(records["model"]) <= set(BASIC_SPLIT)
    assert "predicted" in done.stdout and "Δmean" in done.stdout


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight_then_exits(server) -> None:
    url, process, _ = server

    def received() -> int:
        return sum(m["requests"] for d in _get(f"{url}/v1/stats")["devices"] for m in d["models"].values())

    before = received()
    # Three requests, fewer than either model's queue bound, so that none is refused for load.
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_post, f"{url}/v1/generate", {"prompt": f"q{i}", "category": "Basic"}) for i in range(3)]
        deadline = time.monotonic() + 60
        while received() < before + 3 and time.monotonic() < deadline:  # every one is in a model's queue
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        answers = [future.result() for future in futures]
    assert [status for status, _, _ in answers] == [200] * 3, answers
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert "drained: all requests finished" in out
    # at start, each model's call as timed here beside the table's
    assert out.count("s on the whole device here") == 2


@pytest.mark.slow
def test_signals_as_soon_as_the_server_answers_still_drain(demo: Path) -> None:
    """The proxy answers before Ray Serve reports the application running: a SIGTERM then is caught and drained
    too, not met by Ray's own handler (which aborts the process); so is a burst of them with Ctrl-Cs (a handler
    interrupted by the next signal must not deadlock)."""
    with serve_plan(demo / "split-plan.json") as served:
        for _ in range(10):
            served.process.send_signal(signal.SIGTERM)
            served.process.send_signal(signal.SIGINT)
        out, err = served.process.communicate(timeout=180)
    assert served.process.returncode == 0, err[-3000:]
    assert "drained: all requests finished" in out


# Refusals at start: checked before Ray starts.


@pytest.mark.slow
def test_a_plan_whose_table_changed_is_refused_at_start(demo: Path, tmp_path: Path) -> None:
    table = json.loads((demo / "table.json").read_text())
    table["device"]["name"] = "another machine"
    changed = tmp_path / "table.json"
    changed.write_text(json.dumps(table))
    done = _genedge("serve", str(demo / "plan.json"), "--table", str(changed), "--port", str(free_port()))
    assert done.returncode == 2
    assert "inputs.table_sha256" in done.stderr and "plan again" in done.stderr


@pytest.mark.slow
def test_a_plan_naming_models_not_in_its_table_is_refused(demo: Path, tmp_path: Path) -> None:
    plan = json.loads((demo / "plan.json").read_text())
    entry = plan["models"].pop("replica:tiny")
    plan["models"]["replica:other"] = entry
    for row in plan["routing"].values():
        row["replica:other"] = row.pop("replica:tiny")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    done = _genedge("serve", str(path), "--table", str(demo / "table.json"))
    assert done.returncode == 2
    assert "['replica:other'] are not in the table" in done.stderr


@pytest.mark.slow
def test_mps_needs_a_gpu_and_model_maps_must_name_deployed_models(demo: Path) -> None:
    done = _genedge("serve", str(demo / "plan.json"), "--realization", "mps")
    assert done.returncode == 2 and "needs NVIDIA GPUs" in done.stderr
    done = _genedge("serve", str(demo / "plan.json"), "--model", "sd15=/models/sd15")
    assert done.returncode == 2 and "['sd15'] are not models the plan deploys" in done.stderr


@pytest.mark.slow
def test_a_plan_on_the_reference_table_serves_a_saved_folder_and_a_cached_hub_id(
    tiny_folder: Path, tmp_path: Path
) -> None:
    """The user's path for published tables: map the plan's model keys to what to load."""
    from tiny_pipelines import hub_cache_env, lay_out_hub_cache

    folder = tiny_folder  # sd15 from a saved folder, sd21 from the hub cache
    lay_out_hub_cache(tiny_folder, tmp_path / "hub", "genedge-test/sd21")
    plan = tmp_path / "plan.json"
    done = _genedge("plan", "--models", "sd15,sd21", "--rate", "2", "--arrivals", "open", "--out", str(plan))
    assert done.returncode == 0, done.stderr
    deployed = {k for k, v in json.loads(plan.read_text())["models"].items() if v["deployed"]}
    assert deployed == {"sd15", "sd21"}
    options = ("--router", "none", "--model", f"sd15={folder}", "--model", "sd21=genedge-test/sd21")
    with serve_plan(plan, *options, env=hub_cache_env(tmp_path / "hub")) as server:
        url = server.url
        served = {}
        for category in json.loads(plan.read_text())["routing"]:
            status, body, _ = _post(f"{url}/v1/generate", {"prompt": "a castle", "category": category})
            assert status == 200, body
            served[category] = body["record"]["model"]
        routing = json.loads(plan.read_text())["routing"]
        assert served == {c: max(row, key=row.get) for c, row in routing.items()}
        # The served resolution is the saved pipelines' native one (16 px), and the server says so.
        status, body, _ = _post(f"{url}/v1/images/generations", {"prompt": "a castle", "size": "512x512"})
        assert status == 400 and "16x16" in body["error"]["message"]
        assert _get(f"{url}/v1/plan")["served"]["resolution"] == 16
        server.process.send_signal(signal.SIGTERM)
        out, err = server.process.communicate(timeout=120)
    assert server.process.returncode == 0, err[-3000:]
    assert "note: sd15: the table holds no profile settings for it" in out
