"""The physical ranges genedge's inputs must lie in, stated once, and the one check against them.

Every number genedge reads (a table field, a trace time, a router weight, a command-line option) is
finite and within a range no real device, workload or fit leaves. A value outside is a mistake (a
unit slip, a corrupted file, a typo) whose result would be garbage, an overflow deep in the planner,
or unbounded work; it is refused where it is read, naming the file or option and the field.
"""

from __future__ import annotations

import math

from genedge.contract.clip import CLIPSCORE_RANGE

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_BUDGET_GPUS",
    "MAX_COUNT",
    "MAX_DELAY_S",
    "MAX_DELAY_WEIGHT",
    "MAX_GUIDANCE_SCALE",
    "MAX_JOULES",
    "MAX_MEMORY_BYTES",
    "MAX_PIXELS",
    "MAX_RATE_PER_S",
    "MAX_SCHEDULE_RATES",
    "MAX_ROUTER_WEIGHT",
    "MAX_SCORE_SE",
    "MAX_SECONDS",
    "MAX_STEPS",
    "MAX_THREADS",
    "MAX_TRACE_S",
    "MAX_WATTS",
    "MIN_RATE_PER_S",
    "range_problem",
]

#: Seconds of one denoising step, one call's overhead or one pipeline stage: no text-to-image
#: pipeline on any device spends an hour on one of them.
MAX_SECONDS = 3600.0
#: Bytes of memory: 16 TiB, far beyond any accelerator or edge device (the largest hold 0.2 TiB).
MAX_MEMORY_BYTES = 2**44
#: Side of a generated image in pixels: a million (10^12 pixels an image) is past what any pipeline
#: renders or any device holds; the profiler's tests ask for exactly this to provoke failed generations.
MAX_PIXELS = 2**20
#: No single device draws 10 kW, so no image costs more than that for :data:`MAX_SECONDS`.
MAX_WATTS = 10_000.0
MAX_JOULES = MAX_WATTS * MAX_SECONDS
#: Images in one pipeline call: a 512 px Stable Diffusion image's UNet activations take over
#: 100 MiB, so no device holds 1,024 of them at once; the planner's batch search grows with the
#: largest batch size, so this also bounds its work (a million took over 15 minutes and 12 GB).
MAX_BATCH_SIZE = 1024
#: Denoising steps: diffusion models are trained on 1,000 noise levels and no sampler takes ten times as many.
MAX_STEPS = 10_000
#: A classifier-free guidance scale: distilled models run unguided (0 or 1) and guided ones between
#: about 3 and 15; at 100 the amplified difference of the two noise predictions swamps the prediction
#: itself and every image saturates, so no profile runs there and a larger scale is a slip.
MAX_GUIDANCE_SCALE = 100.0
#: CPU threads of one process: Linux is built for at most 8,192 CPUs (``CONFIG_NR_CPUS`` under
#: ``MAXSMP``), and a server started with more threads than that only thrashes.
MAX_THREADS = 8192
#: Images or measurements behind one fit: more than a year of profiling at 30 images/s, and still
#: exact in float64 and within a C long wherever numpy converts it.
MAX_COUNT = 10**9
#: A standard error of a CLIPScore mean or spread (points) can be no wider than the whole scale.
MAX_SCORE_SE = CLIPSCORE_RANGE[1] - CLIPSCORE_RANGE[0]
#: Arrival rates (requests/s): below one request in about 12 days there is no load to plan for
#: (such a rate is a unit slip, e.g. a trace in epoch seconds, and divides to zero downstream);
#: above a million per second no single device serves images.
MIN_RATE_PER_S = 1e-6
MAX_RATE_PER_S = 1e6
#: Rates one plan schedule plans: a thousand plans already take minutes where an SLO is planned for, and a
#: server switching between rates a thousandth of the range apart switches on noise.
MAX_SCHEDULE_RATES = 1000
#: A delay or latency SLO (s): a week; past it the delay distribution's grid no longer fits an integer.
MAX_DELAY_S = 7 * 86_400.0
#: A compute budget (GPUs): no edge site pools more than 1,024 GPUs under one plan.
MAX_BUDGET_GPUS = 1024.0
#: CLIPScore points one second of delay is worth: the whole scale is 100 points, so at a million a
#: microsecond already outweighs it; larger weights only overflow the utility.
MAX_DELAY_WEIGHT = 1e6
#: A planning trace spans at most a year (s); epoch seconds (about 1.7e9) are far beyond it.
MAX_TRACE_S = 366 * 86_400.0
#: A router's logistic weights: exp() overflows float64 past 709, so a weight of 1,000 cannot come
#: from a fit (shipped routers stay below 10); one that large would decide every prompt by itself.
MAX_ROUTER_WEIGHT = 1000.0


def range_problem(
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    what: str = "a number",
) -> str | None:
    """What is wrong with ``value`` against a range, as ``"expected …, but got …"``, or None when it is fine.

    Args:
        value: the number (int or float).
        minimum: the least allowed value, or None.
        maximum: the largest allowed value, or None.
        strict: ``minimum`` itself is not allowed (``> minimum``).
        what: what the number is, e.g. ``"seconds"`` or ``"a batch size"``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, but got {value}"
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        return f"expected {what} {'>' if strict else '>='} {minimum:g}, but got {value}"
    if maximum is not None and value > maximum:
        return f"expected {what} <= {maximum:g}, but got {value}"
    return None
