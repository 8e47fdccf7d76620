"""Prompt-router speed: throughput, single-prompt latency, one-time load cost and share of a request's budget.

Measures the two shipped routers (:mod:`genedge.router`) on real prompts, every figure in one run:

- ``paper4-tfidf``: TF-IDF + logistic regression (numpy and scipy only);
- ``paper4-minilm``: all-MiniLM-L6-v2 sentence embeddings (sentence-transformers, torch) + logistic
  regression; the encoder loads on the router's first prediction.

Sections:

1. One-time costs. Each router is loaded in a fresh ``python -c`` subprocess (so nothing is already
   imported), timed with ``time.perf_counter`` inside it: importing :mod:`genedge.router` and reading
   the router's JSON; for MiniLM also the encoder (importing sentence-transformers and torch, loading
   the weights, embedding the probe sentence the router checks), run with ``OMP_NUM_THREADS=1``; then
   the first single-prompt prediction. Median of ``--load-repeats`` fresh processes, and the slowest.
2. Throughput and latency, in ``--rounds`` rounds after one unmeasured batch call and 20 unmeasured
   one-prompt calls. Each round is (a) one batch call, ``router.predict_proba(prompts)`` over the
   prompt list (repeated to at least ``--min-batch`` prompts for TF-IDF; the list once for MiniLM),
   then (b) its share of ``--single`` one-prompt calls ``router.predict_proba([prompt])``, the serving
   path where a request arrives alone, on prompts drawn at random (seed 0) from the list. Printed: the
   best round's batch rate (and the worst), the median and p99 of the per-call latency over all calls,
   the range of the rounds' medians (drift during the run), the rate 1 / median, and how many cores
   other processes kept busy meanwhile (``/proc/stat`` less this process's CPU time). MiniLM runs with
   ``torch.set_num_threads(1)`` set before any torch work, then again after
   ``torch.set_num_threads(2)``; TF-IDF does not use torch. Goals: TF-IDF >= 10,000 prompts/s,
   MiniLM >= 200 prompts/s single-threaded, each judged "met"/"missed" for the batch rate and for the
   one-at-a-time rate.
3. The router's share of a request's latency budget: single-prompt routing latency (median and p99)
   as a percentage of the per-image service time of the fastest model at its default steps on each
   shipped calibration table (``LatencyModel.seconds(default_steps)`` per image, whole device), and of
   a 1 s and a 20 s SLO. MiniLM's share is its single-threaded latency.

It is a benchmark that prints; it asserts nothing. Numbers depend on the machine and its load.

Usage::

    python benchmarks/router_speed.py [--prompts FILE] [--quick] [--embedding] [--rounds 5] [--single 500]

``--prompts`` is any prompt file (TSV, CSV or Parquet with a ``Prompt`` column); the default is
``../shared/data/PartiPrompts.tsv`` beside the repository. ``--quick`` runs fewer rounds, calls and
prompts, TF-IDF only unless ``--embedding`` is given. The full run takes about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
from _environment import cpu_name, source_state

from genedge import data
from genedge.contract.prompts import PROMPT_COLUMN, read_prompt_file
from genedge.contract.table_file import load_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = ROOT.parent / "shared" / "data" / "PartiPrompts.tsv"
TFIDF, MINILM = "paper4-tfidf", "paper4-minilm"
#: Throughput goals (prompts/s); MiniLM's is single-threaded.
GOALS = {TFIDF: 10_000.0, MINILM: 200.0}
#: Latency SLOs (s) the routing latency is set against.
SLOS_S = (1.0, 20.0)
#: Ratio of the slowest to the fastest round's median latency above which the drift is pointed out.
DRIFT = 1.3
#: Unmeasured single-prompt calls before the measured ones.
SINGLE_WARMUP = 20

# Timed inside a fresh interpreter: the import and JSON load, the encoder (embedding routers), the first call.
_LOAD_SNIPPET = """
import json, time
t0 = time.perf_counter()
from genedge.router import load_router
router = load_router({name!r})
t1 = time.perf_counter()
if router.backend == "embedding":
    router.encoder()
t2 = time.perf_counter()
router.predict_proba([{prompt!r}])
t3 = time.perf_counter()
threads = None
if router.backend == "embedding":
    import torch
    threads = torch.get_num_threads()
print(json.dumps({{"load": t1 - t0, "encoder": t2 - t1, "first": t3 - t2, "torch_threads": threads}}))
"""


def version(package: str) -> str:
    """An installed distribution's version, without importing it."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def blas_threads() -> str:
    """numpy's BLAS library and its thread count, where threadpoolctl can tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS threads unknown (no threadpoolctl)"
    pools = [f"{p.get('internal_api', '?')} {p.get('num_threads', '?')} threads" for p in threadpool_info()]
    return "BLAS " + (", ".join(pools) if pools else "none loaded")


def header(args: argparse.Namespace, prompts: Sequence[str], embedding: bool) -> str:
    """The command, the machine, the versions and the thread settings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    threads_env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
    command = "python benchmarks/router_speed.py" + ("".join(" " + shlex.quote(a) for a in sys.argv[1:]))
    torch_note = (
        "torch threads set per run below (torch.set_num_threads before any torch work)"
        if embedding
        else "torch not used (TF-IDF only)"
    )
    words = statistics.fmean(len(p.split()) for p in prompts)
    lines = [
        (
            f"# {command} — {datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores, "
            f"load average {load:.2f} at start"
        ),
        (
            f"# python {platform.python_version()}, numpy {np.__version__}, scipy {version('scipy')}, "
            f"torch {version('torch')}, sentence-transformers {version('sentence-transformers')}, "
            f"{platform.system()} {platform.release()}; genedge {source_state('router', 'data/routers')}"
        ),
        f"# threads: {blas_threads()}; {threads_env or 'OMP_NUM_THREADS and MKL_NUM_THREADS unset'}; {torch_note}",
        f"# prompts: {args.prompts} ({len(prompts)} rows of its {PROMPT_COLUMN} column, mean {words:.1f} words)",
    ]
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation, numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def one_time_costs(names: Sequence[str], prompt: str, repeats: int, timeout: float) -> dict[str, list[dict]]:
    """Each router's load phases in ``repeats`` fresh processes (seconds)."""
    results: dict[str, list[dict]] = {}
    for name in names:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        if name == MINILM:
            env["OMP_NUM_THREADS"] = "1"
        code = _LOAD_SNIPPET.format(name=name, prompt=prompt)
        runs = []
        for _ in range(repeats):
            proc = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
            if proc.returncode != 0:
                raise RuntimeError(f"loading {name} in a fresh process failed:\n{proc.stderr[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results[name] = runs
    return results


def print_one_time_costs(results: dict[str, list[dict]]) -> None:
    print("\n1. One-time costs, each in a fresh python process (median of the processes; slowest in brackets)")
    print(f"  {'router':<15} {'procs':>5} {'import + JSON':>17} {'encoder load':>19} {'first call':>17} {'total':>19}")

    def cell(runs: list[dict], key: str | None) -> str:
        values = [sum(r[k] for k in ("load", "encoder", "first")) if key is None else r[key] for r in runs]
        return f"{statistics.median(values) * 1e3:8.1f} ({max(values) * 1e3:.1f}) ms"

    for name, runs in results.items():
        encoder = cell(runs, "encoder") if name == MINILM else "—"
        print(
            f"  {name:<15} {len(runs):>5} {cell(runs, 'load'):>17} {encoder:>19} {cell(runs, 'first'):>17} "
            f"{cell(runs, None):>19}"
        )
    if MINILM in results:
        print(
            "  encoder load: importing sentence-transformers and torch, loading all-MiniLM-L6-v2's weights and "
            f"embedding the probe sentence (OMP_NUM_THREADS=1, torch threads {results[MINILM][0]['torch_threads']})"
        )
    print("  interpreter start-up is not counted (timed inside the process)")


def timed_rounds(
    predict: Callable[[list[str]], np.ndarray], batch: list[str], prompts: Sequence[str], calls: int, rounds: int
) -> tuple[list[float], list[list[float]]]:
    """Seconds of each whole-batch call and of each one-prompt call, in ``rounds`` rounds.

    Each round is one call on the whole batch, then its share of ``calls`` one-prompt calls on prompts
    drawn at random (seed 0); one unmeasured batch call and :data:`SINGLE_WARMUP` unmeasured one-prompt
    calls come first. Spreading the single calls over the rounds lets the rounds' medians show drift.
    """
    draw = random.Random(0)
    predict(batch[: min(len(batch), 256)])
    for _ in range(SINGLE_WARMUP):
        predict([draw.choice(prompts)])
    batch_times: list[float] = []
    single: list[list[float]] = []
    for round_ in range(rounds):
        start = time.perf_counter()
        predict(batch)
        batch_times.append(time.perf_counter() - start)
        times = []
        for prompt in [draw.choice(prompts) for _ in range(calls // rounds + (round_ < calls % rounds))]:
            start = time.perf_counter()
            predict([prompt])
            times.append(time.perf_counter() - start)
        single.append(times)
    return batch_times, single


def machine_busy_s() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux's /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
        # user, nice, system, irq, softirq, steal: busy; idle and iowait are not.
        return sum(ticks[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure(
    name: str, router, prompts: list[str], args: argparse.Namespace, threads: int | None
) -> dict[str, float | int | str | None]:
    """Batch rate and single-prompt latency of one router at one torch thread count, and the other processes'
    load meanwhile (cores busy on average outside this process)."""
    if name == TFIDF:
        batch = prompts * max(1, math.ceil(args.min_batch / len(prompts)))
    elif args.embedding_batch:
        batch = random.Random(0).sample(prompts, min(args.embedding_batch, len(prompts)))
    else:
        batch = prompts
    busy, own, wall = machine_busy_s(), time.process_time(), time.perf_counter()
    batch_times, rounds = timed_rounds(router.predict_proba, batch, prompts, args.single, args.rounds)
    times = [t for round_ in rounds for t in round_]
    median = statistics.median(times)
    round_medians = [statistics.median(r) for r in rounds if r]
    after = machine_busy_s()
    others = (
        None
        if busy is None or after is None
        else max(0.0, (after - busy) - (time.process_time() - own)) / (time.perf_counter() - wall)
    )
    return {
        "router": name,
        "threads": threads,
        "batch": len(batch),
        "rate": len(batch) / min(batch_times),
        "worst_rate": len(batch) / max(batch_times),
        "median": median,
        "round_medians": (min(round_medians), max(round_medians)),
        "p99": percentile(times, 99),
        "calls": len(times),
        "single_rate": 1.0 / median,
        "others": others,
    }


def verdict(value: float, goal: float) -> str:
    return "met" if value >= goal else "missed"


def print_throughput(rows: list[dict], rounds: int) -> None:
    print(
        f"\n2. Throughput and latency in {rounds} rounds, each one batch call then its share of the one-prompt calls "
        f"(after a warm-up batch call\n   and {SINGLE_WARMUP} one-prompt calls); batch rate: best round (worst in "
        "brackets); one at a time: over all calls, and the rounds' medians"
    )
    print(
        f"  {'router':<15} {'torch thr':>9} {'batch n':>7} {'batch prompts/s':>22} {'calls':>5} {'median ms':>9} "
        f"{'p99 ms':>8} {'round medians ms':>17} {'1/median /s':>11} {'others':>6} {'goal /s':>7}  "
        "verdict (batch, one at a time)"
    )
    for r in rows:
        goal = GOALS[r["router"]]
        judged = r["router"] == TFIDF or r["threads"] == 1
        verdicts = f"{verdict(r['rate'], goal)}, {verdict(r['single_rate'], goal)}" if judged else "(goal is 1 thread)"
        threads = "—" if r["threads"] is None else str(r["threads"])
        others = "—" if r["others"] is None else f"{r['others']:.2f}"
        low, high = r["round_medians"]
        print(
            f"  {r['router']:<15} {threads:>9} {r['batch']:>7} {r['rate']:>10,.0f} ({r['worst_rate']:>8,.0f}) "
            f"{r['calls']:>5} {r['median'] * 1e3:>9.3f} {r['p99'] * 1e3:>8.3f} "
            f"{f'{low * 1e3:.3f}–{high * 1e3:.3f}':>17} {r['single_rate']:>11,.0f} {others:>6} {goal:>7,.0f}  "
            f"{verdicts}"
        )
    print(
        "  others: cores other processes kept busy on average during the row (from /proc/stat less this process's "
        "CPU time);\n  with 2 torch threads on 2 cores, any such load stalls torch's OpenMP threads at their barriers"
    )
    for r in rows:
        low, high = r["round_medians"]
        if high > DRIFT * low:
            n = r["threads"]
            threads = "" if n is None else f" at {n} torch thread{'s' if n > 1 else ''}"
            print(
                f"  {r['router']}{threads}: the rounds' medians differ {high / low:.1f}× (other processes kept "
                f"{r['others'] or 0:.2f} cores busy): the speed drifted during the run; one-at-a-time rate per round "
                f"{1 / high:,.0f}–{1 / low:,.0f} prompts/s"
            )
    for r in rows:
        if r["router"] == TFIDF:
            print(
                f"  TF-IDF throughput: {r['rate']:,.0f} prompts/s batched, {r['single_rate']:,.0f} prompts/s one at a "
                f"time (goal >= {GOALS[TFIDF]:,.0f}: batch {verdict(r['rate'], GOALS[TFIDF])}, one at a time "
                f"{verdict(r['single_rate'], GOALS[TFIDF])})"
            )
        elif r["threads"] == 1:
            print(
                f"  MiniLM throughput, 1 torch thread: {r['rate']:,.0f} prompts/s batched, {r['single_rate']:,.0f} "
                f"prompts/s one at a time (goal >= {GOALS[MINILM]:,.0f}: batch {verdict(r['rate'], GOALS[MINILM])}, "
                f"one at a time {verdict(r['single_rate'], GOALS[MINILM])})"
            )
        else:
            print(
                f"  MiniLM throughput, {r['threads']} torch threads: {r['rate']:,.0f} prompts/s batched, "
                f"{r['single_rate']:,.0f} prompts/s one at a time"
            )


def print_minilm_work(prompts: list[str], single_threaded: dict) -> None:
    """Why the embedding rate is what it is: the arithmetic its layers do per prompt, from the model's own
    config (FLOPs per token = 2 × the weights of its layers: 4h² attention + 2hi feed-forward per layer)
    and tokenizer (the prompts' tokens, special tokens included, no padding)."""
    from tokenizers import Tokenizer

    from genedge.router.embedding import DEFAULT_EMBEDDING_MODEL, embedding_model_location

    folder = Path(embedding_model_location(DEFAULT_EMBEDDING_MODEL))
    config = json.loads((folder / "config.json").read_text())
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    flop_per_token = 2 * layers * (4 * hidden * hidden + 2 * hidden * inner)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokens = statistics.fmean(len(e.ids) for e in tokenizer.encode_batch(prompts))
    flop_per_prompt = flop_per_token * tokens
    print(
        f"  MiniLM work: {flop_per_token / 1e6:.1f} MFLOP per token in its {layers} layers (h = {hidden}, "
        f"i = {inner}), {tokens:.1f} tokens per prompt on average: {flop_per_prompt / 1e9:.3f} GFLOP per prompt;\n"
        f"  at 1 torch thread it sustains {single_threaded['rate'] * flop_per_prompt / 1e9:.0f} GFLOP/s; "
        f"{GOALS[MINILM]:.0f} prompts/s would need {GOALS[MINILM] * flop_per_prompt / 1e9:.0f} GFLOP/s"
    )


def budget_rows() -> list[tuple[str, str, int | None, float]]:
    """(table or SLO, fastest model, its default steps, seconds per image) for each shipped table and SLO."""
    rows: list[tuple[str, str, int | None, float]] = []
    for name, path in data.shipped_tables().items():
        table = load_table(path)

        def per_image(model) -> float:
            return model.latency.seconds(model.default_steps) / model.base_batch_size

        fastest = min(table.models.values(), key=per_image)
        rows.append((name, fastest.key, fastest.default_steps, per_image(fastest)))
    rows += [(f"SLO {slo:g} s", "—", None, slo) for slo in SLOS_S]
    return rows


def print_budget(measured: dict[str, dict]) -> None:
    print(
        "\n3. Router share of a request's latency budget: single-prompt routing latency as % of the fastest model's "
        "seconds per image\n   at its default steps (whole device, batch size 1) on each shipped table, and of an SLO"
    )
    names = [n for n in (TFIDF, MINILM) if n in measured]
    heads = "".join(f" {label + ' med %':>14} {label + ' p99 %':>14}" for label in ("TF-IDF", "MiniLM"))
    print(f"  {'table':<16} {'fastest':>8} {'steps':>6} {'s/image':>8}{heads}")
    for name, model, steps, seconds in budget_rows():
        cells = ""
        for router in (TFIDF, MINILM):
            if router in names:
                r = measured[router]
                cells += f" {100 * r['median'] / seconds:>14.4f} {100 * r['p99'] / seconds:>14.4f}"
            else:
                cells += f" {'—':>14} {'—':>14}"
        print(f"  {name:<16} {model:>8} {'—' if steps is None else steps:>6} {seconds:>8.3f}{cells}")
    for router in names:
        r = measured[router]
        n = r["threads"]
        threads = "" if n is None else f", {n} torch thread{'s' if n > 1 else ''}"
        print(
            f"  {router}: median {r['median'] * 1e3:.3f} ms, p99 {r['p99'] * 1e3:.3f} ms per single-prompt call"
            f"{threads}"
        )
    if MINILM not in names:
        print("  MiniLM not measured (--quick without --embedding)")


def read_prompts(path: Path) -> list[str]:
    """The prompt column of a prompt file, non-empty rows only."""
    prompts = [p for p in read_prompt_file(path).column(PROMPT_COLUMN) if p.strip()]
    if not prompts:
        raise SystemExit(f"{path}: no non-empty prompts in its {PROMPT_COLUMN!r} column")
    return prompts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prompts",
        type=Path,
        default=DEFAULT_PROMPTS,
        help=f"prompt file (TSV, CSV or Parquet with a {PROMPT_COLUMN!r} column; default: {DEFAULT_PROMPTS})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds, calls and prompts; TF-IDF only unless --embedding"
    )
    parser.add_argument("--embedding", action="store_true", help="with --quick: measure the MiniLM router too")
    parser.add_argument(
        "--rounds", type=int, help="rounds of one batch call and a share of the single calls (default: 5; --quick 1)"
    )
    parser.add_argument(
        "--single", type=int, help="single-prompt calls per router and thread count (default: 500; --quick 100)"
    )
    parser.add_argument(
        "--min-batch", type=int, help="prompts per TF-IDF batch at least (default: 10000; --quick 2000)"
    )
    parser.add_argument(
        "--embedding-batch", type=int, help="prompts per MiniLM batch (default: the whole list; --quick 64)"
    )
    parser.add_argument(
        "--threads", default="1,2", help="torch thread counts for MiniLM, first one first (default: 1,2)"
    )
    parser.add_argument("--load-repeats", type=int, help="fresh processes per router load (default: 3; --quick 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per fresh load process (default: 300)")
    return parser


#: Options whose default depends on --quick: (attribute, full run, --quick).
QUICK_DEFAULTS = (
    ("rounds", 5, 1),
    ("single", 500, 100),
    ("min_batch", 10_000, 2_000),
    ("embedding_batch", 0, 64),
    ("load_repeats", 3, 1),
)


def thread_counts(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """``--threads`` as a list of counts, each >= 1."""
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        parser.error(f"--threads expects comma-separated integers, but got {text!r}")
    if not threads or min(threads) < 1:
        parser.error("--threads expects thread counts >= 1")
    return threads


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[int]]:
    """The options with their --quick defaults filled in and checked, and the torch thread counts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for field, full, fast in QUICK_DEFAULTS:
        if getattr(args, field) is None:
            setattr(args, field, fast if args.quick else full)
    for field in ("rounds", "single", "min_batch", "load_repeats"):
        if getattr(args, field) < 1:
            parser.error(f"--{field.replace('_', '-')} must be >= 1")
    if args.embedding_batch < 0:
        parser.error("--embedding-batch must be >= 0 (0: the whole list)")
    threads = thread_counts(parser, args.threads)
    if not args.prompts.is_file():
        parser.error(
            f"no prompt file at {args.prompts}: pass --prompts FILE (a TSV, CSV or Parquet file with a "
            f"{PROMPT_COLUMN!r} column), or put PartiPrompts.tsv at {DEFAULT_PROMPTS}"
        )
    return args, threads


def measure_routers(prompts: list[str], args: argparse.Namespace, threads: list[int], embedding: bool) -> list[dict]:
    """Section 2's rows: TF-IDF, then MiniLM at each torch thread count where ``embedding``."""
    from genedge.router import load_router

    rows = [measure(TFIDF, load_router(TFIDF), prompts, args, None)]
    if embedding:
        import torch

        router = load_router(MINILM)
        for count in threads:
            torch.set_num_threads(count)
            rows.append(measure(MINILM, router, prompts, args, torch.get_num_threads()))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args, threads = parse_args(argv)
    embedding = args.embedding or not args.quick
    if embedding:
        import torch  # set before any torch work: the embedding router measures single-threaded first

        torch.set_num_threads(threads[0])
    prompts = read_prompts(args.prompts)

    print(header(args, prompts, embedding))
    names = [TFIDF, MINILM] if embedding else [TFIDF]
    print_one_time_costs(one_time_costs(names, prompts[0], args.load_repeats, args.timeout))

    rows = measure_routers(prompts, args, threads, embedding)
    print_throughput(rows, args.rounds)
    measured = {TFIDF: rows[0]}
    if embedding:
        print_minilm_work(prompts, rows[1])
        measured[MINILM] = rows[1]
    print_budget(measured)


if __name__ == "__main__":
    main()
