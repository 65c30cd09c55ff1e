"""Fixtures for the differential suite: the same scenario against a real
Apache Kafka (pinned in reference/pom.xml) and against Strom.

Both brokers are started once per session through scripts/reference-kafka,
each on its own free loopback port with its own data directory; every
scenario uses fresh topic names.

This directory is collected only when asked for: by scripts/test-differential
(STROM_DIFFERENTIAL=1) or when pytest is pointed at it explicitly
(`pytest compat/differential`), so the plain compat run (`pytest compat`)
does not start a JVM.

Environment:
  STROM_BIN                 broker binary (default target/release/strom)
  DIFF_KAFKA_PORT           use an already running Kafka on this port instead of starting one
  DIFF_STROM_PORT           same for Strom
  DIFF_REPORT               report path (default target/differential/report.md)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from differ import Differ  # noqa: E402

REFERENCE = REPO / "scripts" / "reference-kafka"


def _enabled(config) -> bool:
    if os.environ.get("STROM_DIFFERENTIAL") == "1":
        return True
    for a in config.args:
        p = Path(a.split("::")[0]).resolve()
        if p == HERE or HERE in p.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if HERE in collection_path.parents and not _enabled(config):
            return True
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str = "d") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Target:
    """A broker started with scripts/reference-kafka (or one already running)."""

    def __init__(self, name: str, data_dir: Path, overrides: dict | None = None,
                 heap: str = "512m", port: int | None = None, external: bool = False):
        self.name = name
        self.data_dir = Path(data_dir)
        self.overrides = dict(overrides or {})
        self.heap = heap
        self.port = port or free_port()
        self.external = external
        self.start_seconds = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __repr__(self):
        return f"<{self.name} {self.bootstrap}>"

    def _args(self) -> list[str]:
        return ["--target", self.name, "--port", str(self.port), "--data-dir", str(self.data_dir)]

    def start(self):
        if self.external:
            return self
        cmd = [sys.executable, str(REFERENCE), "start", *self._args(), "--heap", self.heap,
               "--fresh", "--timeout", "90"]
        if self.name == "kafka":
            cmd += ["--controller-port", str(free_port())]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True)
        self.start_seconds = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"starting {self.name} failed:\n{r.stdout}\n{r.stderr}")
        return self

    def stop(self):
        if self.external:
            return
        subprocess.run([sys.executable, str(REFERENCE), "stop", *self._args()],
                       capture_output=True, text=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.data_dir / "broker.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


_ACTIVE: list[Target] = []
_DIFFER = Differ()
_TIMINGS: dict[str, float] = {}


def _make(name, tmp_path_factory, overrides=None, env_port=None):
    port = os.environ.get(env_port) if env_port else None
    t = Target(name, tmp_path_factory.mktemp(name), overrides,
               port=int(port) if port else None, external=bool(port))
    t.start()
    if t.start_seconds is not None:
        key = f"{name} start" + (f" ({', '.join(f'{k}={v}' for k, v in t.overrides.items())})"
                                 if t.overrides else "")
        _TIMINGS[key] = t.start_seconds
    _ACTIVE.append(t)
    return t


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    t = _make("kafka", tmp_path_factory, env_port="DIFF_KAFKA_PORT")
    yield t
    t.stop()
    _ACTIVE.remove(t)


@pytest.fixture(scope="session")
def strom(tmp_path_factory):
    strom_bin = Path(os.environ.get("STROM_BIN", REPO / "target" / "release" / "strom"))
    if not strom_bin.exists():
        pytest.fail(f"{strom_bin} not found; build it with cargo build --release -p strom")
    t = _make("strom", tmp_path_factory, env_port="DIFF_STROM_PORT")
    yield t
    t.stop()
    _ACTIVE.remove(t)


@pytest.fixture(scope="session")
def targets(kafka, strom):
    """(kafka, strom): run the scenario on each, then differ.check()."""
    return (kafka, strom)


@pytest.fixture
def make_pair(tmp_path_factory):
    """Start an extra Kafka+Strom pair with the given broker overrides
    (module- or test-scoped through the caller)."""
    made = []

    def factory(overrides: dict):
        pair = (_make("kafka", tmp_path_factory, overrides), _make("strom", tmp_path_factory, overrides))
        made.extend(pair)
        return pair

    yield factory
    for t in made:
        t.stop()
        _ACTIVE.remove(t)


JAVA_CLIENT = REPO / "reference" / "java-client"


@pytest.fixture(scope="session")
def java_client():
    """Build once per session (Maven; the dependencies come from the local
    repository after the first run). Returns the java command prefix."""
    r = subprocess.run(["mvn", "-q", "-B", "-f", str(JAVA_CLIENT / "pom.xml"), "package"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"building reference/java-client failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    cp = f"{JAVA_CLIENT / 'target' / 'classes'}:{JAVA_CLIENT / 'target' / 'lib'}/*"
    return ["java", "-Xmx256m", "-cp", cp, "dev.strom.reference.RoundTrip"]


@pytest.fixture(scope="session")
def differ():
    return _DIFFER


@pytest.fixture
def topic():
    return unique()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and HERE in Path(str(item.fspath)).parents:
        for t in list(_ACTIVE):
            report.sections.append((f"{t.name} log tail ({t.bootstrap}, {t.data_dir})", t.log_tail(30)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _DIFFER.results:
        return
    md = _DIFFER.report_markdown()
    out = Path(os.environ.get("DIFF_REPORT", REPO / "target" / "differential" / "report.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    tr = terminalreporter
    tr.section("differential: Apache Kafka vs Strom")
    for name, secs in _TIMINGS.items():
        tr.write_line(f"{name}: {secs:.1f}s")
    for r in sorted(_DIFFER.results, key=lambda r: r.scenario):
        if not r.differences:
            continue
        tag = "UNEXPLAINED" if r.unexplained else "known Strom bug" if r.bugs else "allowed"
        tr.write_line(f"{r.scenario}: {len(r.differences)} difference(s) [{tag}]")
        for d in r.unexplained:
            tr.write_line(f"    {d.field}: kafka={d.kafka!r} strom={d.strom!r}"[:300])
        reasons = []
        for d in r.differences:
            entry = d.allowed or d.bug
            if entry is not None:
                why = ("allowed: " if d.allowed else "known bug: ") + entry.reason
                if why not in reasons:
                    reasons.append(why)
        for why in reasons:
            tr.write_line(f"    {why}"[:300])
    same = sum(1 for r in _DIFFER.results if not r.differences)
    tr.write_line(f"{len(_DIFFER.results)} comparisons, {same} identical; full report: {out}")
