"""What a plan says to serve (fast: no Ray, no models): the HTTP contract's parsing, the checks at
start, placement on devices, queue bounds and the deployments a plan becomes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest

from genedge import data as shipped_data
from genedge.contract.table import CalibrationTable
from genedge.contract.table_file import load_table, read_table_file, table_manifest_from_dict, table_to_dict
from genedge.optimizer.plan_file import PLAN_SCHEMA_VERSION, PlanDocument, plan_from_dict
from genedge.serve.protocol import (
    MAX_IMAGES_PER_REQUEST,
    Overloaded,
    RequestError,
    error_body,
    parse_generate,
    parse_openai,
)
from genedge.serve.spec import ServeError, model_specs_from_pairs, place_on_devices, refusal, serve_spec

CATEGORIES = ("Basic", "Complex")


def test_generate_bodies_are_checked_field_by_field() -> None:
    assert parse_generate({"prompt": "a cat", "category": "Basic", "seed": 3}, CATEGORIES).seed == 3
    assert parse_generate({"prompt": "a cat"}, CATEGORIES).category is None
    for body, param in [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"prompt": "a", "category": "basic"}, "category"),
        ({"prompt": "a", "seed": 1.5}, "seed"),
        ({"prompt": "a", "seed": True}, "seed"),
        ({"prompt": "a", "steps": 4}, "steps"),
    ]:
        with pytest.raises(RequestError) as caught:
            parse_generate(body, CATEGORIES)
        assert caught.value.param == param and caught.value.status == 400, body
    with pytest.raises(RequestError, match="JSON object"):
        parse_generate("a cat", CATEGORIES)


def test_openai_bodies_follow_the_images_api() -> None:
    parsed = parse_openai(
        {"prompt": "a cat", "n": 2, "size": "64x64", "response_format": "b64_json", "model": "genedge", "user": "u"},
        CATEGORIES,
        resolution=64,
        served_model="genedge",
    )
    assert (parsed.n, parsed.prompt, parsed.response_format) == (2, "a cat", "b64_json")
    # URLs are served too, and are what a body naming no format gets, as from OpenAI's API.
    for body, expected in [({"prompt": "a", "response_format": "url"}, "url"), ({"prompt": "a"}, "url")]:
        assert parse_openai(body, CATEGORIES, resolution=64, served_model="genedge").response_format == expected
    for body, param in [
        ({"prompt": "a", "n": 0}, "n"),
        ({"prompt": "a", "n": MAX_IMAGES_PER_REQUEST + 1}, "n"),
        ({"prompt": "a", "size": "512x512"}, "size"),
        ({"prompt": "a", "response_format": "png"}, "response_format"),
        ({"prompt": "a", "model": "dall-e-3"}, "model"),
        ({"prompt": "a", "category": "Nope"}, "category"),
    ]:
        with pytest.raises(RequestError) as caught:
            parse_openai(body, CATEGORIES, resolution=64, served_model="genedge")
        assert caught.value.param == param, body


def test_errors_have_openais_shape_and_overload_says_when_to_retry() -> None:
    body = error_body(RequestError("bad", param="seed"))
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "seed", "code": 400}}
    overloaded = Overloaded("full", retry_after_s=0.2)
    assert overloaded.status == 503 and overloaded.retry_after_header == "1"  # whole seconds, at least 1
    assert Overloaded("full", retry_after_s=2.01).retry_after_header == "3"
    assert error_body(overloaded)["error"]["type"] == "server_overloaded"


def _table(models: dict[str, int], published: tuple[str, ...] = ()) -> CalibrationTable:
    """A shipped table's numbers under keys ``models`` (profiled at their resolutions) and ``published``."""
    shipped = load_table(shipped_data.path("tables", "galaxy-s24.json"))
    numbers = next(iter(shipped.models.values()))
    return dataclasses.replace(
        shipped,
        models={key: dataclasses.replace(numbers, key=key) for key in (*models, *published)},
        category_mapping={"name": "two", "column": "Challenge", "labels": {c: [c] for c in CATEGORIES}},
        manifest=table_manifest_from_dict(
            {
                "runs": {
                    "run-1": {
                        "guidance_scale": 7.5,
                        "dtype": "float32",
                        "host": {"threads": 1},
                        "models": [
                            {"key": key, "resolution": resolution, "scheduler": {"class": "DDIMScheduler"}}
                            for key, resolution in models.items()
                        ],
                    }
                }
            }
        ),
    )


def _bytes(table: CalibrationTable) -> bytes:
    return json.dumps(table_to_dict(table)).encode()


def _plan(table_bytes: bytes | None, shares: dict[str, float], *, slo_s: float | None = None) -> PlanDocument:
    figures = {"mean_clipscore": 30.0, "mean_delay_s": 1.0, "p95_delay_s": 2.0, "utility": 29.0}
    document = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "kind": "genedge.plan",
        "method": "genedge",
        "predicted": figures,
        "inputs": {
            "table_sha256": None if table_bytes is None else hashlib.sha256(table_bytes).hexdigest(),
            "slo": None if slo_s is None else {"seconds": slo_s, "attainment": 0.9, "scope": "overall"},
        },
        "models": {
            key: {"deployed": True, "steps": 4, "share": share, "service_s": 0.5, "max_batch": 1}
            for key, share in shares.items()
        },
        "routing": {"Basic": {"a": 1.0, "b": 0.0}, "Complex": {"a": 0.25, "b": 0.75}},
    }
    return plan_from_dict(document, "plan.json")


def test_a_plan_is_refused_unless_its_table_hash_matches() -> None:
    table = _table({"a": 64, "b": 64})
    data = _bytes(table)
    spec = serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data)
    assert spec.devices == 1 and spec.resolution == 64 and [m.name for m in spec.models] == ["a", "b"]
    assert spec.routing.tolist() == [[1.0, 0.0], [0.25, 0.75]]
    assert {(m.resolution, m.scheduler, m.guidance_scale, m.dtype) for m in spec.models} == {
        (64, "DDIMScheduler", 7.5, "float32")
    }
    assert spec.profile_threads == 1 and spec.table_document == json.loads(data)
    with pytest.raises(ServeError, match=r"inputs\.table_sha256: the plan was made from a table with sha256"):
        serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data + b" ")
    with pytest.raises(ServeError, match="records no table hash"):
        serve_spec(_plan(None, {"a": 0.5, "b": 0.5}), table, data)


def test_models_must_be_in_the_table_with_one_resolution() -> None:
    table = _table({"a": 64})
    data = _bytes(table)
    with pytest.raises(ServeError, match=r"deployed models \['b'\] are not in the table"):
        serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data)
    table = _table({"a": 64, "b": 128})
    data = _bytes(table)
    with pytest.raises(ServeError, match=r"different resolutions \[64, 128\]"):
        serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data)
    table = _table({"a": 64}, published=("b",))  # b in the table, but with published numbers: no profile settings
    data = _bytes(table)
    with pytest.raises(ServeError, match="--model KEY=SPEC"):
        serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data)
    with pytest.raises(ServeError, match=r"\['zzz'\] are not models the plan deploys"):
        serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data, model_specs={"zzz": "x"})


def test_a_model_larger_than_one_gpu_becomes_replicas_sharing_its_routing() -> None:
    table = _table({"a": 64, "b": 64})
    data = _bytes(table)
    spec = serve_spec(_plan(data, {"a": 1.5, "b": 0.4}), table, data)
    assert spec.devices == 2
    assert sorted(m.name for m in spec.models) == ["a", "a#1", "b"]
    column = {m.name: j for j, m in enumerate(spec.models)}
    share = {m.name: m.share for m in spec.models}
    assert share == {"a": 1.0, "a#1": pytest.approx(0.5), "b": 0.4}
    # requests split in proportion to the replicas' shares, so each runs at the model's utilization
    assert spec.routing[0, column["a"]] == pytest.approx(2 / 3) and spec.routing[0, column["a#1"]] == pytest.approx(
        1 / 3
    )
    assert spec.routing[1, column["b"]] == 0.75 and spec.routing.sum(axis=1).tolist() == pytest.approx([1, 1])
    # one call on a replica's share: the plan's call time on the model's share 1.5, times 1.5 / share
    service = {m.name: m.service_s for m in spec.models}
    assert service == {"a": pytest.approx(0.75), "a#1": pytest.approx(1.5), "b": pytest.approx(0.5)}
    assert all(sum(m.share for m in spec.on_device(d)) <= 1 + 1e-9 for d in range(spec.devices))
    assert {m.device for m in spec.models if m.key == "a"} == {0, 1}


def test_queue_bounds_follow_the_slo_or_the_stated_horizon() -> None:
    table = _table({"a": 64, "b": 64})
    data = _bytes(table)
    spec = serve_spec(_plan(data, {"a": 0.5, "b": 0.5}, slo_s=2.2), table, data)
    assert [m.queue_bound for m in spec.models] == [4, 4]  # floor(2.2 s / 0.5 s)
    spec = serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data, queue_bound_s=0.1)
    assert [m.queue_bound for m in spec.models] == [1, 1]  # never below one
    spec = serve_spec(_plan(data, {"a": 0.5, "b": 0.5}), table, data)
    assert [m.queue_bound for m in spec.models] == [60, 60]  # 30 s of planned work


def test_past_its_queue_bound_a_model_refuses_with_the_time_until_it_has_room() -> None:
    table = _table({"a": 64, "b": 64})
    data = _bytes(table)
    (model, _) = serve_spec(_plan(data, {"a": 0.5, "b": 0.5}, slo_s=2.2), table, data).models
    assert model.queue_bound == 4 and model.max_batch == 1
    assert refusal(model, 3) is None
    refused = refusal(model, 4)
    assert refused.status == 503 and refused.retry_after_s == pytest.approx(model.service_s)  # one call away
    assert refusal(model, 6).retry_after_s == pytest.approx(3 * model.service_s)  # three calls of excess


def test_model_maps_parse_key_equals_spec() -> None:
    assert model_specs_from_pairs(["sd15=models/sd15", "x=org/repo@v1"]) == {"sd15": "models/sd15", "x": "org/repo@v1"}
    with pytest.raises(ValueError, match="expected KEY=SPEC"):
        model_specs_from_pairs(["sd15"])
    with pytest.raises(ValueError, match="given twice"):
        model_specs_from_pairs(["a=1", "a=2"])


def test_a_plan_becomes_one_deployment_per_device_or_one_mps_process_per_model() -> None:
    pytest.importorskip("ray.serve", reason="needs genedge[serve]")
    from genedge.serve.app import deployment_units

    table = _table({"a": 64, "b": 64})
    data = _bytes(table)
    spec = serve_spec(_plan(data, {"a": 1.5, "b": 0.4}), table, data)
    units = deployment_units(spec, "scheduler")
    assert [name for name, _, _ in units] == ["device-0", "device-1"]
    assert [models for _, models, _ in units] == [spec.on_device(0), spec.on_device(1)]
    mps = deployment_units(spec, "mps")
    assert len(mps) == 3
    for (_, models, options), model in zip(mps, spec.models):
        (alone,) = models
        assert alone.name == model.name and alone.share == 1.0  # the whole (MPS-limited) device in its process
        assert options["num_gpus"] == model.share
        percentage = options["runtime_env"]["env_vars"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]
        assert percentage == str(round(100 * model.share))  # 100, 50, 40


def test_placement_splits_a_model_larger_than_one_gpu_and_packs_the_rest() -> None:
    placed = place_on_devices({"big": 1.5, "mid": 0.6, "small": 0.3})
    by_device: dict[int, float] = {}
    for _, _, device, share in placed:
        by_device[device] = by_device.get(device, 0.0) + share
    big = sorted(share for key, _, _, share in placed if key == "big")
    assert big == pytest.approx([0.5, 1.0])
    assert len({device for key, _, device, _ in placed if key == "big"}) == 2  # never two replicas on one device
    # first-fit decreasing: 1.0 | 0.6 + 0.3 | 0.5 — three devices for 2.4 GPUs of shares
    assert sorted(by_device.values()) == pytest.approx([0.5, 0.9, 1.0])


def test_a_table_file_is_read_once_and_what_is_hashed_is_what_is_served(tmp_path):
    source = shipped_data.path("tables", "galaxy-s24.json")
    path = tmp_path / "table.json"
    path.write_bytes(source.read_bytes())
    table, data = read_table_file(path)
    assert data == source.read_bytes() and table == load_table(source)
    # A FIFO is refused before anything reads it (a read would wait for a writer forever).
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo.json: .*FIFO"):
        read_table_file(fifo)
