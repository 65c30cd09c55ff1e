"""Compare what clients observe on Apache Kafka and on Strom.

A scenario builds one *observation* per broker: plain Python data (dicts,
lists, numbers, strings) holding only what a client can see and what should
be the same on both brokers. `check()` flattens both into field paths
("records[3].headers[0].value") and lists every field whose values differ.
Each difference is then looked up in two reviewed files, same format:

    scenario-id | field | reason

  allowed-differences.txt  intended differences (Strom means to differ):
                           the scenario passes.
  known-bugs.txt           Strom bugs not fixed yet: the scenario is an
                           expected failure (xfail). A line whose scenario-id
                           has no wildcard must still reproduce: when the bug
                           is fixed the scenario fails until the line goes.

Any other difference fails the test. scenario-id and field are fnmatch
patterns ("*" matches anything, including dots and brackets; "[" is literal).
Every difference goes into the run's report (target/differential/report.md
and the pytest terminal summary).
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ALLOW_FILE = HERE / "allowed-differences.txt"
BUGS_FILE = HERE / "known-bugs.txt"
ABSENT = "<absent>"


@dataclass
class Allowed:
    scenario: str
    field: str
    reason: str
    line: int
    used: int = 0

    def matches(self, scenario: str, fld: str) -> bool:
        return _match(scenario, self.scenario) and _match(fld, self.field)


def _match(value: str, pattern: str) -> bool:
    # fnmatch treats [...] as a character class; field paths use brackets
    # literally, so escape them.
    pat = re.sub(r"([\[\]])", r"[\1]", pattern)
    return fnmatch.fnmatchcase(value, pat)


def load_allowed(path: Path = ALLOW_FILE) -> list[Allowed]:
    out = []
    if not path.exists():
        return out
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{path}:{n}: want 'scenario-id | field | reason', got {raw!r}")
        out.append(Allowed(parts[0], parts[1], parts[2], n))
    return out


@dataclass
class Difference:
    field: str
    kafka: object
    strom: object
    allowed: Allowed | None = None
    bug: Allowed | None = None


@dataclass
class ScenarioResult:
    scenario: str
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared_fields: int = 0
    fixed_bugs: list = field(default_factory=list)

    @property
    def unexplained(self):
        return [d for d in self.differences if d.allowed is None and d.bug is None]

    @property
    def bugs(self):
        return [d for d in self.differences if d.bug is not None]


def flatten(obj, prefix: str = "") -> dict:
    """{"a.b[0].c": leaf}; empty dicts/lists are leaves so their absence shows."""
    out = {}
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        if not obj and prefix:
            out[prefix] = []
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix or "."] = obj
    return out


def _short(v, width: int = 60) -> str:
    if isinstance(v, (bytes, bytearray)):
        s = repr(bytes(v))
    elif isinstance(v, str) and v != ABSENT:
        s = json.dumps(v)
    else:
        s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= width else s[: width - 3] + "..."


class Differ:
    """One per test session; collects results for the report."""

    def __init__(self, allowed: list[Allowed] | None = None, bugs: list[Allowed] | None = None):
        self.allowed = load_allowed() if allowed is None else allowed
        self.bugs = load_allowed(BUGS_FILE) if bugs is None else bugs
        self.results: list[ScenarioResult] = []
        self._lock = threading.Lock()

    def compare(self, scenario: str, kafka_obs, strom_obs, notes=()) -> ScenarioResult:
        fk, fs = flatten(kafka_obs), flatten(strom_obs)
        res = ScenarioResult(scenario, notes=list(notes))
        keys = list(fk) + [k for k in fs if k not in fk]
        res.compared_fields = len(keys)
        for k in keys:
            a, b = fk.get(k, ABSENT), fs.get(k, ABSENT)
            if a == b and type(a) is type(b):
                continue
            if a == b and {type(a), type(b)} <= {int, float, bool}:
                continue
            d = Difference(k, a, b)
            for al in self.allowed:
                if al.matches(scenario, k):
                    d.allowed = al
                    al.used += 1
                    break
            else:
                for b in self.bugs:
                    if b.matches(scenario, k):
                        d.bug = b
                        b.used += 1
                        break
            res.differences.append(d)
        # known-bug lines naming this scenario exactly that did not reproduce
        for b in self.bugs:
            if b.scenario == scenario and not any(d.bug is b for d in res.differences):
                res.fixed_bugs.append(b)
        with self._lock:
            self.results.append(res)
        return res

    def check(self, scenario: str, kafka_obs, strom_obs, notes=()) -> ScenarioResult:
        """compare(), then fail the test on any difference not allow-listed."""
        res = self.compare(scenario, kafka_obs, strom_obs, notes)
        if res.unexplained:
            pytest.fail(render(res), pytrace=False)
        if res.fixed_bugs:
            lines = "; ".join(f"line {b.line}: {b.field}" for b in res.fixed_bugs)
            pytest.fail(f"scenario {res.scenario}: known bug(s) no longer reproduce, remove from "
                        f"compat/differential/known-bugs.txt: {lines}", pytrace=False)
        if res.bugs:
            pytest.xfail(f"known Strom bug: {res.bugs[0].bug.reason}")
        return res

    def report_markdown(self) -> str:
        lines = ["# Differential results: Apache Kafka vs Strom", ""]
        by = sorted(self.results, key=lambda r: r.scenario)
        same = [r for r in by if not r.differences]
        lines.append(f"{len(by)} scenario(s): {len(same)} identical, "
                     f"{sum(1 for r in by if r.differences and not r.unexplained and not r.bugs)} "
                     f"with allowed differences only, "
                     f"{sum(1 for r in by if r.bugs and not r.unexplained)} with known Strom bugs, "
                     f"{sum(1 for r in by if r.unexplained)} with unexplained differences.")
        lines.append("")
        for r in by:
            status = "identical" if not r.differences else (
                "UNEXPLAINED differences" if r.unexplained else
                "known Strom bug" if r.bugs else "allowed differences only")
            lines.append(f"## {r.scenario}: {status} ({r.compared_fields} fields compared)")
            for n in r.notes:
                lines.append(f"- note: {n}")
            if r.differences:
                lines.append("")
                lines.append("| field | kafka | strom | allowed because |")
                lines.append("|---|---|---|---|")
                for d in r.differences:
                    why = (d.allowed.reason if d.allowed else
                           f"known bug: {d.bug.reason}" if d.bug else "**not allowed**")
                    lines.append(f"| `{d.field}` | `{_short(d.kafka)}` | `{_short(d.strom)}` | {why} |")
            lines.append("")
        unused = [a for a in self.allowed if not a.used]
        if unused:
            lines.append("## allowed-differences.txt lines that matched nothing in this run")
            for a in unused:
                lines.append(f"- line {a.line}: `{a.scenario} | {a.field}`")
        unused = [a for a in self.bugs if not a.used]
        if unused:
            lines.append("## known-bugs.txt lines that matched nothing in this run (fixed?)")
            for a in unused:
                lines.append(f"- line {a.line}: `{a.scenario} | {a.field}`")
        return "\n".join(lines) + "\n"


def render(res: ScenarioResult) -> str:
    un = res.unexplained
    rows = [("field", "kafka", "strom")] + [(d.field, _short(d.kafka), _short(d.strom)) for d in un]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    out = [f"scenario {res.scenario}: {len(un)} difference(s) not in "
           f"compat/differential/allowed-differences.txt"]
    for i, (a, b, c) in enumerate(rows):
        out.append(f"  {a:<{w0}}  {b:<{w1}}  {c}")
        if i == 0:
            out.append(f"  {'-' * w0}  {'-' * w1}  {'-' * 5}")
    allowed = [d for d in res.differences if d.allowed]
    if allowed:
        out.append(f"  (+{len(allowed)} allowed difference(s))")
    for n in res.notes:
        out.append(f"  note: {n}")
    return "\n".join(out)
