"""The HTTP contract of a served plan: routes, request bodies, the response record and errors.

One definition for the server (:mod:`genedge.serve.app`) and the load generator
(:mod:`genedge.serve.loadtest`). Parsing is plain Python, so a request is checked the same way
whichever route carried it, and a bad one is a :class:`RequestError` naming its field.

Routes:
    ``POST /v1/generate`` — genedge's own: ``{"prompt": str, "category": str | null, "seed": int | null}``
    → ``{"image_png_b64": str, "record": RECORD}``.
    ``POST /v1/images/generations`` — OpenAI-compatible: ``{"prompt", "n", "size", "response_format",
    "model", "category"}`` (``category`` an extension, sent by the ``openai`` client with
    ``extra_body``) → ``{"created": int, "data": [{"b64_json": str}], "genedge": [RECORD, ...]}``.
    ``GET /v1/plan`` → ``{"plan": PLAN, "table": TABLE, "served": SERVED}``.
    ``GET /v1/stats`` → the share scheduler's accounting per device (:data:`STATS_FIELDS`).
    ``GET /v1/health`` → ``{"status": "ok"}``.

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad
request (``param`` names the field), 503 with a ``Retry-After`` header (whole seconds) when the
model's queue is longer than the plan can serve within its bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GENERATE_ROUTE",
    "OPENAI_ROUTE",
    "PLAN_ROUTE",
    "STATS_ROUTE",
    "HEALTH_ROUTE",
    "RECORD_FIELDS",
    "STATS_FIELDS",
    "CATEGORY_SOURCES",
    "MAX_PROMPT_CHARS",
    "MAX_IMAGES_PER_REQUEST",
    "GenerationRequest",
    "RequestError",
    "Overloaded",
    "error_body",
    "parse_generate",
    "parse_openai",
]

GENERATE_ROUTE = "/v1/generate"
OPENAI_ROUTE = "/v1/images/generations"
PLAN_ROUTE = "/v1/plan"
STATS_ROUTE = "/v1/stats"
HEALTH_ROUTE = "/v1/health"

#: Where a request's category came from: the request itself, or the prompt router's prediction.
CATEGORY_SOURCES = ("given", "router")

#: The record of one generated image, in the response and (with the client's fields) in loadtest files.
#: Times are the server's, in seconds: queue_wait_s from arrival at the device to the start of the
#: call, service_s the call (text encoding, every step, decoding) under the share scheduler,
#: response_s from arrival at the server's ingress to the image being ready.
RECORD_FIELDS: dict[str, str] = {
    "request_id": "string",
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
    "response_s": "double",
    "image_sha256": "string",
}

#: Per model in ``GET /v1/stats``: device_s of device time its slices took, backlogged_s of wall time
#: it had work, realized_share = device_s / backlogged_s (the share it got while it wanted the device).
STATS_FIELDS = (
    "planned_share",
    "steps",
    "device_s",
    "backlogged_s",
    "realized_share",
    "slices",
    "requests",
    "images",
    "queued",
    "rejected",
)

#: Longer prompts are refused: the text encoders read 77 tokens, so this only bounds abuse.
MAX_PROMPT_CHARS = 10_000
#: ``n`` of one OpenAI-compatible request.
MAX_IMAGES_PER_REQUEST = 8


class RequestError(ValueError):
    """A request the server refuses: HTTP ``status``, and the field (``param``) that is wrong."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


class Overloaded(RequestError):
    """The model's queue is past the bound the plan can serve: 503, retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, status=503)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds (at least 1), as HTTP requires."""
        return str(max(1, math.ceil(self.retry_after_s)))


def error_body(error: RequestError) -> dict[str, Any]:
    """The JSON body of an error response, in OpenAI's shape."""
    kind = "server_overloaded" if isinstance(error, Overloaded) else "invalid_request_error"
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.status}}


@dataclass(frozen=True)
class GenerationRequest:
    """One checked request: ``n`` images of ``prompt``, of ``category`` when the client gave one."""

    prompt: str
    category: str | None = None
    seed: int | None = None
    n: int = 1


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
    ``response_format`` must be ``b64_json`` (a served plan keeps no image store to link to);
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
    if response_format not in (None, "b64_json"):
        raise RequestError(
            f"only 'b64_json' is served, but the request asks for {response_format!r}", param="response_format"
        )
    model = body.get("model")
    if model is not None and model != served_model:
        raise RequestError(
            f"the plan chooses the model per request; send model={served_model!r} or none, not {model!r}",
            param="model",
        )
    return GenerationRequest(prompt=_prompt(body), category=_category(body, categories), n=n)
