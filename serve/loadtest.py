"""The load generator: open-loop requests to a served plan, recorded as they complete.

``genedge loadtest URL`` speaks ``vllm bench serve``'s language: ``request_rate`` (``inf`` sends every
request at once), ``burstiness`` (1 = Poisson; gamma-distributed gaps of shape B otherwise, mean
1/rate), ``num_prompts`` and ``max_concurrency`` (a cap on requests in flight; the others wait for a
slot, as vLLM's semaphore makes them). A ``trace`` replaces the drawn arrival times by recorded ones.

This module is the runner; each of its parts is a module of its own job:
:mod:`.loadtest_config` (the settings), :mod:`.loadtest_schedule` (the arrival schedule, a pure
function of the configuration), :mod:`.loadtest_client` (the HTTP client and its endpoint registry),
:mod:`.loadtest_layout` (the result directory: part files, manifest, sessions, resume by index) and
:mod:`.loadtest_document` (the manifest and session documents). Each request is sent at its time
whatever the responses so far (open loop); each is bounded by ``timeout_s``, so the run ends by itself.

Running the same configuration into the same directory resumes it: the indices already recorded are
not sent again; the missing ones keep their gaps, shifted so the first of them goes at once. Another
configuration in that directory is refused, naming the setting that differs. One process writes a
directory at a time (its lock), and each run first removes the temporary files a killed one left. A
request is recorded once its record's file is published: one sent but not yet recorded when a run was
killed is sent again by the resume, so no record is lost and none is counted twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from genedge.contract.files import ArtifactError
from genedge.contract.runs import new_run_id
from genedge.profiler._imports import require
from genedge.serve.loadtest_client import ServedPlan, auth_headers, fetch_plan, fetch_stats, send
from genedge.serve.loadtest_config import LoadConfig, LoadTestError
from genedge.serve.loadtest_document import LoadTestIdentity, LoadTestManifest, SessionDocument
from genedge.serve.loadtest_layout import (
    MANIFEST_NAME,
    STATUSES,
    RecordAudit,
    RecordWriter,
    audit_records,
    identity,
    image_path,
    next_session,
    read_manifest,
    read_records,
    recorded_tests,
    write_manifest,
    write_scores,
    write_session,
    writing,
)
from genedge.serve.loadtest_schedule import Schedule, ScheduledRequest, build_schedule
from genedge.serve.protocol import StatsResponse

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LoadTestRun", "run_loadtest", "score_images"]


@dataclass(frozen=True)
class LoadTestRun:
    """What one run of :func:`run_loadtest` did.

    Attributes:
        result_dir: where the records are.
        test_id: the test's id (its manifest's).
        session: this run's number (0 for the first, 1 after a resume, ...).
        schedule: the whole schedule.
        sent: requests this run sent; skipped: requests already recorded by earlier runs.
        outcomes: status → this run's requests with it.
        served: the plan and table the server answered.
        rebuilt: the manifest was missing and was rebuilt from the records sent with these settings.
        audit: what the directory held when the run started: the indices recorded before, and the files of
            another test (left out of every count).
    """

    result_dir: Path
    test_id: str
    session: int
    schedule: Schedule
    sent: int
    skipped: int
    outcomes: Mapping[str, int] = field(default_factory=dict)
    served: ServedPlan | None = None
    rebuilt: bool = False
    audit: RecordAudit = field(default_factory=lambda: RecordAudit(frozenset(), ()))


async def _run(
    config: LoadConfig,
    todo: Sequence[ScheduledRequest],
    writer: RecordWriter,
    progress: Callable[[int], None] | None,
) -> tuple[StatsResponse | None, StatsResponse | None, dict[str, int]]:
    aiohttp = require("aiohttp", extra="loadtest")

    outcomes = dict.fromkeys(STATUSES, 0)
    # No pool limit of aiohttp's own: the open loop (and --max-concurrency's semaphore) decide what is in flight.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=auth_headers(config.api_key)) as session:
        before = await fetch_stats(session, config.base_url)
        loop = asyncio.get_running_loop()
        shift = todo[0].time_s if todo else 0.0
        origin = loop.time() - shift

        def clock() -> float:
            return loop.time() - origin

        slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None

        async def one(request: ScheduledRequest) -> None:
            if slots is None:
                row, image = await send(session, config, request, clock)
            else:
                async with slots:
                    row, image = await send(session, config, request, clock)
            outcomes[row["status"]] += 1
            writer.add(row, image)
            if progress is not None:
                progress(1)

        tasks = []
        for request in todo:
            wait = request.time_s - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(request)))
        await asyncio.gather(*tasks)
        after = await fetch_stats(session, config.base_url)
    return before, after, outcomes


def _check_same(result_dir: Path, recorded: LoadTestIdentity, ours: LoadTestIdentity) -> None:
    difference = ours.difference(recorded)
    if difference is not None:
        name, value, theirs = difference
        raise LoadTestError(
            f"{result_dir}: holds a load test whose {name} is {theirs!r}, but this one's is {value!r}; "
            f"rerun with the recorded settings to resume it, or choose another --result-dir"
        )


def _rebuilt_test_id(result_dir: Path, ours: LoadTestIdentity) -> str | None:
    """The test id of the records sent with these settings, for a manifest that went missing; None when
    there are no records.

    Raises:
        LoadTestError: the records were all sent with other settings.
    """
    found = recorded_tests(result_dir)
    mine = Counter({test: n for (test, sha), n in found.items() if sha == ours.sha256()})
    if found and not mine:
        shas = ", ".join(sorted({(sha or "null")[:12] for _, sha in found}))
        raise LoadTestError(
            f"{result_dir / MANIFEST_NAME}: missing, and the {sum(found.values())} records in {result_dir} carry "
            f"other settings (settings_sha256 {shas}); restore the manifest, or rerun the command that sent them "
            "to resume it, or choose another --result-dir"
        )
    return mine.most_common(1)[0][0] if mine else None


def _start(
    config: LoadConfig, result_dir: Path, served: ServedPlan, schedule: Schedule
) -> tuple[LoadTestManifest, bool]:
    """The directory's manifest once checked to be this test's, or a new one written (with the records' test
    id when it went missing); and whether it was rebuilt."""
    ours = identity(config, served)
    if (result_dir / MANIFEST_NAME).exists():
        manifest = read_manifest(result_dir)
        _check_same(result_dir, manifest.config, ours)
        if manifest.schedule != schedule.summary():
            raise ArtifactError(
                str(result_dir / MANIFEST_NAME),
                "schedule",
                "not the schedule its config makes: the file was edited after the test ran; restore it, or choose "
                "another --result-dir",
            )
        return manifest, False
    test_id = _rebuilt_test_id(result_dir, ours)
    manifest = LoadTestManifest(
        test_id=new_run_id() if test_id is None else test_id,
        config=ours,
        prompts_file=str(config.prompts),
        trace_file=None if config.trace is None else str(config.trace),
        schedule=schedule.summary(),
        plan=served.plan,
        table=served.table_document,
        served=served.served,
    )
    write_manifest(result_dir, manifest)
    return manifest, test_id is not None


def run_loadtest(
    config: LoadConfig,
    result_dir: str | Path,
    *,
    keep_images: bool = False,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[Schedule, int, int], None] | None = None,
) -> LoadTestRun:
    """Send a load test's requests to a served plan, recording each as it completes.

    A directory that holds this configuration's test is resumed: recorded indices are not sent again. A
    warning names each file of another test found there (left out of every count), and a manifest rebuilt
    from the records because it was missing.

    Args:
        config: what to send.
        result_dir: where the records go (created when missing).
        keep_images: keep each image until it is scored (``--clip-score``), even without ``save_images``.
        progress: called with 1 as each request completes (a progress bar's ``update``).
        on_start: called with the schedule, the requests to send and the ones already recorded, before sending.

    Raises:
        LoadTestError: an unreachable or foreign server, or a directory holding another configuration (or,
            its manifest missing, only records sent with other settings).
        FolderBusyError: another process is writing the directory.
        ArtifactError: a malformed prompt file, trace, plan or table, or a malformed or edited manifest, a
            malformed record file (naming the file and field).
        FileNotFoundError: a missing prompt file or trace.
    """
    from genedge.contract.prompts import read_prompt_file
    from genedge.optimizer.plan_file import plan_from_dict

    result_dir = Path(result_dir)
    prompts = read_prompt_file(config.prompts)
    if config.trace is not None and not Path(config.trace).is_file():
        raise FileNotFoundError(f"{config.trace}: expected a trace file, but there is no such file")
    served = fetch_plan(config.base_url, api_key=config.api_key)
    schedule = build_schedule(config, prompts, plan_from_dict(served.plan, f"{config.base_url} plan"), served.table)
    with writing(result_dir):
        manifest, rebuilt = _start(config, result_dir, served, schedule)
        audit = audit_records(result_dir)
        todo = [r for r in schedule.requests if r.index not in audit.indices]
        number = next_session(result_dir)
        if on_start is not None:
            on_start(schedule, len(todo), audit.own)
        writer = RecordWriter(result_dir, manifest, number, keep_images or config.save_images)
        session = SessionDocument(number, manifest.test_id, manifest.settings_sha256, time.time(), len(todo))
        write_session(result_dir, session)
        try:
            before, after, outcomes = asyncio.run(_run(config, todo, writer, progress))
        finally:
            writer.flush()  # an interrupted run keeps what completed
        ended = dataclasses.replace(
            session, ended_unix=time.time(), stats_before=before, stats_after=after, outcomes=outcomes
        )
        write_session(result_dir, ended)
    if rebuilt:
        rebuilt_from = f"rebuilt from the records of test {manifest.test_id}"
        warnings.warn(f"{result_dir / MANIFEST_NAME}: was missing; {rebuilt_from}", stacklevel=2)
    for line in audit.problems():
        warnings.warn(line, stacklevel=2)
    return LoadTestRun(
        result_dir, manifest.test_id, number, schedule, len(todo), audit.own, outcomes, served, rebuilt, audit
    )


def score_images(
    result_dir: str | Path,
    *,
    backbone: str | None = None,
    pretrained: str | None = "table",
    device: str = "cpu",
    batch_size: int = 16,
    keep_images: bool = False,
) -> int:
    """Score every recorded image not yet scored against its prompt, after the run (so scoring never slows
    the open loop); the scores go to a new file under ``scores/``.

    Args:
        result_dir: the load test's directory (images under ``images/``, kept during the run).
        backbone / pretrained: the CLIP backbone (default: the table's ``clip_convention``, so the scores
            are comparable with the table's); ``pretrained=None`` is random weights (``replica:`` tests).
        device: the torch device to score on.
        batch_size: images per forward pass.
        keep_images: keep the PNG files after scoring (``--save-images``); otherwise they are removed.

    Returns:
        The number of images scored.

    Raises:
        ImportError: torch or open_clip is missing (``pip install "genedge[profile]"``).
    """
    from genedge.contract.table_file import table_from_dict

    result_dir = Path(result_dir)
    with writing(result_dir):
        manifest = read_manifest(result_dir)
        convention = table_from_dict(manifest.table, f"{result_dir} table").clip_convention
        if backbone is None:
            backbone = convention.backbone
        if pretrained == "table":
            pretrained = convention.pretrained
        todo = read_records(result_dir)
        todo = todo[(todo["status"] == "ok") & todo["clip_score"].isna()]
        todo = todo[[image_path(result_dir, i).is_file() for i in todo["index"]]]
        if todo.empty:
            return 0
        frame = _scores(todo, result_dir, backbone, pretrained, device, batch_size)
        write_scores(result_dir, manifest, frame)
        if not keep_images:
            for i in todo["index"]:
                image_path(result_dir, i).unlink(missing_ok=True)
    return len(frame)


def _scores(
    todo: pd.DataFrame, result_dir: Path, backbone: str, pretrained: str | None, device: str, batch_size: int
) -> pd.DataFrame:
    """The CLIPScores of ``todo``'s images against their prompts: ``index``, ``clip_score``, ``clip_truncated``."""
    import pandas as pd
    import torch
    from PIL import Image

    from genedge.profiler.clipscore import ClipScorer

    scorer = ClipScorer(backbone, pretrained, device=torch.device(device))
    scores, truncated = [], []
    for start in range(0, len(todo), batch_size):
        chunk = todo.iloc[start : start + batch_size]
        pictures = []
        for i in chunk["index"]:
            with Image.open(image_path(result_dir, i)) as picture:
                pictures.append(picture.convert("RGB"))
        got, cut = scorer.score(pictures, chunk["prompt"].tolist())
        scores.extend(got)
        truncated.extend(cut)
    return pd.DataFrame({"index": todo["index"].to_numpy(), "clip_score": scores, "clip_truncated": truncated})
