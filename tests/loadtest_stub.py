"""A genedge server for load tests: the HTTP contract of :mod:`genedge.serve.protocol` over 127.0.0.1,
with a trivial generator (a fixed service time, a small real PNG and a record), in a thread of the
test process; and the plan it serves."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import threading
from pathlib import Path

from genedge import data
from genedge.cli import main
from genedge.serve import protocol

TABLE = data.path("tables", "reference-a100.json")
PROMPTS = data.path("prompts", "smoke.tsv")


def write_plan(out: Path) -> Path:
    """An open-arrival plan on the shipped table made by `genedge plan`: sd15 and sd21 both deployed, Detail
    split between them."""
    status = main(["plan", "--rate", "2", "--models", "sd15,sd21", "--compare", "genedge", "--out", str(out)])
    assert status == 0
    return out


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class StubServer:
    """The HTTP contract with a trivial generator: a fixed service time, a small real PNG and a record.

    Counts requests by seed (or prompt), the most in flight at once, and answers 503 when more than
    ``queue_bound`` requests are in flight.
    """

    def __init__(self, plan: dict, *, service_s: float = 0.02, queue_bound: int | None = None) -> None:
        self.plan = plan
        self.table = json.loads(Path(TABLE).read_text())
        self.service_s = service_s
        self.queue_bound = queue_bound
        self.png = _png()
        self.seen: dict[object, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.device_s = dict.fromkeys(plan["models"], 0.0)
        self.backlogged_s = dict.fromkeys(plan["models"], 0.0)
        self.lock = threading.Lock()
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- routes
    async def plan_route(self, request):
        from aiohttp import web

        return web.json_response({"plan": self.plan, "table": self.table, "served": {"stub": True}})

    async def stats_route(self, request):
        from aiohttp import web

        models = {
            k: {
                "planned_share": self.plan["models"][k]["share"],
                "device_s": self.device_s[k],
                "backlogged_s": self.backlogged_s[k],
            }
            for k in self.plan["models"]
        }
        return web.json_response({"uptime_s": 1.0, "devices": [{"device": 0, "models": models}]})

    async def generate(self, request, openai: bool):
        from aiohttp import web

        body = await request.json()
        categories = list(self.plan["routing"])
        try:
            if openai:
                parsed = protocol.parse_openai(body, categories, resolution=512, served_model="genedge")
            else:
                parsed = protocol.parse_generate(body, categories)
        except protocol.RequestError as err:
            return web.json_response(protocol.error_body(err), status=err.status)
        key = parsed.seed if parsed.seed is not None else parsed.prompt
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.queue_bound is not None and self.in_flight >= self.queue_bound:
                err = protocol.Overloaded("queue full", retry_after_s=0.5)
                return web.json_response(
                    protocol.error_body(err), status=503, headers={"Retry-After": err.retry_after_header}
                )
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.service_s)
        finally:
            with self.lock:
                self.in_flight -= 1
        category = parsed.category or categories[0]
        row = self.plan["routing"][category]
        model = max(row, key=row.get)
        share = self.plan["models"][model]["share"]
        self.device_s[model] += self.service_s * share
        self.backlogged_s[model] += self.service_s
        record = {
            "request_id": f"r{len(self.seen)}",
            "category": category,
            "category_source": "given" if parsed.category else "router",
            "category_probability": None if parsed.category else 0.9,
            "model": model,
            "steps": self.plan["models"][model]["steps"],
            "device": 0,
            "batch_size": 1,
            "seed": parsed.seed,
            "queue_wait_s": 0.001,
            "service_s": self.service_s,
            "response_s": self.service_s + 0.001,
            "image_sha256": hashlib.sha256(self.png).hexdigest(),
        }
        encoded = base64.b64encode(self.png).decode()
        if openai:
            return web.json_response({"created": 0, "data": [{"b64_json": encoded}], "genedge": [record]})
        return web.json_response({"image_png_b64": encoded, "record": record})

    # --- lifecycle
    def start(self) -> StubServer:
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def _serve(self) -> None:
        from aiohttp import web

        async def go() -> None:
            app = web.Application()
            app.router.add_get(protocol.PLAN_ROUTE, self.plan_route)
            app.router.add_get(protocol.STATS_ROUTE, self.stats_route)

            async def generate(request):
                return await self.generate(request, False)

            async def openai(request):
                return await self.generate(request, True)

            app.router.add_post(protocol.GENERATE_ROUTE, generate)
            app.router.add_post(protocol.OPENAI_ROUTE, openai)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(go())

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
