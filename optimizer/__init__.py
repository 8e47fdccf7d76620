"""genedge.optimizer: plans for a calibration table and a workload, in four rooms.

- :mod:`genedge.optimizer.model` — the system model: the problem, workloads, delay models and queueing
  laws, the objective and a plan's figures, arrival processes and the router;
- :mod:`genedge.optimizer.planners` — the proposed planner, exact search with its bound, the baselines;
- :mod:`genedge.optimizer.simulation` — discrete-event runs of a plan checked against the model;
- :mod:`genedge.optimizer.analysis` — after planning: confidence, robust plans, adaptive profiling,
  plan comparison, misrouting cost, sweeps.

Each room's public names are its package's ``__all__`` (the modules behind them are private);
:mod:`~genedge.optimizer.inputs` builds a problem from command-line style options and
:mod:`~genedge.optimizer.plan_file` the plan document from a result. Planning needs numpy and
scipy only; names are imported on first use (PEP 562), so importing one room does not load the others.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".analysis": (
            "DECISION_TOLERANCE",
            "MisroutingCost",
            "PlanChange",
            "PlanComparison",
            "compare_plans",
            "misrouting_cost",
            "plan_changes",
        ),
        ".model": (
            "Arrivals",
            "DEPLOYED_MIN_REQUESTS",
            "DelayModel",
            "Evaluation",
            "Problem",
            "Router",
            "Slo",
            "SmoothWeightedRoundRobin",
            "TraceReplay",
            "Workload",
            "delay_model",
            "deployed_mask",
            "evaluate",
            "gamma_arrivals",
            "mmpp_arrivals",
            "optimal_shares",
            "poisson_arrivals",
            "read_trace",
            "score_plan",
        ),
        ".planners": (
            "METHODS",
            "PROPOSED",
            "AnnealState",
            "Plan",
            "PlanResult",
            "PlanState",
            "PlanStatus",
            "anneal",
            "direct",
            "direct_assignment",
            "equal_allocation",
            "exact_search",
            "metropolis",
            "optimal_step",
            "paper_method",
            "paper_routing",
            "polish_requests",
            "price_directed_assignment",
            "probabilistic_assignment",
            "propose",
            "random_assignment",
            "run_methods",
            "scored_upper_bound",
            "uniform_assignment",
            "utility_upper_bound",
        ),
        ".simulation": (
            "RequestRecords",
            "compare_arrival_models",
            "simulate_arrivals",
            "simulate_open_plan",
            "simulate_plan",
        ),
    },
)
