"""The HTTP contract of a served plan: routes, request bodies, the response record and errors.

One definition for the server (:mod:`genedge.serve.app`) and the load generator
(:mod:`genedge.serve.loadtest`). Parsing is plain Python, so a request is checked the same way
whichever route carried it, and a bad one is a :class:`RequestError` naming its field.

Routes:
    ``POST /v1/generate`` — genedge's own: ``{"prompt": str, "category": str | null, "seed": int | null}``
    → ``{"image_png_b64": str, "record": RECORD}``.
    ``POST /v1/images/generations`` — OpenAI-compatible: ``{"prompt", "n", "size", "response_format",
    "model", "category"}`` (``category`` an extension, sent by the ``openai`` client with
    ``extra_body``) → ``{"created": int, "data": [{"b64_json": str}], "genedge": [RECORD, ...]}`` with
    ``response_format: "b64_json"``, else (``url``, OpenAI's default) ``"data": [{"url": str}]``, each an
    absolute URL of :data:`IMAGE_ROUTE` on the server.
    ``GET /v1/images/{id}.png`` → the PNG of a ``url`` answer, while the server keeps it (else 404).
    ``GET /v1/plan`` → ``{"plan": PLAN, "table": TABLE, "served": SERVED}``, every absolute path in them
    cut to its last part and the table's profile hosts left out (:func:`public_document`).
    ``GET /v1/stats`` → the share scheduler's accounting per device (:data:`STATS_FIELDS`).
    ``GET /v1/health`` → ``{"status": "ok"}``.
    ``GET /metrics`` → Prometheus' text format (:mod:`genedge.serve.metrics`).

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad
request (``param`` names the field), 401 with ``WWW-Authenticate: Bearer`` when the server has an API
key and the request does not carry it (:class:`Unauthorized`), 404 for an image no longer kept or an
unknown route, 503 with a ``Retry-After`` header (whole seconds) when the model's queue is longer than
the plan can serve within its bound.

Each body is one typed document here, written by ``to_dict`` and read by ``from_dict`` (a request by
:func:`parse_generate` / :func:`parse_openai`), so the server and the load generator cannot disagree
on a key. The routes' ``/v1/`` is the version of every body; a change of shape is a new route.
A response is read through the field reader, whose errors name the URL and the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from genedge.contract.fields import FieldReader

__all__ = [
    "GENERATE_ROUTE",
    "OPENAI_ROUTE",
    "PLAN_ROUTE",
    "STATS_ROUTE",
    "HEALTH_ROUTE",
    "METRICS_ROUTE",
    "IMAGE_ROUTE",
    "RESPONSE_FORMATS",
    "RECORD_FIELDS",
    "STATS_FIELDS",
    "CATEGORY_SOURCES",
    "MAX_JSON_DEPTH",
    "MAX_PROMPT_CHARS",
    "MAX_IMAGES_PER_REQUEST",
    "GenerationRequest",
    "GeneratedImage",
    "GenerateResponse",
    "ImageTiming",
    "ImagesResponse",
    "PlanResponse",
    "ServedReplica",
    "ServedNotes",
    "ModelStats",
    "DeviceStats",
    "StatsResponse",
    "ErrorBody",
    "RequestError",
    "Overloaded",
    "Unauthorized",
    "error_body",
    "image_url",
    "public_document",
    "parse_generate",
    "parse_openai",
]

GENERATE_ROUTE = "/v1/generate"
OPENAI_ROUTE = "/v1/images/generations"
PLAN_ROUTE = "/v1/plan"
STATS_ROUTE = "/v1/stats"
HEALTH_ROUTE = "/v1/health"
#: Where a ``response_format: "url"`` image is kept for a while (:mod:`genedge.serve.images`).
IMAGE_ROUTE = "/v1/images/{image_id}.png"
#: Prometheus' conventional path, outside ``/v1/``: its body is Prometheus' text format, versioned by Prometheus.
METRICS_ROUTE = "/metrics"

#: Where a request's category came from: the request itself, or the prompt router's prediction.
CATEGORY_SOURCES = ("given", "router")

#: The record of one generated image, in the response and (with the client's fields) in loadtest files.
#: Times are the server's, in seconds: queue_wait_s from arrival at the device to the start of the
#: call, service_s the call (text encoding, every step, decoding) under the share scheduler,
#: response_s from arrival at the server's ingress to the image being ready.
RECORD_FIELDS: dict[str, str] = {
    "request_id": "string",  # the ingress's start token and a count: unique across its restarts
    "category": "string",
    "category_source": "string",
    "category_probability": "double",  # the router's probability of its category; null when given
    "model": "string",
    "steps": "int64",
    "device": "int64",
    "batch_size": "int64",
    "seed": "int64",
    "queue_wait_s": "double",
    "service_s": "double",
    "share": "double",  # the device share the call started on: service_s × share is its time on the whole device
    "response_s": "double",
    "image_sha256": "string",
}


@dataclass(frozen=True)
class ModelStats:
    """One model's share account and counters in ``GET /v1/stats``.

    device_s of device time its slices took and backlogged_s of wall time it had work (both
    required: they are the share account); realized_share = device_s / backlogged_s, the share it
    got while it wanted the device. The counters are None where a server gives none.
    """

    device_s: float
    backlogged_s: float
    planned_share: float | None = None
    steps: int | None = None
    realized_share: float | None = None
    slices: int | None = None
    calls: int | None = None
    requests: int | None = None
    images: int | None = None
    queued: int | None = None
    rejected: int | None = None


#: The fields of each model in ``GET /v1/stats``, in the order the body lists them.
STATS_FIELDS = (
    "planned_share",
    "steps",
    "device_s",
    "backlogged_s",
    "realized_share",
    "slices",
    "calls",
    "requests",
    "images",
    "queued",
    "rejected",
)

#: Longer prompts are refused: the text encoders read 77 tokens, so this only bounds abuse.
MAX_PROMPT_CHARS = 10_000
#: The deepest nesting of arrays and objects a request body may have: genedge's and OpenAI's are two deep
#: (``extra_body``-style fields inside the request object); a deeper body is refused before it is parsed.
MAX_JSON_DEPTH = 16
# A JSON string (skipped whole, escapes included) or a bracket: what the depth check needs to see.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
#: ``response_format`` values of the OpenAI-compatible route, the default first: ``url``, as OpenAI's API
#: answers a request that names none (clients such as LangChain's ``DallEAPIWrapper`` send none and read ``url``).
RESPONSE_FORMATS = ("url", "b64_json")
#: ``n`` of one OpenAI-compatible request.
MAX_IMAGES_PER_REQUEST = 8


class RequestError(ValueError):
    """A request the server refuses: HTTP ``status``, the field (``param``) that is wrong, and the error's
    ``type`` in OpenAI's body (``error_type``)."""

    def __init__(
        self, message: str, *, param: str | None = None, status: int = 400, error_type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.error_type = error_type


class Overloaded(RequestError):
    """The model's queue is past the bound the plan can serve: 503, retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, status=503, error_type="server_overloaded")
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds (at least 1), as HTTP requires."""
        return str(max(1, math.ceil(self.retry_after_s)))


class Unauthorized(RequestError):
    """The server has an API key and the request does not carry it: 401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401, error_type="authentication_error")


def json_body(raw: bytes) -> Any:
    """A request body as JSON, its nesting checked first.

    Raises:
        RequestError: the body is not UTF-8 JSON, or nests arrays and objects deeper than :data:`MAX_JSON_DEPTH`
            (400, without parsing it: a body nested 100,000 deep would exhaust the parser's recursion).
    """
    depth = 0
    for token in _JSON_TOKEN.finditer(raw):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise RequestError(f"the request body nests deeper than {MAX_JSON_DEPTH} arrays and objects")
        elif bracket in (b"]", b"}"):
            depth -= 1
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("the request body is not valid JSON") from None


def _document(reader: FieldReader, body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise reader.fail("body", f"expected a JSON object, but got {type(body).__name__}")
    return body


@dataclass(frozen=True)
class ErrorBody:
    """An error response's body, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    message: str
    type: str | None = None
    param: str | None = None
    code: int | None = None

    @classmethod
    def from_error(cls, error: RequestError) -> ErrorBody:
        """The body that answers ``error``."""
        return cls(message=error.message, type=error.error_type, param=error.param, code=error.status)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_dict(cls, body: Any, where: str) -> ErrorBody:
        """Read an error body that ``where`` answered.

        Raises:
            ArtifactError: naming ``where`` and the field.
        """
        reader = FieldReader(where)
        error = reader.get(_document(reader, body), "error", "", Mapping)
        return cls(
            message=reader.get(error, "message", "error", str),
            type=reader.opt(error, "type", "error", str),
            param=reader.opt(error, "param", "error", str),
            code=reader.opt(error, "code", "error", int),
        )


def error_body(error: RequestError) -> dict[str, Any]:
    """The JSON body of an error response, in OpenAI's shape."""
    return ErrorBody.from_error(error).to_dict()


@dataclass(frozen=True)
class GenerationRequest:
    """One checked request: ``n`` images of ``prompt``, of ``category`` when the client gave one.

    The server reads it with :func:`parse_generate` or :func:`parse_openai`; a client writes it with
    :meth:`generate_body` or :meth:`openai_body`.
    """

    prompt: str
    category: str | None = None
    seed: int | None = None
    n: int = 1
    response_format: str = "b64_json"  # as a client writes it (a load test needs the bytes); parse_openai
    # gives a body without one the route's default, RESPONSE_FORMATS[0]

    def generate_body(self) -> dict[str, Any]:
        """The ``POST /v1/generate`` body (one image; ``n`` is not sent)."""
        body: dict[str, Any] = {"prompt": self.prompt, "seed": self.seed}
        if self.category is not None:
            body["category"] = self.category
        return body

    def openai_body(self) -> dict[str, Any]:
        """The ``POST /v1/images/generations`` body (the route takes no seed)."""
        body: dict[str, Any] = {"prompt": self.prompt, "n": self.n, "response_format": self.response_format}
        if self.category is not None:
            body["category"] = self.category
        return body


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class GeneratedImage:
    """One image the server generated: its PNG bytes and its record (:data:`RECORD_FIELDS`).

    A response without a record (or one that is not an object) reads as an empty record: the image
    stands, the server's measurements are missing.
    """

    png: bytes
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def png_b64(self) -> str:
        """The PNG as base64, as the bodies carry it."""
        return base64.b64encode(self.png).decode("ascii")

    @classmethod
    def read(cls, reader: FieldReader, encoded: Any, path: str, record: Any) -> GeneratedImage:
        """The image whose base64 PNG is ``encoded`` (field ``path``), with ``record``."""
        encoded = reader.check(encoded, path, str)
        try:
            png = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as err:
            raise reader.fail(path, f"expected base64, but it is not valid ({err})") from err
        if not png.startswith(_PNG_MAGIC):
            raise reader.fail(path, "expected a PNG image, but the bytes are not one")
        return cls(png, dict(record) if isinstance(record, Mapping) else {})


@dataclass(frozen=True)
class ImageTiming:
    """What an image's record (:data:`RECORD_FIELDS`) says of its model and times, typed: what the server's
    metrics and recalibration read."""

    model: str
    steps: int
    queue_wait_s: float
    service_s: float
    response_s: float

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> ImageTiming:
        """The timing of a record the server made (every field present)."""
        return cls(
            model=str(record["model"]),
            steps=int(record["steps"]),
            queue_wait_s=float(record["queue_wait_s"]),
            service_s=float(record["service_s"]),
            response_s=float(record["response_s"]),
        )


@dataclass(frozen=True)
class GenerateResponse:
    """The answer of ``POST /v1/generate``: ``{"image_png_b64": str, "record": RECORD}``."""

    image: GeneratedImage

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {"image_png_b64": self.image.png_b64, "record": self.image.record}

    @classmethod
    def from_dict(cls, body: Any, where: str) -> GenerateResponse:
        """Read the body ``where`` answered.

        Raises:
            ArtifactError: naming ``where`` and the field.
        """
        reader = FieldReader(where)
        body = _document(reader, body)
        encoded = reader.get(body, "image_png_b64", "", str)
        return cls(GeneratedImage.read(reader, encoded, "image_png_b64", body.get("record")))


@dataclass(frozen=True)
class ImagesResponse:
    """The answer of ``POST /v1/images/generations``: ``{"created", "data": [{"b64_json"}], "genedge": [RECORD]}``
    (``[{"url"}]`` where the request asked for URLs).

    Attributes:
        images: the images, each with its record (from ``genedge``, genedge's extension).
        created: Unix seconds, as OpenAI's answer has them (None where a server sent none).
        urls: each image's URL, for a ``response_format: "url"`` answer (None: the images go as ``b64_json``).
    """

    images: tuple[GeneratedImage, ...]
    created: int | None = None
    urls: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON body (``revised_prompt`` null: the prompt is served as sent)."""
        if self.urls is None:
            data = [{"b64_json": image.png_b64, "revised_prompt": None} for image in self.images]
        else:
            data = [{"url": url, "revised_prompt": None} for url in self.urls]
        return {"created": self.created, "data": data, "genedge": [image.record for image in self.images]}

    @classmethod
    def from_dict(cls, body: Any, where: str) -> ImagesResponse:
        """Read the body ``where`` answered.

        Raises:
            ArtifactError: naming ``where`` and the field.
        """
        reader = FieldReader(where)
        body = _document(reader, body)
        data = reader.get(body, "data", "", list)
        records = body.get("genedge")
        records = records if isinstance(records, list) else []
        images = tuple(
            GeneratedImage.read(
                reader,
                reader.get(item, "b64_json", f"data.{i}", str),
                f"data.{i}.b64_json",
                records[i] if i < len(records) else None,
            )
            for i, item in enumerate(data)
        )
        return cls(images, reader.opt(body, "created", "", int))


@dataclass(frozen=True)
class PlanResponse:
    """The answer of ``GET /v1/plan``: the plan and table documents served, and the server's notes."""

    plan: Mapping[str, Any]
    table: Mapping[str, Any]
    served: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {"plan": self.plan, "table": self.table, "served": self.served}

    @classmethod
    def from_dict(cls, body: Any, where: str) -> PlanResponse:
        """Read the body ``where`` answered (the plan and table as documents, not yet validated).

        Raises:
            ArtifactError: naming ``where`` and the field.
        """
        reader = FieldReader(where)
        body = _document(reader, body)
        served = reader.opt(body, "served", "", dict)
        return cls(reader.get(body, "plan", "", dict), reader.get(body, "table", "", dict), served or {})


@dataclass(frozen=True)
class ServedReplica:
    """One replica in ``GET /v1/plan``'s ``served.models`` (what :meth:`~genedge.serve.spec.ServeSpec.summary`
    writes): the model key, the device it runs on, its steps, share, largest batch and the plan's call time
    on that share (s)."""

    key: str
    name: str
    device: int
    steps: int
    share: float
    max_batch: int
    service_s: float


@dataclass(frozen=True)
class ServedNotes:
    """What a server says it serves (``GET /v1/plan``'s ``served``), as far as a reader of its records needs it.

    Attributes:
        models: every replica served, with its device and share.
        scheduled: True where the server serves a plan schedule (``served.schedule`` is not null): its steps,
            batch sizes and shares change with the band it switches to.
    """

    models: tuple[ServedReplica, ...]
    scheduled: bool

    @classmethod
    def from_dict(cls, served: Any, where: str) -> ServedNotes:
        """Read a server's notes (``where`` names them in errors, e.g. ``"RESULT/loadtest.json: served"``).

        Raises:
            ArtifactError: naming ``where`` and the field (``models``: missing where the server said nothing of
                its replicas).
        """
        reader = FieldReader(where)
        served = _document(reader, served)
        models = reader.get(served, "models", "", list)
        return cls(
            models=tuple(_replica(reader, entry, f"models.{i}") for i, entry in enumerate(models)),
            scheduled=served.get("schedule") is not None,
        )

    def share(self, key: str, device: int) -> float | None:
        """The share of ``key``'s replica on ``device``, or None where none runs there."""
        return next((m.share for m in self.models if m.key == key and m.device == device), None)


def _replica(reader: FieldReader, entry: Any, path: str) -> ServedReplica:
    entry = reader.check(entry, path, dict)
    return ServedReplica(
        key=reader.name(reader.get(entry, "key", path, str), f"{path}.key"),
        name=reader.get(entry, "name", path, str),
        device=reader.count(entry, "device", path),
        steps=reader.count(entry, "steps", path, minimum=1),
        share=reader.number(entry, "share", path, minimum=0.0, strict=True),
        max_batch=reader.count(entry, "max_batch", path, minimum=1),
        service_s=reader.number(entry, "service_s", path, minimum=0.0, strict=True),
    )


def image_url(base_url: str, image_id: str) -> str:
    """The absolute URL of a kept image: the server's base URL (as the request reached it) and :data:`IMAGE_ROUTE`."""
    return base_url.rstrip("/") + IMAGE_ROUTE.format(image_id=image_id)


def _is_absolute_path(text: str) -> bool:
    """Whether ``text`` reads as an absolute file path (POSIX, home-relative or Windows), not a URL or prose."""
    if "\n" in text or "://" in text:
        return False
    return text.startswith(("/", "~/")) or PureWindowsPath(text).is_absolute()


def public_document(document: Any) -> Any:
    """A copy of a JSON value with every absolute file path cut to its last part (``/home/a/table.json`` →
    ``table.json``): what a server shows its clients of the files it was started with.

    The paths of the machine that made a plan or a table (or serves them) say nothing a client needs,
    and something about the host it should not learn; the server logs them at start instead.
    """
    if isinstance(document, Mapping):
        return {key: public_document(value) for key, value in document.items()}
    if isinstance(document, list):
        return [public_document(value) for value in document]
    if isinstance(document, str) and _is_absolute_path(document):
        return PureWindowsPath(document).name if "\\" in document else PurePosixPath(document).name
    return document


def _body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError(f"expected a JSON object as the request body, but got {type(body).__name__}")
    return body


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("expected a non-empty string", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f"expected at most {MAX_PROMPT_CHARS} characters, but got {len(prompt)}", param="prompt")
    return prompt


def _category(body: Mapping[str, Any], categories: Sequence[str]) -> str | None:
    category = body.get("category")
    if category is None:
        return None
    if category not in categories:
        raise RequestError(
            f"expected one of the plan's categories {list(categories)}, but got {category!r}", param="category"
        )
    return category


def _unknown(body: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise RequestError(f"unknown field; expected only {sorted(known)}", param=unknown[0])


def parse_generate(body: Any, categories: Sequence[str]) -> GenerationRequest:
    """Check a ``POST /v1/generate`` body.

    Raises:
        RequestError: naming the field: a missing or empty prompt, an unknown category, a seed that is
            not a non-negative integer, or a field the route does not know.
    """
    body = _body(body)
    _unknown(body, ("prompt", "category", "seed"))
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise RequestError(f"expected an integer in [0, 2**63), but got {seed!r}", param="seed")
    return GenerationRequest(prompt=_prompt(body), category=_category(body, categories), seed=seed)


#: Fields of OpenAI's image request that a served plan reads or may safely ignore.
_OPENAI_FIELDS = ("prompt", "n", "size", "response_format", "model", "category", "user", "quality", "style")


def parse_openai(body: Any, categories: Sequence[str], *, resolution: int, served_model: str) -> GenerationRequest:
    """Check a ``POST /v1/images/generations`` body.

    ``size`` must be the resolution the plan was calibrated at (its latencies hold there only);
    ``response_format`` one of :data:`RESPONSE_FORMATS` (``url`` when not given, as OpenAI's);
    ``model``, when given, must be ``served_model`` (the plan decides the model per request).

    Raises:
        RequestError: naming the field.
    """
    body = _body(body)
    _unknown(body, _OPENAI_FIELDS)
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES_PER_REQUEST:
        raise RequestError(f"expected an integer in [1, {MAX_IMAGES_PER_REQUEST}], but got {n!r}", param="n")
    size = body.get("size")
    if size is not None and size != "auto" and size != f"{resolution}x{resolution}":
        raise RequestError(
            f"this plan serves {resolution}x{resolution} images (the resolution it was calibrated at), "
            f"but the request asks for {size!r}",
            param="size",
        )
    response_format = body.get("response_format")
    if response_format is None:
        response_format = RESPONSE_FORMATS[0]
    if response_format not in RESPONSE_FORMATS:
        raise RequestError(
            f"expected one of {list(RESPONSE_FORMATS)}, but the request asks for {response_format!r}",
            param="response_format",
        )
    model = body.get("model")
    if model is not None and model != served_model:
        raise RequestError(
            f"the plan chooses the model per request; send model={served_model!r} or none, not {model!r}",
            param="model",
        )
    return GenerationRequest(
        prompt=_prompt(body), category=_category(body, categories), n=n, response_format=response_format
    )


@dataclass(frozen=True)
class DeviceStats:
    """One device's models in ``GET /v1/stats``: model key → its account; ``restarts``: how many times a replica
    serving the device was replaced (its counters carried over, :mod:`genedge.serve.accounts`; None where a
    server does not say)."""

    device: int
    models: Mapping[str, ModelStats]
    restarts: int | None = None


_STATS_SECONDS_AND_SHARES = ("planned_share", "device_s", "backlogged_s", "realized_share")  # the rest count


def _read_model_stats(reader: FieldReader, obj: Any, path: str) -> ModelStats:
    obj = reader.check(obj, path, dict)
    values = {}
    for name in STATS_FIELDS:
        kind = float if name in _STATS_SECONDS_AND_SHARES else int
        required = name in ("device_s", "backlogged_s")
        values[name] = (reader.get if required else reader.opt)(obj, name, path, kind)
    return ModelStats(**values)


@dataclass(frozen=True)
class StatsResponse:
    """The answer of ``GET /v1/stats``: ``{"uptime_s", "devices": [{"device", "models": {KEY: STATS}}]}``."""

    uptime_s: float | None
    devices: tuple[DeviceStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON body (each model's fields in :data:`STATS_FIELDS` order)."""
        return {
            "uptime_s": self.uptime_s,
            "devices": [
                {
                    "device": device.device,
                    "restarts": device.restarts,
                    "models": {
                        key: {name: getattr(stats, name) for name in STATS_FIELDS}
                        for key, stats in device.models.items()
                    },
                }
                for device in self.devices
            ],
        }

    @classmethod
    def from_dict(cls, body: Any, where: str) -> StatsResponse:
        """Read the body ``where`` answered.

        Raises:
            ArtifactError: naming ``where`` and the field.
        """
        reader = FieldReader(where)
        return cls.read(reader, _document(reader, body), "")

    @classmethod
    def read(cls, reader: FieldReader, body: Mapping[str, Any], path: str) -> StatsResponse:
        """Read a stats body at field ``path`` of ``reader``'s document (``""``: the document itself)."""
        devices = []
        for i, device in enumerate(reader.get(body, "devices", path, list)):
            at = f"{path}.devices.{i}" if path else f"devices.{i}"
            models = reader.get(device, "models", at, dict)
            devices.append(
                DeviceStats(
                    reader.get(device, "device", at, int),
                    {key: _read_model_stats(reader, stats, f"{at}.models.{key}") for key, stats in models.items()},
                    reader.opt(device, "restarts", at, int),
                )
            )
        return cls(reader.opt(body, "uptime_s", path, float), tuple(devices))
