"""Driving one call of a loaded diffusers pipeline: the profiler's measured call and the server's.

A call runs as three stages on the device: text encoding (:func:`encode_prompts`), denoising to
latents with a step-end callback (:func:`denoise`), and VAE decoding (:func:`decode_latents`), under
the grad mode :func:`grad_mode` (recorded in every manifest as :data:`GRAD_MODE`). The profiler times
the stages, each step and its own measuring around them (:func:`measure_call`), and takes the pipeline's
own memory as a call's peak less what the process held before the model loaded (:func:`memory_baseline`,
:func:`pipeline_peak`); the server gates each stage and step on its share scheduler. Pipelines come from
:func:`genedge.profiler.load_pipeline`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from genedge.contract.runs import PROCESS_PEAK_COLUMNS
from genedge.profiler._imports import require
from genedge.profiler.host import trim_heap
from genedge.profiler.monitor import Monitor, WindowReading
from genedge.profiler.timing import Clock, step_timer

__all__ = [
    "GRAD_MODE",
    "Measurement",
    "MemoryBaseline",
    "memory_baseline",
    "pipeline_peak",
    "grad_mode",
    "seeded_generators",
    "encode_prompts",
    "denoise",
    "decode_latents",
    "measure_call",
]

#: The grad mode every call runs under, as recorded in a run's manifest.
GRAD_MODE = "torch.inference_mode"
#: A ``callback_on_step_end``: ``(pipe, step_index, timestep, callback_kwargs) -> callback_kwargs``.
StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
# What encode_prompt returns, per pipeline class, as the keyword names the pipeline call accepts.
_EMBEDDING_NAMES = {
    "StableDiffusionPipeline": ("prompt_embeds", "negative_prompt_embeds"),
    "StableDiffusionXLPipeline": (
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ),
}


@dataclass(frozen=True)
class Measurement:
    """One pipeline call's measurements (shared by the images of a batch).

    Attributes:
        step_latencies_s: Seconds per executed denoising step (``num_timesteps`` values).
        num_timesteps: Steps the scheduler actually ran (``pipeline.num_timesteps``).
        text_encode_s: Prompt encoding window, seconds.
        denoise_s: Denoising window (pipeline call up to latents), seconds.
        decode_s: VAE decode and conversion to images, seconds.
        total_s: Host wall-clock seconds from before encoding to after the device finished (the service
            time); the three stages, on the device clock, lie within it.
        overhead_s: The rest of the call: its host seconds less the three stages, that is genedge's
            measuring (seeding the generators, resetting the torch peaks, the monitor's window starting
            and stopping its samplers) and, on a GPU, the launches and the final synchronize outside the
            stages' events. ``text_encode_s + denoise_s + decode_s + overhead_s`` is the whole call.
        peak_torch_allocated_bytes: ``torch.cuda.max_memory_allocated`` over the call (``None`` off CUDA).
        peak_torch_reserved_bytes: ``torch.cuda.max_memory_reserved`` over the call (``None`` off CUDA).
        reading: What the monitor saw over the call: NVML and host memory peaks, energy, and why
            any of them is missing.
    """

    step_latencies_s: tuple[float, ...]
    num_timesteps: int
    text_encode_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    overhead_s: float
    peak_torch_allocated_bytes: int | None
    peak_torch_reserved_bytes: int | None
    reading: WindowReading


def grad_mode() -> AbstractContextManager[Any]:
    """The context every pipeline call runs in (:data:`GRAD_MODE`)."""
    return require("torch").inference_mode()


def seeded_generators(device: Any, seeds: Sequence[int]) -> list[Any]:
    """One ``torch.Generator`` on ``device`` per image, seeded with ``seeds`` in order."""
    torch = require("torch")
    return [torch.Generator(device).manual_seed(seed) for seed in seeds]


def encode_prompts(pipe: Any, prompts: list[str], device: Any, guidance_scale: float) -> dict[str, Any]:
    """Encode a batch's prompts as the keyword arguments the pipeline's call takes (with guidance's negatives)."""
    outputs = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance_scale > 1.0
    )
    return dict(zip(_EMBEDDING_NAMES[type(pipe).__name__], outputs))


def denoise(
    pipe: Any,
    embeddings: dict[str, Any],
    *,
    steps: int,
    guidance_scale: float,
    resolution: int,
    generators: list[Any],
    on_step_end: StepEnd,
) -> Any:
    """Run the pipeline's denoising loop on encoded prompts up to latents, calling ``on_step_end`` after each step.

    Args:
        pipe: A pipeline from :func:`genedge.profiler.load_pipeline`.
        embeddings: :func:`encode_prompts`'s result.
        steps: Requested denoising steps.
        guidance_scale: Classifier-free guidance scale.
        resolution: Image side in pixels.
        generators: One generator per image (:func:`seeded_generators`).
        on_step_end: diffusers' ``callback_on_step_end``; it receives no tensors.

    Returns:
        The latents, for :func:`decode_latents`.
    """
    return pipe(
        **embeddings,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        height=resolution,
        width=resolution,
        generator=generators,
        output_type="latent",
        callback_on_step_end=on_step_end,
        callback_on_step_end_tensor_inputs=[],
    ).images


def decode_latents(pipe: Any, latents: Any) -> list[Any]:
    """Decode latents with the pipeline's VAE (undoing its latent normalization) into PIL images."""
    vae = pipe.vae
    latents = latents.to(vae.dtype)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:
        torch = require("torch")
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    pixels = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def measure_call(
    pipe: Any,
    prompts: list[str],
    *,
    steps: int,
    seed: int,
    resolution: int,
    guidance_scale: float,
    device: Any,
    clock: Clock,
    monitor: Monitor,
) -> tuple[list[Any], Measurement]:
    """Generate one batch with every measurement window: the profiler's hot path.

    Text encoding, denoising (``output_type="latent"``) and VAE decoding run as three contiguous
    windows on the device clock, under :func:`grad_mode`; a pre-hook on the UNet marks the start of
    step 0 and a step-end callback marks each step's end. Torch peaks are reset before the call; the
    monitor samples memory and energy in the background during it.

    Args:
        pipe: A pipeline from :func:`genedge.profiler.load_pipeline`.
        prompts: The batch's prompts.
        steps: Requested denoising steps.
        seed: Seed of every image's ``torch.Generator``.
        resolution: Image side in pixels.
        guidance_scale: Classifier-free guidance scale.
        device: The pipeline's ``torch.device``.
        clock: Clock of ``device``.
        monitor: Monitor of ``device``.

    Returns:
        The PIL images and the call's :class:`Measurement`.
    """
    call_start = time.perf_counter()
    torch = require("torch")
    cuda = device.type == "cuda"
    generators = seeded_generators(device, [seed] * len(prompts))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with grad_mode(), monitor.window() as window:
        host_start = time.perf_counter()
        marks = [clock.mark()]
        embeddings = encode_prompts(pipe, prompts, device, guidance_scale)
        marks.append(clock.mark())
        with step_timer(pipe, clock) as timer:
            latents = denoise(
                pipe,
                embeddings,
                steps=steps,
                guidance_scale=guidance_scale,
                resolution=resolution,
                generators=generators,
                on_step_end=timer,
            )
        marks.append(clock.mark())
        images = decode_latents(pipe, latents)
        marks.append(clock.mark())
        clock.synchronize()
        total_s = time.perf_counter() - host_start
    text_encode_s, denoise_s, decode_s = clock.intervals_s(marks)
    peaks = (
        (int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.max_memory_reserved(device)))
        if cuda
        else (None, None)
    )
    measurement = Measurement(
        step_latencies_s=tuple(clock.intervals_s(timer.marks)),
        num_timesteps=int(pipe.num_timesteps),
        text_encode_s=text_encode_s,
        denoise_s=denoise_s,
        decode_s=decode_s,
        total_s=total_s,
        overhead_s=time.perf_counter() - call_start - (text_encode_s + denoise_s + decode_s),
        peak_torch_allocated_bytes=peaks[0],
        peak_torch_reserved_bytes=peaks[1],
        reading=window.reading,
    )
    return images, measurement


@dataclass(frozen=True)
class MemoryBaseline:
    """What the process held just before a model loaded, per process peak column.

    Attributes:
        bytes: Record column (one of :data:`~genedge.contract.runs.PROCESS_PEAK_COLUMNS`) → its value then.
        notes: Record column → why it has no baseline (not measurable here, or a lifetime peak).
    """

    bytes: dict[str, int]
    notes: dict[str, str]


def memory_baseline(device: Any, monitor: Monitor) -> MemoryBaseline:
    """Read every process memory figure now: an empty monitor window, and torch's current allocator figures.

    Taken after genedge's imports and its CLIPScore model and before a model loads, it is what a
    call's peak holds that is not the pipeline's (see :func:`pipeline_peak`). On a GPU the device is
    synchronized first, so the CUDA context, which every model on it needs, is in the baseline (with the
    library handles the CLIPScore model's first call created).
    """
    if device.type == "cuda":
        require("torch").cuda.synchronize(device)
    trim_heap()
    with monitor.window() as window:
        pass
    reading = window.reading
    assert reading is not None
    values: dict[str, int | None] = {
        "peak_nvml_process_bytes": reading.nvml_process_bytes,
        "peak_rss_bytes": reading.rss_bytes,
    }
    notes = {column: reading.notes[column] for column in values if column in reading.notes}
    if device.type == "cuda":
        cuda = require("torch").cuda
        values["peak_torch_reserved_bytes"] = int(cuda.memory_reserved(device))
        values["peak_torch_allocated_bytes"] = int(cuda.memory_allocated(device))
    return MemoryBaseline(
        {column: value for column, value in values.items() if value is not None and column not in notes}, notes
    )


def pipeline_peak(peaks: dict[str, int | None], baseline: MemoryBaseline) -> tuple[int | None, str | None, str | None]:
    """The pipeline's own peak over a call: the first process peak measured both now and before the load, less
    its baseline.

    Args:
        peaks: The call's record columns → peak bytes (``None`` where not measured).
        baseline: :func:`memory_baseline` of the process before the model loaded.

    Returns:
        ``(bytes, column it is taken from, None)``, or ``(None, None, why)`` when no process peak has both.
    """
    measured = [c for c in PROCESS_PEAK_COLUMNS if peaks.get(c) is not None]
    column = next((c for c in measured if c in baseline.bytes), None)
    if column is not None:
        return max(int(peaks[column]) - baseline.bytes[column], 0), column, None
    if not measured:
        return None, None, "no process memory peak was measured"
    why = baseline.notes.get(measured[0], "not measured before the model loaded")
    return None, None, f"no baseline of {measured[0]}: {why}"
