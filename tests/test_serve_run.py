"""Ray's own ``serve run`` deploys a plan through genedge's application builder.

The builder's arguments are checked first (fast, no Ray). Then a Ray Serve config file written here
(``import_path: genedge.serve.server:app_builder`` with the plan in ``args``) is run by Ray's ``serve``
CLI on a Ray instance of its own (a private temporary directory, so that no other Ray on this
machine is joined or touched), serving the demo's plan on 127.0.0.1 at a free port; the official
``openai`` client gets an image, and Ctrl-C stops Serve and that Ray, leaving no process behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DemoRun, free_port, genedge_env, run_python

from genedge.serve.access import key_digest
from genedge.serve.images import ImageStoreSettings
from genedge.serve.server import (
    BUILDER_ARGS,
    BUILDER_IMPORT_PATH,
    RAY_MEMORY_THRESHOLD,
    local_ray_environment,
    ray_memory_threshold,
    server_from_args,
)

READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 120
# Ray's `serve` console script (ray.serve.scripts:cli), with Ctrl-C's handler restored: a process started
# in the background by a shell without job control inherits SIGINT ignored, and would never stop on it.
SERVE_CLI = (
    "import signal, sys; from ray.serve.scripts import cli; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(cli())"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, r"args\.plan: required"),
        ({"plan": "p.json", "port": "8000"}, r"unknown arguments \['port'\]; .* takes \['plan', .*http_options"),
        ({"plan": ""}, r"args\.plan: expected a non-empty string"),
        ({"plan": "p.json", "threads": "two"}, r"args\.threads: expected an integer, but got 'two'"),
        ({"plan": "p.json", "threads": 1.5}, r"args\.threads: expected an integer, but got 1\.5"),
        ({"plan": "p.json", "queue_bound_s": True}, r"args\.queue_bound_s: expected a number"),
        ({"plan": "p.json", "cpus": "1-x"}, r"args\.cpus: expected core numbers like '1' or '0-3,6'"),
        ({"plan": "p.json", "work_conserving": "maybe"}, r"args\.work_conserving: expected true or false"),
        ({"plan": "p.json", "models": "sd15"}, r"args\.models: expected KEY=SPEC\[,KEY=SPEC\.\.\.\] or a mapping"),
        ({"plan": "p.json", "threads": "0"}, r"threads: expected a positive number of threads, but got 0"),
        ({"plan": "p.json", "drain_timeout_s": "nan"}, r"drain_timeout_s: expected a positive finite number"),
        ({"plan": "p.json", "realization": "vms"}, r"realization: expected one of \['scheduler', 'mps'\]"),
        ({"plan": "p.json", "controller": "window_s"}, r"args\.controller: expected FIELD=VALUE\[,FIELD=VALUE"),
        ({"plan": "p.json", "controller": "speed=2"}, r"args\.controller: unknown fields \['speed'\]"),
        ({"plan": "p.json", "controller": {"window_s": "x"}}, r"args\.controller\.window_s: expected a number"),
        ({"plan": "p.json", "controller": "window_s=0"}, r"window_s: expected a number of seconds > 0"),
        ({"plan": "p.json", "image_store": "ttl=5"}, r"args\.image_store: unknown fields \['ttl'\]"),
        ({"plan": "p.json", "image_store": "max_images=1.5"}, r"args\.image_store\.max_images: expected an integer"),
        ({"plan": "p.json", "image_store": {"ttl_s": 0}}, r"ttl_s: expected a number of seconds > 0"),
        ({"plan": "p.json", "openapi_docs": "yes"}, r"args\.openapi_docs: expected true or false"),
        ({"plan": "p.json", "api_key": "a key"}, r"api_key: expected an API key of printable ASCII .* without spaces"),
        ({"plan": "p.json", "api_key": "k", "api_key_file": "f"}, r"api_key_file: give the API key or a file"),
    ],
)
def test_builder_arguments_are_checked_naming_the_argument(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_from_args(args)


def test_every_builder_argument_is_a_prepare_server_argument() -> None:
    import inspect

    from genedge.serve.server import prepare_server

    assert list(BUILDER_ARGS) == list(inspect.signature(prepare_server).parameters)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5])
def test_a_memory_threshold_outside_0_to_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"memory_threshold: expected a share of memory in \(0, 1\]"):
        local_ray_environment(threshold)


def test_the_local_ray_environment_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")  # the user wants Ray on the machine's address
    for name in ("RAY_worker_niceness", "RAY_memory_usage_threshold"):
        monkeypatch.setenv(name, "")  # so that the test's end restores the environment as it was
        monkeypatch.delenv(name)
    assert ray_memory_threshold() == RAY_MEMORY_THRESHOLD
    local_ray_environment(0.98)
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1" and os.environ["RAY_worker_niceness"] == "0"
    assert ray_memory_threshold() == 0.98


def test_a_ray_started_after_the_local_environment_takes_loopback_as_its_address() -> None:
    pytest.importorskip("ray", reason="needs genedge[serve]")
    code = (
        "import os; [os.environ.pop(k, None) for k in ('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', 'RAY_NODE_IP_ADDRESS')]\n"
        "from genedge.serve.server import local_ray_environment; local_ray_environment()\n"
        "import ray._private.services as services; print(services.get_node_ip_address())"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "127.0.0.1"


def test_a_burst_of_signals_while_the_stop_event_is_waited_on_sets_it_without_deadlock() -> None:
    """``genedge serve``'s main thread waits on the stop event; a handler that set the event itself could
    interrupt that wait while it held the event's lock, or another handler inside ``set``, and deadlock."""
    code = """
import os, signal, subprocess, threading
from genedge.serve.server import _set_on_signals
stop = threading.Event()
before = signal.getsignal(signal.SIGINT)
with _set_on_signals(stop):
    sender = subprocess.Popen(
        ["bash", "-c", f"for i in $(seq 1000); do kill -INT {os.getpid()}; kill -TERM {os.getpid()}; done"]
    )
    while sender.poll() is None:
        stop.wait(0.001)
print(stop.is_set(), signal.getsignal(signal.SIGINT) is before)
"""
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]


@pytest.mark.slow
def test_rays_own_builder_call_reaches_genedges_checks() -> None:
    """What ``serve run IMPORT_PATH key=value`` does before Ray starts: import the builder, call it with strings."""
    pytest.importorskip("ray.serve", reason="needs genedge[serve]")
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    with pytest.raises(ValueError, match=r"args\.threads: expected an integer, but got 'many'"):
        call_user_app_builder_with_args_if_necessary(import_attr(BUILDER_IMPORT_PATH), {"plan": "p", "threads": "many"})


@pytest.fixture(scope="module")
def demo(demo_run: DemoRun) -> Path:
    """The folder of ``genedge demo`` (run once per session): its plan of two tiny replicas and its table."""
    pytest.importorskip("diffusers", reason="serving replicas needs genedge[profile]")
    pytest.importorskip("ray.serve", reason="needs genedge[serve]")
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
def test_string_and_yaml_arguments_become_the_servers_settings(demo: Path) -> None:
    plan = json.loads((demo / "plan.json").read_text())
    deployed = sorted(key for key, entry in plan["models"].items() if entry["deployed"])
    # As `serve run ... key=value` passes them: strings.
    server = server_from_args(
        {
            "plan": str(demo / "plan.json"),
            "device": "cpu",
            "threads": "2",
            "cpus": "0-1",
            "work_conserving": "true",
            "queue_bound_s": "0.5",
            "router": "none",
            "drain_timeout_s": "7",
        }
    )
    assert (server.threads, server.cpus, server.work_conserving, server.gpus) == (2, (0, 1), True, False)
    assert server.router is None and server.drain_timeout_s == 7.0
    assert sorted(m.key for m in server.spec.models) == deployed
    # As a config file's YAML gives them: typed values, and a mapping of models.
    server = server_from_args(
        {
            "plan": str(demo / "plan.json"),
            "device": "cpu",
            "threads": 1,
            "cpus": "none",
            "models": {deployed[0]: "replica:tiny"},
        }
    )
    assert (server.threads, server.cpus) == (1, None)
    assert {m.key: m.spec for m in server.spec.models}[deployed[0]] == "replica:tiny"
    assert (server.api_key_sha256, server.openapi_docs, server.image_store) == (None, False, None)
    # Access and the URL images' store, as strings and as YAML values; only the key's digest is kept.
    key_file = demo / "builder-api-key.txt"
    key_file.write_text("builder-key-1\n")
    for args in (
        {"api_key_file": str(key_file), "openapi_docs": "true", "image_store": "ttl_s=60,max_images=3"},
        {"api_key": "builder-key-1", "openapi_docs": True, "image_store": {"ttl_s": 60, "max_images": 3}},
    ):
        server = server_from_args({"plan": str(demo / "plan.json"), "device": "cpu", **args})
        assert server.api_key_sha256 == key_digest("builder-key-1") and "builder-key-1" not in repr(server)
        assert server.openapi_docs and server.image_store == ImageStoreSettings(ttl_s=60.0, max_images=3)
    with pytest.raises(ValueError, match=r"\['sd15'\] are not models the plan deploys"):
        server_from_args({"plan": str(demo / "plan.json"), "device": "cpu", "models": "sd15=/models/sd15"})
    with pytest.raises(ValueError, match=r"controller: .*plan\.json is a single plan"):
        server_from_args({"plan": str(demo / "plan.json"), "device": "cpu", "controller": "window_s=5"})


def _processes_of(ray_dir: str) -> list[int]:
    """Processes started under this test's Ray directory: they inherit RAY_TMPDIR."""
    marker = f"RAY_TMPDIR={ray_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # exited meanwhile, or not ours to read
                continue
    return found


@pytest.mark.slow
def test_serve_run_with_a_config_file_serves_the_demo_plan(demo: Path, tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    yaml = pytest.importorskip("yaml")
    from test_serve_http import _get

    plan = json.loads((demo / "plan.json").read_text())
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http_options": {"host": "127.0.0.1", "port": port},
                "applications": [
                    {
                        "name": "genedge",
                        "route_prefix": "/",
                        "import_path": BUILDER_IMPORT_PATH,
                        "args": {"plan": str(demo / "plan.json"), "drain_timeout_s": 30, "work_conserving": False},
                    }
                ],
            }
        )
    )
    # Short: Ray's socket paths under it must fit in 107 bytes.
    ray_dir = tempfile.mkdtemp(prefix="ge-ray-", dir="/tmp")
    env = {
        **genedge_env({"CUDA_VISIBLE_DEVICES": ""}),
        "RAY_TMPDIR": ray_dir,
        "RAY_worker_niceness": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "serve-run.log"
    with log.open("w") as out:
        # `--address local`: a new Ray instance of this process's own, never one already running here.
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE_CLI, "run", "--address", "local", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            text = log.read_text()
            # A failed build leaves serve run waiting; Ray's controller says so in the log.
            assert process.poll() is None and "failed with exception" not in text, text[-3000:]
            assert time.monotonic() < deadline, f"serve run did not answer in {READY_TIMEOUT_S} s\n{text[-3000:]}"
            try:
                if _get(f"{url}/v1/health")["status"] == "ok":
                    break
            except OSError:
                time.sleep(1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
        result = client.images.generate(
            prompt="a blue sphere", n=1, response_format="b64_json", size="64x64", extra_body={"category": "Basic"}
        )
        assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
        (record,) = result.model_extra["genedge"]
        assert record["category"] == "Basic" and record["category_source"] == "given"
        owner = max(plan["routing"]["Basic"], key=plan["routing"]["Basic"].get)
        assert record["model"] == owner and record["steps"] == plan["models"][owner]["steps"]
        # The start-up calibration check is reachable however the server was started.
        served = _get(f"{url}/v1/plan")["served"]
        rows = served["calibration_check"]
        assert sorted(row["model"] for row in rows) == sorted(m["name"] for m in served["models"])
        assert all(row["served_s"] > 0 and row["table_s"] > 0 for row in rows)
        # Ctrl-C: serve run shuts Serve down, and its Ray with it.
        process.send_signal(signal.SIGINT)
        assert process.wait(STOP_TIMEOUT_S) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _processes_of(ray_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_of(ray_dir) == []
        with pytest.raises(OSError):
            _get(f"{url}/v1/health")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        for pid in _processes_of(ray_dir):  # only this test's Ray: they carry its RAY_TMPDIR
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_dir, ignore_errors=True)
