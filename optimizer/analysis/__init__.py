"""The analysis after planning: how sure a plan is, how it changes, what misrouting costs.

:func:`assess` (decision confidence from a bootstrap over the table's uncertain numbers, drawn by
:func:`parameter_model`) and :func:`robust_plans`; :func:`next_batch` (adaptive profiling: which cells
to measure next); :func:`compare_plans`; :func:`misrouting_cost` (a router's errors priced by the
table); :func:`sweep` over rates and budgets with its figures; :func:`plan_schedule`, a plan for
every arrival rate, with its figure. The modules behind these names are private.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "._adaptive": ("DEFAULT_TARGET", "next_batch"),
        "._compare": ("DECISION_TOLERANCE", "PlanChange", "PlanComparison", "compare_plans", "plan_changes"),
        "._figures": ("plot_convergence", "plot_schedule", "plot_sweep"),
        "._misrouting": ("MisroutingCost", "misrouting_cost"),
        "._schedule": ("plan_schedule", "rate_grid", "trace_rate_range"),
        "._sweep": ("BOUNDS", "COMPARED_BELOW", "SIMULATED", "sweep", "write_csv"),
        "._table_parameters": ("DEFAULT_SAMPLES", "parameter_model"),
        "._uncertainty": (
            "DEFAULT_QUANTILE",
            "FREQUENCY_CHECKED_IMAGES",
            "Assessment",
            "Decision",
            "assess",
            "robust_plans",
            "whole_category_search_obstacle",
        ),
    },
)
