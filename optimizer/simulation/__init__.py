"""The simulation: discrete-event runs of a plan, checked against the system model's prediction.

:func:`simulate_arrivals` serves an arrival stream through a plan's replicas and keeps every request's
times (:class:`RequestRecords`); :func:`simulate_plan` and :func:`simulate_open_plan` compare a plan's
predicted figures with simulated ones under the window and the open-arrival models;
:func:`compare_arrival_models` does so for Poisson, bursty (MMPP) and gamma arrivals;
:func:`simulate_switching` serves an arrival stream under plans that change over time (:class:`ServedPlan`),
as a server of a plan schedule does, and keeps every request's outcome (:class:`SwitchingRecords`). The
modules behind these names are private.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "._des": ("RequestRecords", "simulate_arrivals"),
        "._simulate": ("compare_arrival_models", "simulate_open_plan", "simulate_plan"),
        "._switching": ("ServedPlan", "SwitchingRecords", "simulate_switching"),
    },
)
