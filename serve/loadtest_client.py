"""The load tester's HTTP client: the served plan, the share accounting, and one request sent and recorded.

One endpoint registry (:data:`ENDPOINTS`) says, per route a load test may target, how a scheduled
request becomes a body and how an answer becomes an image and the server's record; both use the
typed bodies of :mod:`genedge.serve.protocol`, so the client and the server share one definition.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genedge.contract.files import ArtifactError
from genedge.profiler._imports import require
from genedge.serve.loadtest_config import LoadTestError
from genedge.serve.loadtest_document import document_sha256
from genedge.serve.loadtest_layout import CLIENT_FIELDS
from genedge.serve.protocol import (
    GENERATE_ROUTE,
    OPENAI_ROUTE,
    PLAN_ROUTE,
    RECORD_FIELDS,
    STATS_ROUTE,
    ErrorBody,
    GeneratedImage,
    GenerateResponse,
    GenerationRequest,
    ImagesResponse,
    PlanResponse,
    StatsResponse,
)

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable
    from genedge.serve.loadtest_config import LoadConfig
    from genedge.serve.loadtest_schedule import ScheduledRequest

__all__ = ["ENDPOINTS", "Endpoint", "ServedPlan", "auth_headers", "fetch_plan", "fetch_stats", "send"]

logger = logging.getLogger(__name__)

# A GET of the plan or the stats: the server answers from memory, so a slow answer is a dead one.
_GET_TIMEOUT_S = 30.0


def _one_image(body: Any, where: str) -> GeneratedImage:
    images = ImagesResponse.from_dict(body, where).images
    if len(images) != 1:
        raise ArtifactError(where, "data", f"expected one image (the request asked for n=1), but got {len(images)}")
    return images[0]


@dataclass(frozen=True)
class Endpoint:
    """A route a load test may target.

    Attributes:
        route: its path.
        sends_seed: whether the route takes the request's image seed.
        body: the JSON body of a request.
        image: the image and record of a 200 answer (raises ArtifactError naming the field).
    """

    route: str
    sends_seed: bool
    body: Callable[[GenerationRequest], dict[str, Any]]
    image: Callable[[Any, str], GeneratedImage]


#: The routes a load test may target, by ``--endpoint`` name: genedge's own, or the OpenAI-compatible one.
ENDPOINTS: dict[str, Endpoint] = {
    "genedge": Endpoint(
        GENERATE_ROUTE,
        sends_seed=True,
        body=GenerationRequest.generate_body,
        image=lambda body, where: GenerateResponse.from_dict(body, where).image,
    ),
    "openai": Endpoint(OPENAI_ROUTE, sends_seed=False, body=GenerationRequest.openai_body, image=_one_image),
}


@dataclass(frozen=True)
class ServedPlan:
    """What ``GET /v1/plan`` answered: the plan document, its calibration table and the server's notes."""

    plan: dict[str, Any]
    table: CalibrationTable
    table_document: dict[str, Any]
    served: dict[str, Any]

    @property
    def plan_sha256(self) -> str:
        """SHA-256 of the plan document as canonical JSON: a resumed test must meet the same plan."""
        return document_sha256(self.plan)


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The headers that carry ``api_key`` as OpenAI's clients send theirs (none without a key)."""
    return {} if api_key is None else {"Authorization": f"Bearer {api_key}"}


async def _get_json(session: Any, url: str) -> tuple[int, Any]:
    aiohttp = require("aiohttp", extra="loadtest")

    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=_GET_TIMEOUT_S)) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        reason = "no answer within " + f"{_GET_TIMEOUT_S:g} s" if isinstance(err, asyncio.TimeoutError) else str(err)
        raise LoadTestError(f"{url}: cannot reach the server ({reason or type(err).__name__})") from err
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _served_plan(url: str, status: int, body: Any) -> ServedPlan:
    from genedge.contract.table_file import table_from_dict
    from genedge.optimizer.plan_file import validate_plan

    if status == 401:
        message, _ = _error_fields(url, status, body)
        raise LoadTestError(f"{message}; give the server's key with --api-key or the environment's GENEDGE_API_KEY")
    if status != 200 or not isinstance(body, Mapping) or not {"plan", "table"} <= set(body):
        got = f"HTTP {status}" + ("" if isinstance(body, Mapping) else ", not a JSON object")
        if isinstance(body, Mapping):
            got += f" with fields {sorted(body)[:8]}"
        raise LoadTestError(
            f"{url}: expected a genedge server's plan (200, a JSON object with 'plan' and 'table'), but got {got}"
        )
    answer = PlanResponse.from_dict(body, url)
    plan, table = dict(answer.plan), dict(answer.table)
    validate_plan(plan, f"{url} plan")
    return ServedPlan(plan, table_from_dict(table, f"{url} table"), table, dict(answer.served))


def fetch_plan(url: str, *, api_key: str | None = None) -> ServedPlan:
    """``GET {url}/v1/plan``: the plan a genedge server serves, and its calibration table.

    Args:
        url: the server's base URL.
        api_key: the server's API key, where it requires one.

    Raises:
        LoadTestError: the server cannot be reached, refuses the key (401), or answers something that is
            not a genedge plan.
        ArtifactError: the plan or the table is malformed (naming the field).
    """
    aiohttp = require("aiohttp", extra="loadtest")

    async def get() -> ServedPlan:
        async with aiohttp.ClientSession(headers=auth_headers(api_key)) as session:
            return _served_plan(url.rstrip("/") + PLAN_ROUTE, *await _get_json(session, url.rstrip("/") + PLAN_ROUTE))

    return asyncio.run(get())


async def fetch_stats(session: Any, base_url: str) -> StatsResponse | None:
    """``GET /v1/stats``, or None (with a warning) where the server does not give it."""
    url = base_url + STATS_ROUTE
    try:
        status, body = await _get_json(session, url)
    except LoadTestError as err:
        logger.warning("%s; realized shares will not be measured", err)
        return None
    if status != 200:
        logger.warning("%s: no share accounting (HTTP %s); realized shares will not be measured", url, status)
        return None
    try:
        return StatsResponse.from_dict(body, url)
    except ArtifactError as err:
        logger.warning("%s; realized shares will not be measured", err)
        return None


def _server_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, kind in RECORD_FIELDS.items():
        value = record.get(name)
        if value is not None:
            try:
                value = {"string": str, "double": float, "int64": int}[kind](value)
            except (TypeError, ValueError):
                value = None  # a field of another type is no measurement
        out[name] = value
    return out


def _error_fields(url: str, status: int, body: Any) -> tuple[str, str | None]:
    try:
        error = ErrorBody.from_dict(body, url)
    except ArtifactError:  # not an error in the contract's shape: the status is all there is
        return f"HTTP {status}", None
    return f"HTTP {status}: {error.message}", error.param


def _answered(
    row: dict[str, Any], endpoint: Endpoint, url: str, status: int, payload: bytes, retry_after: str | None
) -> bytes | None:
    """Record an answer in ``row``; the PNG bytes of a good one."""
    row["http_status"] = status
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if status != 200:
        message, param = _error_fields(url, status, parsed)
        row.update(status="rejected" if status == 503 else "error", error=message, error_param=param)
        if retry_after is not None:
            try:
                row["retry_after_s"] = float(retry_after)
            except ValueError:
                pass  # an HTTP-date; the seconds are what a rate study reads
        return None
    try:
        image = endpoint.image(parsed, url)
    except ArtifactError as err:
        row.update(status="error", error=f"HTTP 200 but {err}")
        return None
    row.update(_server_fields(image.record))
    row.update(status="ok", received_sha256=hashlib.sha256(image.png).hexdigest())
    return image.png


async def send(
    session: Any, config: LoadConfig, request: ScheduledRequest, clock: Callable[[], float]
) -> tuple[dict[str, Any], bytes | None]:
    """Send one request at once and record it: a row of :data:`~genedge.serve.loadtest_layout.CLIENT_FIELDS`
    and :data:`~genedge.serve.protocol.RECORD_FIELDS` (``session`` left to the caller), and the PNG bytes
    when it succeeded."""
    aiohttp = require("aiohttp", extra="loadtest")

    endpoint = ENDPOINTS[config.endpoint]
    url = config.base_url + endpoint.route
    seed = request.seed if endpoint.sends_seed else None
    body = endpoint.body(GenerationRequest(prompt=request.prompt, category=request.category, seed=seed))
    row: dict[str, Any] = {name: None for name in CLIENT_FIELDS}
    row.update(
        index=request.index,
        scheduled_s=request.time_s,
        prompt=request.prompt,
        requested_category=request.category,
        label_category=request.label_category,
        requested_seed=seed,
    )
    row.update({name: None for name in RECORD_FIELDS})
    image = None
    sent = row["sent_s"] = clock()
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=config.timeout_s)) as response:
            payload = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
        row["client_response_s"] = clock() - sent
        image = _answered(row, endpoint, url, status, payload, retry_after)
    except asyncio.TimeoutError:
        row.update(status="timeout", client_response_s=clock() - sent, error=f"no answer within {config.timeout_s:g} s")
    except aiohttp.ClientError as err:
        row.update(status="error", client_response_s=clock() - sent, error=f"{type(err).__name__}: {err}")
    return row, image
