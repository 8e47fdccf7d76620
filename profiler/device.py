"""Which device a profiling process measures, made current so that CUDA work and events land on it.

CUDA events and kernels go to the current stream of the *current* device. Without a
``torch.cuda.set_device`` call the current device stays ``cuda:0``, so a process measuring
``cuda:1`` would time an idle stream of GPU 0 (host queueing time, not GPU time) and open a stray
CUDA context there. :func:`select_device` therefore validates the request, picks the device, and
makes it current.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from genedge.profiler._imports import require

__all__ = ["DEVICE_SYNTAX", "check_device_string", "select_device", "torch_device", "set_threads"]

logger = logging.getLogger(__name__)

#: The accepted ``--device`` values, in words.
# Only devices whose clock genedge can read: CUDA events, or the host clock on a CPU.
DEVICE_SYNTAX = "cpu, cuda or cuda:N"
_DEVICE_PATTERN = re.compile(r"(?:cpu|cuda(?::\d+)?)")


def check_device_string(device: str) -> str:
    """Check a ``--device`` value's syntax without importing torch.

    Args:
        device: e.g. ``"cuda:1"``.

    Returns:
        ``device`` unchanged.

    Raises:
        ValueError: When ``device`` is not one of ``cpu``, ``cuda`` or ``cuda:N``.

    Example:
        >>> check_device_string("cuda:1")
        'cuda:1'
    """
    if not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"--device: expected {DEVICE_SYNTAX}, but got {device!r}")
    return device


def select_device(requested: str | None, local_rank: int) -> Any:
    """The ``torch.device`` this process measures; a CUDA device is also made the current one.

    Args:
        requested: ``--device`` value, or ``None`` for ``cuda:<local_rank mod device count>`` when
            CUDA is available, else ``cpu``.
        local_rank: This process's ``LOCAL_RANK`` (``0`` when not launched by accelerate/torchrun).

    Returns:
        A ``torch.device``; a CUDA device always carries its index.

    Raises:
        ValueError: When ``requested`` is malformed, names a device this machine lacks, or
            ``local_rank`` is negative.
    """
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK: expected an integer >= 0, but got {local_rank}")
    torch = require("torch")
    if requested is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if local_rank >= count:
            logger.warning(
                "LOCAL_RANK %d >= %d visible CUDA devices: processes share cuda:%d and their timings interfere",
                local_rank,
                count,
                local_rank % count,
            )
        device = torch.device("cuda", local_rank % count)
    else:
        device = torch.device(check_device_string(requested))
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"--device {requested}: CUDA is not available on this machine; pass --device cpu")
            count = torch.cuda.device_count()
            # A bare "cuda" follows LOCAL_RANK like the default, so every launched process gets its own GPU.
            index = local_rank % count if device.index is None else device.index
            if index >= count:
                raise ValueError(
                    f"--device {requested}: this machine has {count} visible CUDA device(s), "
                    f"cuda:0 to cuda:{count - 1}; pass one of them, or leave --device out"
                )
            device = torch.device("cuda", index)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def torch_device(requested: str | None = None) -> Any:
    """``requested`` as a ``torch.device`` (default: cuda when available, else cpu), taken as it is.

    Unlike :func:`select_device` it neither adds an index nor makes the device current: for a process
    that owns its device, such as a server worker.
    """
    torch = require("torch")
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def set_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads in the calling thread (``None``: keep torch's default).

    torch's CPU thread count is OpenMP's, which each thread keeps for itself: a thread started later
    runs with the default (every core) unless it sets the count again.
    """
    if threads is not None:
        require("torch").set_num_threads(threads)
