"""What a plan and its calibration table say to serve, checked before anything starts.

:func:`serve_spec` reads a plan document and the table it was made from and returns a
:class:`ServeSpec`: each deployed model with its steps, share, batch and the generation settings
its latencies were measured with (resolution, guidance scale, dtype, scheduler, from the table's
profile manifest), placed on devices, and the queue bound past which a request is refused.

A plan for more GPUs than one is placed by first-fit decreasing: a model whose share exceeds one
device becomes replicas (whole devices and the remainder), requests split among them in proportion
to their shares, and each device gets one deployment that owns the replicas placed on it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.contract.runs import DEFAULT_DTYPE, DEFAULT_GUIDANCE_SCALE
from genedge.serve.protocol import Overloaded
from genedge.serve.shares import SHARE_SUM_TOLERANCE

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable, ProfileSettings
    from genedge.optimizer.plan_file import PlanDocument, PlanModel

__all__ = [
    "DEFAULT_QUEUE_BOUND_S",
    "SERVED_MODEL_NAME",
    "ServeError",
    "ServedModel",
    "ServeSpec",
    "model_specs_from_pairs",
    "place_on_devices",
    "queue_bound",
    "refusal",
    "serve_spec",
]

#: Without an SLO, a model refuses requests once its queue holds this many seconds of planned work.
DEFAULT_QUEUE_BOUND_S = 30.0
#: The ``model`` an OpenAI-compatible client may name: the plan, which picks the model per request.
SERVED_MODEL_NAME = "genedge"


class ServeError(ValueError):
    """A plan that cannot be served as loaded (its table, models or settings do not match)."""


@dataclass(frozen=True)
class ServedModel:
    """One replica of a deployed model, on one device.

    Attributes:
        key: the model key of the plan and the table (also the model spec loaded, unless mapped).
        spec: what to load: a replica name, a saved pipeline folder or a hub id.
        replica: index among the model's replicas (0 when it has one).
        device: index of the device it runs on.
        steps: denoising steps per image.
        share: fraction of its device (the plan's share divided among the replicas).
        max_batch: largest batch of one call.
        service_s: the plan's time of one call on this share (s).
        queue_bound: requests this replica holds (running and waiting) before it refuses more.
        resolution / guidance_scale / dtype / scheduler: the settings its latencies were measured with.
    """

    key: str
    spec: str
    replica: int
    device: int
    steps: int
    share: float
    max_batch: int
    service_s: float
    queue_bound: int
    resolution: int
    guidance_scale: float
    dtype: str
    scheduler: str | None

    @property
    def name(self) -> str:
        """A unique name on the server: the key, with ``#replica`` when the model has several."""
        return self.key if self.replica == 0 else f"{self.key}#{self.replica}"


@dataclass(frozen=True)
class ServeSpec:
    """Everything a server needs from a plan, checked.

    Attributes:
        plan: the plan document as read (what ``GET /v1/plan`` answers).
        table_document: the table document as read from its file (what ``GET /v1/plan`` answers).
        table_sha256: sha256 of the table file's bytes (equal to the plan's).
        categories: the plan's categories, in routing-matrix order.
        category_mapping: the table's category mapping (for the prompt router).
        models: every replica to serve, device by device.
        routing: p[c, replica]: the plan's routing with each model's probability split among its
            replicas in proportion to their shares, shape (categories, replicas).
        devices: number of devices.
        resolution: image side in pixels (every served model's).
        slo_s: the plan's SLO (s), if it has one.
        notes: what the user should know about settings genedge had to choose.
        profile_threads: the torch CPU thread count the table's profiles ran with, when they agree.
    """

    plan: Mapping[str, Any]
    table_document: Mapping[str, Any]
    table_sha256: str
    categories: tuple[str, ...]
    category_mapping: Mapping[str, Any]
    models: tuple[ServedModel, ...]
    routing: np.ndarray
    devices: int
    resolution: int
    slo_s: float | None
    notes: tuple[str, ...] = ()
    profile_threads: int | None = None

    def on_device(self, device: int) -> tuple[ServedModel, ...]:
        """The replicas placed on ``device``."""
        return tuple(m for m in self.models if m.device == device)

    def summary(self) -> dict[str, Any]:
        """What is served, as JSON (``GET /v1/plan``'s ``served``)."""
        return {
            "devices": self.devices,
            "resolution": self.resolution,
            "slo_s": self.slo_s,
            "table_sha256": self.table_sha256,
            "models": [
                {
                    "name": m.name,
                    "key": m.key,
                    "spec": m.spec,
                    "device": m.device,
                    "steps": m.steps,
                    "share": m.share,
                    "max_batch": m.max_batch,
                    "service_s": m.service_s,
                    "queue_bound": m.queue_bound,
                }
                for m in self.models
            ],
        }


def place_on_devices(shares: Mapping[str, float]) -> list[tuple[str, int, int, float]]:
    """Place model shares on whole devices, first-fit decreasing.

    Args:
        shares: model → share in device units (> 0; may exceed 1).

    Returns:
        ``(model, replica, device, share)`` for every replica: a model of share r > 1 becomes
        ``floor(r)`` replicas owning a whole device and one of the remainder, each on its own device
        (so a plan of budget R fits on ``ceil(R)`` devices whenever first-fit finds the packing).
    """
    pieces: list[tuple[str, int, float]] = []
    for key, share in shares.items():
        whole = math.floor(share + SHARE_SUM_TOLERANCE)
        parts = [1.0] * whole
        if share - whole > SHARE_SUM_TOLERANCE:
            parts.append(share - whole)
        pieces.extend((key, replica, part) for replica, part in enumerate(parts or [share]))
    pieces.sort(key=lambda piece: -piece[2])
    free: list[float] = []
    placed = []
    for key, replica, share in pieces:
        device = next(
            (
                d
                for d, room in enumerate(free)
                if share <= room + SHARE_SUM_TOLERANCE and all(p[0] != key for p in placed if p[2] == d)
            ),
            None,
        )
        if device is None:
            free.append(1.0)
            device = len(free) - 1
        free[device] -= share
        placed.append((key, replica, device, share))
    return placed


def queue_bound(service_s: float, max_batch: int, slo_s: float | None, bound_s: float | None) -> int:
    """Requests a model may hold: those that can still finish within the SLO (or the bound) at the plan's pace."""
    horizon = bound_s if bound_s is not None else (slo_s if slo_s is not None else DEFAULT_QUEUE_BOUND_S)
    return max(1, math.floor(horizon / service_s) * max_batch)


def refusal(model: ServedModel, held: int) -> Overloaded | None:
    """The answer to one more image for ``model`` while it holds ``held`` (running and waiting): None within its
    queue bound, else :class:`~genedge.serve.protocol.Overloaded` with the time until it has room (a call's
    service time per batch of the excess), as a Retry-After."""
    if held < model.queue_bound:
        return None
    excess = held + 1 - model.queue_bound
    return Overloaded(
        f"model {model.name!r} holds {held} requests, its bound ({model.queue_bound}: what it serves "
        f"within the plan's bound at {model.service_s:.3g} s a call)",
        retry_after_s=model.service_s * math.ceil(excess / model.max_batch),
    )


def _checked_table_hash(recorded: str | None, table_bytes: bytes, where: str) -> str:
    """The table's sha256, once it is ``recorded``, the one the plan records."""
    actual = hashlib.sha256(table_bytes).hexdigest()
    if recorded is None:
        raise ServeError(
            f"{where}: inputs.table_sha256: the plan records no table hash, so what it was made from cannot be "
            "checked; plan again with 'genedge plan'"
        )
    if recorded != actual:
        raise ServeError(
            f"{where}: inputs.table_sha256: the plan was made from a table with sha256 {recorded[:12]}…, "
            f"but the table loaded has {actual[:12]}…: serve it with the table it was planned on, or plan again"
        )
    return actual


def _deployed_models(
    plan: PlanDocument, table: CalibrationTable, model_specs: Mapping[str, str], where: str
) -> dict[str, PlanModel]:
    """The plan's deployed model entries, once each is in the table and every ``--model`` names one."""
    deployed = plan.deployed
    table_models = table.models
    missing = sorted(set(deployed) - set(table_models))
    if missing:
        raise ServeError(
            f"{where}: models: deployed models {missing} are not in the table (it has {sorted(table_models)})"
        )
    extra = sorted(set(model_specs) - set(deployed))
    if extra:
        raise ServeError(f"--model: {extra} are not models the plan deploys ({sorted(deployed)})")
    return deployed


def _serving_settings(
    table: CalibrationTable,
    deployed: Mapping[str, Any],
    model_specs: Mapping[str, str],
    default_dtype: str,
    where: str,
) -> tuple[dict[str, ProfileSettings], list[str]]:
    """Each deployed model's serving settings (its profile's, or a mapped model's own), and notes on the latter."""
    from genedge.contract.table import ProfileSettings

    profiled = table.profile_settings()
    unknown = sorted(key for key in deployed if key not in profiled and key not in model_specs)
    if unknown:
        raise ServeError(
            f"{where}: models {unknown} have no profile settings in the table (its numbers for them were not "
            "measured by genedge): say what to load with --model KEY=SPEC, or serve a plan made from a table "
            "calibrated from a profile of the models it serves"
        )
    notes = []
    for key in sorted(set(deployed) - set(profiled)):
        from genedge.profiler.models import native_resolution

        resolution = native_resolution(model_specs[key])
        profiled[key] = ProfileSettings(
            resolution=resolution, scheduler=None, guidance_scale=DEFAULT_GUIDANCE_SCALE, dtype=default_dtype
        )
        notes.append(
            f"{key}: the table holds no profile settings for it, so {model_specs[key]} runs at its native "
            f"{resolution} px, its own scheduler, guidance {DEFAULT_GUIDANCE_SCALE} and {default_dtype}: the plan's "
            "latencies are the table's, not measured with these settings"
        )
    resolutions = {profiled[key].resolution for key in deployed}
    if len(resolutions) != 1:
        raise ServeError(f"{where}: deployed models were profiled at different resolutions {sorted(resolutions)}")
    return profiled, notes


def _served_models(
    deployed: Mapping[str, PlanModel],
    settings: Mapping[str, ProfileSettings],
    model_specs: Mapping[str, str],
    slo_s: float | None,
    queue_bound_s: float | None,
) -> tuple[ServedModel, ...]:
    """One served model per replica the shares place on devices, in device order."""
    placed = place_on_devices({key: entry.share for key, entry in deployed.items()})
    models = []
    for key, replica, device, share in sorted(placed, key=lambda p: (p[2], p[0], p[1])):
        entry = deployed[key]
        # one call on the replica's share: the plan's call time on the model's whole share r, times r / share
        service_s = entry.service_s * entry.share / share
        max_batch = entry.batch
        models.append(
            ServedModel(
                key=key,
                spec=model_specs.get(key, key),
                replica=replica,
                device=device,
                steps=entry.steps,
                share=share,
                max_batch=max_batch,
                service_s=service_s,
                queue_bound=queue_bound(service_s, max_batch, slo_s, queue_bound_s),
                resolution=settings[key].resolution,
                guidance_scale=settings[key].guidance_scale,
                dtype=settings[key].dtype,
                scheduler=settings[key].scheduler,
            )
        )
    return tuple(models)


def _replica_routing(
    plan: PlanDocument, deployed: Mapping[str, PlanModel], models: Sequence[ServedModel]
) -> np.ndarray:
    """p[c, j]: the plan's routing of category c to replica j's model, split by the replica's part of its share."""
    routing = np.zeros((len(plan.routing), len(models)))
    for j, model in enumerate(models):
        for i, category in enumerate(plan.routing):
            fraction = model.share / deployed[model.key].share  # the replica's part of the model's load
            routing[i, j] = plan.routed(category, model.key) * fraction
    return routing


def serve_spec(
    plan: PlanDocument,
    table: CalibrationTable,
    table_bytes: bytes,
    *,
    model_specs: Mapping[str, str] | None = None,
    queue_bound_s: float | None = None,
    default_dtype: str = DEFAULT_DTYPE,
    where: str = "<plan>",
) -> ServeSpec:
    """Check a plan against its table and say what to serve.

    Args:
        plan: a plan (:func:`genedge.optimizer.plan_file.load_plan`).
        table: the calibration table the plan names, read from ``table_bytes``
            (:func:`genedge.contract.table_file.read_table_file`).
        table_bytes: the table file's bytes (hashed and compared with the plan's ``table_sha256``; their
            document is what ``GET /v1/plan`` answers).
        model_specs: model key → what to load instead of the key (e.g. ``sd15`` → a saved folder);
            required for keys that are not loadable specs themselves.
        queue_bound_s: refuse requests past this many seconds of queued work per model (default:
            the plan's SLO, else :data:`DEFAULT_QUEUE_BOUND_S`).
        default_dtype: weights' dtype for a mapped model the table has no profile settings for.
        where: the plan's name in messages.

    Raises:
        ServeError: the plan records no table hash or another one, a deployed model is not in the
            table, models of different resolutions, or a model mapped that the plan does not deploy.
    """
    actual = _checked_table_hash(plan.inputs.table_sha256, table_bytes, where)
    model_specs = dict(model_specs or {})
    deployed = _deployed_models(plan, table, model_specs, where)
    settings, notes = _serving_settings(table, deployed, model_specs, default_dtype, where)
    slo_s = None if plan.inputs.slo is None else plan.inputs.slo.seconds
    models = _served_models(deployed, settings, model_specs, slo_s, queue_bound_s)
    return ServeSpec(
        plan=plan.raw,
        table_document=json.loads(table_bytes),
        table_sha256=actual,
        categories=tuple(plan.routing),
        category_mapping=table.category_mapping,
        models=models,
        routing=_replica_routing(plan, deployed, models),
        devices=1 + max(m.device for m in models),
        resolution=next(iter(settings[key].resolution for key in deployed)),
        slo_s=slo_s,
        notes=tuple(notes),
        profile_threads=table.profile_threads(),
    )


def model_specs_from_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=SPEC`` strings (``--model``) as a mapping.

    Raises:
        ValueError: a pair without ``=``, or a key given twice.
    """
    specs: dict[str, str] = {}
    for pair in pairs:
        key, sep, spec = pair.partition("=")
        if not sep or not key or not spec:
            raise ValueError(f"--model: expected KEY=SPEC (a plan's model key, then what to load), but got {pair!r}")
        if key in specs:
            raise ValueError(f"--model: {key!r} is given twice")
        specs[key] = spec
    return specs
