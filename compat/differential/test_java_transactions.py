"""The Java client's transactional producer (reference/java-client, class
Transactions): N transactions with some aborted, read back with read_committed
(only the committed records) and read_uncommitted (all); fencing (a second
producer with the same transactional.id, the first's commit fails); and a
read-process-write pass with a group consumer and sendOffsetsToTransaction.

The Java client 4.x takes the transactions v2 path of KIP-890 when the broker
advertises the finalized feature transaction.version >= 2 (EndTxn v5, no
AddPartitionsToTxn: the broker adds partitions itself on Produce, the epoch is
bumped with every transaction), and the v1 path otherwise. The client's DEBUG
log shows which: the path each target took goes into the report notes, the
outcome is compared.
"""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO, unique
from obs import both

PROJECT = REPO / "reference" / "java-client"
DEBUG_LOG = PROJECT / "log4j2-txn-debug.properties"


def run_java(java_client, target, mode, *extra):
    """Run Transactions; returns (RESULT lines as a dict, the client path notes)."""
    java, heap = java_client[0], java_client[1]
    rest = java_client[2:-1]  # -cp CLASSPATH
    cmd = [java, heap, f"-Dlog4j2.configurationFile={DEBUG_LOG}", *rest, "dev.strom.reference.Transactions",
           "--bootstrap", target.bootstrap, "--topic", unique("java-txn"), "--mode", mode, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "JAVA_TOOL_OPTIONS": ""})
    assert r.returncode == 0, (f"{target.name}: Transactions --mode {mode} exited {r.returncode}:\n"
                               f"{r.stdout[-4000:]}\n{_errors(r.stderr)}")
    results = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            for kv in re.findall(r"(\w+)=(\[[^\]]*\]|\S+)", line[len("RESULT "):]):
                results[kv[0]] = kv[1]
    return results, path_notes(target, mode, r.stdout, r.stderr)


def _errors(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if " WARN " in line or " ERROR " in line)[-4000:]


def path_notes(target, mode, stdout, stderr) -> str:
    """Which transaction protocol the client used, from NetworkClient's 'Sending X request with header
    RequestHeader(apiKey=..., apiVersion=...)' lines and the TransactionManager's TV2 decision."""
    sent = {}
    for api, ver in re.findall(r"Sending \w+ request with header RequestHeader\(apiKey=(\w+), apiVersion=(\d+)",
                               stderr):
        sent.setdefault(api, set()).add(int(ver))
    tv2 = re.findall(r"Updating isTV2 enabled to (\w+)", stderr)
    parts = [f"{api} v{','.join(map(str, sorted(v)))}" for api, v in sorted(sent.items())
             if api in ("INIT_PRODUCER_ID", "ADD_PARTITIONS_TO_TXN", "ADD_OFFSETS_TO_TXN", "END_TXN",
                        "TXN_OFFSET_COMMIT", "PRODUCE", "FIND_COORDINATOR")]
    notes = [n[len("NOTE "):] for n in stdout.splitlines() if n.startswith("NOTE ")]
    # Error codes of the transactional responses that failed (e.g. the fenced producer's EndTxn).
    failed = sorted({f"{api} error {code}" for api, code in re.findall(
        r"Received (\w+) response from node \S+ for request with header .*?errorCode=(-?\d+)", stderr)
        if code != "0" and api in ("INIT_PRODUCER_ID", "ADD_PARTITIONS_TO_TXN", "END_TXN", "PRODUCE",
                                   "ADD_OFFSETS_TO_TXN", "TXN_OFFSET_COMMIT")})
    if failed:
        notes.append("failed responses: " + ", ".join(failed))
    path = "v2 (KIP-890)" if "true" in tv2 else "v1"
    return (f"{target.name} {mode}: transactions {path} path (isTV2={tv2[-1] if tv2 else 'never set'}); "
            f"requests sent: {', '.join(parts)}" + (f"; {'; '.join(notes)}" if notes else ""))


def test_java_transactions_commit_and_abort(java_client, targets, differ):
    notes = []

    def run(t):
        res, note = run_java(java_client, t, "txns", "--transactions", "9", "--records-per-txn", "6",
                             "--abort-every", "3")
        notes.append(note)
        print(note)
        return res

    differ.check("txn-java-commit-abort", *both(targets, run), notes=notes)


def test_java_transactions_fencing(java_client, targets, differ):
    notes = []

    def run(t):
        res, note = run_java(java_client, t, "fencing", "--partitions", "1")
        notes.append(note)
        print(note)
        return res

    k, s = both(targets, run)
    differ.check("txn-java-fencing", k, s, notes=notes)
    assert k["first_commit"] == "ProducerFencedException", k


def test_java_read_process_write(java_client, targets, differ):
    """A group consumer (subscribe, read_committed) and the transactional producer copy 60 records, sending
    the consumed offsets with the consumer's group metadata (KIP-447) into each transaction; one transaction is
    aborted and its input re-read from the group's committed offsets."""
    notes = []

    def run(t):
        res, note = run_java(java_client, t, "rpw", "--partitions", "2", "--records", "60")
        notes.append(note)
        print(note)
        return res

    differ.check("txn-java-read-process-write", *both(targets, run), notes=notes)
