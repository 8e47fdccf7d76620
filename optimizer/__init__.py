"""genedge.optimizer: the system model, the planners and their baselines, and the simulation.

Planning needs numpy and scipy only.
"""

from genedge.optimizer.anneal import AnnealState, anneal, metropolis
from genedge.optimizer.assignment import (
    direct_assignment,
    polish_requests,
    price_directed_assignment,
    probabilistic_assignment,
    uniform_assignment,
)
from genedge.optimizer.baselines import (
    direct,
    equal_allocation,
    optimal_step,
    paper_method,
    paper_routing,
    random_assignment,
)
from genedge.optimizer.compare import DECISION_TOLERANCE, PlanChange, PlanComparison, compare_plans, plan_changes
from genedge.optimizer.exact import exact_search, utility_upper_bound
from genedge.optimizer.methods import METHODS, PROPOSED, run_methods
from genedge.optimizer.problem import Problem
from genedge.optimizer.propose import propose
from genedge.optimizer.result import Plan, PlanResult, PlanState, PlanStatus
from genedge.optimizer.synthetic import synthetic_problem
from genedge.optimizer.system import DEPLOYED_MIN_REQUESTS, Evaluation, deployed_mask, evaluate, optimal_shares
from genedge.optimizer.workload import Workload

__all__ = [
    "AnnealState",
    "DECISION_TOLERANCE",
    "DEPLOYED_MIN_REQUESTS",
    "Evaluation",
    "METHODS",
    "PROPOSED",
    "Plan",
    "PlanChange",
    "PlanComparison",
    "PlanResult",
    "PlanState",
    "PlanStatus",
    "Problem",
    "Workload",
    "anneal",
    "compare_plans",
    "deployed_mask",
    "direct",
    "direct_assignment",
    "equal_allocation",
    "evaluate",
    "exact_search",
    "metropolis",
    "optimal_shares",
    "optimal_step",
    "paper_method",
    "paper_routing",
    "plan_changes",
    "polish_requests",
    "price_directed_assignment",
    "probabilistic_assignment",
    "propose",
    "random_assignment",
    "run_methods",
    "synthetic_problem",
    "uniform_assignment",
    "utility_upper_bound",
]
