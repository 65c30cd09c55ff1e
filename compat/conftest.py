"""Fixtures for the client-driven compatibility suite.

Every test talks to a real `strom server` process started here on a free
loopback port with its own temporary data directory. The binary comes from
$STROM_BIN (default: <repo>/target/release/strom).

Fixtures:
  broker       -- one broker per test module. A module may set
                  BROKER_OVERRIDES = {"num.partitions": "3", ...}.
  make_broker  -- factory for tests that need their own broker(s) (isolation,
                  special configs, restarts): make_broker(**overrides) or
                  make_broker({"dotted.name": "v"}).

The broker object has .bootstrap, .port, .data_dir, .log_path, .restart(),
.kill9(), .stop(), .start().  When a test fails, the tail of the log of every
broker it used is attached to the pytest report.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafkawire  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
STROM_BIN = os.environ.get("STROM_BIN", str(REPO_ROOT / "target" / "release" / "strom"))
START_TIMEOUT = float(os.environ.get("STROM_START_TIMEOUT", "60"))
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 80

# Brokers touched by the currently running test (for failure reports).
_ACTIVE: list["Broker"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: SIGKILL the broker if the test runner dies (no orphans in CI)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def unique(prefix: str = "t") -> str:
    """A fresh topic name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class BrokerError(RuntimeError):
    pass


class Broker:
    def __init__(self, data_dir: Path, overrides: dict | None = None, name: str = "strom",
                 config_file: str | Path | None = None):
        self.name = name
        self.config_file = config_file
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.overrides = {str(k): str(v) for k, v in (overrides or {}).items()}
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_returncode: int | None = None

    # ----------------------------------------------------------------- props
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self):
        return f"<Broker {self.bootstrap} dir={self.data_dir}>"

    # ------------------------------------------------------------- lifecycle
    def command(self) -> list[str]:
        cmd = [STROM_BIN, "server"]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        cmd += ["--override", f"listeners=PLAINTEXT://{self.host}:{self.port}",
               "--override", f"log.dirs={self.data_dir}"]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def start(self, timeout: float = START_TIMEOUT):
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError("broker already running")
        if not os.path.exists(STROM_BIN):
            raise BrokerError(f"STROM_BIN {STROM_BIN} does not exist (run cargo build --release)")
        self.starts += 1
        logf = open(self.log_path, "ab")
        logf.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(
            self.command(), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env={**os.environ, "RUST_BACKTRACE": "1"},
        )
        logf.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float):
        """Wait until the port accepts connections and the broker answers
        ApiVersions and lists itself in Metadata."""
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with {self.proc.returncode} during startup\n{self.log_tail()}")
            try:
                with kafkawire.connect(self.port, timeout=2.0) as s:
                    _, err, _ = kafkawire.api_versions_v0(s, 1)
                    if err == 0 and kafkawire.metadata_v4_brokers(s, 2):
                        return
            except (OSError, ConnectionError, AssertionError, Exception) as e:  # noqa: BLE001
                last_err = e
            time.sleep(0.05)
        raise BrokerError(f"broker not ready on {self.bootstrap} after {timeout}s "
                          f"(last error: {last_err!r})\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (clean shutdown); returns the exit code."""
        if self.proc is None:
            return self.last_returncode or 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.last_returncode = self.proc.returncode
                self.proc = None
                raise BrokerError(f"broker did not exit within {timeout}s of SIGTERM")
        self.last_returncode = self.proc.returncode
        self.proc = None
        return self.last_returncode

    def kill9(self) -> int:
        """SIGKILL (crash)."""
        if self.proc is None:
            return self.last_returncode or 0
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.last_returncode = self.proc.returncode
        self.proc = None
        return self.last_returncode

    def restart(self, kill: bool = False):
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the
        same port and data directory."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def close(self):
        """Fixture teardown: stop quietly, SIGKILL as a last resort."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def strom_bin():
    if not os.path.exists(STROM_BIN):
        pytest.fail(f"STROM_BIN={STROM_BIN} not found; build with cargo build --release")
    return STROM_BIN


@pytest.fixture(scope="module")
def broker(request, tmp_path_factory, strom_bin):
    overrides = getattr(request.module, "BROKER_OVERRIDES", {})
    b = Broker(tmp_path_factory.mktemp("broker") / "data", overrides)
    _ACTIVE.append(b)
    try:
        b.start()
        yield b
    finally:
        b.close()
        _ACTIVE.remove(b)


@pytest.fixture
def broker_class():
    """The Broker class, for tests that place the data directory themselves (a test module cannot import it when
    the differential suite's conftest is collected in the same run)."""
    return Broker


@pytest.fixture
def make_broker(tmp_path, strom_bin):
    made: list[Broker] = []

    def factory(overrides: dict | None = None, start: bool = True, config_file=None, **kw):
        ov = dict(overrides or {})
        ov.update({k.replace("_", "."): v for k, v in kw.items()})
        b = Broker(tmp_path / f"broker{len(made)}" / "data", ov, config_file=config_file)
        made.append(b)
        _ACTIVE.append(b)
        if start:
            b.start()
        return b

    try:
        yield factory
    finally:
        for b in made:
            b.close()
            _ACTIVE.remove(b)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in list(_ACTIVE):
            report.sections.append(
                (f"strom log tail ({b.bootstrap}, {b.log_path})", b.log_tail()))
