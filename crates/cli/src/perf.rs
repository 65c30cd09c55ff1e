//! `strom perf produce|consume`: load generators in the spirit of kafka-producer-perf-test and
//! kafka-consumer-perf-test. They speak the protocol directly with pipelined requests and reuse one pre-encoded
//! batch per connection, so the figures measure the broker rather than client-side encoding.
//! (The async client crate will take over the protocol work here once it exists.)

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as the broker takes them and report throughput and latency.
    Produce(ProduceArgs),
    /// Read a topic partition from the beginning and report throughput.
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
    /// -1 (all), 0 or 1.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// Bytes of records per batch (Kafka's batch.size).
    #[arg(long = "batch-size", default_value_t = 65536)]
    batch_size: usize,
    /// Requests in flight per connection (max.in.flight.requests.per.connection).
    #[arg(long = "in-flight", default_value_t = 5)]
    in_flight: usize,
    /// Concurrent producer connections, each sending its share of the records.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 0)]
    partition: i32,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[arg(long = "num-records", default_value_t = 1_000_000)]
    num_records: u64,
    #[arg(long, default_value_t = 0)]
    partition: i32,
    #[arg(long = "max-bytes", default_value_t = 8 << 20)]
    max_bytes: i32,
}

pub fn run(cmd: PerfCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            PerfCommand::Produce(a) => produce(a).await,
            PerfCommand::Consume(a) => consume(a).await,
        }
    })
}

struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, correlation: 0 })
    }

    fn encode<R: Request>(&mut self, req: &R, version: i16) -> anyhow::Result<Bytes> {
        self.correlation += 1;
        encode_request(req, version, self.correlation)
    }

    async fn read_response<R: Request>(&mut self, version: i16) -> anyhow::Result<R::Response> {
        let n = self.stream.read_i32().await? as usize;
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).await?;
        let mut b = Bytes::from(buf);
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("bad key"))?;
        ResponseHeader::decode(&mut b, key.response_header_version(version))?;
        Ok(R::Response::decode(&mut b, version)?)
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> anyhow::Result<R::Response> {
        let frame = self.encode(req, version)?;
        self.stream.write_all(&frame).await?;
        self.read_response::<R>(version).await
    }
}

fn encode_request<R: Request>(req: &R, version: i16, correlation: i32) -> anyhow::Result<Bytes> {
    let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("bad key"))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("strom-perf")));
    let mut body = BytesMut::new();
    body.put_i32(0);
    header.encode(&mut body, key.request_header_version(version))?;
    req.encode(&mut body, version)?;
    let len = (body.len() - 4) as i32;
    body[..4].copy_from_slice(&len.to_be_bytes());
    Ok(body.freeze())
}

fn template_batch(records: usize, size: usize) -> anyhow::Result<Bytes> {
    let value = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let recs: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: now,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, recs.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None })?;
    Ok(buf.freeze())
}

async fn ensure_topic(addr: &str, topic: &str) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr).await?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]))
        .with_allow_auto_topic_creation(true);
    let resp = c.call(&req, 12).await?;
    match resp.topics.first() {
        Some(t) if t.error_code == 0 => Ok(()),
        Some(t) => bail!("topic {topic}: error code {}", t.error_code),
        None => bail!("topic {topic} missing from metadata"),
    }
}

struct ProducerResult {
    histogram: Histogram<u64>,
    records: u64,
}

async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    ensure_topic(&a.bootstrap_server, &a.topic).await?;
    let per_batch = (a.batch_size / a.record_size.max(1)).max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.producers {
        let share = a.num_records / a.producers as u64 + u64::from((i as u64) < a.num_records % a.producers as u64);
        tasks.push(tokio::spawn(produce_one(a.clone(), share, per_batch)));
    }
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!("... {:.0}s elapsed", start.elapsed().as_secs_f64());
        }
    });
    let mut hist = Histogram::<u64>::new(3)?;
    let mut records = 0;
    for t in tasks {
        let r = t.await??;
        hist.add(&r.histogram)?;
        records += r.records;
    }
    progress.abort();
    let secs = start.elapsed().as_secs_f64();
    let mb = records as f64 * a.record_size as f64 / (1024.0 * 1024.0);
    println!(
        "{records} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms p50, {:.2} ms p95, {:.2} ms p99, {:.2} ms p99.9, {:.2} ms max latency.",
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

async fn produce_one(a: ProduceArgs, records: u64, per_batch: usize) -> anyhow::Result<ProducerResult> {
    let batch = template_batch(per_batch, a.record_size)?;
    let conn = Conn::connect(&a.bootstrap_server).await?;
    let version = 9;
    let req = ProduceRequest::default().with_acks(a.acks).with_timeout_ms(30_000).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(a.topic.clone())))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(a.partition)
                .with_records(Some(batch))]),
    ]);
    let batches = records.div_ceil(per_batch as u64);
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut reader, mut writer) = conn.stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(a.in_flight.max(1));
    let acks = a.acks;
    // Only the correlation id differs between requests: encode once, patch it per request.
    let template = encode_request(&req, version, 0)?;
    let sender = tokio::spawn(async move {
        let mut f = BytesMut::from(&template[..]);
        for i in 0..batches {
            f[8..12].copy_from_slice(&(i as i32).to_be_bytes());
            let sent = Instant::now();
            if acks != 0 {
                if tx.send(sent).await.is_err() {
                    break;
                }
            }
            writer.write_all(&f).await?;
        }
        anyhow::Ok(())
    });
    if acks != 0 {
        for _ in 0..batches {
            let sent = rx.recv().await.context("sender stopped")?;
            let n = reader.read_i32().await? as usize;
            let mut buf = vec![0u8; n];
            reader.read_exact(&mut buf).await?;
            let mut b = Bytes::from(buf);
            ResponseHeader::decode(&mut b, ApiKey::Produce.response_header_version(version))?;
            let resp = ProduceResponse::decode(&mut b, version)?;
            let p = &resp.responses[0].partition_responses[0];
            if p.error_code != 0 {
                bail!("produce failed with error code {}", p.error_code);
            }
            let us = sent.elapsed().as_micros() as u64;
            hist.record_n(us.max(1), per_batch as u64)?;
        }
    }
    sender.await??;
    Ok(ProducerResult { histogram: hist, records: batches * per_batch as u64 })
}

async fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let mut conn = Conn::connect(&a.bootstrap_server).await?;
    let start = Instant::now();
    let (mut offset, mut records, mut bytes) = (0i64, 0u64, 0u64);
    while records < a.num_records {
        let req = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(a.max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(a.topic.clone())))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(a.partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(a.max_bytes)])]);
        let resp = conn.call(&req, 12).await?;
        let p = &resp.responses[0].partitions[0];
        if p.error_code != 0 {
            bail!("fetch failed with error code {}", p.error_code);
        }
        let mut data = p.records.clone().unwrap_or_default();
        if data.is_empty() && offset >= p.high_watermark {
            bail!("only {records} records in the partition");
        }
        bytes += data.len() as u64;
        // Walk batch headers: base offset, length, record count; no record decoding needed.
        while data.len() >= 61 {
            let base = (&data[0..8]).get_i64();
            let len = (&data[8..12]).get_i32() as usize;
            let last_delta = (&data[23..27]).get_i32() as i64;
            let count = (&data[57..61]).get_i32() as u64;
            if data.len() < 12 + len {
                break;
            }
            records += count;
            offset = base + last_delta + 1;
            data.advance(12 + len);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{records} records read, {:.1} records/sec ({:.2} MB/sec of batches)",
        records as f64 / secs,
        bytes as f64 / (1024.0 * 1024.0) / secs
    );
    Ok(())
}
