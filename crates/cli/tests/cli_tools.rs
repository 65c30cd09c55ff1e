//! The `strom` tools end to end: run the binary against a `strom server`, check output and exit codes.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn strom(args: &[&str], bootstrap: &str, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
    cmd.args(args).arg("--bootstrap-server").arg(bootstrap);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run strom");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status, out(o), err(o));
    out(o)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure: non-zero exit and exactly one line on stderr, containing `needle`.
fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure, got success: {}", out(o));
    let e = err(o);
    assert_eq!(e.trim_end().lines().count(), 1, "one-line error expected: {e}");
    assert!(e.contains(needle), "stderr {e:?} lacks {needle:?}");
}

#[test]
fn topics_create_list_describe_alter_delete() {
    let s = common::Server::start(&[]);
    let b = format!("127.0.0.1:{}", s.port);
    assert!(ok(&strom(
        &["topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=86400000"],
        &b,
        None
    ))
    .contains("Created topic orders."));
    fails_with(&strom(&["topics", "create", "--topic", "orders"], &b, None), "TOPIC_ALREADY_EXISTS");
    ok(&strom(&["topics", "create", "orders", "--if-not-exists"], &b, None));
    assert!(ok(&strom(&["topics", "list"], &b, None)).lines().any(|l| l == "orders"));
    let d = ok(&strom(&["topics", "describe", "orders"], &b, None));
    assert!(
        d.contains("Topic: orders\t")
            && d.contains("PartitionCount: 3")
            && d.contains("Configs: retention.ms=86400000"),
        "{d}"
    );
    assert_eq!(d.lines().filter(|l| l.starts_with("\tTopic: orders\tPartition:")).count(), 3);
    ok(&strom(&["topics", "alter", "orders", "--partitions", "5"], &b, None));
    assert!(ok(&strom(&["topics", "describe", "--topic", "orders"], &b, None)).contains("PartitionCount: 5"));
    fails_with(&strom(&["topics", "describe", "missing"], &b, None), "topic 'missing' does not exist");
    assert!(ok(&strom(&["topics", "delete", "orders"], &b, None)).contains("Deleted topic orders."));
    fails_with(&strom(&["topics", "delete", "orders"], &b, None), "topic 'orders' does not exist");
    ok(&strom(&["topics", "delete", "orders", "--if-exists"], &b, None));
}

#[test]
fn produce_from_stdin_and_consume_as_text_and_json() {
    let s = common::Server::start(&[]);
    let b = format!("127.0.0.1:{}", s.port);
    ok(&strom(&["topics", "create", "lines", "--partitions", "1"], &b, None));
    let input = "k1:hello\nk2:wor:ld\nk1:again\n";
    ok(&strom(
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "h=1",
            "--header",
            "h=2",
            "--acks",
            "1",
            "--compression",
            "lz4",
        ],
        &b,
        Some(input),
    ));
    ok(&strom(&["produce", "lines"], &b, Some("no key here\n")));

    let o = strom(
        &["consume", "lines", "--from-beginning", "--max-messages", "3", "--print-key", "--print-headers"],
        &b,
        None,
    );
    assert_eq!(ok(&o), "h:1,h:2\tk1\thello\nh:1,h:2\tk2\twor:ld\nh:1,h:2\tk1\tagain\n");
    assert!(err(&o).contains("Processed a total of 3 messages"));

    let o = strom(&["consume", "lines", "--from-beginning", "--max-messages", "4", "--format", "json"], &b, None);
    let lines: Vec<serde_json::Value> = ok(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["key"], "k2");
    assert_eq!(lines[1]["value"], "wor:ld");
    assert_eq!(lines[1]["offset"], 1);
    assert_eq!(lines[1]["headers"], serde_json::json!([{"key": "h", "value": "1"}, {"key": "h", "value": "2"}]));
    assert_eq!(lines[3]["key"], serde_json::Value::Null);
    assert_eq!(lines[3]["value"], "no key here");
    assert!(lines[0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);

    // --partition/--offset start mid-log; --timeout-ms ends an idle consumer.
    let o = strom(&["consume", "lines", "--partition", "0", "--offset", "2", "--timeout-ms", "1000"], &b, None);
    assert_eq!(ok(&o), "again\nno key here\n");

    fails_with(
        &strom(&["produce", "lines", "--key-separator", ":"], &b, Some("nokey\n")),
        "line 1 has no key separator",
    );
}

#[test]
fn missing_topic_and_unreachable_broker_fail_with_one_line() {
    let s = common::Server::start(&[]);
    let b = format!("127.0.0.1:{}", s.port);
    fails_with(&strom(&["consume", "nope", "--from-beginning"], &b, None), "topic 'nope' does not exist");
    fails_with(&strom(&["produce", "nope"], &b, Some("x\n")), "topic 'nope' does not exist");
    let dead =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    fails_with(&strom(&["topics", "list"], &dead, None), "cannot connect to");
    fails_with(&strom(&["consume", "x"], &dead, None), "cannot connect to");
    fails_with(&strom(&["perf", "produce", "--topic", "x", "--num-records", "10"], &dead, None), "cannot connect to");
}

#[test]
fn configs_describe_and_alter() {
    let s = common::Server::start(&[]);
    let b = format!("127.0.0.1:{}", s.port);
    ok(&strom(&["topics", "create", "cfg", "--config", "max.message.bytes=200000"], &b, None));
    let d = ok(&strom(&["configs", "describe", "--entity-type", "topics", "--entity-name", "cfg"], &b, None));
    assert!(d.starts_with("Dynamic configs for topic cfg are:") && d.contains("max.message.bytes=200000"), "{d}");
    let d = ok(&strom(&["configs", "describe", "--entity-type", "brokers", "--entity-name", "1", "--all"], &b, None));
    assert!(d.lines().count() > 5, "{d}");
    fails_with(
        &strom(&["configs", "describe", "--entity-type", "topics", "--entity-name", "nope"], &b, None),
        "does not exist",
    );
    // IncrementalAlterConfigs: set and delete, shown with their sources.
    let o = ok(&strom(
        &[
            "configs",
            "alter",
            "--entity-type",
            "topics",
            "--entity-name",
            "cfg",
            "--add-config",
            "retention.ms=1000,cleanup.policy=compact",
        ],
        &b,
        None,
    ));
    assert!(o.contains("Completed updating config"), "{o}");
    let d = ok(&strom(&["configs", "describe", "--entity-type", "topics", "--entity-name", "cfg"], &b, None));
    assert!(d.contains("retention.ms=1000 sensitive=false source=DYNAMIC_TOPIC_CONFIG"), "{d}");
    assert!(d.contains("cleanup.policy=compact"), "{d}");
    ok(&strom(
        &["configs", "alter", "--entity-type", "topics", "--entity-name", "cfg", "--delete-config", "retention.ms"],
        &b,
        None,
    ));
    let d = ok(&strom(&["configs", "describe", "--entity-type", "topics", "--entity-name", "cfg"], &b, None));
    assert!(!d.contains("retention.ms="), "{d}");
    fails_with(
        &strom(
            &[
                "configs",
                "alter",
                "--entity-type",
                "topics",
                "--entity-name",
                "cfg",
                "--add-config",
                "retention.ms=abc",
            ],
            &b,
            None,
        ),
        "INVALID_CONFIG",
    );
    fails_with(
        &strom(
            &["configs", "alter", "--entity-type", "topics", "--entity-name", "cfg", "--add-config", "no.such=1"],
            &b,
            None,
        ),
        "INVALID_CONFIG",
    );

    // Broker configs: the cluster-wide default, then a per-broker override on top; read-only keys are refused.
    ok(&strom(
        &[
            "configs",
            "alter",
            "--entity-type",
            "brokers",
            "--entity-default",
            "--add-config",
            "log.retention.ms=7200000",
        ],
        &b,
        None,
    ));
    let d = ok(&strom(&["configs", "describe", "--entity-type", "brokers", "--entity-default"], &b, None));
    assert!(d.contains("log.retention.ms=7200000 sensitive=false source=DYNAMIC_DEFAULT_BROKER_CONFIG"), "{d}");
    ok(&strom(
        &[
            "configs",
            "alter",
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
            "--add-config",
            "log.retention.ms=3600000",
        ],
        &b,
        None,
    ));
    let d = ok(&strom(&["configs", "describe", "--entity-type", "brokers", "--entity-name", "1", "--all"], &b, None));
    assert!(d.contains("log.retention.ms=3600000 sensitive=false source=DYNAMIC_BROKER_CONFIG"), "{d}");
    let d = ok(&strom(&["configs", "describe", "--entity-type", "topics", "--entity-name", "cfg", "--all"], &b, None));
    assert!(d.contains("retention.ms=3600000 sensitive=false source=DYNAMIC_BROKER_CONFIG"), "{d}");
    fails_with(
        &strom(
            &["configs", "alter", "--entity-type", "brokers", "--entity-name", "1", "--add-config", "node.id=3"],
            &b,
            None,
        ),
        "INVALID_REQUEST",
    );
}

#[test]
fn perf_produce_and_consume_report() {
    let s = common::Server::start(&[]);
    let b = format!("127.0.0.1:{}", s.port);
    let o = strom(
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--num-records",
            "20000",
            "--record-size",
            "100",
            "--acks",
            "-1",
            "--producer-props",
            "linger.ms=1",
            "compression.type=lz4",
        ],
        &b,
        None,
    );
    let report = ok(&o);
    let last = report.lines().last().unwrap();
    assert!(
        last.starts_with("20000 records sent, ") && last.contains(" ms p99.9, ") && last.ends_with(" ms max latency."),
        "{last}"
    );
    let o = strom(
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--num-records",
            "300",
            "--record-size",
            "10",
            "--throughput",
            "1000",
            "--producers",
            "2",
        ],
        &b,
        None,
    );
    assert!(ok(&o).contains("300 records sent"));
    let o = strom(&["perf", "consume", "--topic", "perf", "--num-records", "20300"], &b, None);
    assert!(ok(&o).starts_with("20300 records read, "), "{}", out(&o));
}
