//! `strom produce TOPIC`: each line of stdin becomes a record (kafka-console-producer.sh).

use std::collections::VecDeque;

use anyhow::{bail, Context};
use clap::Args;
use std::io::BufRead;
use strom_client::{Header, Producer, ProducerConfig, ProducerRecord};

use crate::connect_args::{key_value, runtime, Bootstrap};

#[derive(Args, Clone)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// Split each line at the first SEP into key and value (a line without SEP is an error).
    #[arg(long = "key-separator", value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, key=value (repeatable; repeated keys are kept).
    #[arg(long = "header", value_parser = key_value)]
    header: Vec<(String, String)>,
    /// 0, 1 or all (-1).
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Write every record to this partition (default: the partitioner decides).
    #[arg(long)]
    partition: Option<i32>,
    /// Any producer property, key=value (repeatable), e.g. linger.ms=10 or allow.auto.create.topics=true.
    #[arg(long = "producer-property", value_parser = key_value)]
    producer_property: Vec<(String, String)>,
}

/// Deliveries awaited at once before reading more input; keeps memory flat on large inputs.
const MAX_PENDING: usize = 10_000;

pub fn run(a: ProduceArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut cfg = ProducerConfig { client: a.bootstrap.client_config(), ..Default::default() };
        // Reading a missing topic or writing to one is an error unless asked otherwise.
        cfg.allow_auto_create_topics = false;
        cfg.set("acks", &a.acks)?;
        cfg.set("compression.type", &a.compression)?;
        for (k, v) in &a.producer_property {
            cfg.set(k, v)?;
        }
        let producer = Producer::new(cfg).await?;
        // Fail before reading stdin when the topic is missing.
        producer.partition_count(&a.topic).await?;
        let headers: Vec<Header> = a
            .header
            .iter()
            .map(|(k, v)| Header { key: k.clone(), value: Some(v.clone().into_bytes().into()) })
            .collect();
        // stdin is read on its own thread (blocking reads), handing lines over through a bounded channel.
        let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1024);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line_tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut pending = VecDeque::new();
        let mut n = 0u64;
        while let Some(line) = line_rx.recv().await {
            let line = line.context("reading stdin")?;
            n += 1;
            let mut rec = ProducerRecord::new(&a.topic);
            rec.headers = headers.clone();
            rec.partition = a.partition;
            match &a.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => {
                        rec.key = Some(k.to_string().into_bytes().into());
                        rec.value = Some(v.to_string().into_bytes().into());
                    }
                    None => bail!("line {n} has no key separator '{sep}'"),
                },
                None => rec.value = Some(line.into_bytes().into()),
            }
            pending.push_back(producer.send(rec).await?);
            if pending.len() >= MAX_PENDING {
                if let Some(f) = pending.pop_front() {
                    f.await?;
                }
            }
        }
        producer.flush().await;
        for f in pending {
            f.await?;
        }
        Ok(())
    })
}
