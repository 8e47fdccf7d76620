"""``genedge serve`` against its clients and its own failures, on loopback: a 100 MB body, 1,000 slow connections
and a deeply nested JSON body; then ``kill -9`` of Ray Serve's HTTP proxy and of a device replica under a bounded
``genedge loadtest``, every request answered (200, or a JSON 503 with Retry-After) and recorded; and every port
the server and the Ray it starts listen on is on loopback, that Ray's memory monitor at the threshold asked for.

One server (a ``genedge serve`` subprocess of the demo's plan, tiny replicas on the CPU) serves every test here;
the header time-out is set short (2 s) so that slow connections are answered within the test.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import resource
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    DemoRun,
    assert_every_request_answered,
    ray_workers_under,
    read_http_response,
    serve_plan,
    start_genedge,
    wait_while_running,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("serving_extras")]

HOST = "127.0.0.1"
HEADER_TIMEOUT_S = 2.0
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}
MEMORY_THRESHOLD = 0.97


@pytest.fixture(scope="module")
def server(demo_run: DemoRun):
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    # A thousand connections at once need a thousand descriptors in this process and in the server it starts.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    with serve_plan(
        folder / "plan.json",
        "--header-timeout-s",
        str(HEADER_TIMEOUT_S),
        "--proxy-wait-s",
        "90",
        "--memory-threshold",
        str(MEMORY_THRESHOLD),
    ) as served:
        yield served.url, served.port, served.process, folder


def _generate_raw(body: bytes, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    head = f"POST /v1/generate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {length}"
    return head.encode() + b"\r\n\r\n" + body


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of the answer on ``sock``."""
    status, headers, body = read_http_response(sock)
    return status, headers, json.loads(body)


def _served(url: str) -> int:
    body = json.dumps({"prompt": "a lighthouse", "category": "Basic", "seed": 3}).encode()
    request = urllib.request.Request(f"{url}/v1/generate", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status


def test_a_100_mb_body_is_refused_413_before_it_is_sent(server) -> None:
    url, port, _, _ = server
    sent = 0
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.sendall(_generate_raw(b"", length=100 * 2**20))
        sock.setblocking(False)
        answer = b""
        while b"\r\n\r\n" not in answer:  # keep sending the body until the answer arrives
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                try:
                    sent += sock.send(b"x" * 65536)
                except BlockingIOError:
                    time.sleep(0.01)
        sock.setblocking(True)
        assert answer.startswith(b"HTTP/1.1 413 ")
    assert sent < 100 * 2**20  # answered before the body was sent, let alone read
    assert _served(url) == 200


def test_a_body_nested_100000_deep_is_a_json_400(server) -> None:
    url, port, _, _ = server
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.sendall(_generate_raw(b"[" * 100_000 + b"]" * 100_000))
        status, _, body = _answer(sock)
    assert status == 400 and "nests deeper than 16" in body["error"]["message"]
    assert _served(url) == 200


def test_1000_slow_connections_get_408_and_a_request_is_served_after(server) -> None:
    url, port, _, _ = server
    slow = [socket.create_connection((HOST, port), timeout=HEADER_TIMEOUT_S + 60) for _ in range(1000)]
    try:
        for sock in slow:  # each stops inside its headers, as a slow-loris client does
            sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\n")
        answers = [_answer(sock) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert {status for status, _, _ in answers} == {408}
    assert "did not arrive within 2 s" in answers[0][2]["error"]["message"]
    assert _served(url) == 200


def _grpc_call_without_token(port: int) -> str:
    """The status name of a gRPC call without credentials to the server on ``port``."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=30)
        except grpc.RpcError as err:
            return err.code().name
    return "OK"


def test_every_port_the_server_and_its_ray_open_is_on_loopback_or_asks_for_a_token(server) -> None:
    import psutil

    _, port, process, _ = server
    processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    listening = set()
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # Ray starts and ends idle workers meanwhile
            listening |= {
                (proc.pid, proc.name(), conn.laddr.ip, conn.laddr.port)
                for conn in proc.net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN
            }
    names = {name for _, name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names and len(listening) > 10  # Ray's own ports are among them
    exposed = {row for row in listening if not ipaddress.ip_address(row[2].removeprefix("::ffff:")).is_loopback}
    # Ray Serve binds each replica's inter-deployment gRPC server to every interface, whatever the node's address:
    # those ports, and only those, are outside loopback, and they refuse a call without the Ray cluster's token.
    assert all(name.startswith("ray::ServeReplica:") for _, name, _, _ in exposed), exposed
    for _, _, _, grpc_port in exposed:
        assert _grpc_call_without_token(grpc_port) == "UNAUTHENTICATED"
    assert (process.pid, psutil.Process(process.pid).name(), HOST, port) in listening  # the gateway
    (raylet,) = [proc for proc in processes if proc.is_running() and proc.name() == "raylet"]
    assert raylet.environ()["RAY_memory_usage_threshold"] == str(MEMORY_THRESHOLD)


def _ray_process(server_pid: int, name: str) -> int:
    """The pid of the Ray worker titled ``ray::NAME`` among the server's descendants."""
    found = [pid for pid, title in ray_workers_under(server_pid).items() if title.startswith(f"ray::{name}")]
    assert found, f"no ray::{name} process under the server"
    return found[0]


def _counts(url: str) -> dict[str, int]:
    """Images served per model, and the restarts, as ``GET /v1/stats`` says."""
    with urllib.request.urlopen(f"{url}/v1/stats", timeout=60) as response:
        (device,) = json.loads(response.read())["devices"]
    return {**{model: stats["images"] for model, stats in device["models"].items()}, "restarts": device["restarts"]}


def _metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_kill_9_of_the_proxy_and_of_a_device_replica_under_load_loses_no_request(server, tmp_path: Path) -> None:
    url, _, process, _ = server
    import pandas as pd

    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"Prompt": [f"a photo of thing {i}" for i in range(8)], "Challenge": ["Basic"] * 8}).to_csv(
        prompts, index=False
    )
    counted = _metric(url, "genedge_http_requests_total")  # the other tests' requests to this server
    load = start_genedge(
        "loadtest", url, "--prompts", prompts, "--request-rate", "2", "--num-prompts", "80", "--seed", "1",
        "--save-result", "--result-dir", tmp_path / "result", env=CPU_ONLY,
    )  # fmt: skip
    wait_while_running(load, lambda: _metric(url, "genedge_http_requests_total") >= counted + 4)  # under way
    os.kill(_ray_process(process.pid, "ProxyActor"), signal.SIGKILL)
    # An eight-image request keeps the device busy, so the replica dies under calls that must be retried.
    answers: list[int] = []
    body = json.dumps({"prompt": "a harbour", "category": "Basic", "n": 8}).encode()
    request = urllib.request.Request(
        f"{url}/v1/images/generations", data=body, headers={"Content-Type": "application/json"}
    )
    big = threading.Thread(target=lambda: answers.append(urllib.request.urlopen(request, timeout=300).status))
    time.sleep(40)  # Ray restarts the proxy meanwhile; the gateway holds the requests sent to it
    before = _counts(url)
    big.start()
    time.sleep(0.5)
    os.kill(_ray_process(process.pid, "ServeReplica:genedge:device-0"), signal.SIGKILL)
    big.join(300)
    after = _counts(url)
    _out, err = load.communicate(timeout=600)
    assert load.returncode == 0, err[-3000:]
    assert answers == [200]  # every image of it served, the lost calls retried on the restarted replica
    assert _metric(url, "genedge_replica_losses_total", action="retried") >= 1
    # The restarted replica counts from 0; the server carries the old one's counters: they never go back.
    assert after["restarts"] == 1 and _metric(url, "genedge_device_restarts_total", deployment="device-0") == 1
    assert all(after[model] >= count for model, count in before.items() if model != "restarts")
    # The eight images' calls on the restarted replica are counted; those the killed one finished after the last
    # read of its accounts (at most a second of work) are not: the documented loss.
    assert sum(after[m] - before[m] for m in before if m != "restarts") >= 1
    assert_every_request_answered(pd.read_parquet(tmp_path / "result" / "records"), 80)
