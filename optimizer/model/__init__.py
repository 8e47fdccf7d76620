"""The system model: what a plan is worth and how long its requests wait.

A :class:`Problem` (models, categories, steps, budget, optional SLO) built from a calibration table and a
:class:`Workload`; the delay models (:class:`DelayModel`: window FIFO, window random, open queue) and the
queueing laws under them; the objective a planner maximizes (:func:`score_plan`) and a plan's figures
(:func:`evaluate`); the arrival processes and the router that realizes a plan's split. The planners, the
simulation and the analysis build on these names only; the modules behind them are private.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "._arrivals": ("Arrivals", "gamma_arrivals", "mmpp_arrivals", "poisson_arrivals"),
        "._trace": ("CATEGORY_RULE", "RATE_SCALE_RULE", "TraceReplay", "read_trace"),
        "._delay": (
            "ARRIVAL_MODELS",
            "DEPLOYED_MIN_REQUESTS",
            "OPEN",
            "WINDOW",
            "ArrivalModel",
            "DelayModel",
            "arrival_model",
            "deployed_mask",
            "fifo_delay_coefficient",
            "utilization",
        ),
        "._delay_models": ("WindowRandom", "delay_model", "delay_model_class"),
        "._images": ("ONE_IMAGE", "ImagesPerRequest"),
        "._objective": ("INFEASIBLE", "score_plan", "unconstrained_utility"),
        "._problem": ("Problem", "Slo"),
        "._queueing": ("md1_mean_response",),
        "._routing": ("ROW_SUM_TOL", "Realization", "Router", "SmoothWeightedRoundRobin"),
        "._system": (
            "BUDGET_RTOL",
            "Evaluation",
            "GroupFigures",
            "evaluate",
            "optimal_shares",
            "utility_with_optimal_shares",
        ),
        "._workload": ("DEFAULT_MIX", "DEFAULT_REQUESTS", "Workload", "default_mix", "workload_from_options"),
    },
)
