//! `strom consume TOPIC`: prints records (kafka-console-consumer.sh), as text or one JSON object per line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use strom_client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TimestampType, TopicPartition};

use crate::connect_args::{key_value, runtime, Bootstrap};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// Start at the earliest record (default: only records produced from now on).
    #[arg(long = "from-beginning")]
    from_beginning: bool,
    /// Read only this partition (default: all).
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Consume as a member of this consumer group: partitions are shared with the group's other members, reading
    /// starts at the group's committed offsets, and the offsets of printed records are committed.
    #[arg(long)]
    group: Option<String>,
    /// Start offset in --partition: a number, earliest or latest.
    #[arg(long, requires = "partition", allow_hyphen_values = true)]
    offset: Option<String>,
    /// Exit after this many records.
    #[arg(long = "max-messages")]
    max_messages: Option<u64>,
    /// Exit when no record arrived for this long.
    #[arg(long = "timeout-ms")]
    timeout_ms: Option<u64>,
    #[arg(long = "print-key")]
    print_key: bool,
    #[arg(long = "print-headers")]
    print_headers: bool,
    #[arg(long = "print-timestamp")]
    print_timestamp: bool,
    #[arg(long = "print-offset")]
    print_offset: bool,
    #[arg(long = "print-partition")]
    print_partition: bool,
    /// Between key and value (and the other printed fields) in text format.
    #[arg(long = "key-separator", default_value = "\t")]
    key_separator: String,
    /// text, or json: {"topic","partition","offset","timestamp","timestamp_type","key","value","headers"} per line;
    /// keys and values that are not UTF-8 appear as "key_hex"/"value_hex".
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// read_uncommitted (default) or read_committed: skip aborted transactions, stop at the last stable offset.
    #[arg(long = "isolation-level")]
    isolation_level: Option<String>,
    /// Any consumer property, key=value (repeatable).
    #[arg(long = "consumer-property", value_parser = key_value)]
    consumer_property: Vec<(String, String)>,
}

pub fn run(a: ConsumeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut cfg = ConsumerConfig { client: a.bootstrap.client_config(), ..Default::default() };
        cfg.auto_offset_reset = if a.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest };
        if let Some(level) = &a.isolation_level {
            cfg.set("isolation.level", level)?;
        }
        for (k, v) in &a.consumer_property {
            cfg.set(k, v)?;
        }
        if let Some(g) = &a.group {
            cfg.group_id = Some(g.clone());
            // Commits are explicit below: only what was printed counts as consumed.
            cfg.enable_auto_commit = false;
        }
        let mut consumer = Consumer::new(cfg).await?;
        if a.group.is_some() {
            consumer.subscribe(&[&a.topic])?;
            let printed = print_records(&a, &mut consumer).await;
            // Leave the group so the partitions move to the other members at once.
            consumer.close().await?;
            return printed;
        }
        let partitions = match a.partition {
            Some(p) => vec![TopicPartition::new(&a.topic, p)],
            None => consumer.partitions_for(&a.topic).await?,
        };
        consumer.assign(partitions.clone()).await?;
        if let Some(o) = &a.offset {
            match o.as_str() {
                "earliest" => consumer.seek_to_beginning(&partitions)?,
                "latest" => consumer.seek_to_end(&partitions)?,
                n => match n.parse::<i64>() {
                    Ok(n) if n >= 0 => consumer.seek(&partitions[0], n)?,
                    _ => bail!("--offset must be a non-negative number, earliest or latest, not '{n}'"),
                },
            }
        }
        print_records(&a, &mut consumer).await
    })
}

async fn print_records(a: &ConsumeArgs, consumer: &mut Consumer) -> anyhow::Result<()> {
    {
        let grouped = a.group.is_some();
        let mut done: std::collections::BTreeMap<TopicPartition, strom_client::group::offsets::OffsetAndMetadata> =
            Default::default();
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut count = 0u64;
        let mut last = Instant::now();
        let max = a.max_messages.unwrap_or(u64::MAX);
        'outer: while count < max {
            let records = consumer.poll(Duration::from_millis(200)).await?;
            if records.is_empty() {
                if a.timeout_ms.is_some_and(|t| last.elapsed() >= Duration::from_millis(t)) {
                    break;
                }
                out.flush()?;
                continue;
            }
            last = Instant::now();
            for r in records {
                match a.format {
                    Format::Json => writeln!(out, "{}", to_json(&r))?,
                    Format::Text => writeln!(out, "{}", to_text(a, &r))?,
                }
                count += 1;
                if grouped {
                    done.insert(
                        TopicPartition::new(&r.topic, r.partition),
                        strom_client::group::offsets::OffsetAndMetadata {
                            offset: r.offset + 1,
                            metadata: String::new(),
                        },
                    );
                }
                if count >= max {
                    break 'outer;
                }
            }
            if grouped {
                out.flush()?;
                consumer.commit_offsets(&done).await?;
            }
        }
        out.flush()?;
        if grouped {
            consumer.commit_offsets(&done).await?;
        }
        eprintln!("Processed a total of {count} messages");
        Ok(())
    }
}

fn text(b: &Option<bytes::Bytes>) -> String {
    match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".into(),
    }
}

/// The fields kafka-console-consumer prints, in its order: timestamp, partition, offset, headers, key, value.
fn to_text(a: &ConsumeArgs, r: &ConsumerRecord) -> String {
    let mut fields = Vec::new();
    if a.print_timestamp {
        let kind = match r.timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        };
        fields.push(format!("{kind}:{}", r.timestamp));
    }
    if a.print_partition {
        fields.push(format!("Partition:{}", r.partition));
    }
    if a.print_offset {
        fields.push(format!("Offset:{}", r.offset));
    }
    if a.print_headers {
        if r.headers.is_empty() {
            fields.push("NO_HEADERS".into());
        } else {
            let hs: Vec<String> = r.headers.iter().map(|h| format!("{}:{}", h.key, text(&h.value))).collect();
            fields.push(hs.join(","));
        }
    }
    if a.print_key {
        fields.push(text(&r.key));
    }
    fields.push(text(&r.value));
    fields.join(&a.key_separator)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn to_json(r: &ConsumerRecord) -> Value {
    let mut o = json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "timestamp_type": match r.timestamp_type { TimestampType::CreateTime => "CreateTime", TimestampType::LogAppendTime => "LogAppendTime" },
        "headers": r.headers.iter().map(|h| json!({"key": h.key, "value": h.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())})).collect::<Vec<_>>(),
    });
    for (name, v) in [("key", &r.key), ("value", &r.value)] {
        match v {
            None => o[name] = Value::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => o[name] = Value::String(s.to_string()),
                Err(_) => o[format!("{name}_hex")] = Value::String(hex(b)),
            },
        }
    }
    o
}
