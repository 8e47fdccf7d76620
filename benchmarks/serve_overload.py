"""Overload through the real server: how fast a burst past a model's queue bound is refused, and with what.

On this machine, with the demo's plan (``genedge demo``: two tiny replicas profiled, calibrated and planned
here) served by ``genedge serve --router none`` on 127.0.0.1: send :data:`BURST` requests for one category at
once, each on its own connection. A model past its queue bound is refused by the ingress
(``serve.spec.refusal``) before any call to its device, with the time until it has room as ``Retry-After``.

Prints, per status of the burst's answers, their count and the time from the burst's start to each answer
(median, p95, max) and the Retry-After values, and the time per refusal beside that of one image served alone
(a request to the other model before the burst), measured in the same run; writes them, with the machine and
source state, to benchmarks/results/serve-overload-cpu.txt.

    python benchmarks/serve_overload.py              # about 3 minutes on 2 cores
    python benchmarks/serve_overload.py --burst 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _environment import cpu_name, source_state

from genedge.serve.background import serve_in_background

RESULTS = Path(__file__).parent / "results" / "serve-overload-cpu.txt"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
HOST = "127.0.0.1"
BURST = 500
CATEGORY = "Basic"


async def _send(session, url: str, category: str, start: float) -> tuple[int, float, str | None]:
    """One request: (status, seconds from ``start`` to its whole answer, Retry-After)."""
    body = {"prompt": f"a lighthouse at dusk {time.perf_counter()}", "category": category}
    async with session.post(f"{url}/v1/generate", json=body) as response:
        await response.read()
        return response.status, time.perf_counter() - start, response.headers.get("Retry-After")


async def _burst(url: str, burst: int, other: str) -> tuple[list, list]:
    """The burst's answers, and those of unloaded requests to ``other`` sent before it (each timed alone)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        served = [await _send(session, url, other, time.perf_counter()) for _ in range(6)]  # warm, then timed
        start = time.perf_counter()
        answers = await asyncio.gather(*(_send(session, url, CATEGORY, start) for _ in range(burst)))
        return answers, served[1:]


def _seconds(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered):.3f} s, p95 {p95:.3f} s, max {ordered[-1]:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=BURST, help=f"requests sent at once (default: {BURST})")
    parser.add_argument("--dir", type=Path, help="working folder for the demo (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS})")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="genedge-serve-overload-"))
    if not (folder / "plan.json").exists():
        subprocess.run(
            [sys.executable, "-m", "genedge", "demo", "--dir", str(folder), "--no-figures"],
            check=True, capture_output=True, env={**os.environ, **ENV},
        )  # fmt: skip
    routing = json.loads((folder / "plan.json").read_text())["routing"]
    model = max(routing[CATEGORY], key=routing[CATEGORY].get)
    other = next(c for c, row in routing.items() if max(row, key=row.get) != model)
    log = folder / "serve.log"
    with serve_in_background(folder / "plan.json", "--router", "none", host=HOST, env=ENV, log=log) as server:
        answers, served = asyncio.run(_burst(server.url, args.burst, other))
    source = source_state("serve", "benchmarks")
    lines = [
        f"genedge serve of the demo's plan on {cpu_name()} ({os.cpu_count()} cores), {source}",
        f"a burst of {args.burst} requests for {CATEGORY} (model {model}) at once, one connection each:",
    ]
    for status, count in sorted(Counter(status for status, _, _ in answers).items()):
        times = [seconds for code, seconds, _ in answers if code == status]
        retry = Counter(header for code, _, header in answers if code == status and header is not None)
        lines.append(
            f"  {status}: {count:4d} answered from the burst's start in {_seconds(times)}"
            + (f"; Retry-After {dict(retry.most_common(3))}" if retry else "")
        )
    image = [seconds for _, seconds, _ in served]
    lines.append(f"one image of {other} served alone, before the burst: {_seconds(image)}")
    refused = [seconds for code, seconds, _ in answers if code == 503]
    if refused:
        last = max(refused)
        each_ms = 1000 * last / len(refused)
        images = last / statistics.median(image)
        lines.append(
            f"the last of {len(refused)} refusals arrived {last:.2f} s after the burst: {each_ms:.1f} ms a refusal, "
            f"through Ray Serve's proxy and the ingress one after another ({images:.1f} unloaded images' time in all)"
        )
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
