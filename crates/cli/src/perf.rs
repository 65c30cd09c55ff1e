//! `strom perf produce|consume`: kafka-producer-perf-test and kafka-consumer-perf-test equivalents on
//! strom-client. Latency is per record, from `send` to its acknowledgement, in an HDR histogram. Progress goes to
//! stderr (a bar on a terminal, a line every 5 s otherwise); the final report is the last line on stdout.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use strom_client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition};

use crate::connect_args::{key_value, runtime};

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as allowed and report throughput and latency percentiles.
    Produce(ProduceArgs),
    /// Read records from the beginning and report throughput.
    Consume(ConsumeArgs),
}

#[derive(Args, Clone)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[arg(long = "num-records", default_value_t = 1_000_000)]
    num_records: u64,
    #[arg(long = "record-size", default_value_t = 1024)]
    record_size: usize,
    /// Records per second at most; -1 for no limit.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    /// -1 (all), 0 or 1 (same as --producer-props acks=...).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// batch.size in bytes.
    #[arg(long = "batch-size", default_value_t = 65536)]
    batch_size: usize,
    /// max.in.flight.requests.per.connection.
    #[arg(long = "in-flight", default_value_t = 5)]
    in_flight: usize,
    /// Concurrent producers (each its own client and connections), each sending its share of the records.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Send every record to this partition (default: the partitioner spreads them).
    #[arg(long)]
    partition: Option<i32>,
    /// Produce in transactions with this transactional.id (suffixed -0, -1, ... with several --producers).
    #[arg(long = "transactional-id")]
    transactional_id: Option<String>,
    /// Records per transaction: commit every N records (with --transactional-id).
    #[arg(long = "transaction-records", default_value_t = 100, requires = "transactional_id")]
    transaction_records: u64,
    /// Producer properties, key=value ... (applied last, so they override the flags above).
    #[arg(long = "producer-props", num_args = 1.., value_parser = key_value)]
    producer_props: Vec<(String, String)>,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    /// Records to read (kafka-consumer-perf-test's --messages).
    #[arg(long = "num-records", alias = "messages", default_value_t = 1_000_000)]
    num_records: u64,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// max.partition.fetch.bytes.
    #[arg(long = "max-bytes", default_value_t = 8 << 20)]
    max_bytes: i32,
    /// Give up when no record arrived for this long.
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    timeout_ms: u64,
    /// read_uncommitted (default) or read_committed.
    #[arg(long = "isolation-level")]
    isolation_level: Option<String>,
    /// Consumer properties, key=value ...
    #[arg(long = "consumer-props", num_args = 1.., value_parser = key_value)]
    consumer_props: Vec<(String, String)>,
}

pub fn run(cmd: PerfCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            PerfCommand::Produce(a) => produce(a).await,
            PerfCommand::Consume(a) => consume(a).await,
        }
    })
}

/// Progress on stderr: an indicatif bar on a terminal, a plain line every 5 s otherwise (logs, CI).
fn spawn_progress(total: u64, done: Arc<AtomicU64>, what: &'static str) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    tokio::spawn(async move {
        let bar = tty.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} {{elapsed}} (eta {{eta}})");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        let tick = if tty { Duration::from_millis(100) } else { Duration::from_secs(5) };
        loop {
            tokio::time::sleep(tick).await;
            let n = done.load(Ordering::Relaxed);
            match &bar {
                Some(bar) => bar.set_position(n),
                None => {
                    let secs = start.elapsed().as_secs_f64();
                    eprintln!("{n} {what} in {secs:.0}s, {:.1} {what}/sec", n as f64 / secs.max(1e-9));
                }
            }
        }
    })
}

struct ProducerResult {
    histogram: Histogram<u64>,
    records: u64,
    transactions: u64,
}

async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let mut cfg = ProducerConfig::new(&a.bootstrap_server);
    cfg.client.client_id = "strom-perf".into();
    cfg.acks = a.acks;
    cfg.batch_size = a.batch_size;
    cfg.client.max_in_flight = a.in_flight.max(1);
    cfg.linger = Duration::from_millis(5);
    for (k, v) in &a.producer_props {
        cfg.set(k, v)?;
    }
    let producers = a.producers.max(1);
    let done = Arc::new(AtomicU64::new(0));
    let value = Bytes::from((0..a.record_size).map(|i| b'A' + (i % 26) as u8).collect::<Vec<u8>>());
    // Connect (and create the topic if the broker auto-creates) before the clock starts.
    let mut clients = Vec::new();
    for i in 0..producers {
        let mut cfg = cfg.clone();
        if let Some(id) = &a.transactional_id {
            cfg.transactional_id = Some(if producers > 1 { format!("{id}-{i}") } else { id.clone() });
        }
        let p = Producer::new(cfg).await?;
        p.partition_count(&a.topic).await.with_context(|| format!("topic {}", a.topic))?;
        if a.transactional_id.is_some() {
            p.init_transactions().await.context("init_transactions")?;
        }
        clients.push(p);
    }
    let per_transaction = a.transactional_id.as_ref().map(|_| a.transaction_records.max(1));
    let start = Instant::now();
    let progress = spawn_progress(a.num_records, done.clone(), "records");
    let mut tasks = Vec::new();
    for (i, p) in clients.into_iter().enumerate() {
        let share = a.num_records / producers as u64 + u64::from((i as u64) < a.num_records % producers as u64);
        let throughput = if a.throughput > 0 { a.throughput as f64 / producers as f64 } else { -1.0 };
        let load = Load {
            topic: a.topic.clone(),
            partition: a.partition,
            value: value.clone(),
            records: share,
            throughput,
            per_transaction,
        };
        tasks.push(tokio::spawn(produce_one(p, load, done.clone())));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut records = 0;
    let mut transactions = 0;
    for t in tasks {
        let r = t.await??;
        hist.add(&r.histogram)?;
        records += r.records;
        transactions += r.transactions;
    }
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = records as f64 * a.record_size as f64 / (1024.0 * 1024.0);
    let txn = if a.transactional_id.is_some() {
        format!("{transactions} transactions committed, {:.1} transactions/sec, ", transactions as f64 / secs)
    } else {
        String::new()
    };
    println!(
        "{records} records sent, {txn}{:.1} records/sec ({:.2} MB/sec), {:.2} ms p50, {:.2} ms p95, {:.2} ms p99, {:.2} ms p99.9, {:.2} ms max latency.",
        records as f64 / secs,
        mb / secs,
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.95) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
    Ok(())
}

/// What one producer of `perf produce` sends.
struct Load {
    topic: String,
    partition: Option<i32>,
    value: Bytes,
    records: u64,
    /// Records per second, or <= 0 for no limit.
    throughput: f64,
    /// Commit a transaction every this many records.
    per_transaction: Option<u64>,
}

async fn produce_one(p: Producer, load: Load, done: Arc<AtomicU64>) -> anyhow::Result<ProducerResult> {
    let Load { topic, partition, value, records, throughput, per_transaction } = load;
    // Sends from this task; acknowledgements are collected by another, so a slow ack never delays the next send.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, strom_client::DeliveryFuture)>();
    let collector = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new(3)?;
        let mut inflight = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some((sent, f)) => inflight.push(async move { (sent, f.await) }),
                    None => open = false,
                },
                Some((sent, result)) = inflight.next(), if !inflight.is_empty() => {
                    result?;
                    hist.record((sent.elapsed().as_micros() as u64).max(1))?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                else => break,
            }
        }
        anyhow::Ok(hist)
    });
    let start = Instant::now();
    let mut transactions = 0;
    for i in 0..records {
        if per_transaction.is_some_and(|n| i % n == 0) {
            p.begin_transaction()?;
        }
        if throughput > 0.0 {
            // Like Kafka's ThroughputThrottler: sleep when ahead of the target rate.
            let due = Duration::from_secs_f64(i as f64 / throughput);
            let elapsed = start.elapsed();
            if due > elapsed + Duration::from_millis(1) {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let mut rec = ProducerRecord::new(&topic);
        rec.value = Some(value.clone());
        rec.partition = partition;
        let sent = Instant::now();
        let f = p.send(rec).await?;
        if tx.send((sent, f)).is_err() {
            break;
        }
        if per_transaction.is_some_and(|n| (i + 1) % n == 0 || i + 1 == records) {
            p.commit_transaction().await.context("commit_transaction")?;
            transactions += 1;
        }
    }
    drop(tx);
    p.flush().await;
    let histogram = collector.await??;
    Ok(ProducerResult { records: histogram.len(), histogram, transactions })
}

async fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let mut cfg = ConsumerConfig::new(&a.bootstrap_server);
    cfg.client.client_id = "strom-perf".into();
    cfg.auto_offset_reset = OffsetReset::Earliest;
    cfg.max_partition_fetch_bytes = a.max_bytes;
    cfg.fetch_max_bytes = a.max_bytes.saturating_mul(8);
    cfg.max_poll_records = 100_000;
    if let Some(level) = &a.isolation_level {
        cfg.set("isolation.level", level)?;
    }
    for (k, v) in &a.consumer_props {
        cfg.set(k, v)?;
    }
    let mut c = Consumer::new(cfg).await?;
    let partitions = match a.partition {
        Some(p) => vec![TopicPartition::new(&a.topic, p)],
        None => c.partitions_for(&a.topic).await?,
    };
    c.assign(partitions).await?;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let progress = spawn_progress(a.num_records, done.clone(), "records");
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last = Instant::now();
    while records < a.num_records {
        let batch = c.poll(Duration::from_millis(500)).await?;
        if batch.is_empty() {
            if last.elapsed() >= Duration::from_millis(a.timeout_ms) {
                eprintln!("no records for {} ms; stopping at {records}", a.timeout_ms);
                break;
            }
            continue;
        }
        last = Instant::now();
        for r in &batch {
            bytes += r.key.as_ref().map_or(0, |k| k.len()) as u64 + r.value.as_ref().map_or(0, |v| v.len()) as u64;
        }
        records += batch.len() as u64;
        done.store(records, Ordering::Relaxed);
    }
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{records} records read, {:.1} records/sec ({:.2} MB/sec)",
        records as f64 / secs,
        bytes as f64 / (1024.0 * 1024.0) / secs
    );
    Ok(())
}
