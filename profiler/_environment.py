"""What a run records about where it ran: the process's rank, the device, the library versions and the math settings.

Everything here is read, never set: the run records the environment beside its numbers so that a
reader can tell two runs' latencies apart by what changed kernels, not only by what was measured.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

from genedge import __version__
from genedge.profiler._imports import require
from genedge.profiler.host import host_info
from genedge.profiler.pipeline import GRAD_MODE

__all__ = ["distributed", "environment"]


def distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as a launcher set them; a plain process is rank 0 of 1."""
    # accelerate launch / torchrun set these.
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def environment(device: Any, monitor_status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's ``host``, ``device`` and ``versions`` documents for a process measuring on ``device``.

    Args:
        device: The ``torch.device`` measured.
        monitor_status: :meth:`MonitorStatus.as_manifest` of the run's monitor (its NVML driver and
            how host memory is measured).
    """
    torch = require("torch")
    host = host_info() | _math_settings(torch, device) | {"memory_measurement": monitor_status["host_memory"]}
    return {
        "host": host,
        "device": _device_info(torch, device, monitor_status["nvml"].get("driver"), host["cpu"]),
        "versions": _versions(),
    }


def _device_info(torch: Any, device: Any, driver: str | None, cpu_name: str) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "name": props.name,
            "driver": driver,
            "cuda": torch.version.cuda,
            "memory_bytes": int(props.total_memory),
            "capability": f"{props.major}.{props.minor}",
        }
    return {"name": cpu_name, "driver": driver, "cuda": None, "memory_bytes": None}


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": require("torch").__version__,
        "diffusers": require("diffusers").__version__,
        "open_clip": require("open_clip").__version__,
        "transformers": require("transformers").__version__,
        "genedge": __version__,
    }


def _math_settings(torch: Any, device: Any) -> dict[str, Any]:
    # What changes kernels, hence latency, without changing the model: recorded beside the numbers.
    settings: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "grad_mode": GRAD_MODE,
    }
    if device.type == "cuda":
        settings |= {
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "sdpa_backends": {
                "flash": bool(torch.backends.cuda.flash_sdp_enabled()),
                "memory_efficient": bool(torch.backends.cuda.mem_efficient_sdp_enabled()),
                "math": bool(torch.backends.cuda.math_sdp_enabled()),
                "cudnn": bool(getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: False)()),
            },
        }
    return settings
