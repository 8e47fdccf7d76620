"""The limits ``genedge serve``'s gateway (:mod:`genedge.serve.gateway`) holds every connection to.

A module of its own, without the gateway's HTTP parser, so that ``genedge serve --help`` states the
defaults from the light install.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GatewaySettings"]


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's limits; each field is ``genedge serve``'s option ``--FIELD`` (dashes for underscores),
    its help the field's ``metadata["help"]``."""

    max_body_bytes: int = field(
        default=1 << 20, metadata={"help": "the largest request body in bytes; more is answered 413 unread"}
    )
    header_timeout_s: float = field(
        default=10.0, metadata={"help": "seconds a request's line and headers may take to arrive; then 408"}
    )
    body_timeout_s: float = field(
        default=30.0, metadata={"help": "seconds a request's body may take to arrive after its headers; then 408"}
    )
    idle_timeout_s: float = field(
        default=60.0, metadata={"help": "seconds a kept-alive connection may wait between requests; then closed"}
    )
    max_connections: int = field(
        default=1024, metadata={"help": "connections held at once; one more is answered 503 with Retry-After"}
    )
    proxy_wait_s: float = field(
        default=30.0,
        metadata={"help": "seconds a request waits for Ray Serve's proxy to come back (restarting) before a 503"},
    )

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, but got {value!r}")
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s", "proxy_wait_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, but got {value!r}")
