"""genedge.optimizer: the system model, the planners and their baselines, and the simulation.

Planning needs numpy and scipy only. Names are imported on first use (PEP 562), so importing one
module of the package (the problem, a workload) does not load every planner.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".anneal": ("AnnealState", "anneal", "metropolis"),
        ".arrivals": ("Arrivals", "gamma_arrivals", "mmpp_arrivals", "poisson_arrivals", "read_trace"),
        ".assignment": (
            "direct_assignment",
            "polish_requests",
            "price_directed_assignment",
            "probabilistic_assignment",
            "uniform_assignment",
        ),
        ".baselines": (
            "direct",
            "equal_allocation",
            "optimal_step",
            "paper_method",
            "paper_routing",
            "random_assignment",
        ),
        ".compare": ("DECISION_TOLERANCE", "PlanChange", "PlanComparison", "compare_plans", "plan_changes"),
        ".delay": ("DelayModel", "delay_model"),
        ".des": ("RequestRecords", "simulate_arrivals"),
        ".exact": ("exact_search", "scored_upper_bound", "utility_upper_bound"),
        ".methods": ("METHODS", "PROPOSED", "run_methods"),
        ".misrouting": ("MisroutingCost", "misrouting_cost"),
        ".objective": ("score_plan",),
        ".problem": ("Problem", "Slo"),
        ".propose": ("propose",),
        ".result": ("Plan", "PlanResult", "PlanState", "PlanStatus"),
        ".routing": ("Router", "SmoothWeightedRoundRobin"),
        ".simulate": ("compare_arrival_models", "simulate_open_plan", "simulate_plan"),
        ".system": ("DEPLOYED_MIN_REQUESTS", "Evaluation", "deployed_mask", "evaluate", "optimal_shares"),
        ".workload": ("Workload",),
    },
)
