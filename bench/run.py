"""Reproducible benchmarks: the Relais ingest pipeline against a plain hl7apy pipeline.

Run from the repository root::

    python bench/run.py                 # full run (about 1-2 minutes on 2 cores)
    python bench/run.py --quick         # 3 messages per row, a few seconds (smoke test)
    python bench/run.py --messages 500 --connections 8 --out /tmp/pipeline.md

Everything runs in one process, on this machine, over three messages built from our
own fixtures (no corpus file, no patient data):

* ``ADT^A01`` — ``fixtures/hl7v2/adt_a01_vali.hl7`` as is;
* ``ORU^R01`` — a laboratory report with 30 ``NM`` OBX results, generated here;
* ``MDM^T02`` — ``fixtures/hl7v2/mdm_t02_initial.hl7`` whose CDA ``nonXMLBody`` is
  inflated with a fake PDF so that OBX-5.5 (the base64 CDA) is about 250 KB.

Rows (see ``bench/README.md`` for what each one means):

* ``relais pipeline`` — ``analyse_hl7v2(raw, opts, ids)``: decode → parse → validate →
  normalise, including the CDA parse and the XDS and FHIR mapping;
* ``relais parse`` — ``Message.parse(text)`` then MSH-9, MSH-10 and every PID-3 repetition;
* ``hl7apy flat`` / ``hl7apy groups`` — ``hl7apy.parser.parse_message(text,
  find_groups=False|True)`` at validation level tolerant, reading the same fields;
* ``service e2e`` — :class:`gateway.service.Service` on 127.0.0.1 (ephemeral port, temp
  data dir, default ``file`` destination) fed by K concurrent :class:`MllpClient`
  connections: ACK round trip including the fsync'd, group-committed journal write.

Latencies come from ``time.perf_counter_ns``; each row has an untimed warm-up. Memory:
``tracemalloc`` peak over a separate, short pass (tracing slows code down, so it never
runs during the timed loop) and the process peak RSS (``getrusage``), which is a
high-water mark: it only grows from one row to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import gc
import math
import os
import platform
import random
import re
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/run.py`` puts bench/, not the repo root, on the path
    sys.path.insert(0, str(ROOT))

from gateway.core.hl7v2.reader import Message  # noqa: E402
from gateway.core.pipeline import Ids, PipelineOptions, analyse_hl7v2  # noqa: E402

__all__ = [
    "Sample",
    "Config",
    "MicroResult",
    "E2eResult",
    "Report",
    "build_samples",
    "build_oru",
    "build_mdm",
    "run_benchmarks",
    "render_markdown",
    "main",
]

FIXTURES = ROOT / "fixtures" / "hl7v2"
MICRO_ROWS = ("relais pipeline", "relais parse", "hl7apy flat", "hl7apy groups")
E2E_ROW = "service e2e"
DRAIN_WAIT_S = 60.0


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Sample:
    """One benchmark message: its label, the bytes as sent, and the charset to decode them."""

    name: str
    raw: bytes
    charset: str = "utf-8"

    @property
    def text(self) -> str:
        return self.raw.decode(self.charset)


# Fictitious results; the LOINC codes are real so the message looks like a lab report.
_ANALYTES = (
    ("718-7", "Hemoglobine", "13.8", "g/dL", "12.0-16.0"),
    ("789-8", "Hematies", "4.61", "10*12/L", "4.00-5.40"),
    ("4544-3", "Hematocrite", "41.2", "%", "37.0-47.0"),
    ("787-2", "VGM", "89.4", "fL", "80.0-100.0"),
    ("6690-2", "Leucocytes", "6.8", "10*9/L", "4.0-10.0"),
    ("777-3", "Plaquettes", "254", "10*9/L", "150-400"),
    ("2951-2", "Sodium", "140", "mmol/L", "136-145"),
    ("2823-3", "Potassium", "4.1", "mmol/L", "3.5-5.1"),
    ("2075-0", "Chlorure", "102", "mmol/L", "98-107"),
    ("2160-0", "Creatinine", "74", "umol/L", "45-90"),
)


def build_oru(results: int = 30) -> bytes:
    """A laboratory ``ORU^R01`` (v2.5, UTF-8) with ``results`` numeric OBX, CR separated."""
    segments = [
        "MSH|^~\\&|LABO-TEST|LABO-TEST|RELAIS|RELAIS|20250101100000||ORU^R01^ORU_R01|ORU0030|T|2.5|||||FRA|UNICODE UTF-8",
        "PID|1||P000123^^^RELAIS-TEST&1.2.250.1.999.1.2&ISO^PI~279035121518989^^^ASIP-SANTE-INS-NIR"
        "&1.2.250.1.213.1.4.10&ISO^INS||PAT-TROIS^DOMINIQUE^DOMINIQUE MARIE-LOUISE^^^^L||19790328|F",
        "PV1|1|O",
        "ORC|RE|CMD0030",
        "OBR|1|CMD0030||24331-1^Bilan biologique^LN|||20250101080000|||||||||||||||20250101095500||LAB|F",
    ]
    for i in range(results):
        code, label, value, unit, ref = _ANALYTES[i % len(_ANALYTES)]
        series = i // len(_ANALYTES) + 1  # repeated analytes are later samples of the same day
        segments.append(
            f"OBX|{i + 1}|NM|{code}^{label} (prelevement {series})^LN||{value}|{unit}^^UCUM|{ref}|N|||F"
            f"|||2025010108{series:02d}00"
        )
    return ("\r".join(segments) + "\r").encode("utf-8")


_PDF_TEXT = re.compile(rb'(<text mediaType="application/pdf" representation="B64">)([^<]*)(</text>)')


def _fake_pdf(size: int) -> bytes:
    """A structurally plausible PDF whose content stream is ``size`` seeded random bytes.

    Random bytes, like a real compressed PDF stream, do not shrink: the base64 cost is honest.
    """
    payload = random.Random(20250101).randbytes(max(size, 0))
    head = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Contents 4 0 R>>endobj\n"
        + f"4 0 obj<</Length {len(payload)}/Filter/FlateDecode>>stream\n".encode()
    )
    return head + payload + b"\nendstream endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def build_mdm(target_b64: int = 250_000) -> bytes:
    """``mdm_t02_initial.hl7`` with its CDA inflated so OBX-5.5 holds about ``target_b64`` base64 chars."""
    raw = (FIXTURES / "mdm_t02_initial.hl7").read_bytes()
    segments = raw.split(b"\r")
    for n, seg in enumerate(segments):
        fields = seg.split(b"|")
        if fields[0] != b"OBX" or len(fields) < 6 or fields[2] != b"ED":
            continue
        comps = fields[5].split(b"^")
        cda = base64.b64decode(comps[4])
        match = _PDF_TEXT.search(cda)
        if match is None:
            raise ValueError("the MDM fixture's CDA has no base64 PDF nonXMLBody")
        # base64 grows by 4/3 twice (PDF in the CDA, CDA in OBX-5.5): size the PDF to hit the target
        other = len(cda) - len(match.group(2))
        pdf_size = int((target_b64 * 3 / 4 - other) * 3 / 4) - 200
        body = base64.b64encode(_fake_pdf(pdf_size))
        cda = cda[: match.start(2)] + body + cda[match.end(2) :]
        comps[4] = base64.b64encode(cda)
        fields[5] = b"^".join(comps)
        segments[n] = b"|".join(fields)
        return b"\r".join(segments)
    raise ValueError("the MDM fixture has no ED OBX")


def build_samples() -> list[Sample]:
    """The three benchmark messages, small to large."""
    return [
        Sample("ADT^A01", (FIXTURES / "adt_a01_vali.hl7").read_bytes()),
        Sample("ORU^R01 30 OBX", build_oru(30)),
        Sample("MDM^T02 CDA 250 KB", build_mdm(250_000)),
    ]


def with_control_id(raw: bytes, control_id: str) -> bytes:
    """Replace MSH-10 so the journal does not treat a resend as a duplicate."""
    head, sep, rest = raw.partition(b"\r")
    fields = head.split(b"|")
    fields[9] = control_id.encode("ascii")
    return b"|".join(fields) + sep + rest


# --------------------------------------------------------------------------- what is timed


FieldsRead = tuple[str, str, tuple[tuple[str, str], ...]]


def relais_fields(text: str) -> FieldsRead:
    """Our lazy reader: parse, then MSH-9, MSH-10 and every PID-3 repetition (CX.1, CX.4)."""
    msg = Message.parse(text)
    pid = msg.segment("PID")
    ids = tuple((r.value(1), r.comp(4).raw) for r in pid[3].reps) if pid is not None else ()
    return msg.msh[9].raw, msg.control_id, ids


def _find_segment(node: Any, name: str) -> Any:
    for child in node.children:
        if child.name == name:
            return child
        if child.classname == "Group":
            found = _find_segment(child, name)
            if found is not None:
                return found
    return None


def hl7apy_fields(text: str, *, find_groups: bool) -> FieldsRead:
    """Plain hl7apy: ``parse_message`` (tolerant), then the same fields as :func:`relais_fields`."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    msg = parse_message(text, find_groups=find_groups, validation_level=VALIDATION_LEVEL.TOLERANT)
    # with find_groups PID sits inside a group (ORU_R01_PATIENT…): look for it like a reader would
    pid = _find_segment(msg, "PID")
    ids = tuple((r.cx_1.to_er7(), r.cx_4.to_er7()) for r in pid.pid_3) if pid is not None else ()
    return msg.msh.msh_9.to_er7(), msg.msh.msh_10.to_er7(), ids


def _ids() -> Ids:
    # A fixed instant keeps outputs comparable; uuid4 is what the service's clock uses.
    return Ids(now=datetime(2025, 1, 1, 9, 30, tzinfo=UTC), new_uuid=lambda: str(uuid.uuid4()))


def _outcome_of_pipeline(raw: bytes, opts: PipelineOptions) -> str:
    an = analyse_hl7v2(raw, opts, _ids())
    if an.ack_code == "AA":
        return f"AA {an.outcome}"
    return f"{an.ack_code} {an.errors[0].code if an.errors else ''}".strip()


def micro_functions(sample: Sample, opts: PipelineOptions) -> dict[str, Callable[[], object]]:
    """The callables timed per row. Parse rows start from ``str`` (decoded once, untimed)."""
    raw, text, ids = sample.raw, sample.text, _ids()
    return {
        "relais pipeline": lambda: analyse_hl7v2(raw, opts, ids),
        "relais parse": lambda: relais_fields(text),
        "hl7apy flat": lambda: hl7apy_fields(text, find_groups=False),
        "hl7apy groups": lambda: hl7apy_fields(text, find_groups=True),
    }


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Config:
    """How much to run. ``quick`` is the smoke-test setting."""

    messages: int = 2000  # timed iterations per micro row (fewer if the time budget runs out)
    e2e_messages: int = 1000  # messages sent per size in the service row (budget applies too)
    warmup: int = 20
    budget_s: float = 3.0  # time cap per micro row
    e2e_budget_s: float = 6.0  # time cap per service row (the dispatcher drain afterwards is not capped by it)
    connections: int = 8
    trace_runs: int = 5  # messages run under tracemalloc per row
    group_commit_ms: float = 2.0

    @classmethod
    def quick(cls) -> Config:
        return cls(messages=3, e2e_messages=3, warmup=1, budget_s=1.0, e2e_budget_s=2.0,
                   connections=2, trace_runs=1)


@dataclass(frozen=True)
class Latency:
    """Throughput and latency percentiles from a list of per-message nanosecond timings."""

    n: int
    per_s: float
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples_ns: Sequence[int], wall_ns: int | None = None) -> Latency:
        """``wall_ns`` (concurrent runs) overrides the sum of latencies as the throughput base."""
        ordered = sorted(samples_ns)
        total = wall_ns if wall_ns is not None else sum(ordered)
        return cls(
            n=len(ordered),
            per_s=len(ordered) / (total / 1e9) if total else 0.0,
            p50_ms=_percentile(ordered, 50) / 1e6,
            p99_ms=_percentile(ordered, 99) / 1e6,
        )


def _percentile(ordered: Sequence[int], p: float) -> float:
    """Nearest-rank percentile (no interpolation: with n < 100, p99 is the maximum)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class MicroResult:
    """One micro row: a message, an implementation, its outcome, speed and memory."""

    message: str
    size: int
    row: str
    outcome: str
    latency: Latency | None
    traced_peak_kib: float | None
    rss_peak_mib: float
    note: str = ""


@dataclass(frozen=True)
class E2eResult:
    """One service row: ACK round trips over K connections, and how the journal grouped commits."""

    message: str
    size: int
    outcome: str
    connections: int
    latency: Latency
    journal_writes: int
    journal_commits: int
    drain_s: float | None  # seconds after the last ACK until the dispatcher had delivered everything
    traced_peak_kib: float | None
    rss_peak_mib: float


@dataclass
class Report:
    """Everything ``render_markdown`` needs."""

    config: Config
    machine: dict[str, str]
    samples: list[Sample]
    micro: list[MicroResult] = field(default_factory=list)
    e2e: list[E2eResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    command: str = "python bench/run.py"


def _rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _time_loop(fn: Callable[[], object], cfg: Config) -> Latency:
    for _ in range(cfg.warmup):
        fn()
    gc.collect()
    timings: list[int] = []
    deadline = time.perf_counter_ns() + int(cfg.budget_s * 1e9)
    clock = time.perf_counter_ns
    for _ in range(cfg.messages):
        t0 = clock()
        fn()
        t1 = clock()
        timings.append(t1 - t0)
        if t1 > deadline and len(timings) >= 3:
            break
    return Latency.of(timings)


def _traced_peak_kib(fn: Callable[[], object], runs: int) -> float:
    """Largest tracemalloc peak above the starting allocation over ``runs`` calls."""
    gc.collect()
    tracemalloc.start()
    try:
        worst = 0
        for _ in range(max(runs, 1)):
            base, _peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            fn()
            _cur, peak = tracemalloc.get_traced_memory()
            worst = max(worst, peak - base)
    finally:
        tracemalloc.stop()
    return worst / 1024


def run_micro(sample: Sample, cfg: Config, opts: PipelineOptions) -> list[MicroResult]:
    """The four in-process rows for one message."""
    fns = micro_functions(sample, opts)
    outcomes = {"relais pipeline": _outcome_of_pipeline(sample.raw, opts)}
    expected = relais_fields(sample.text)
    results = []
    for row in MICRO_ROWS:
        fn = fns[row]
        note = ""
        try:
            got = fn()
        except Exception as exc:  # hl7apy may refuse a message: report it rather than stop
            results.append(MicroResult(sample.name, len(sample.raw), row, f"fails: {type(exc).__name__}", None,
                                       None, _rss_mib(), note=_short(exc)))
            continue
        if row.startswith("hl7apy"):
            # same fields, same values: otherwise the comparison would be meaningless
            outcome = "fields equal" if got == expected else "fields differ"
            dropped = _dropped_segments(sample.text, row)
            if dropped:
                note = f"silently drops {dropped}"
        elif row == "relais parse":
            outcome = "fields read"
        else:
            outcome = outcomes[row]
            if not outcome.startswith("AA"):
                note = "rejected: no CDA parse nor FHIR/XDS mapping"
        latency = _time_loop(fn, cfg)
        traced = _traced_peak_kib(fn, cfg.trace_runs)
        results.append(MicroResult(sample.name, len(sample.raw), row, outcome, latency, traced, _rss_mib(), note))
    return results


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:60]


def _dropped_segments(text: str, row: str) -> str:
    """Segments present in the message but absent from hl7apy's tree (e.g. PRT with find_groups)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    msg = parse_message(text, find_groups=row == "hl7apy groups", validation_level=VALIDATION_LEVEL.TOLERANT)
    kept: dict[str, int] = {}

    def walk(node: Any) -> None:
        for child in node.children:
            if child.classname == "Group":
                walk(child)
            else:
                kept[child.name] = kept.get(child.name, 0) + 1

    walk(msg)
    sent: dict[str, int] = {}
    for seg in text.split("\r"):
        if seg:
            sent[seg[:3]] = sent.get(seg[:3], 0) + 1
    lost = {name: n - kept.get(name, 0) for name, n in sent.items() if n > kept.get(name, 0)}
    return ", ".join(f"{n} {name}" for name, n in sorted(lost.items()))


# --------------------------------------------------------------------------- end to end


async def _e2e(samples: Sequence[Sample], cfg: Config, data_dir: Path) -> list[E2eResult]:
    from adapters.mllp_client import MllpClient
    from gateway.service import Service
    from gateway.settings import load_settings

    settings = load_settings(
        env={},
        overrides={
            "gateway": {"data_dir": str(data_dir)},
            "mllp": {"port": 0},
            "http": {"enabled": False},
            "identity": {"allow_test_ins": True},  # the fixtures carry test INS numbers
            "journal": {"group_commit_ms": cfg.group_commit_ms},
        },
    )
    service = Service(settings)
    await service.start()
    port = int(service.addresses["mllp"].rsplit(":", 1)[1])
    clients = [MllpClient("127.0.0.1", port, timeout=60.0) for _ in range(cfg.connections)]
    results = []
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        for s_index, sample in enumerate(samples):
            next_raw = _resender(sample, s_index)
            # warm-up: opens the connections' buffers, SQLite's page cache and the pipeline's lazy imports
            await asyncio.gather(*(c.send(next_raw("W")) for c in clients for _ in range(max(cfg.warmup // 10, 1))))
            await _drain(service)
            outcome = _ack_code(await clients[0].send(next_raw("O")))
            await _drain(service)
            gc.collect()
            w0, c0 = service.journal.writes, service.journal.commits
            latency = await _send_many(clients, next_raw, cfg.e2e_messages, cfg.e2e_budget_s)
            w1, c1 = service.journal.writes, service.journal.commits
            drained = await _drain(service, wait_s=DRAIN_WAIT_S)
            traced = await _traced_e2e(clients, next_raw, cfg)
            await _drain(service)
            results.append(E2eResult(
                sample.name, len(sample.raw), outcome, len(clients), latency,
                w1 - w0, c1 - c0, drained, traced, _rss_mib(),
            ))
    finally:
        for c in clients:
            await c.close()
        await service.stop()
    return results


def _resender(sample: Sample, s_index: int) -> Callable[[str], bytes]:
    """A factory of copies of ``sample`` with fresh MSH-10 values (B<size><tag><counter>)."""
    counter = iter(range(10**9))

    def next_raw(tag: str) -> bytes:
        return with_control_id(sample.raw, f"B{s_index}{tag}{next(counter):07d}")

    return next_raw


async def _send_many(
    clients: Sequence[Any], next_raw: Callable[[str], bytes], total: int, budget_s: float
) -> Latency:
    timings: list[int] = []
    remaining = [total]
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)

    async def worker(client: Any) -> None:
        while remaining[0] > 0 and (clock() < deadline or len(timings) < 3):
            remaining[0] -= 1
            raw = next_raw("M")  # rewriting MSH-10 stays outside the timed round trip
            t0 = clock()
            ack = await client.send(raw)
            timings.append(clock() - t0)
            if b"MSA|" not in ack:
                raise RuntimeError("reply without MSA")

    start = clock()
    await asyncio.gather(*(worker(c) for c in clients))
    return Latency.of(timings, wall_ns=clock() - start)


async def _traced_e2e(clients: Sequence[Any], next_raw: Callable[[str], bytes], cfg: Config) -> float:
    """tracemalloc peak (above the start) while every connection sends ``trace_runs`` messages."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        async def one(c: Any) -> None:
            for _ in range(cfg.trace_runs):
                await c.send(next_raw("T"))

        await asyncio.gather(*(one(c) for c in clients))
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / 1024


async def _drain(service: Any, wait_s: float = 10.0) -> float | None:
    """Wait until the dispatcher has delivered what was queued, so rows do not overlap.

    Returns the seconds it took, or None when ``wait_s`` ran out first.
    """
    start = time.monotonic()
    while time.monotonic() - start < wait_s:
        work = await service.journal.open_work()
        if not work:  # no destination has a delivery left to do
            return time.monotonic() - start
        service.dispatcher_wake()
        await asyncio.sleep(0.02)
    return None


def _ack_code(ack: bytes) -> str:
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA|"):
            return seg.split(b"|")[1].decode("ascii", "replace")
    return "?"


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    """CPU, Python and library versions, date: what a reader needs to weigh the numbers."""
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu count": f"{os.cpu_count()} (usable: {affinity})",
        "hl7apy": version("hl7apy"),
        "lxml": version("lxml"),
    }


def run_benchmarks(cfg: Config, samples: Sequence[Sample] | None = None) -> Report:
    """Run every row; no output, no files."""
    started = time.perf_counter()
    samples = list(samples or build_samples())
    report = Report(config=cfg, machine=machine_info(), samples=samples)
    opts = PipelineOptions(allow_test_ins=True)  # as the service runs below: fixtures carry test INS
    for sample in samples:
        report.micro.extend(run_micro(sample, cfg, opts))
    with tempfile.TemporaryDirectory(prefix="relais-bench-") as tmp:
        report.e2e = asyncio.run(_e2e(samples, cfg, Path(tmp) / "data"))
    report.elapsed_s = time.perf_counter() - started
    return report


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "—"
    if value >= 100:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.{digits}f}"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def render_markdown(report: Report) -> str:
    """The results page: machine, settings, the in-process table and the service table."""
    cfg = report.config
    lines = ["# Relais ingest benchmarks", ""]
    lines.append(f"Generated by `{report.command}`; see `bench/README.md` for what each row measures.")
    lines.append("")
    for key, value in report.machine.items():
        lines.append(f"- **{key}**: {value}")
    lines.append(
        f"- **settings**: up to {cfg.messages} timed messages or {cfg.budget_s:g} s per in-process row, "
        f"{cfg.warmup} warm-up; service: up to {cfg.e2e_messages} messages or {cfg.e2e_budget_s:g} s per size "
        f"over {cfg.connections} connections, group commit {cfg.group_commit_ms:g} ms; "
        f"total run {report.elapsed_s:.1f} s"
    )
    lines += ["", "## In process (one thread)", ""]
    lines.append("| message | size | row | outcome | n | msg/s | p50 ms | p99 ms | tracemalloc peak KiB "
                 "| peak RSS MiB | note |")
    lines.append("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in report.micro:
        lat = r.latency
        lines.append(
            f"| {r.message} | {_size(r.size)} | {r.row} | {r.outcome} | {lat.n if lat else 0} "
            f"| {_num(lat.per_s if lat else None)} | {_num(lat.p50_ms if lat else None, 3)} "
            f"| {_num(lat.p99_ms if lat else None, 3)} | {_num(r.traced_peak_kib, 1)} "
            f"| {_num(r.rss_peak_mib, 1)} | {r.note} |"
        )
    lines += ["", "## End to end: MLLP → pipeline → SQLite journal (fsync, group commit) → ACK", ""]
    lines.append("| message | size | ACK | connections | n | msg/s | ACK p50 ms | ACK p99 ms | journal writes "
                 "| commits | commits/writes | dispatcher drain s | tracemalloc peak KiB | peak RSS MiB |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for e in report.e2e:
        ratio = e.journal_commits / e.journal_writes if e.journal_writes else math.nan
        drain = _num(e.drain_s) if e.drain_s is not None else f"> {DRAIN_WAIT_S:g}"
        lines.append(
            f"| {e.message} | {_size(e.size)} | {e.outcome} | {e.connections} | {e.latency.n} "
            f"| {_num(e.latency.per_s)} | {_num(e.latency.p50_ms, 3)} | {_num(e.latency.p99_ms, 3)} "
            f"| {e.journal_writes} | {e.journal_commits} | {_num(ratio)} | {drain} "
            f"| {_num(e.traced_peak_kib, 1)} | {_num(e.rss_peak_mib, 1)} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print the Markdown, write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 messages per row: a smoke run of a few seconds")
    parser.add_argument("--messages", type=int, help="timed messages per in-process row (default 2000)")
    parser.add_argument("--e2e-messages", type=int, help="messages per size sent to the service (default 1000)")
    parser.add_argument("--connections", type=int, help="concurrent MLLP connections (default 8)")
    parser.add_argument("--budget", type=float, help="seconds cap per in-process row (default 3)")
    parser.add_argument("--e2e-budget", type=float, help="seconds cap per service row (default 6)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "pipeline-results.md", help="Markdown output file")
    args = parser.parse_args(argv)

    cfg = Config.quick() if args.quick else Config()
    overrides = {
        "messages": args.messages, "e2e_messages": args.e2e_messages, "connections": args.connections,
        "budget_s": args.budget, "e2e_budget_s": args.e2e_budget,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    from gateway.logging import configure_logging

    # Log as in production (info, JSON, redaction) but into /dev/null: the cost stays, the noise goes.
    with open(os.devnull, "w", encoding="utf-8") as sink:
        configure_logging("info", stream=sink)
        report = run_benchmarks(cfg)
    report.command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    text = render_markdown(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
