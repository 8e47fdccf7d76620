"""The load-test result documents: the manifest (``loadtest.json``) and each run's session document.

One typed, versioned definition of each, written by ``to_dict`` and read by ``from_dict`` through the
field reader (errors name the file and the field), so the runner, the comparison
(:mod:`genedge.serve.measured`) and the command read attributes, never keys. Where the files lie in a
result directory is :mod:`genedge.serve.loadtest_layout`'s.

Manifest (``kind`` ``genedge.loadtest``, ``schema_version`` 2)::

    test_id          the test's id, made at its first run and kept by every resume
    settings_sha256  the SHA-256 of ``config`` (checked on read): with ``test_id``, what every record,
                     score and session of the test carries, so that another test's are told apart
    config           the settings a resumed test must share (LoadTestIdentity)
    files       the prompt file and trace as given
    schedule    arrivals, duration_s, demand, requests, unplaced (ScheduleSummary)
    plan        the plan document served
    table       its calibration table document
    served      the server's notes (GET /v1/plan's "served")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genedge.contract.fields import FieldReader
from genedge.serve.protocol import StatsResponse

__all__ = [
    "LOADTEST_KIND",
    "LOADTEST_SCHEMA_VERSION",
    "LoadTestIdentity",
    "LoadTestManifest",
    "ScheduleSummary",
    "SessionDocument",
    "document_sha256",
]

LOADTEST_KIND = "genedge.loadtest"
LOADTEST_SCHEMA_VERSION = 2
# JSON has no infinity: an unbounded request rate is written as this string.
_INF = "inf"


def document_sha256(document: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON document as canonical JSON (sorted keys): the same document, the same hash."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LoadTestIdentity:
    """The settings a resumed load test must share with the recorded one (the manifest's ``config``).

    Attributes:
        request_rate: requests per second (``math.inf``: all at once); None with a trace, as is burstiness.
        plan_sha256 / prompts_sha256 / trace_sha256: what was served and sent, by content.
        trace_replay: how the trace was replayed (:meth:`genedge.optimizer.model.TraceReplay.to_dict`), or None
            without a trace (then left out of the document, so tests without a trace keep their settings hash).
    """

    url: str
    endpoint: str
    plan_sha256: str
    prompts_sha256: str
    trace_sha256: str | None
    request_rate: float | None
    burstiness: float | None
    num_prompts: int | None
    max_concurrency: int | None
    seed: int
    send_categories: bool
    timeout_s: float
    trace_replay: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (an infinite rate as ``"inf"``; no ``trace_replay`` without a trace)."""
        document = dataclasses.asdict(self)
        if self.trace_replay is None:
            del document["trace_replay"]
        if self.request_rate is not None and math.isinf(self.request_rate):
            document["request_rate"] = _INF
        return document

    @classmethod
    def read(cls, reader: FieldReader, document: Mapping[str, Any], path: str) -> LoadTestIdentity:
        """Read the object at ``path`` of ``reader``'s document."""
        rate = reader.opt(document, "request_rate", path, (float, str))
        if isinstance(rate, str):
            if rate != _INF:
                raise reader.fail(f"{path}.request_rate", f"expected requests per second or {_INF!r}, but got {rate!r}")
            rate = math.inf
        return cls(
            url=reader.get(document, "url", path, str),
            endpoint=reader.get(document, "endpoint", path, str),
            plan_sha256=reader.get(document, "plan_sha256", path, str),
            prompts_sha256=reader.get(document, "prompts_sha256", path, str),
            trace_sha256=reader.opt(document, "trace_sha256", path, str),
            request_rate=rate,
            burstiness=reader.opt(document, "burstiness", path, float),
            num_prompts=reader.opt(document, "num_prompts", path, int),
            max_concurrency=reader.opt(document, "max_concurrency", path, int),
            seed=reader.get(document, "seed", path, int),
            send_categories=reader.get(document, "send_categories", path, bool),
            timeout_s=reader.number(document, "timeout_s", path, minimum=0.0, strict=True),
            trace_replay=reader.opt(document, "trace_replay", path, Mapping),
        )

    def sha256(self) -> str:
        """The ``settings_sha256`` of a test with these settings, of its records, scores and sessions."""
        return document_sha256(self.to_dict())

    def difference(self, other: LoadTestIdentity) -> tuple[str, Any, Any] | None:
        """The first setting whose value differs from ``other``'s, as (name, this value, other's), or None."""
        mine, theirs = self.to_dict(), other.to_dict()
        for name, value in mine.items():
            if theirs.get(name) != value:
                return name, value, theirs[name]
        return None


@dataclass(frozen=True)
class ScheduleSummary:
    """The demand a load test offered (the manifest's ``schedule``).

    Attributes:
        arrivals: the delay model's arrival name: ``open`` (rates) or ``window`` (all at once).
        duration_s: the time of the last request.
        demand: category → requests/s (``open``) or requests (``window``).
        requests: requests in the schedule; unplaced: those sent without a category.
    """

    arrivals: str
    duration_s: float
    demand: Mapping[str, float]
    requests: int
    unplaced: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "arrivals": self.arrivals,
            "duration_s": self.duration_s,
            "demand": dict(self.demand),
            "requests": self.requests,
            "unplaced": self.unplaced,
        }

    @classmethod
    def read(cls, reader: FieldReader, document: Mapping[str, Any], path: str) -> ScheduleSummary:
        """Read the object at ``path`` of ``reader``'s document."""
        demand = reader.get(document, "demand", path, dict)
        return cls(
            arrivals=reader.get(document, "arrivals", path, str),
            duration_s=reader.number(document, "duration_s", path, minimum=0.0),
            demand={c: reader.number(demand, c, f"{path}.demand", minimum=0.0) for c in demand},
            requests=reader.count(document, "requests", path),
            unplaced=reader.count(document, "unplaced", path),
        )


@dataclass(frozen=True)
class LoadTestManifest:
    """A load test's manifest: its identity and settings, what it offered, and the plan and table it met.

    Attributes:
        test_id: the test's id (new at its first run); with ``settings_sha256``, what its rows carry.
        prompts_file / trace_file: the files as given (the manifest's ``files``).
        plan / table: the documents ``GET /v1/plan`` answered; served: the server's notes.
    """

    test_id: str
    config: LoadTestIdentity
    prompts_file: str
    trace_file: str | None
    schedule: ScheduleSummary
    plan: Mapping[str, Any]
    table: Mapping[str, Any]
    served: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "kind": LOADTEST_KIND,
            "schema_version": LOADTEST_SCHEMA_VERSION,
            "test_id": self.test_id,
            "settings_sha256": self.settings_sha256,
            "config": self.config.to_dict(),
            "files": {"prompts": self.prompts_file, "trace": self.trace_file},
            "schedule": self.schedule.to_dict(),
            "plan": self.plan,
            "table": self.table,
            "served": self.served,
        }

    @property
    def settings_sha256(self) -> str:
        """The SHA-256 of the settings (:meth:`LoadTestIdentity.sha256`)."""
        return self.config.sha256()

    def owns(self, test_id: str | None, settings_sha256: str | None) -> bool:
        """Whether a record, score or session carrying this identity is this test's."""
        return test_id == self.test_id and settings_sha256 == self.settings_sha256

    @classmethod
    def from_dict(cls, document: Any, where: str) -> LoadTestManifest:
        """Read a manifest document (``where`` names it in errors), checking it against its own hashes.

        Raises:
            ArtifactError: not a genedge load-test manifest of this version, a field missing or of the
                wrong type, or a ``config`` or ``plan`` that no longer hashes to what the test recorded (an
                edited file), naming ``where`` and the field.
        """
        reader = FieldReader(where)
        if not isinstance(document, Mapping) or document.get("kind") != LOADTEST_KIND:
            raise reader.fail("kind", f"expected {LOADTEST_KIND!r}")
        if document.get("schema_version") != LOADTEST_SCHEMA_VERSION:
            raise reader.fail("schema_version", f"expected {LOADTEST_SCHEMA_VERSION}")
        files = reader.get(document, "files", "", dict)
        manifest = cls(
            test_id=reader.name(reader.get(document, "test_id", "", str), "test_id"),
            config=LoadTestIdentity.read(reader, reader.get(document, "config", "", dict), "config"),
            prompts_file=reader.get(files, "prompts", "files", str),
            trace_file=reader.opt(files, "trace", "files", str),
            schedule=ScheduleSummary.read(reader, reader.get(document, "schedule", "", dict), "schedule"),
            plan=reader.get(document, "plan", "", dict),
            table=reader.get(document, "table", "", dict),
            served=reader.opt(document, "served", "", dict) or {},
        )
        manifest._check_hashes(reader, reader.get(document, "settings_sha256", "", str))
        return manifest

    def _check_hashes(self, reader: FieldReader, settings_sha256: str) -> None:
        """Refuse a manifest edited after the test ran: its records carry ``settings_sha256``, the hash of
        the config it was run with, and the config names the plan served by its hash."""
        edited = "the file was edited after the test ran; restore it, or delete it and rerun the test's command"
        if self.settings_sha256 != settings_sha256:
            raise reader.fail(
                "settings_sha256",
                f"the config hashes to {self.settings_sha256[:12]}…, not to the {settings_sha256[:12]}… its records "
                f"carry: {edited}",
            )
        if document_sha256(self.plan) != self.config.plan_sha256:
            raise reader.fail("plan", f"does not hash to config.plan_sha256 {self.config.plan_sha256[:12]}…: {edited}")


def _stats(reader: FieldReader, document: Mapping[str, Any], key: str) -> StatsResponse | None:
    body = reader.opt(document, key, "", dict)
    return None if body is None else StatsResponse.read(reader, body, key)


@dataclass(frozen=True)
class SessionDocument:
    """One run of the load test (``sessions/session-NNN.json``), written at its start and again at its end.

    Attributes:
        session: the run's number (0, then 1 after a resume, ...).
        test_id / settings_sha256: the test it is a run of (:class:`LoadTestManifest`'s).
        started_unix / ended_unix: Unix seconds (ended None while running, or for a killed run).
        to_send: requests this run set out to send.
        stats_before / stats_after: ``GET /v1/stats`` at the start and the end (None where not given).
        outcomes: status → requests with it (None until the run ends).
    """

    session: int
    test_id: str
    settings_sha256: str
    started_unix: float
    to_send: int
    ended_unix: float | None = None
    stats_before: StatsResponse | None = None
    stats_after: StatsResponse | None = None
    outcomes: Mapping[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (the end's fields only once the run has ended)."""
        document: dict[str, Any] = {
            "session": self.session,
            "test_id": self.test_id,
            "settings_sha256": self.settings_sha256,
            "started_unix": self.started_unix,
            "to_send": self.to_send,
        }
        if self.ended_unix is not None:
            document.update(
                ended_unix=self.ended_unix,
                stats_before=None if self.stats_before is None else self.stats_before.to_dict(),
                stats_after=None if self.stats_after is None else self.stats_after.to_dict(),
                outcomes=self.outcomes,
            )
        return document

    @classmethod
    def from_dict(cls, document: Any, where: str) -> SessionDocument:
        """Read a session document (``where`` names it in errors).

        Raises:
            ArtifactError: a field missing or of the wrong type, naming ``where`` and the field.
        """
        reader = FieldReader(where)
        if not isinstance(document, Mapping):
            raise reader.fail("session", f"expected a JSON object, but got {type(document).__name__}")
        outcomes = reader.opt(document, "outcomes", "", dict)
        if outcomes is not None:
            outcomes = {status: reader.check(n, f"outcomes.{status}", int) for status, n in outcomes.items()}
        return cls(
            session=reader.count(document, "session", ""),
            test_id=reader.get(document, "test_id", "", str),
            settings_sha256=reader.get(document, "settings_sha256", "", str),
            started_unix=reader.get(document, "started_unix", "", float),
            to_send=reader.count(document, "to_send", ""),
            ended_unix=reader.opt(document, "ended_unix", "", float),
            stats_before=_stats(reader, document, "stats_before"),
            stats_after=_stats(reader, document, "stats_after"),
            outcomes=outcomes,
        )
