"""Plain-text summaries of calibration tables (the CLI decides what to print)."""

from __future__ import annotations

from genedge.contract.table import CalibrationTable, ModelCalibration

__all__ = ["REPLICA_NOTE", "table_summary"]

REPLICA_NOTE = (
    "random-weight replica: its latency and memory are real, its CLIPScores are NOT image quality "
    "(random weights draw noise)"
)


def table_summary(table: CalibrationTable) -> str:
    """Summarize a table: per model its quality cells (mean ± std, n, gof, flags), curves,
    latency line (and its line per batch size, where several were profiled), memory peak (what it
    counts, and the host peaks), energy line where measured, and every excluded record count with
    its reason."""
    lines = [
        (
            f"device: {table.device.get('name')}   CLIPScore: {table.clip_convention.backbone}/"
            f"{table.clip_convention.pretrained}, {table.clip_convention.formula}"
        ),
        f"categories: {', '.join(table.categories)}",
    ]
    for model in table.models.values():
        lines += ["", *_model_lines(model)]
    if table.exclusions:
        lines += ["", "excluded records (not in the fits):"]
        lines += [f"  {e.model_key} @ {e.steps} steps: {e.rows} x {e.reason}" for e in table.exclusions]
    return "\n".join(lines)


def _model_lines(m: ModelCalibration) -> list[str]:
    lat, mem, energy = m.latency, m.memory, m.energy
    r2 = "n/a" if lat.r2 is None else f"{lat.r2:.4f}"
    # Host peaks beside the peak (the RSS only where it is not the peak itself: a GPU run's host memory).
    hosts = [("host RSS", mem.rss_bytes)] if mem.kind != "rss" else []
    hosts.append(("system", mem.system_memory_bytes))
    lines = [
        f"model {m.key}: {m.name}" + (f"\n  NOTE: {REPLICA_NOTE}" if m.is_replica else ""),
        f"  latency ({lat.source}): {lat.overhead_s:.4g} s + {lat.per_step_s:.4g} s/step  (R2 {r2}, "
        f"n {lat.n}"
        + (f", residual sd {lat.residual_std_s:.3g} s" if lat.residual_std_s is not None else "")
        + (f", step p50/p95 {lat.step_p50_s:.4g}/{lat.step_p95_s:.4g} s" if lat.step_p50_s is not None else "")
        + ")",
        *(
            f"    batch {b} ({line.source}): {line.overhead_s:.4g} s + {line.per_step_s:.4g} s/step per call of "
            f"{b} image{'s' if b > 1 else ''}  (R2 {'n/a' if line.r2 is None else f'{line.r2:.4f}'}, n {line.n} calls)"
            for b, line in m.batch_latency.items()
        ),
        f"  memory ({mem.source}): {mem.peak_bytes / 2**30:.3f} GiB {mem.kind}"
        + "".join(f", {label} {value / 2**30:.3f} GiB" for label, value in hosts if value is not None),
    ]
    if energy is not None:
        lines.append(
            f"  energy ({energy.source}): {energy.overhead_j:.4g} J + {energy.per_step_j:.4g} J/step per image  (R2 "
            + ("n/a" if energy.r2 is None else f"{energy.r2:.4f}")
            + f", n {energy.n}"
            + (f", mean power {energy.average_power_w:.4g} W" if energy.average_power_w is not None else "")
            + ")"
        )
    lines.append(f"  {'category':<22}{'steps':>6}{'mean':>9}{'std':>8}{'n':>6}{'gof p':>8}  flags")
    for category, cells in m.quality.items():
        for steps, c in cells.items():
            gof = "-" if c.gof is None else f"{c.gof:.3f}"
            lines.append(f"  {category:<22}{steps:>6}{c.mean:>9.3f}{c.std:>8.3f}{c.n:>6}{gof:>8}  {','.join(c.flags)}")
    for category, curve in m.curves.items():
        shape = (
            f"{curve.a:.3f} {'-' if curve.b >= 0 else '+'} {abs(curve.b):.3f}*exp(-s/{curve.kappa:.3g})"
            if curve.form == "saturating_exp"
            else "linear interpolation between cells"
        )
        lines.append(f"  curve {category}: {shape} on {list(curve.valid_steps)} steps")
    return lines
