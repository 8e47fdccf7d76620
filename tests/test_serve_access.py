"""A served plan behind an API key, with image URLs and without host details: checked fast, then on loopback.

The fast tests check the pieces (the key's precedence and comparison, the image store's bounds, what
``GET /v1/plan`` leaves out). The slow ones start one ``genedge serve`` subprocess on 127.0.0.1 with the
demo's plan, a key file and a store of two images, and drive it as clients do: plain HTTP, the official
``openai`` client, LangChain's ``DallEAPIWrapper`` and ``genedge loadtest``; the last one stops it and
checks that the key never reached its output.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import signal
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from conftest import DemoRun, run_genedge, serve_plan

from genedge.contract.table_file import public_table_document, table_from_dict
from genedge.serve.access import API_KEY_ENV, bearer_matches, key_digest, read_api_key
from genedge.serve.images import ImageStore, ImageStoreSettings
from genedge.serve.protocol import public_document

KEY = "ge-test-6f1d0c2a9b"
#: The routes the key guards, with a body for the POSTs.
GUARDED = [
    ("POST", "/v1/generate", {"prompt": "a cube", "category": "Basic"}),
    ("POST", "/v1/images/generations", {"prompt": "a cube", "category": "Basic", "response_format": "b64_json"}),
    ("GET", "/v1/plan", None),
    ("GET", "/v1/stats", None),
    ("GET", "/metrics", None),
]


# The pieces.


def test_the_api_key_comes_from_the_option_else_the_file_else_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("  from-file \n# a second line is not read\n")
    environ = {API_KEY_ENV: "from-env"}
    assert read_api_key("given", None, environ) == "given"
    assert read_api_key(None, key_file, environ) == "from-file"
    assert read_api_key(None, None, environ) == "from-env"
    assert read_api_key(None, None, {}) is None and read_api_key(None, None, {API_KEY_ENV: " "}) is None
    with pytest.raises(ValueError, match="not both"):
        read_api_key("given", key_file, environ)
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match=r"empty: expected an API key, but it is empty"):
        read_api_key(None, tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read the API key file"):
        read_api_key(None, tmp_path / "missing")
    with pytest.raises(ValueError, match="without spaces") as caught:
        read_api_key("secret part", None)
    assert "secret" not in str(caught.value)  # an error never shows the key


def test_only_the_bearer_of_the_key_matches() -> None:
    digest = key_digest(KEY)
    assert bearer_matches(f"Bearer {KEY}", digest) and bearer_matches(f"bearer  {KEY} ", digest)
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer", "Bearer é"):
        assert not bearer_matches(header, digest), header


def test_the_image_store_keeps_images_within_its_time_count_and_bytes() -> None:
    now = [0.0]
    store = ImageStore(ImageStoreSettings(ttl_s=10, max_images=3, max_bytes=10), clock=lambda: now[0])
    first, second = store.put(b"aaaa"), store.put(b"bbbb")
    assert len(first) == 22 and first != second and store.get(first) == b"aaaa"
    now[0] = 5.0
    third = store.put(b"cc")
    now[0] = 10.0  # the first two expire at 10 s, the third lives until 15 s
    assert (store.get(first), store.get(second), store.get(third)) == (None, None, b"cc")
    fourth, fifth = store.put(b"dddd"), store.put(b"eeee")
    assert (len(store), store.bytes) == (3, 10)
    # A sixth: the count pushes out the oldest (2 bytes), then the bytes (8 + 4 > 10) the next oldest.
    sixth = store.put(b"ffff")
    assert [store.get(i) for i in (third, fourth, fifth, sixth)] == [None, None, b"eeee", b"ffff"]
    assert (len(store), store.bytes) == (2, 8)
    assert store.get("no-such-id") is None
    for bad, message in [({"ttl_s": 0.0}, "ttl_s"), ({"max_images": 0}, "max_images"), ({"max_bytes": 1.5}, "max_b")]:
        with pytest.raises(ValueError, match=message):
            ImageStoreSettings(**bad)


@pytest.mark.slow  # the demo's profile run
def test_what_clients_see_of_a_plan_and_a_table_leaves_the_host_out(demo_run: DemoRun) -> None:
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    plan = json.loads((folder / "plan.json").read_text())
    table = json.loads((folder / "table.json").read_text())
    assert Path(plan["inputs"]["table"]).is_absolute()  # as the demo writes it
    shown = public_document(plan)
    assert shown["inputs"]["table"] == "table.json"
    assert {k: v for k, v in shown["inputs"].items() if k != "table"} == {
        k: v for k, v in plan["inputs"].items() if k != "table"
    }
    public = public_document(public_table_document(table))
    for run in public["manifest"]["runs"].values():
        assert set(run["host"]) <= {"threads"} and not Path(run["prompt_set"]["name"]).is_absolute()
    # Still a table, read with the same settings (the profile threads are kept).
    shown_table, read_table = table_from_dict(public), table_from_dict(table)
    assert shown_table.profile_settings() == read_table.profile_settings()
    assert shown_table.profile_threads() == read_table.profile_threads() is not None
    assert public_document({"url": "http://h/x", "text": "a/b", "win": "C:\\Users\\me\\t.json"}) == {
        "url": "http://h/x",
        "text": "a/b",
        "win": "t.json",
    }


# Through the server.


def _request(url: str, method: str = "GET", body: object = None, key: str | None = None) -> tuple[int, bytes, Message]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def _error(payload: bytes) -> dict:
    """The ``error`` object of an OpenAI-shaped error body (every one of its four fields present)."""
    error = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _png_size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image.size


@pytest.fixture(scope="module")
def server(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("diffusers", reason="serving replicas needs genedge[profile]")
    pytest.importorskip("ray.serve", reason="needs genedge[serve]")
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    key_file = tmp_path_factory.mktemp("key") / "api-key"
    key_file.write_text(KEY + "\n")
    with serve_plan(folder / "plan.json", "--api-key-file", key_file, "--image-max-count", "2") as served:
        yield served.url, served.process, folder


@pytest.mark.slow
def test_every_route_but_health_needs_the_key(server) -> None:
    url, _, _ = server
    assert _request(f"{url}/v1/health")[0] == 200  # open, for load balancers
    for method, route, body in GUARDED:
        for key in (None, "not-the-key", KEY.upper()):
            status, payload, headers = _request(url + route, method, body, key)
            assert status == 401, (route, key)
            assert headers.get("WWW-Authenticate") == "Bearer"
            error = _error(payload)
            assert error["type"] == "authentication_error" and error["code"] == 401
            assert KEY not in payload.decode() and KEY.upper() not in payload.decode()
        status, payload, _ = _request(url + route, method, body, KEY)
        assert status == 200, (route, payload[:300])


@pytest.mark.slow
def test_fastapis_docs_are_not_served_unless_asked_for(server) -> None:
    url, _, _ = server
    for route in ("/docs", "/redoc", "/openapi.json", "/no/such/route"):
        for key in (None, KEY):
            status, payload, _ = _request(url + route, key=key)
            assert status == 404 and _error(payload)["type"] == "not_found_error", route


@pytest.mark.slow
def test_the_plan_route_shows_no_host_details(server) -> None:
    url, _, folder = server
    status, payload, _ = _request(f"{url}/v1/plan", key=KEY)
    assert status == 200
    body = json.loads(payload)

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    shown = strings(body)
    assert not [s for s in shown if s.startswith("/")]  # no absolute path: the table, the router, the prompts
    assert str(folder) not in payload.decode() and KEY not in payload.decode()
    for run in body["table"]["manifest"]["runs"].values():
        assert set(run["host"]) <= {"threads"}
    # What a client needs stays: the plan (its one path cut to the file name), the table's identity, the figures.
    plan = json.loads((folder / "plan.json").read_text())
    assert body["plan"]["routing"] == plan["routing"] and body["plan"]["predicted"] == plan["predicted"]
    assert body["plan"]["inputs"]["table"] == "table.json"
    assert body["served"]["table_sha256"] == plan["inputs"]["table_sha256"]
    assert body["served"]["router"] == "paper4-tfidf.json"
    # /metrics names the plan by the hash of the document this route answers (the one a load test records).
    from genedge.serve.loadtest_document import document_sha256

    _, metrics, _ = _request(f"{url}/metrics", key=KEY)
    assert f'plan_sha256="{document_sha256(body["plan"])}"' in metrics.decode()


@pytest.mark.slow
def test_the_openai_client_needs_the_key_and_gets_image_urls(server) -> None:
    openai = pytest.importorskip("openai")
    url, _, _ = server
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).images.generate(prompt="a cube")
    assert caught.value.status_code == 401 and caught.value.body["type"] == "authentication_error"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    result = client.images.generate(
        prompt="a green cone", response_format="url", size="64x64", extra_body={"category": "Basic"}
    )
    (image,) = result.data
    assert image.url.startswith(f"{url}/v1/images/") and image.url.endswith(".png") and image.b64_json is None
    # A capability URL: fetched without the key, as OpenAI's image URLs are.
    status, png, headers = _request(image.url)
    assert status == 200 and headers.get_content_type() == "image/png" and _png_size(png) == (64, 64)
    assert result.model_extra["genedge"][0]["image_sha256"] == hashlib.sha256(png).hexdigest()
    # b64_json is still served, and a format the route does not know is refused naming the field.
    result = client.images.generate(prompt="a cone", response_format="b64_json", extra_body={"category": "Basic"})
    assert _png_size(base64.b64decode(result.data[0].b64_json)) == (64, 64)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a cone", response_format="jpeg")
    assert caught.value.body["param"] == "response_format"


@pytest.mark.slow
def test_images_pushed_out_of_the_store_answer_404(server) -> None:
    openai = pytest.importorskip("openai")
    url, _, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    # The server keeps 2 images (--image-max-count 2): of 3, the first is dropped to make room.
    result = client.images.generate(prompt="three cubes", n=3, response_format="url", extra_body={"category": "Basic"})
    urls = [item.url for item in result.data]
    assert len(set(urls)) == 3
    status, payload, _ = _request(urls[0])
    assert status == 404 and _error(payload)["type"] == "not_found_error"
    assert [_request(u)[0] for u in urls[1:]] == [200, 200]
    assert _request(f"{url}/v1/images/{'A' * 22}.png")[0] == 404  # an id never handed out


@pytest.mark.slow
def test_langchains_dalle_wrapper_gets_an_image_url(server) -> None:
    pytest.importorskip("langchain_community", reason="needs the test extra (langchain-community)")
    openai = pytest.importorskip("openai")
    from langchain_community.utilities.dalle_image_generator import DallEAPIWrapper

    url, _, _ = server
    # The wrapper sends no response_format (so the server answers URLs, as OpenAI's API does) and a model
    # name: the plan picks the model per request, so the served name is "genedge" and others are refused.
    wrapper = DallEAPIWrapper(api_key=KEY, base_url=f"{url}/v1", model="genedge", size="64x64", max_retries=0)
    image_url = wrapper.run("a castle on a hill")
    assert image_url.startswith(f"{url}/v1/images/")
    status, png, _ = _request(image_url)
    assert status == 200 and _png_size(png) == (64, 64)
    with pytest.raises(openai.BadRequestError) as caught:
        DallEAPIWrapper(api_key=KEY, base_url=f"{url}/v1", size="64x64", max_retries=0).run("a castle")
    assert caught.value.body["param"] == "model" and "dall-e-2" in caught.value.body["message"]


@pytest.mark.slow
def test_loadtest_sends_the_key_from_the_environment_or_its_option(server, tmp_path: Path) -> None:
    import pandas as pd

    url, _, _ = server
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"Prompt": [f"thing {i}" for i in range(3)], "Challenge": ["Basic"] * 3}).to_csv(prompts, index=False)
    args = ("loadtest", url, "--prompts", prompts, "--num-prompts", "3", "--request-rate", "5", "--no-progress")
    env = {"CUDA_VISIBLE_DEVICES": ""}
    refused = run_genedge(*args, env=env)
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr and "--api-key" in refused.stderr
    done = run_genedge(*args, "--result-dir", tmp_path / "result", env={**env, API_KEY_ENV: KEY})
    assert done.returncode == 0, done.stderr
    records = pd.read_parquet(tmp_path / "result" / "records")
    assert len(records) == 3 and (records["status"] == "ok").all()
    assert KEY not in "".join(p.read_text(errors="replace") for p in (tmp_path / "result").rglob("*.json"))
    done = run_genedge(*args, "--endpoint", "openai", "--api-key", KEY, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_key_never_reaches_the_servers_output(server) -> None:
    _, process, _ = server
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert "an API key is required" in out and "OpenAPI docs off" in out
    assert KEY not in out and KEY not in err
