"""The planners: each takes a :class:`~genedge.optimizer.model.Problem` and returns a :class:`PlanResult`.

:func:`propose` (the proposed method: price-directed assignment, annealed steps, optimal shares),
:func:`exact_search` and its certified :func:`utility_upper_bound`, the paper's and naive baselines,
and :func:`run_methods`, which runs a named set of them on one problem. The modules behind these
names are private.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "._anneal": ("AnnealState", "anneal", "metropolis"),
        "._assignment": (
            "direct_assignment",
            "polish_requests",
            "price_directed_assignment",
            "probabilistic_assignment",
            "uniform_assignment",
        ),
        "._baselines": (
            "direct",
            "equal_allocation",
            "optimal_step",
            "paper_method",
            "paper_routing",
            "random_assignment",
        ),
        "._exact": ("exact_search", "scored_upper_bound", "utility_upper_bound"),
        "._methods": ("METHODS", "PROPOSED", "check_methods", "run_methods"),
        "._propose": ("ITERATIONS_PER_GRID_STEP", "propose"),
        "._result": ("Plan", "PlanResult", "PlanState", "PlanStatus", "make_result", "relative_change"),
    },
)
