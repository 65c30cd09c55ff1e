//! strom-client group consumers against the real binary: subscribe (names and pattern), rebalances with the
//! listener (eager and cooperative-sticky), commits and resuming from them, max.poll.interval.ms, and the
//! `strom groups` tool.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strom_client::admin::NewTopic;
use strom_client::group::RebalanceListener;
use strom_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

fn start() -> common::Server {
    common::Server::start(&["group.initial.rebalance.delay.ms=0", "offsets.topic.num.partitions=3"])
}

fn bootstrap(s: &common::Server) -> String {
    format!("127.0.0.1:{}", s.port)
}

async fn setup(s: &common::Server, topic: &str, partitions: i32, records: usize) {
    let admin = Admin::new(ClientConfig::new(bootstrap(s))).await.unwrap();
    admin.create_topic(NewTopic::new(topic, partitions, 1)).await.unwrap();
    let mut pc = ProducerConfig::new(bootstrap(s));
    pc.set("enable.idempotence", "false").unwrap();
    let producer = Producer::new(pc).await.unwrap();
    for i in 0..records {
        let r = ProducerRecord::new(topic).partition((i % partitions as usize) as i32).value(format!("v{i}"));
        producer.send(r).await.unwrap().await.unwrap();
    }
}

type EventLog = Arc<Mutex<Vec<(String, Vec<TopicPartition>)>>>;

#[derive(Default, Clone)]
struct Events(EventLog);

impl RebalanceListener for Events {
    fn on_partitions_revoked(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("revoked".into(), p.to_vec()));
    }
    fn on_partitions_assigned(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("assigned".into(), p.to_vec()));
    }
}

async fn consumer(s: &common::Server, group: &str, extra: &[(&str, &str)]) -> Consumer {
    let mut c = ConsumerConfig::new(bootstrap(s));
    for (k, v) in [
        ("group.id", group),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .iter()
    .chain(extra.iter())
    {
        c.set(k, v).unwrap();
    }
    Consumer::new(c).await.unwrap()
}

/// A consumer polling in its own task; what it read and its assignment are shared with the test.
struct Running {
    values: Arc<Mutex<Vec<String>>>,
    assignment: Arc<Mutex<BTreeSet<TopicPartition>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Consumer>,
}

fn run(mut c: Consumer, poll: bool) -> Running {
    let values = Arc::new(Mutex::new(Vec::new()));
    let assignment = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (v, a, st) = (values.clone(), assignment.clone(), stop.clone());
    let task = tokio::spawn(async move {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if !poll {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let records = c.poll(Duration::from_millis(200)).await.unwrap();
            v.lock().unwrap().extend(
                records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string()),
            );
            *a.lock().unwrap() = c.assignment().into_iter().collect();
        }
        c
    });
    Running { values, assignment, stop, task }
}

impl Running {
    async fn finish(self) -> Consumer {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn wait_until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_shares_rebalances_and_resumes_from_commits() {
    let s = start();
    setup(&s, "t", 4, 100).await;
    let events = Events::default();
    let mut c1 = consumer(&s, "g", &[("enable.auto.commit", "false")]).await;
    c1.subscribe(&["t"]).unwrap();
    c1.set_rebalance_listener(Box::new(events.clone()));
    let mut c2 = consumer(&s, "g", &[("enable.auto.commit", "false")]).await;
    c2.subscribe(&["t"]).unwrap();
    let (r1, r2) = (run(c1, true), run(c2, true));
    wait_until("a 2/2 split and all records", 30, || {
        r1.assignment.lock().unwrap().len() == 2
            && r2.assignment.lock().unwrap().len() == 2
            && r1.values.lock().unwrap().len() + r2.values.lock().unwrap().len() >= 100
    })
    .await;
    let mut c2 = r2.finish().await;
    c2.commit_sync().await.unwrap();
    c2.close().await.unwrap();
    // c1 gets c2's partitions after c2 left (LeaveGroup: no session timeout to wait for).
    wait_until("c1 to own all 4 partitions", 20, || r1.assignment.lock().unwrap().len() == 4).await;
    let mut c1 = r1.finish().await;
    c1.commit_sync().await.unwrap();
    let committed = c1.committed(&(0..4).map(|p| TopicPartition::new("t", p)).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(committed.values().map(|o| o.offset).sum::<i64>(), 100);
    c1.close().await.unwrap();
    let ev = events.0.lock().unwrap().clone();
    assert!(ev.iter().any(|(k, p)| k == "assigned" && p.len() == 2), "{ev:?}");
    assert!(ev.iter().any(|(k, _)| k == "revoked"), "eager rebalancing revokes before rejoining: {ev:?}");

    // A new member resumes after the committed offsets: only new records arrive.
    setup_more(&s, "t", 4, 8).await;
    let mut c3 = consumer(&s, "g", &[]).await;
    c3.subscribe(&["t"]).unwrap();
    let r3 = run(c3, true);
    wait_until("the 8 new records", 20, || r3.values.lock().unwrap().len() >= 8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let vals = r3.values.lock().unwrap().clone();
    assert_eq!(vals.len(), 8, "{vals:?}");
    assert!(vals.iter().all(|v| v.starts_with("more")));
    // Auto commit on close.
    let c3 = r3.finish().await;
    c3.close().await.unwrap();
    let admin = Admin::new(ClientConfig::new(bootstrap(&s))).await.unwrap();
    let offsets = admin.list_group_offsets("g").await.unwrap();
    assert_eq!(offsets.values().map(|o| o.offset).sum::<i64>(), 108);
}

async fn setup_more(s: &common::Server, topic: &str, partitions: i32, records: usize) {
    let mut pc = ProducerConfig::new(bootstrap(s));
    pc.set("enable.idempotence", "false").unwrap();
    let producer = Producer::new(pc).await.unwrap();
    for i in 0..records {
        let r = ProducerRecord::new(topic).partition((i % partitions as usize) as i32).value(format!("more{i}"));
        producer.send(r).await.unwrap().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_sticky_moves_only_what_it_must() {
    let s = start();
    setup(&s, "t", 6, 0).await;
    let events = Events::default();
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let mut c1 = consumer(&s, "g", &coop).await;
    c1.subscribe(&["t"]).unwrap();
    c1.set_rebalance_listener(Box::new(events.clone()));
    let r1 = run(c1, true);
    wait_until("c1 to own 6", 20, || r1.assignment.lock().unwrap().len() == 6).await;
    let before = r1.assignment.lock().unwrap().clone();
    let mut c2 = consumer(&s, "g", &coop).await;
    c2.subscribe(&["t"]).unwrap();
    let r2 = run(c2, true);
    wait_until("a 3/3 split", 30, || {
        r1.assignment.lock().unwrap().len() == 3 && r2.assignment.lock().unwrap().len() == 3
    })
    .await;
    let ev = events.0.lock().unwrap().clone();
    let revoked: BTreeSet<TopicPartition> =
        ev.iter().filter(|(k, _)| k == "revoked").flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(revoked, r2.assignment.lock().unwrap().clone(), "only the partitions that moved were revoked");
    assert!(r1.assignment.lock().unwrap().is_subset(&before));
    r2.finish().await.close().await.unwrap();
    r1.finish().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pattern_subscription_and_max_poll_interval() {
    let s = start();
    setup(&s, "pat-a", 2, 0).await;
    setup(&s, "pat-b", 2, 0).await;
    setup(&s, "other", 2, 0).await;
    let mut c1 = consumer(&s, "g", &[("max.poll.interval.ms", "2000")]).await;
    c1.subscribe_pattern("pat-.*").unwrap();
    let r1 = run(c1, true);
    wait_until("the pattern's 4 partitions", 20, || r1.assignment.lock().unwrap().len() == 4).await;
    assert!(r1.assignment.lock().unwrap().iter().all(|tp| tp.topic.starts_with("pat-")));
    // c1 stops polling; c2 polls. After max.poll.interval.ms c1 leaves and c2 gets everything.
    let c1 = r1.finish().await;
    let idle = run(c1, false);
    let mut c2 = consumer(&s, "g", &[]).await;
    c2.subscribe_pattern("pat-.*").unwrap();
    let r2 = run(c2, true);
    let started = Instant::now();
    wait_until("c2 to own all 4 after c1's poll timeout", 30, || r2.assignment.lock().unwrap().len() == 4).await;
    assert!(started.elapsed() >= Duration::from_millis(1000), "moved before max.poll.interval.ms could pass");
    idle.finish().await;
    r2.finish().await.close().await.unwrap();
}

fn strom(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strom")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_tool() {
    let s = start();
    setup(&s, "t", 2, 10).await;
    let bs = bootstrap(&s);
    let b = ["--bootstrap-server", bs.as_str()];
    // `strom consume --group` commits what it printed.
    let (ok, out, err) =
        strom(&[&["consume", "t", "--group", "tool", "--from-beginning", "--max-messages", "6"][..], &b].concat());
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 6);
    let (ok, out, _) = strom(&[&["groups", "list"][..], &b].concat());
    assert!(ok);
    assert_eq!(out.trim(), "tool");
    let (ok, out, err) = strom(&[&["groups", "describe", "--group", "tool"][..], &b].concat());
    assert!(ok, "{err}");
    let lag: i64 = out
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("tool"))
        .map(|l| l.split_whitespace().nth(5).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(lag, 4, "{out}");

    // Dry run by default; --execute commits; shift and datetime work.
    let (ok, out, _) =
        strom(&[&["groups", "reset-offsets", "--group", "tool", "--all-topics", "--to-earliest"][..], &b].concat());
    assert!(ok);
    assert!(out.lines().skip(1).all(|l| l.ends_with(" 0")), "{out}");
    let admin = Admin::new(ClientConfig::new(&bs)).await.unwrap();
    let before: HashMap<TopicPartition, i64> =
        admin.list_group_offsets("tool").await.unwrap().into_iter().map(|(k, v)| (k, v.offset)).collect();
    assert_eq!(before.values().sum::<i64>(), 6, "the dry run changed nothing");
    let (ok, _, err) = strom(
        &[&["groups", "reset-offsets", "--group", "tool", "--topic", "t", "--to-latest", "--execute"][..], &b].concat(),
    );
    assert!(ok, "{err}");
    assert_eq!(admin.list_group_offsets("tool").await.unwrap().values().map(|o| o.offset).sum::<i64>(), 10);
    let (ok, _, err) = strom(
        &[&["groups", "reset-offsets", "--group", "tool", "--topic", "t:0", "--shift-by", "-2", "--execute"][..], &b]
            .concat(),
    );
    assert!(ok, "{err}");
    assert_eq!(admin.list_group_offsets("tool").await.unwrap()[&TopicPartition::new("t", 0)].offset, 3);
    let (ok, _, err) = strom(
        &[
            &[
                "groups",
                "reset-offsets",
                "--group",
                "tool",
                "--all-topics",
                "--to-datetime",
                "2000-01-01T00:00:00",
                "--execute",
            ][..],
            &b,
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    assert_eq!(admin.list_group_offsets("tool").await.unwrap().values().map(|o| o.offset).sum::<i64>(), 0);

    // An active group is refused; once it is gone, the group can be deleted.
    let mut c = consumer(&s, "tool", &[]).await;
    c.subscribe(&["t"]).unwrap();
    let r = run(c, true);
    wait_until("the member to join", 20, || !r.assignment.lock().unwrap().is_empty()).await;
    let (ok, _, err) = strom(
        &[&["groups", "reset-offsets", "--group", "tool", "--all-topics", "--to-earliest", "--execute"][..], &b]
            .concat(),
    );
    assert!(!ok);
    assert!(err.contains("inactive"), "{err}");
    let (ok, out, _) = strom(&[&["groups", "describe", "--group", "tool", "--members"][..], &b].concat());
    assert!(ok);
    assert!(out.contains("strom") || out.lines().count() == 2, "{out}");
    let (ok, _, err) = strom(&[&["groups", "delete", "--group", "tool"][..], &b].concat());
    assert!(!ok && err.contains("NON_EMPTY_GROUP"), "{err}");
    r.finish().await.close().await.unwrap();
    let (ok, _, err) = strom(&[&["groups", "delete", "--group", "tool"][..], &b].concat());
    assert!(ok, "{err}");
    let (ok, out, _) = strom(&[&["groups", "list"][..], &b].concat());
    assert!(ok && out.trim().is_empty(), "{out}");
}
