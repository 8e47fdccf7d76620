"""Documents are read once, by the modules that define them: no other package module indexes one by its JSON keys.

Each kind of document has its contract, which writes it and reads it into typed attributes:

- a plan: ``optimizer/plan_file.py`` (:class:`~genedge.optimizer.plan_file.PlanDocument`);
- a plan schedule: ``optimizer/schedule_file.py`` (:class:`~genedge.optimizer.schedule_file.PlanSchedule`);
- a calibration table: ``genedge/contract/table_file.py`` reads and writes it, ``genedge/contract/table.py``
  types it (:class:`~genedge.contract.table.CalibrationTable`);
- a prompt router: ``router/model.py`` (:func:`~genedge.router.model.router_from_dict`,
  :class:`~genedge.router.model.PromptRouter`) and ``router/files.py``;
- a load test's manifest and session files: ``serve/loadtest_document.py``
  (:class:`~genedge.serve.loadtest_document.LoadTestManifest`, ``SessionDocument``);
- the HTTP bodies of a served plan: ``serve/protocol.py`` (its request, response and error types).

The scan below finds, in every module of the package's folders but a document's own, a subscript or
``.get`` with one of that document's key names on a value reached through a name that kind of document
goes by (``plan["routing"]``, ``self.spec.table.get("models")``, ``router.to_dict()["training"]``,
``manifest["config"]["seed"]``, ``body["data"][0]["b64_json"]``). The key names come from real documents:
ones the writers make, or the shipped tables and routers. It does not see a document held under another
name, one read by a :class:`~genedge.contract.fields.FieldReader` outside its contract, a load test's
records (Parquet columns, read as a frame), or documents of other kinds (a profile run's manifest, a
category mapping).

A table's ``manifest`` object is kept as written (``table.manifest.document``) only to be written back;
its profile runs are read typed (``table.manifest.runs``), so no module but the table's writer touches
the document.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import CLIENT_DIRS, PACKAGE_FOLDERS, ROOT, python_sources

from genedge import data
from genedge.contract.runs import MANIFEST_FIELDS, MANIFEST_OPTIONAL_FIELDS
from genedge.contract.table_file import load_table
from genedge.optimizer.analysis import plan_schedule
from genedge.optimizer.inputs import problem_from_options
from genedge.optimizer.model import Problem, Workload, workload_from_options
from genedge.optimizer.plan_file import plan_inputs, plan_to_dict
from genedge.optimizer.planners import make_result
from genedge.serve.loadtest_document import LoadTestIdentity, LoadTestManifest, ScheduleSummary, SessionDocument
from genedge.serve.protocol import (
    RECORD_FIELDS,
    DeviceStats,
    ErrorBody,
    GeneratedImage,
    GenerateResponse,
    GenerationRequest,
    ImagesResponse,
    ModelStats,
    PlanResponse,
    RequestError,
    StatsResponse,
)

#: Each kind of document's own modules (paths in the checkout): they write and read it by key, so its scan
#: passes them by. A module that moves is renamed here.
DEFINING_MODULES: dict[str, tuple[str, ...]] = {
    "plan": ("optimizer/plan_file.py",),
    "plan schedule": ("optimizer/schedule_file.py",),
    "table": ("genedge/contract/table_file.py", "genedge/contract/table.py"),
    "router": ("router/model.py", "router/files.py"),
    "load test": ("serve/loadtest_document.py",),
    "HTTP body": ("serve/protocol.py",),
}
#: Names a plan, one of its model entries, its inputs or its predicted figures go by.
PLAN_NAMES = re.compile(r"(^|_)(plan|entry|inputs|predicted|planned)($|_)")
#: Names a plan schedule, one of its rates or bands goes by.
SCHEDULE_NAMES = re.compile(r"(^|_)(schedule|band|bands|point|points)($|_)")
#: Names a calibration table or one of its model entries goes by.
TABLE_NAMES = re.compile(r"(^|_)(table|calibration)($|_)")
#: Names a router goes by (``router``, ``shipped_router``, ``load_router(...)``).
ROUTER_NAMES = re.compile(r"(^|_)router($|_)")
#: Names a load test's manifest or session document goes by.
LOADTEST_NAMES = re.compile(r"(^|_)(manifest|session|sessions|loadtest)($|_)")
#: Names an HTTP body, or a part of one (an image's record, the stats, an error), goes by.
BODY_NAMES = re.compile(r"(^|_)(body|payload|request|response|answer|reply|record|stats|error)($|_)")
#: Inputs that ``genedge plan`` writes only with a prompt file or a router's error cost.
OPTIONAL_INPUTS = {"prompts", "misrouting"}


@functools.cache
def plan_keys() -> frozenset[str]:
    """The key names of a plan as the writer makes them: top level, inputs, model entries, realization and
    predicted figures."""
    table = load_table(data.path("tables", "galaxy-s24.json"))
    workload = Workload(counts={"Basic": 4})
    problem = Problem.from_table(table, workload)
    result = make_result(problem, "sd21", [[0.0, 1.0]], [0, 0], np.array([0.0, 1.0]))
    inputs = plan_inputs("galaxy-s24", table.source_counts(), workload)
    document = plan_to_dict(problem, result, inputs=inputs, uncertainty={})
    entry = document["models"]["sd21"]
    return frozenset(
        {*document, *document["inputs"], *OPTIONAL_INPUTS, *entry, *entry["realization"], *document["predicted"]}
    )


@functools.cache
def schedule_keys() -> frozenset[str]:
    """The key names of a plan schedule as the writer makes them: top level, a planned and an unplanned rate, a
    band (whose plan is a plan document, of the plan's keys)."""
    table = load_table(data.path("tables", "galaxy-s24.json"))

    def make_problem(rate: float) -> Problem:
        return problem_from_options(table, workload_from_options(table.categories, rate=rate))

    document = plan_schedule(make_problem, [0.1, 0.7]).raw
    return frozenset({*document, *document["rates"][0], *document["rates"][-1], *document["bands"][0]})


@functools.cache
def table_keys() -> frozenset[str]:
    """The key names of every shipped table document: top level and model entries."""
    keys: set[str] = set()
    for path in sorted(data.path("tables", "galaxy-s24.json").parent.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        keys |= {*document, *(key for model in document["models"].values() for key in model)}
    return frozenset(keys)


@functools.cache
def router_keys() -> frozenset[str]:
    """The key names of every shipped router: top level and its own parts (features, classifier, training,
    cross-validation); its category mapping is a document of its own."""
    keys: set[str] = set()
    for path in data.shipped_routers().values():
        document = json.loads(path.read_text(encoding="utf-8"))
        keys |= set(document)
        for name, part in document.items():
            if isinstance(part, dict) and name != "category_mapping":
                keys |= set(part)
    return frozenset(keys)


@functools.cache
def loadtest_keys() -> frozenset[str]:
    """The key names of a load test's manifest (top level, config, files, schedule) and of a session that
    ended, as their dataclasses write them; less a profile run's manifest fields (``schema_version``),
    which a value named ``manifest`` may just as well be read for."""
    config = LoadTestIdentity(
        url="http://127.0.0.1:8000",
        endpoint="generate",
        plan_sha256="0" * 64,
        prompts_sha256="0" * 64,
        trace_sha256=None,
        request_rate=1.0,
        burstiness=1.0,
        num_prompts=4,
        max_concurrency=None,
        seed=0,
        send_categories=True,
        timeout_s=60.0,
    )
    schedule = ScheduleSummary("open", 4.0, {"Basic": 1.0}, requests=4, unplaced=0)
    manifest = LoadTestManifest("test", config, "prompts.tsv", None, schedule, plan={}, table={}).to_dict()
    session = SessionDocument(0, "test", "0" * 64, 0.0, to_send=4, ended_unix=4.0, outcomes={"ok": 4}).to_dict()
    keys = {*manifest, *manifest["config"], *manifest["files"], *manifest["schedule"], *session}
    return frozenset(keys - {*MANIFEST_FIELDS, *MANIFEST_OPTIONAL_FIELDS})


@functools.cache
def body_keys() -> frozenset[str]:
    """The key names of the HTTP bodies as :mod:`genedge.serve.protocol`'s types write them: both requests,
    both image responses with their records, the plan, the stats and an error."""
    request = GenerationRequest("a red cube", category="Basic", seed=0, n=2)
    image = GeneratedImage(b"\x89PNG\r\n\x1a\n", dict.fromkeys(RECORD_FIELDS))
    images = ImagesResponse((image,), created=0).to_dict()
    stats = StatsResponse(0.0, (DeviceStats(0, {"sd15": ModelStats(device_s=0.0, backlogged_s=0.0)}),)).to_dict()
    device = stats["devices"][0]
    error = ErrorBody.from_error(RequestError("bad", param="prompt")).to_dict()
    return frozenset(
        {
            *request.generate_body(),
            *request.openai_body(),
            *GenerateResponse(image).to_dict(),
            *images,
            *images["data"][0],
            *image.record,
            *PlanResponse(plan={}, table={}).to_dict(),
            *stats,
            *device,
            *device["models"]["sd15"],
            *error,
            *error["error"],
        }
    )


@dataclass(frozen=True)
class DocumentKind:
    """A kind of document as the scan sees it.

    Attributes:
        name: the kind (its defining modules are :data:`DEFINING_MODULES`'s entry of this name).
        names: names a value of the kind goes by.
        keys: its key names.
        nearest: match only the name nearest a read (see :func:`raw_reads`).
    """

    name: str
    names: re.Pattern[str]
    keys: Callable[[], frozenset[str]]
    nearest: bool = False


KINDS = (
    DocumentKind("plan", PLAN_NAMES, plan_keys),
    DocumentKind("plan schedule", SCHEDULE_NAMES, schedule_keys),
    DocumentKind("table", TABLE_NAMES, table_keys, nearest=True),
    DocumentKind("router", ROUTER_NAMES, router_keys, nearest=True),
    DocumentKind("load test", LOADTEST_NAMES, loadtest_keys),
    DocumentKind("HTTP body", BODY_NAMES, body_keys),
)


def _names(node: ast.expr, *, methods: bool = True) -> list[str]:
    """The names along an access chain, outermost first (``self.spec.plan`` → plan, spec, self; an awaited
    value's are its own); without ``methods``, a method call's name is left out, its result standing for
    its receiver (``router.to_dict()`` → router)."""
    names = []
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Await)):
        if isinstance(node, ast.Await):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
            if isinstance(node, ast.Attribute) and not methods:
                node = node.value
        else:
            if isinstance(node, ast.Attribute):
                names.append(node.attr)
            node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names


def _keyed_access(node: ast.AST) -> tuple[ast.expr, object] | None:
    """(the value indexed, the key) of ``x[KEY]`` or ``x.get(KEY, ...)``; None for anything else."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.value, node.slice.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        return node.func.value, node.args[0].value
    return None


@functools.cache
def _keyed_reads(source: str, filename: str) -> tuple[tuple[int, object, tuple[str, ...], tuple[str, ...]], ...]:
    """Each keyed read in ``source``: (line, key, the names along its chain, the same leaving out method
    calls), parsed once however many kinds of document are looked for."""
    reads = []
    for node in ast.walk(ast.parse(source, filename)):
        access = _keyed_access(node)
        if access is not None:
            value, key = access
            reads.append((node.lineno, key, tuple(_names(value)), tuple(_names(value, methods=False))))
    return tuple(reads)


def raw_reads(
    source: str, keys: frozenset[str], names: re.Pattern[str], filename: str = "<source>", *, nearest: bool = False
) -> list[str]:
    """``file:line key`` for each of ``keys`` read by subscript or ``.get`` from a value reached through one
    of ``names`` in ``source``.

    With ``nearest``, only through the name nearest the read, looking through method calls
    (``router.to_dict()["training"]`` reads the router): a table's and a router's typed attributes
    (``table.device["name"]``, ``router.mapping["column"]``) hold keys of their own.
    """
    found = []
    for line, key, chain, receivers in _keyed_reads(source, filename):
        looked_at = receivers[:1] if nearest else chain
        if key in keys and any(names.search(name) for name in looked_at):
            found.append(f"{filename}:{line} {key}")
    return found


def scanned_modules(kind: DocumentKind) -> list[str]:
    """The package's modules, as paths in the checkout, less ``kind``'s own."""
    own = DEFINING_MODULES[kind.name]
    paths = (str(path.relative_to(ROOT)) for path in python_sources(PACKAGE_FOLDERS))
    return [path for path in paths if path not in own]


@functools.cache
def package_raw_reads(kind: DocumentKind) -> tuple[str, ...]:
    """Every raw read of a ``kind`` document in the package's modules outside its own."""
    found: list[str] = []
    for path in scanned_modules(kind):
        source = (ROOT / path).read_text(encoding="utf-8")
        found += raw_reads(source, kind.keys(), kind.names, path, nearest=kind.nearest)
    return tuple(found)


#: Per kind of document: keys its key set must hold, keys it must not (another document's), planted source,
#: and what the kind's scan finds in it.
PLANTED: dict[str, tuple[set[str], set[str], str, list[str]]] = {
    "plan": (
        {
            "inputs",
            "max_batch",
            "mean_clipscore",
            "mean_delay_s",
            "models",
            "p95_delay_s",
            "predicted",
            "routing",
            "share",
            "table_sha256",
            "workload",
        },
        set(),
        """\
def serve(plan, table, entry, self, prediction):
    workload = plan["inputs"]["workload"]
    batch = entry.get("max_batch", 1)
    routed = self.spec.plan["routing"]
    raw = plan.raw["models"]
    mean = prediction.planned.get("mean_delay_s")
    fine = plan.inputs.workload, table["models"], entry.share, row["share"], plan.routed("Basic", "sd15")
""",
        [
            "<source>:2 inputs",
            "<source>:2 workload",
            "<source>:3 max_batch",
            "<source>:4 routing",
            "<source>:5 models",
            "<source>:6 mean_delay_s",
        ],
    ),
    "plan schedule": (
        {"bands", "high_rate", "low_rate", "max_stable_rate", "plan", "rate", "rates", "shares", "p95_delay_s"},
        set(),
        """\
def switch(schedule, band, points, observed):
    bands = schedule["bands"]
    plan = band.get("plan")
    high = schedule.raw["bands"][0]["high_rate"]
    rate = points[0]["rate"]
    fine = schedule.plan_for_rate(observed), band.high_rate, observed["rate"], schedule.max_stable_rate
""",
        [
            "<source>:2 bands",
            "<source>:3 plan",
            "<source>:4 bands",
            "<source>:4 high_rate",
            "<source>:5 rate",
        ],
    ),
    "table": (
        {"category_mapping", "clip_convention", "latency", "manifest", "models", "resolution"},
        set(),
        """\
def serve(spec, table, plan_table_path, calibration, run):
    mapping = table["category_mapping"]
    runs = spec.table.get("manifest", {})
    side = table["models"]["sd15"]["resolution"]
    convention = read_manifest(path).table.get("clip_convention")
    model = calibration.get("models", {})
    fine = table.models, table.device["name"], run["resolution"], plan_table_path.get("x"), table.profile_settings()
""",
        [
            "<source>:2 category_mapping",
            "<source>:3 manifest",
            "<source>:4 models",
            "<source>:4 resolution",
            "<source>:5 clip_convention",
            "<source>:6 models",
        ],
    ),
    "router": (
        {"backend", "category_mapping", "confusion", "cross_validation", "seed", "training", "vocabulary"},
        {"labels"},  # the category mapping's
        """\
def report(router, shipped_router, path, mapping):
    training = router.to_dict()["training"]
    confusion = shipped_router["cross_validation"]["confusion"]
    backend = load_router(path).to_dict().get("backend")
    fine = router.backend, router.mapping.get("name"), router.training["seed"], mapping["name"], router.route(["a"])
""",
        [
            "<source>:2 training",
            "<source>:3 confusion",
            "<source>:3 cross_validation",
            "<source>:4 backend",
        ],
    ),
    "load test": (
        {"config", "demand", "files", "outcomes", "request_rate", "schedule", "stats_after", "to_send"},
        {"schema_version"},  # a profile run's manifest has it too
        """\
def resume(manifest, sessions, session, result_dir, run_manifest):
    rate = manifest["config"]["request_rate"]
    demand = self.loadtest_manifest.get("schedule")
    sent = sessions[-1]["to_send"]
    ended = session.get("ended_unix")
    fine = manifest.config.request_rate, session.to_send, run_manifest["schema_version"], records["session"]
""",
        [
            "<source>:2 config",
            "<source>:2 request_rate",
            "<source>:3 schedule",
            "<source>:4 to_send",
            "<source>:5 ended_unix",
        ],
    ),
    "HTTP body": (
        {"b64_json", "backlogged_s", "devices", "genedge", "image_png_b64", "message", "model", "prompt"},
        set(),
        """\
async def fetch(body, response, image, stats, error, payload):
    png = body["data"][0]["b64_json"]
    records = (await response.json())["genedge"]
    model = image.record["model"]
    devices = stats.get("devices", [])
    message = error["error"]["message"]
    fine = payload.images[0].png, response.headers.get("Retry-After"), stats.devices, row["model"], spec.plan
""",
        [
            "<source>:2 b64_json",
            "<source>:2 data",
            "<source>:3 genedge",
            "<source>:4 model",
            "<source>:5 devices",
            "<source>:6 error",
            "<source>:6 message",
        ],
    ),
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name.replace(" ", "-"))
def test_the_scan_catches_planted_raw_reads(kind: DocumentKind):
    required, excluded, planted, expected = PLANTED[kind.name]
    keys = kind.keys()
    assert required <= keys and not excluded & keys
    assert sorted(raw_reads(planted, keys, kind.names, nearest=kind.nearest)) == expected  # the real scan's setting


def test_every_defining_module_exists():
    assert sorted(DEFINING_MODULES) == sorted(kind.name for kind in KINDS)
    missing = [path for paths in DEFINING_MODULES.values() for path in paths if not (ROOT / path).is_file()]
    assert missing == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name.replace(" ", "-"))
def test_no_module_outside_its_contract_indexes_a_document_by_key(kind: DocumentKind):
    assert {path.split("/")[0] for path in scanned_modules(kind)} == set(PACKAGE_FOLDERS)
    assert list(package_raw_reads(kind)) == []


def manifest_document_reads(source: str, filename: str = "<source>") -> list[str]:
    """``file:line`` of each ``….manifest.document`` in ``source``: a table's manifest object as written."""
    return [
        f"{filename}:{node.lineno}"
        for node in ast.walk(ast.parse(source, filename))
        if isinstance(node, ast.Attribute)
        and node.attr == "document"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "manifest"
    ]


def test_the_scan_catches_a_planted_read_of_a_tables_manifest_document():
    planted = "threads = spec.table.manifest.document['runs']\nfine = table.manifest.runs, table.profile_threads()\n"
    assert manifest_document_reads(planted) == ["<source>:1"]


def test_only_the_table_writer_touches_a_tables_manifest_document():
    found = [
        hit.rpartition(":")[0]
        for path in python_sources(CLIENT_DIRS)  # every folder of code that may hold a table
        for hit in manifest_document_reads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == ["genedge/contract/table_file.py"]
