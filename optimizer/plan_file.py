"""The plan document (DESIGN §2.4): what a deployment reads, as JSON.

A plan holds the routing table, steps and compute share per model and how to
realize each share on the GPU, the predicted figures, the baselines' figures on
the same inputs, and hashes of the inputs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genedge.contract.bounds import MAX_BATCH_SIZE, MAX_STEPS
from genedge.contract.fields import FieldReader
from genedge.contract.files import ArtifactError, read_json, write_json_atomic
from genedge.optimizer.model import BUDGET_RTOL, ONE_IMAGE, ROW_SUM_TOL, ImagesPerRequest, Problem, Slo
from genedge.optimizer.planners import PlanResult, relative_change

if TYPE_CHECKING:
    from genedge.optimizer.analysis import MisroutingCost
    from genedge.optimizer.model import Workload

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "PlanError",
    "PlanDocument",
    "PlanFigures",
    "PlanInputs",
    "PlanModel",
    "plan_to_dict",
    "plan_inputs",
    "save_plan",
    "load_plan",
    "plan_from_dict",
    "validate_plan",
]

PLAN_SCHEMA_VERSION = 1
_KIND = "genedge.plan"
_FIGURES = ("mean_clipscore", "mean_delay_s", "p95_delay_s", "utility")


class PlanError(ArtifactError):
    """A plan document is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class PlanInputs:
    """What a plan was made for, as a server and a load test read it (a plan's ``inputs``).

    Attributes:
        table: the calibration table's path or shipped name as given to ``genedge plan``, if recorded.
        table_sha256: sha256 of that table file's bytes, if recorded.
        slo: the latency objective planned for, if any.
        workload: category → planned demand (per window, or per second under open arrivals).
        arrivals: the delay model's arrival model (``window`` where the plan does not say).
        routing_realization: how routing fractions are realized (``deterministic`` where not said).
        composition: what each category's requests truly are, where planned for routed prompts.
        images: how many images one request asks for (one where the plan does not say).
        budget_gpu / weight_points_per_s / device_memory_bytes / min_clipscore / max_shortfall /
            energy_price_points_per_j / batching: the problem's settings (see
            :class:`~genedge.optimizer.model.Problem`).
    """

    table: str | None
    table_sha256: str | None
    slo: Slo | None
    workload: Mapping[str, float]
    arrivals: str
    routing_realization: str
    composition: Mapping[str, Mapping[str, float]] | None
    images: ImagesPerRequest
    budget_gpu: float | None
    weight_points_per_s: float | None
    device_memory_bytes: float | None
    min_clipscore: float | None
    max_shortfall: float | None
    energy_price_points_per_j: float
    batching: bool


@dataclass(frozen=True)
class PlanModel:
    """One model's entry in a plan (a plan's ``models.KEY``).

    Attributes:
        deployed: whether the plan serves the model.
        steps: its denoising steps (None where not deployed).
        share: its GPU share.
        service_s: one call (a batch of up to ``max_batch`` images) on its share (None where not deployed).
        max_batch: the largest batch a call takes, where the plan says.
    """

    deployed: bool
    steps: int | None
    share: float
    service_s: float | None
    max_batch: int | None

    @property
    def batch(self) -> int:
        """The largest batch a call takes: ``max_batch``, or 1 where the plan does not say."""
        return 1 if self.max_batch is None else self.max_batch


@dataclass(frozen=True)
class PlanFigures:
    """A plan's predicted figures at the workload it was planned for (a plan's ``predicted``).

    Attributes:
        mean_clipscore: mean CLIPScore of the served images (points).
        mean_delay_s / p95_delay_s: mean and 95th-percentile response time (s); finite in a servable plan.
        p99_delay_s: 99th-percentile response time (s), where the plan says.
        utility: U = mean CLIPScore − w · mean delay (− the energy term), in points.
        stable: every queue is stable at the planned workload.
        feasible: stable, and the plan's SLO and quality floor (if any) are met (None where the plan does not say).
        slo_attainment: P(T ≤ SLO), where the plan has an SLO.
        mean_energy_j: mean energy per request (J), where the table has energy.
    """

    mean_clipscore: float
    mean_delay_s: float
    p95_delay_s: float
    p99_delay_s: float | None
    utility: float
    stable: bool
    feasible: bool | None
    slo_attainment: float | None
    mean_energy_j: float | None


@dataclass(frozen=True)
class PlanDocument:
    """A plan file read once: its parts typed, so no reader downstream indexes the JSON.

    Attributes:
        method: the method that made it.
        inputs: what it was made for.
        models: model key → its entry, in the plan's order.
        routing: category → model → probability, in the plan's category order.
        predicted: the plan's predicted figures at its planned workload.
        raw: the document as read, for those who pass it on unchanged (``GET /v1/plan``, a load
            test's manifest and its hash).
    """

    method: str
    inputs: PlanInputs
    models: Mapping[str, PlanModel]
    routing: Mapping[str, Mapping[str, float]]
    predicted: PlanFigures
    raw: Mapping[str, Any]

    @property
    def deployed(self) -> dict[str, PlanModel]:
        """The deployed models' entries, in the plan's order."""
        return {key: entry for key, entry in self.models.items() if entry.deployed}

    def routed(self, category: str, model: str) -> float:
        """p[category, model]: the probability the plan routes ``category`` to ``model`` (0 where absent)."""
        return self.routing[category].get(model, 0.0)


def _figures(result: PlanResult) -> dict[str, Any]:
    """A plan's predicted figures; a figure that is infinite (an unstable queue) is written as null."""

    def finite(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    figures: dict[str, Any] = {
        "mean_clipscore": result.mean_quality,
        "mean_delay_s": finite(result.mean_delay_s),
        "p95_delay_s": finite(result.p95_delay_s),
        "p99_delay_s": finite(result.p99_delay_s),
        "utility": finite(result.utility),
        "stable": result.stable,
        "feasible": result.feasible,
    }
    if result.shortfall is not None:
        figures["shortfall_probability"] = dict(zip(result.plan.categories, result.shortfall.tolist()))
    if result.attainment is not None:
        figures["slo_attainment"] = result.attainment
        figures["slo_attainment_per_category"] = dict(zip(result.plan.categories, result.category_attainment.tolist()))
    if result.mean_energy_j is not None:
        figures["mean_energy_j"] = result.mean_energy_j
    if result.mg1_mean_delay_s is not None:
        figures["mg1_mean_delay_s"] = result.mg1_mean_delay_s
    return figures


def plan_to_dict(
    problem: Problem,
    result: PlanResult,
    *,
    others: Mapping[str, PlanResult] | None = None,
    inputs: Mapping[str, Any] | None = None,
    uncertainty: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the plan document for ``result``.

    Args:
        problem: the problem the plan was made for.
        result: the chosen plan.
        others: other methods' results on the same problem, reported beside it.
        inputs: extra input description (table path, derived share, ...; see :func:`plan_inputs`).
        uncertainty: how sure the plan is (:meth:`~genedge.optimizer.analysis.Assessment.to_dict`),
            written as ``uncertainty`` where given.
    """
    document = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "kind": _KIND,
        "method": result.method,
        "seed": result.seed,
        "message": result.message,
        "inputs": {**_problem_inputs(problem), **dict(inputs or {})},
        "routing": result.plan.routing,
        "models": _model_entries(problem, result),
        "predicted": _figures(result),
        "baselines": _baselines(result, others or {}),
    }
    if uncertainty is not None:
        document["uncertainty"] = dict(uncertainty)
    return document


def plan_inputs(
    table: str | os.PathLike[str],
    table_source_counts: Mapping[str, int],
    workload: Workload,
    *,
    prompts: Any = None,
    misrouting: MisroutingCost | None = None,
) -> dict[str, Any]:
    """The ``inputs`` ``genedge plan`` adds to a plan document (beside the problem's own, see :func:`plan_to_dict`).

    Args:
        table: the calibration table's path (or shipped name) as given.
        table_source_counts: its numbers per source (:meth:`CalibrationTable.source_counts`).
        workload: the planned workload (its composition is recorded with ``prompts``).
        prompts: the prompt file's :class:`~genedge.router.PromptCounts`, where the workload was
            counted from one.
        misrouting: the utility the router's errors cost
            (:func:`~genedge.optimizer.analysis.misrouting_cost`), where computed.
    """
    inputs: dict[str, Any] = {"table": str(table), "table_source_counts": dict(table_source_counts)}
    if prompts is not None:
        inputs["prompts"] = {
            "file": prompts.source,
            "rows": prompts.rows,
            "labelled": dict(prompts.labelled),
            "routed": dict(prompts.routed),
            "not_placed": prompts.not_placed,
            "router": prompts.router,
            "composition": workload.composition,
        }
    if misrouting is not None:
        inputs["misrouting"] = {
            **dataclasses.asdict(misrouting),
            "loss": misrouting.loss,
            "planning_gain": misrouting.planning_gain,
        }
    return inputs


def _model_entries(problem: Problem, result: PlanResult) -> dict[str, Any]:
    """Per model: deployed, steps, share and its realization on the GPU, load and service time."""
    plan = result.plan
    models = {}
    for i, key in enumerate(plan.models):
        share = float(plan.share_vector[i])
        deployed = bool(result.deployed[i])
        models[key] = {
            "deployed": deployed,
            "steps": plan.steps_per_model[i] if deployed else None,
            "share": share,
            # Per window, or per second under open arrivals (inputs.arrivals says which).
            "expected_requests": float(result.loads[i]),
            "max_batch": int(plan.batch_per_model[i]) if plan.batch_per_model else 1,
            # One call (a batch of up to max_batch images) on the model's share.
            "service_s": float(result.service_s[i]) if deployed else None,
            "utilization": float(result.utilization[i]) if deployed and result.utilization is not None else None,
            # MPS caps the fraction of SMs a client process may use; a time-slice
            # scheduler takes the share as a weight instead.
            "realization": {
                "cuda_mps_active_thread_percentage": max(1, min(100, math.ceil(100 * share))) if deployed else 0,
                "time_slice_weight": share / problem.budget,
            },
        }
    return models


def _baselines(result: PlanResult, others: Mapping[str, PlanResult]) -> dict[str, Any]:
    """The other methods' figures, each with its utility change against the plan's."""
    baselines = {}
    for name, other in others.items():
        if name == result.method:
            continue
        entry = _figures(other)
        comparable = math.isfinite(other.utility) and math.isfinite(result.utility)
        entry["utility_change_vs_plan_pct"] = (
            100 * relative_change(other.utility, result.utility) if comparable else None
        )
        if other.upper_bound is not None:
            entry["upper_bound"] = other.upper_bound
        baselines[name] = entry
    return baselines


def _problem_inputs(problem: Problem) -> dict[str, Any]:
    """What the plan was made for: models, workload, delay model, objective and the inputs' hashes."""
    return {
        "models": list(problem.models),
        "categories": list(problem.categories),
        "workload": dict(zip(problem.categories, problem.counts.tolist())),
        "workload_unit": problem.demand_unit,
        "arrivals": problem.arrivals,
        "routing_realization": problem.realization,
        **({} if problem.images.single else {"images_per_request": problem.images.to_document()}),
        "slo": None
        if problem.slo is None
        else {
            "seconds": problem.slo.seconds,
            "attainment": problem.slo.attainment,
            "scope": problem.slo.scope,
        },
        "energy_price_points_per_j": problem.energy_price,
        "batching": problem.batch_sizes is not None,
        "budget_gpu": problem.budget,
        "weight_points_per_s": problem.weight,
        "device_memory_bytes": problem.device_memory_bytes,
        "table_sha256": problem.table_sha256,
        "workload_sha256": problem.workload_sha256,
        "min_clipscore": problem.min_clipscore,
        "max_shortfall": problem.max_shortfall if problem.min_clipscore is not None else None,
        "left_out": {
            key: {"peak_memory_bytes": problem.left_out[key], "reason": reason}
            for key, reason in problem.left_out_reasons().items()
        },
    }


def save_plan(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a plan document atomically (after checking it with :func:`validate_plan`)."""
    path = Path(path)
    validate_plan(document, str(path))
    write_json_atomic(path, document)
    return path


def load_plan(path: str | os.PathLike[str]) -> PlanDocument:
    """Read and validate a plan file (see :func:`plan_from_dict`).

    Raises:
        PlanError: naming the file and field that is wrong.
    """
    path = Path(path)
    return plan_from_dict(read_json(path, "a JSON plan", PlanError), str(path))


def plan_from_dict(document: Mapping[str, Any], where: str) -> PlanDocument:
    """A parsed plan document, checked and read into its typed parts in one pass.

    Routing rows sum to 1 over known models; shares are finite, non-negative and within the budget; a
    deployed model has steps (within :data:`~genedge.contract.bounds.MAX_STEPS`), a share, a call time
    and a batch size of at least 1; the predicted figures are finite; every field is of its type (read
    through :class:`~genedge.contract.fields.FieldReader`).

    Raises:
        PlanError: naming ``where`` and the field that is wrong.
    """
    r = FieldReader(where, PlanError)
    if not isinstance(document, Mapping):
        raise r.fail("document", f"expected a JSON object, but got {type(document).__name__}")
    for field in ("schema_version", "kind", "method", "inputs", "routing", "models", "predicted"):
        if field not in document:
            raise r.fail(field, "missing field")
    if document["schema_version"] != PLAN_SCHEMA_VERSION or document["kind"] != _KIND:
        raise r.fail("schema_version", f"expected a {_KIND!r} document of schema {PLAN_SCHEMA_VERSION}")
    models = r.get(document, "models", "", dict)
    routing = _read_routing(r, r.get(document, "routing", "", dict), models)
    _check_shares(r, models, r.opt(r.get(document, "inputs", "", dict), "budget_gpu", "inputs", float))
    _check_figures(r, r.get(document, "predicted", "", dict))
    return PlanDocument(
        method=r.get(document, "method", "", str),
        inputs=_read_inputs(r, document["inputs"]),
        models={key: _read_model(r, entry, f"models.{key}") for key, entry in document["models"].items()},
        routing=routing,
        predicted=_read_figures(r, document["predicted"]),
        raw=document,
    )


def _read_figures(r: FieldReader, predicted: Mapping[str, Any]) -> PlanFigures:
    """A plan's ``predicted`` (its required figures already checked finite by :func:`_check_figures`)."""
    return PlanFigures(
        mean_clipscore=r.get(predicted, "mean_clipscore", "predicted", float),
        mean_delay_s=r.get(predicted, "mean_delay_s", "predicted", float),
        p95_delay_s=r.get(predicted, "p95_delay_s", "predicted", float),
        p99_delay_s=r.opt(predicted, "p99_delay_s", "predicted", float),
        utility=r.get(predicted, "utility", "predicted", float),
        # Finite delays (_check_figures) mean stable queues, where an older plan does not say.
        stable=r.opt(predicted, "stable", "predicted", bool) is not False,
        feasible=r.opt(predicted, "feasible", "predicted", bool),
        slo_attainment=r.opt(predicted, "slo_attainment", "predicted", float),
        mean_energy_j=r.opt(predicted, "mean_energy_j", "predicted", float),
    )


def _read_images(r: FieldReader, inputs: Mapping[str, Any]) -> ImagesPerRequest:
    """``inputs.images_per_request`` ({count: probability}); one image where absent."""
    document = r.opt(inputs, "images_per_request", "inputs", dict)
    if document is None:
        return ONE_IMAGE
    try:
        return ImagesPerRequest.from_document(document)
    except ValueError as err:
        raise r.fail("inputs.images_per_request", str(err)) from None


def _read_inputs(r: FieldReader, inputs: Mapping[str, Any]) -> PlanInputs:
    """A plan's ``inputs`` (absent optional fields take the defaults plans before them were made under)."""
    slo = r.opt(inputs, "slo", "inputs", dict)
    if slo is not None:
        try:
            slo = Slo(
                r.get(slo, "seconds", "inputs.slo", float),
                r.get(slo, "attainment", "inputs.slo", float),
                r.get(slo, "scope", "inputs.slo", str),
            )
        except ValueError as err:
            raise r.fail("inputs.slo", str(err)) from None
    workload = r.opt(inputs, "workload", "inputs", dict) or {}
    prompts = r.opt(inputs, "prompts", "inputs", dict) or {}
    return PlanInputs(
        table=r.opt(inputs, "table", "inputs", str),
        table_sha256=r.opt(inputs, "table_sha256", "inputs", str),
        slo=slo,
        workload={c: r.check(n, f"inputs.workload.{c}", float) for c, n in workload.items()},
        arrivals=r.opt(inputs, "arrivals", "inputs", str) or "window",
        routing_realization=r.opt(inputs, "routing_realization", "inputs", str) or "deterministic",
        composition=r.opt(prompts, "composition", "inputs.prompts", dict),
        images=_read_images(r, inputs),
        budget_gpu=r.opt(inputs, "budget_gpu", "inputs", float),
        weight_points_per_s=r.opt(inputs, "weight_points_per_s", "inputs", float),
        device_memory_bytes=r.opt(inputs, "device_memory_bytes", "inputs", (int, float)),
        min_clipscore=r.opt(inputs, "min_clipscore", "inputs", float),
        max_shortfall=r.opt(inputs, "max_shortfall", "inputs", float),
        energy_price_points_per_j=r.opt(inputs, "energy_price_points_per_j", "inputs", float) or 0.0,
        batching=bool(r.opt(inputs, "batching", "inputs", bool)),
    )


def _read_model(r: FieldReader, entry: Mapping[str, Any], path: str) -> PlanModel:
    """One ``models.KEY`` entry (already checked for its share and, where deployed, its steps): a deployed
    model's call time is a number > 0, a batch size at least 1 and at most MAX_BATCH_SIZE."""
    deployed = bool(r.opt(entry, "deployed", path, bool))
    max_batch = r.opt(entry, "max_batch", path, int)
    if max_batch is not None:
        r.bounded(max_batch, f"{path}.max_batch", minimum=1, maximum=MAX_BATCH_SIZE, what="a batch size")
    return PlanModel(
        deployed=deployed,
        steps=r.opt(entry, "steps", path, int),
        share=r.get(entry, "share", path, float),
        service_s=r.number(entry, "service_s", path, minimum=0, strict=True)
        if deployed
        else r.opt(entry, "service_s", path, float),
        max_batch=max_batch,
    )


def _read_routing(r: FieldReader, routing: Mapping[str, Any], models: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Each routing row: probabilities over known models, each >= 0, summing to 1."""
    rows = {}
    for category, row in routing.items():
        path = f"routing.{category}"
        unknown = sorted(set(r.check(row, path, dict)) - set(models))
        if unknown:
            raise r.fail(path, f"models {unknown} are not in 'models'")
        rows[category] = {model: r.check(p, f"{path}.{model}", float) for model, p in row.items()}
        if any(p < 0 for p in rows[category].values()) or abs(sum(rows[category].values()) - 1) > ROW_SUM_TOL:
            raise r.fail(path, f"expected probabilities summing to 1, but got {row}")
    return rows


def _check_shares(r: FieldReader, models: Mapping[str, Any], budget: float | None) -> None:
    """Shares finite and >= 0, within the budget; a deployed model has steps and a share > 0."""
    total = 0.0
    for key, entry in models.items():
        share = r.check(entry, f"models.{key}", dict).get("share")
        if share is None or r.check(share, f"models.{key}.share", float) < 0:
            raise r.fail(f"models.{key}.share", f"expected a share >= 0, but got {share!r}")
        share = float(share)
        total += share
        if entry.get("deployed"):
            steps = entry.get("steps")
            if not isinstance(steps, int) or share <= 0:
                raise r.fail(f"models.{key}", "a deployed model needs integer steps and a share > 0")
            r.bounded(steps, f"models.{key}.steps", minimum=1, maximum=MAX_STEPS, what="a step count")
    if budget is not None and total > budget * (1 + BUDGET_RTOL):
        raise r.fail("models", f"shares sum to {total}, more than the budget {budget}")


def _check_figures(r: FieldReader, predicted: Mapping[str, Any]) -> None:
    """The figures every plan states are finite: a plan whose queues cannot be stable is not servable."""
    for figure in _FIGURES:
        value = predicted.get(figure)
        try:
            r.check(value, f"predicted.{figure}", float)
        except PlanError:
            raise r.fail(
                f"predicted.{figure}",
                f"expected a finite number, but got {value!r} (a plan whose queues cannot be stable is not servable)",
            ) from None


def validate_plan(document: Mapping[str, Any], where: str) -> None:
    """Check a plan document: :func:`plan_from_dict`'s checks, the typed document left unused.

    Raises:
        PlanError: naming ``where`` and the field.
    """
    plan_from_dict(document, where)
