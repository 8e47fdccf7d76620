"""Predicted vs measured: a plan served on Ray Serve and loaded at several rates, from one run.

On this machine, with the demo's two tiny replicas: profile them at 8, 12 and 16 steps and calibrate
(``genedge profile``, ``genedge calibrate``), plan an open-arrival deployment on that table with the
paper's method (``genedge plan --method paper``: its probabilistic assignment splits every category
between both models, so the routing and the share scheduler are both exercised; genedge's own method
gives everything to one replica, whose random-weight CLIPScores say nothing), serve it
(``genedge serve``), load it with Poisson arrivals of the demo's prompts at rates that put the busiest
model at each target utilization (``genedge loadtest``), and print the plan's prediction at the demand
actually offered beside the measured mean and p95 response, per rate, with the realized GPU shares.

    python benchmarks/serve_vs_plan.py                 # utilizations 0.3, 0.6, 0.8; about 12 minutes
    python benchmarks/serve_vs_plan.py --requests 400  # more requests per rate: tighter means

Prints a table and writes it, with the machine and source state, to
benchmarks/results/serve-vs-plan-cpu.txt. Everything listens on and sends to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _environment import cpu_name, source_state

from genedge.optimizer.plan_file import PlanDocument, load_plan
from genedge.serve.background import serve_in_background

RESULTS = Path(__file__).parent / "results" / "serve-vs-plan-cpu.txt"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
HOST = "127.0.0.1"
PLAN_RATE = 1.0  # requests/s the plan is made for; the loads below scale it
MODELS = ("replica:tiny", "replica:tiny-xl")
# Images of a few tenths of a second: per-request HTTP and Ray costs (tens of ms) stay small beside them,
# as beside a real model's seconds.
STEPS = "8,12,16"


def genedge(*args: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "genedge", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    if done.returncode != 0:
        raise SystemExit(f"genedge {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def busiest_utilization_per_rate(plan: PlanDocument, table_path: Path) -> float:
    """ρ of the busiest model per 1 request/s of the plan's mix (utilization is linear in the rate)."""
    from genedge.calibrate import load_table
    from genedge.serve.predict import plan_rates, predict_at_rates

    prediction = predict_at_rates(plan, load_table(table_path), plan_rates(plan, 1.0))
    return max(group.utilization for group in prediction.per_model.values() if group.utilization is not None)


def served_service_prediction(comparison, plan: PlanDocument) -> tuple[float, dict[str, float]]:
    """The M/D/1 mean response with each model's device time per image as measured in the server.

    Separates the queueing model's error from the calibration's: the same prediction as the plan's,
    but with the table's seconds per image replaced by what the served models took (from /v1/stats).
    Returns the overall mean and, per model, the served device time per image over the table's.
    """
    from genedge.optimizer.model import md1_mean_response

    total_rate, weighted, drift = 0.0, 0.0, {}
    for share in comparison.shares:
        images = comparison.measurement.per_model[share.model].ok
        if not images or share.planned_share is None:
            continue
        per_image = share.device_s / images
        rate = comparison.prediction.per_model[share.model].rate
        weighted += rate * float(md1_mean_response(rate, per_image / share.planned_share))
        total_rate += rate
        table_per_image = plan.models[share.model].service_s * plan.models[share.model].share
        drift[share.model] = per_image / table_per_image
    return weighted / total_rate, drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utilizations", default="0.3,0.6,0.8", help="target ρ of the busiest model, comma-separated")
    parser.add_argument("--requests", type=int, default=200, help="requests per rate (default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="working folder (default: a new temporary one)")
    args = parser.parse_args()
    from genedge.data import path as data_path
    from genedge.serve.measured import compare_run

    folder = args.dir or Path(tempfile.mkdtemp(prefix="genedge-serve-vs-plan-"))
    folder.mkdir(parents=True, exist_ok=True)
    prompts = str(data_path("prompts", "smoke.tsv"))
    table = folder / "table.json"
    print(f"1. profile the demo's replicas at {STEPS} steps and calibrate them, in {folder}", flush=True)
    if not table.exists():
        models = [arg for model in MODELS for arg in ("--model", model)]
        genedge(
            "profile", *models, "--steps", STEPS, "--prompts", prompts, "--resolution", "64", "--threads", "1",
            "--device", "cpu", "--clip-backbone", "replica:tiny", "--clip-pretrained", "none", "--out",
            str(folder / "run"), "--no-progress",
        )  # fmt: skip
        genedge("calibrate", str(folder / "run"), "--out", str(table))
    plan_path = folder / "open-plan.json"
    print(f"2. plan for open arrivals at {PLAN_RATE} requests/s with the paper's method", flush=True)
    genedge(
        "plan", "--table", str(table), "--rate", str(PLAN_RATE), "--arrivals", "open", "--method", "paper",
        "--compare", "genedge", "--out", str(plan_path),
    )  # fmt: skip
    plan = load_plan(plan_path)
    per_rate = busiest_utilization_per_rate(plan, table)
    targets = [float(u) for u in args.utilizations.split(",")]

    rows = []
    with serve_in_background(plan_path, host=HOST, env=ENV, log=folder / "serve.log") as server:
        print(f"3. serving it at {server.url}", flush=True)
        url = server.url
        for target in targets:
            rate = target / per_rate
            result = folder / f"load-rho{target:g}"
            print(
                f"4. load at {rate:.2f} requests/s (busiest model ρ ≈ {target:g}), {args.requests} requests", flush=True
            )
            genedge(
                "loadtest", url, "--prompts", prompts, "--request-rate", f"{rate:.6g}",
                "--num-prompts", str(args.requests), "--seed", str(args.seed), "--result-dir", str(result),
                "--no-progress",
            )  # fmt: skip
            comparison = compare_run(result)
            measured, predicted = comparison.measurement.overall, comparison.prediction.overall
            utilization = max(
                (g.utilization for g in comparison.prediction.per_model.values() if g.utilization is not None),
                default=float("nan"),
            )
            shares = "; ".join(
                f"{s.model} {s.planned_share:.2f}→{s.realized_share:.2f}"
                for s in comparison.shares
                if s.realized_share is not None
            )
            served_mean, drift = served_service_prediction(comparison, plan)
            rows.append(
                (
                    target,
                    rate,
                    utilization,
                    measured.ok,
                    measured.rejected,
                    predicted.mean_response_s,
                    measured.mean_response_s,
                    measured.mean_server_response_s,
                    predicted.p95_response_s,
                    measured.p95_response_s,
                    measured.mean_service_s,
                    served_mean,
                    "; ".join(f"{model} ×{ratio:.2f}" for model, ratio in drift.items()),
                    shares,
                )
            )

    header = (
        f"{'target ρ':>8} {'rate/s':>7} {'ρ pred':>6} {'ok':>4} {'503':>4} {'mean pred':>9} {'client':>7} "
        f"{'error':>7} {'server':>7} {'error':>7} {'served t':>8} {'error':>7} {'p95 pred':>8} {'p95 meas':>8}  "
        "device time per image served / table; realized shares (planned→realized)"
    )
    lines = [header]
    for row in rows:
        target, rate, rho, ok, rejected, mean_p, mean_m, mean_s, p95_p, p95_m, _, served, drift, shares = row
        error, server_error, queue_error = (
            100 * (value - reference) / reference
            for value, reference in ((mean_m, mean_p), (mean_s, mean_p), (mean_s, served))
        )
        lines.append(
            f"{target:>8.2f} {rate:>7.2f} {rho:>6.2f} {ok:>4d} {rejected:>4d} {mean_p:>9.3f} {mean_m:>7.3f} "
            f"{error:>+6.1f}% {mean_s:>7.3f} {server_error:>+6.1f}% {served:>8.3f} {queue_error:>+6.1f}% "
            f"{p95_p:>8.3f} {p95_m:>8.3f}  {drift}; {shares}"
        )
    steps = ", ".join(f"{k} {v.steps} steps share {v.share:.2f}" for k, v in plan.deployed.items())
    report = "\n".join(
        [
            (
                "genedge serve vs plan: mean and p95 response (s), predicted (M/D/1 per model at the offered demand) "
                "and measured: client = sent to answer received over HTTP through Ray Serve; server = arrival at the "
                "ingress to image ready (queue wait + service), with its error against the plan's prediction and "
                "against 'served t', the same M/D/1 prediction with each model's device time per image as measured "
                "in the server instead of the table's"
            ),
            f"plan (paper's method): {steps}; planned at {PLAN_RATE} requests/s; replicas at 64 px, one torch thread",
            f"{args.requests} Poisson requests per rate, seed {args.seed}",
            *lines,
            f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; genedge {source_state('serve', 'optimizer')}",
        ]
    )
    print(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(report + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
