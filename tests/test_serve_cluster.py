"""A plan served on a two-node Ray cluster on one host (a second raylet with its own resources, as Ray's own
tests start one), one device per node; then one node's raylet killed while the plan is served.

Each node offers one unit of a custom resource and ``genedge serve --device-resource`` makes each device
deployment ask for one, so the plan's two devices land on the two nodes (on GPUs ``num_gpus`` does the same).
When the worker node dies, its device cannot be placed again (the head's unit is taken): requests routed to it
get 503 with Retry-After naming why, within the server's bounded wait, and the other device keeps serving; the
ingress runs on the head node, beside the proxy and the gateway.
No request goes unanswered: a ``genedge loadtest`` running over the loss records each request once, served or
refused, and ``GET /v1/stats`` counts each image the surviving device served once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    DemoRun,
    assert_every_request_answered,
    ray_workers_under,
    serve_plan,
    start_genedge,
    wait_while_running,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("serving_extras")]

RESOURCE = "genedge_device"
LOAD_REQUESTS = 40


def _two_device_plan(demo_run: DemoRun, folder: Path) -> Path:
    """The demo's plan with each model on a whole device of its own (a budget of two)."""
    demo, done = demo_run
    assert done.returncode == 0, done.stderr
    plan = json.loads((demo / "plan.json").read_text())
    plan["inputs"]["budget_gpu"] = 2.0
    for model in plan["models"].values():
        assert model["deployed"]
        model["share"] = 1.0
    path = folder / "two-devices.json"
    path.write_text(json.dumps(plan))
    return path


def _post(url: str, category: str) -> tuple[int, dict, str | None]:
    body = json.dumps({"prompt": "a lighthouse at dusk", "category": category}).encode()
    request = urllib.request.Request(f"{url}/v1/generate", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read()), None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers.get("Retry-After")


def _round(url: str, categories: list[str]) -> dict[str, tuple[int, dict, str | None]]:
    with ThreadPoolExecutor(len(categories)) as pool:
        return dict(zip(categories, pool.map(lambda c: _post(url, c), categories)))


def _images(url: str) -> dict[str, int]:
    """Images served per model, as ``GET /v1/stats`` says."""
    with urllib.request.urlopen(f"{url}/v1/stats", timeout=60) as response:
        devices = json.loads(response.read())["devices"]
    return {model: stats["images"] for device in devices for model, stats in device["models"].items()}


def _load(url: str, lost: list[str], kept: list[str], folder: Path) -> subprocess.Popen:
    """``genedge loadtest`` of :data:`LOAD_REQUESTS` requests a second apart, alternating the lost and the kept
    categories (a trace file gives each request's time and category), its records kept in ``folder/result``."""
    lost_turns, kept_turns = itertools.cycle(lost), itertools.cycle(kept)
    categories = [next(kept_turns if i % 2 else lost_turns) for i in range(LOAD_REQUESTS)]
    pd.DataFrame({"time_s": np.arange(LOAD_REQUESTS, dtype=float), "category": categories}).to_csv(
        folder / "trace.csv", index=False
    )
    pd.DataFrame({"Prompt": [f"a photo of thing {i}" for i in range(8)]}).to_csv(folder / "prompts.csv", index=False)
    return start_genedge(
        "loadtest", url, "--prompts", folder / "prompts.csv", "--trace", folder / "trace.csv", "--seed", "1",
        "--no-progress", "--result-dir", folder / "result",
    )  # fmt: skip


@pytest.fixture
def two_nodes():
    """A Ray cluster of two nodes on this host, each with one unit of :data:`RESOURCE`: (cluster, worker node)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {RESOURCE: 1}, "include_dashboard": False},
    )
    try:
        worker = cluster.add_node(num_cpus=2, resources={RESOURCE: 1})
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()


def test_a_plan_on_two_nodes_loses_one_and_answers_every_request(demo_run: DemoRun, two_nodes, tmp_path: Path) -> None:
    cluster, worker = two_nodes
    plan_path = _two_device_plan(demo_run, tmp_path)
    plan = json.loads(plan_path.read_text())
    options = ("--address", cluster.address, "--device-resource", RESOURCE, "--router", "none")
    with serve_plan(plan_path, *options) as server:
        url = server.url
        deadline = time.monotonic() + 240
        devices: dict[int, set[str]] = {}
        while len(devices) < 2 and time.monotonic() < deadline:  # until both devices' replicas answer
            time.sleep(1)
            with urllib.request.urlopen(f"{url}/v1/stats", timeout=60) as response:
                devices = {d["device"]: set(d["models"]) for d in json.loads(response.read())["devices"]}
        assert sorted(devices) == [0, 1]  # two devices, one per node (each node has one unit of the resource)
        worker_raylet = worker.all_processes["raylet"][0].process.pid
        workers = ray_workers_under(worker_raylet)
        on_worker = [t for t in workers.values() if t.startswith("ray::ServeReplica:genedge:")]
        assert len(on_worker) == 1, on_worker  # one device; the ingress is on the head node
        lost_device = int(on_worker[0].split("device-")[1].split(".")[0].split()[0])
        (lost_model,) = devices[lost_device]
        routed = {c: {m for m, p in models.items() if p > 0} for c, models in plan["routing"].items()}
        lost = [c for c, models in routed.items() if models == {lost_model}]
        kept = [c for c, models in routed.items() if lost_model not in models]
        assert lost and kept, routed  # the demo's plan routes some categories to each model alone
        assert {status for status, _, _ in _round(url, lost + kept).values()} == {200}
        before = _images(url)

        # A load test over the loss: a request a second, the categories of both devices in turn.
        load = _load(url, lost, kept, tmp_path)
        wait_while_running(load, lambda: sum(_images(url).values()) >= sum(before.values()) + 4)  # under way
        # The node is lost as a machine is: its raylet and every process it ran (which would otherwise serve on
        # until they notice their raylet is gone).
        cluster.remove_node(worker, allow_graceful=False)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _out, err = load.communicate(timeout=900)
        assert load.returncode == 0, err[-3000:]
        records = pd.read_parquet(tmp_path / "result" / "records")
        assert_every_request_answered(records, LOAD_REQUESTS)
        by_model = records[records["status"] == "ok"].groupby("model").size()
        assert by_model.get(lost_model, 0) >= 1  # served before the loss
        status = records.set_index("requested_category")["status"]
        assert (status[status.index.isin(kept)] == "ok").all()  # the other device served on
        assert (status[status.index.isin(lost)] == "rejected").any()
        after = _images(url)
        (kept_model,) = set(after) - {lost_model}
        # Every image the kept device served is counted once; the lost device's counters do not go back.
        assert after[kept_model] - before[kept_model] == by_model[kept_model]
        assert after[lost_model] >= before[lost_model]
        for _ in range(2):  # while Ray finds out, and once it has
            answers = _round(url, lost + kept)
            for category, (status, body, retry_after) in answers.items():
                assert status == 200 or (status == 503 and retry_after is not None and "message" in body["error"]), (
                    category,
                    status,
                    body,
                )
        summary = {c: (status, body.get("record", body.get("error"))) for c, (status, body, _) in answers.items()}
        assert all(answers[c][0] == 200 for c in kept), (lost_model, summary)
        assert all(answers[c][0] == 503 for c in lost), (lost_model, summary)
        assert all("has not started another" in answers[c][1]["error"]["message"] for c in lost), summary
