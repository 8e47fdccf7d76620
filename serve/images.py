"""The images a server keeps for ``response_format: "url"`` answers: in memory, bounded, for a while.

An OpenAI-compatible client that asks for URLs gets, per image, an absolute URL of
``GET /v1/images/{id}.png`` on the server itself. :class:`ImageStore` keeps each PNG under an id drawn
by :func:`secrets.token_urlsafe` (128 random bits: a URL cannot be guessed, only handed out), for at most
``ttl_s`` seconds, and at most ``max_images`` images and ``max_bytes`` bytes at once: the oldest go first
when a new one would pass a bound. An image past its time or pushed out answers 404. Like OpenAI's
image URLs these are capability URLs: whoever holds one may fetch it, without the API key.

Example:
    >>> store = ImageStore(ImageStoreSettings(ttl_s=60, max_images=2))
    >>> ids = [store.put(b"png" + bytes([i])) for i in range(3)]
    >>> store.get(ids[0]) is None, store.get(ids[2])
    (True, b'png\\x02')
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_IMAGE_TTL_S", "DEFAULT_MAX_IMAGES", "DEFAULT_MAX_IMAGE_BYTES", "ImageStore", "ImageStoreSettings"]

#: How long an image stays fetchable by its URL (s): 15 minutes.
DEFAULT_IMAGE_TTL_S = 900.0
#: The most images kept at once.
DEFAULT_MAX_IMAGES = 256
#: The most PNG bytes kept at once: 256 MiB.
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
#: Random bytes of an image id (its URL-safe text is 22 characters).
_ID_BYTES = 16


@dataclass(frozen=True)
class ImageStoreSettings:
    """How many images a server keeps for URL answers, and for how long.

    Attributes:
        ttl_s: seconds an image stays fetchable after it was generated.
        max_images: the most images kept at once (the oldest are dropped first).
        max_bytes: the most PNG bytes kept at once (the oldest are dropped first).
    """

    ttl_s: float = DEFAULT_IMAGE_TTL_S
    max_images: int = DEFAULT_MAX_IMAGES
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ttl_s) and self.ttl_s > 0):
            raise ValueError(f"ttl_s: expected a number of seconds > 0, but got {self.ttl_s!r}")
        for name in ("max_images", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, but got {value!r}")


class ImageStore:
    """PNG bytes by random id, oldest first, within :class:`ImageStoreSettings`' bounds (thread-safe)."""

    def __init__(self, settings: ImageStoreSettings | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings or ImageStoreSettings()
        self._clock = clock
        self._images: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id → (expiry, png), oldest first
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._images)

    @property
    def bytes(self) -> int:
        """PNG bytes kept now."""
        return self._bytes

    def _drop_oldest(self) -> None:
        _, (_, png) = self._images.popitem(last=False)
        self._bytes -= len(png)

    def _expire(self, now: float) -> None:
        while self._images and next(iter(self._images.values()))[0] <= now:
            self._drop_oldest()

    def put(self, png: bytes) -> str:
        """Keep ``png``; its id (URL-safe, unguessable). An image larger than ``max_bytes`` is kept alone."""
        image_id = secrets.token_urlsafe(_ID_BYTES)
        with self._lock:
            now = self._clock()
            self._expire(now)
            limits = self.settings
            while self._images and (
                len(self._images) >= limits.max_images or self._bytes + len(png) > limits.max_bytes
            ):
                self._drop_oldest()
            self._images[image_id] = (now + limits.ttl_s, png)
            self._bytes += len(png)
        return image_id

    def get(self, image_id: str) -> bytes | None:
        """The PNG kept under ``image_id``, or None when there is none (never kept, expired or dropped)."""
        with self._lock:
            self._expire(self._clock())
            kept = self._images.get(image_id)
        return None if kept is None else kept[1]
