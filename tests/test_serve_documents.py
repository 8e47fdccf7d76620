"""The typed documents of serving: the HTTP bodies (serve.protocol) and the load-test result
(serve.loadtest_document) round-trip through to_dict/from_dict, keep their wire shape, and a wrong
field is refused naming the document and the field."""

from __future__ import annotations

import base64
import json
import math

import pytest

from genedge.contract.files import ArtifactError
from genedge.serve.loadtest_client import ENDPOINTS
from genedge.serve.loadtest_document import (
    LoadTestIdentity,
    LoadTestManifest,
    ScheduleSummary,
    SessionDocument,
    document_sha256,
)
from genedge.serve.loadtest_layout import read_manifest, read_sessions, write_manifest, write_session
from genedge.serve.protocol import (
    ErrorBody,
    GeneratedImage,
    GenerateResponse,
    GenerationRequest,
    ImagesResponse,
    Overloaded,
    PlanResponse,
    RequestError,
    StatsResponse,
    error_body,
    parse_generate,
    parse_openai,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
RECORD = {"request_id": "r1", "model": "sd15", "steps": 20, "seed": 7, "service_s": 1.5}
#: A stats body as the server sends it: every field of STATS_FIELDS, in order.
STATS_BODY = {
    "uptime_s": 12.5,
    "devices": [
        {
            "device": 0,
            "restarts": 1,
            "models": {
                "sd15": {
                    "planned_share": 0.5,
                    "steps": 20,
                    "device_s": 3.0,
                    "backlogged_s": 6.0,
                    "realized_share": 0.5,
                    "slices": 44,
                    "calls": 2,
                    "requests": 2,
                    "images": 2,
                    "queued": 0,
                    "rejected": 1,
                }
            },
        }
    ],
}
STATS = StatsResponse.from_dict(STATS_BODY, "http://x/v1/stats")
PLAN = {"routing": {"simple": {"sd15": 1.0}}}
TEST_ID = "20260101T000000Z-abcdef"


def _identity(**changes) -> LoadTestIdentity:
    fields = {
        "url": "http://127.0.0.1:8000",
        "endpoint": "genedge",
        "plan_sha256": document_sha256(PLAN),
        "prompts_sha256": "b" * 64,
        "trace_sha256": None,
        "request_rate": math.inf,
        "burstiness": 1.0,
        "num_prompts": 4,
        "max_concurrency": None,
        "seed": 3,
        "send_categories": True,
        "timeout_s": 600.0,
    }
    return LoadTestIdentity(**{**fields, **changes})


def _manifest(**changes) -> LoadTestManifest:
    return LoadTestManifest(
        test_id=TEST_ID,
        config=_identity(**changes),
        prompts_file="prompts.tsv",
        trace_file=None,
        schedule=ScheduleSummary("window", 0.0, {"simple": 3.0, "complex": 1.0}, 4, 0),
        plan=PLAN,
        table={"clip_convention": {"backbone": "ViT-B-32"}},
        served={"router": "none"},
    )


def _session(**ended) -> SessionDocument:
    return SessionDocument(0, TEST_ID, _manifest().settings_sha256, 1.0e9, 4, **ended)


def test_requests_keep_their_wire_shape_and_the_server_reads_them_back():
    request = GenerationRequest(prompt="a red cube", category="simple", seed=11)
    assert request.generate_body() == {"prompt": "a red cube", "seed": 11, "category": "simple"}
    assert parse_generate(request.generate_body(), ["simple"]) == request
    openai = GenerationRequest(prompt="a red cube", category=None, n=2)
    assert openai.openai_body() == {"prompt": "a red cube", "n": 2, "response_format": "b64_json"}
    assert parse_openai(openai.openai_body(), ["simple"], resolution=512, served_model="genedge") == openai


def test_endpoint_registry_sends_the_routes_bodies():
    request = GenerationRequest(prompt="p", category="c", seed=5)
    assert ENDPOINTS["genedge"].body(request) == {"prompt": "p", "seed": 5, "category": "c"}
    assert ENDPOINTS["genedge"].route == "/v1/generate"
    assert ENDPOINTS["openai"].route == "/v1/images/generations"
    assert not ENDPOINTS["openai"].sends_seed


def test_responses_round_trip_and_keep_their_wire_shape():
    image = GeneratedImage(PNG, RECORD)
    generate = GenerateResponse(image)
    body = json.loads(json.dumps(generate.to_dict()))
    assert body == {"image_png_b64": base64.b64encode(PNG).decode("ascii"), "record": RECORD}
    assert GenerateResponse.from_dict(body, "http://x/v1/generate") == generate

    images = ImagesResponse((image, GeneratedImage(PNG, {**RECORD, "seed": 8})), created=1700000000)
    body = json.loads(json.dumps(images.to_dict()))
    assert sorted(body) == ["created", "data", "genedge"]
    assert body["data"][0] == {"b64_json": base64.b64encode(PNG).decode("ascii"), "revised_prompt": None}
    assert ImagesResponse.from_dict(body, "http://x") == images
    assert ENDPOINTS["openai"].image({**body, "data": body["data"][:1]}, "http://x") == image

    plan = PlanResponse({"routing": {}}, {"models": {}}, {"router": "none"})
    assert PlanResponse.from_dict(plan.to_dict(), "http://x/v1/plan") == plan


def test_stats_bodies_round_trip_in_the_order_the_server_sends():
    assert json.dumps(STATS.to_dict()) == json.dumps(STATS_BODY)
    assert STATS.devices[0].models["sd15"].realized_share == 0.5 and STATS.devices[0].restarts == 1
    # A body from a server that did not count restarts (a load test's older session file) reads them as unknown.
    older = {**STATS_BODY, "devices": [{k: v for k, v in STATS_BODY["devices"][0].items() if k != "restarts"}]}
    assert StatsResponse.from_dict(older, "http://x/v1/stats").devices[0].restarts is None


def test_error_bodies_round_trip_in_openais_shape():
    overloaded = Overloaded("queue full", retry_after_s=2.5)
    body = error_body(overloaded)
    assert body == {"error": {"message": "queue full", "type": "server_overloaded", "param": None, "code": 503}}
    assert ErrorBody.from_dict(body, "u") == ErrorBody.from_error(overloaded)
    bad = ErrorBody.from_error(RequestError("expected a non-empty string", param="prompt"))
    assert ErrorBody.from_dict(bad.to_dict(), "u").param == "prompt"


@pytest.mark.parametrize(
    ("reader", "body", "field"),
    [
        (GenerateResponse.from_dict, {"record": {}}, "image_png_b64"),
        (GenerateResponse.from_dict, {"image_png_b64": "not base64!"}, "image_png_b64"),
        (GenerateResponse.from_dict, {"image_png_b64": base64.b64encode(b"GIF89a").decode()}, "image_png_b64"),
        (GenerateResponse.from_dict, ["a list"], "body"),
        (ImagesResponse.from_dict, {"data": [{"b64_json": 3}]}, "data.0.b64_json"),
        (ImagesResponse.from_dict, {"data": {"b64_json": "x"}}, "data"),
        (PlanResponse.from_dict, {"plan": [], "table": {}}, "plan"),
        (ErrorBody.from_dict, {"error": {"message": 5}}, "error.message"),
        (
            StatsResponse.from_dict,
            {"devices": [{"device": 0, "models": {"a": {"device_s": 1.0}}}]},
            "devices.0.models.a.backlogged_s",
        ),
        (StatsResponse.from_dict, {"devices": [{"device": "0", "models": {}}]}, "devices.0.device"),
    ],
)
def test_a_wrong_response_field_is_named_with_the_url(reader, body, field):
    with pytest.raises(ArtifactError) as caught:
        reader(body, "http://127.0.0.1:8000/v1/route")
    assert caught.value.where == "http://127.0.0.1:8000/v1/route"
    assert caught.value.field_path == field


def test_manifest_and_session_round_trip_through_their_files(tmp_path):
    manifest = _manifest()
    path = write_manifest(tmp_path, manifest)
    written = json.loads(path.read_text())
    assert written["config"]["request_rate"] == "inf"  # JSON has no infinity
    assert sorted(written) == [
        "config",
        "files",
        "kind",
        "plan",
        "schedule",
        "schema_version",
        "served",
        "settings_sha256",
        "table",
        "test_id",
    ]
    assert written["settings_sha256"] == document_sha256(written["config"])
    assert read_manifest(tmp_path) == manifest

    started = SessionDocument(0, TEST_ID, manifest.settings_sha256, 1.0e9, 4)
    write_session(tmp_path, started)
    assert json.loads((tmp_path / "sessions" / "session-000.json").read_text()) == {
        "session": 0,
        "test_id": TEST_ID,
        "settings_sha256": manifest.settings_sha256,
        "started_unix": 1.0e9,
        "to_send": 4,
    }
    ended = SessionDocument(0, TEST_ID, manifest.settings_sha256, 1.0e9, 4, 1.0e9 + 5, STATS, None, {"ok": 4})
    write_session(tmp_path, ended)
    assert read_sessions(tmp_path) == [ended]


def test_a_resumed_test_names_the_first_setting_that_differs():
    assert _identity().difference(_identity()) is None
    assert _identity(seed=4).difference(_identity()) == ("seed", 4, 3)
    assert _identity(request_rate=2.0).difference(_identity()) == ("request_rate", 2.0, "inf")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["config"].pop("seed"), "config.seed"),
        (lambda d: d["config"].update(request_rate="fast"), "config.request_rate"),
        (lambda d: d["schedule"].update(requests=-1), "schedule.requests"),
        (lambda d: d["schedule"]["demand"].update(simple="3"), "schedule.demand.simple"),
        (lambda d: d.update(schema_version=1), "schema_version"),
        (lambda d: d.update(kind="genedge.run"), "kind"),
        (lambda d: d.pop("test_id"), "test_id"),
        # Edited by hand: the records carry the settings' hash, and the config names the plan by its hash.
        (lambda d: d["config"].update(seed=4), "settings_sha256"),
        (lambda d: d["plan"].update(routing={}), "plan"),
    ],
)
def test_a_wrong_manifest_field_is_named_with_the_file(tmp_path, change, field):
    path = write_manifest(tmp_path, _manifest())
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError) as caught:
        read_manifest(tmp_path)
    assert caught.value.where == str(path)
    assert caught.value.field_path == field


def test_a_wrong_session_field_is_named_with_the_file(tmp_path):
    write_manifest(tmp_path, _manifest())
    path = write_session(tmp_path, _session())
    path.write_text(json.dumps({**json.loads(path.read_text()), "started_unix": "yesterday"}))
    with pytest.raises(ArtifactError) as caught:
        read_sessions(tmp_path)
    assert (caught.value.where, caught.value.field_path) == (str(path), "started_unix")


def test_the_openai_endpoint_refuses_an_answer_without_exactly_one_image():
    image = GeneratedImage(PNG, RECORD)
    two = ImagesResponse((image, image), created=1).to_dict()
    with pytest.raises(ArtifactError) as caught:
        ENDPOINTS["openai"].image(two, "http://x")
    assert caught.value.field_path == "data"


def test_a_wrong_stats_field_in_a_session_is_named_under_its_key(tmp_path):
    write_manifest(tmp_path, _manifest())
    path = write_session(tmp_path, _session(ended_unix=1.0e9 + 5, stats_before=STATS, stats_after=STATS))
    document = json.loads(path.read_text())
    document["stats_after"]["devices"][0]["models"]["sd15"]["device_s"] = "3 s"
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError) as caught:
        read_sessions(tmp_path)
    assert caught.value.field_path == "stats_after.devices.0.models.sd15.device_s"
