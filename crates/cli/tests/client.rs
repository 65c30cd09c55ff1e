//! strom-client against the real `strom` binary: producer, consumer and admin end to end.
//! Set STROM_TEST_BOOTSTRAP=host:port to run the same tests against another broker (e.g. Apache Kafka); the
//! broker-restart test then skips itself.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use strom_client::admin::{AlterOp, ConfigResource, NewTopic};
use strom_client::partitioner::partition_for_key;
use strom_client::{
    Admin, ClientConfig, Compression, Consumer, ConsumerConfig, Error, Header, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};

/// A broker for one test: the external one named by STROM_TEST_BOOTSTRAP, or a fresh `strom server`.
struct Broker {
    server: Option<common::Server>,
    bootstrap: String,
}

fn broker() -> Broker {
    match std::env::var("STROM_TEST_BOOTSTRAP") {
        Ok(b) => Broker { server: None, bootstrap: b },
        Err(_) => {
            let s = common::Server::start(&[]);
            Broker { bootstrap: format!("127.0.0.1:{}", s.port), server: Some(s) }
        }
    }
}

fn unique(name: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}", n % 1_000_000_000)
}

async fn admin(b: &Broker) -> Admin {
    Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap()
}

async fn create(b: &Broker, topic: &str, partitions: i32) {
    let a = admin(b).await;
    a.create_topic(NewTopic::new(topic, partitions, 1)).await.unwrap();
    common::topic_is_ready(&a, topic, partitions).await;
}

fn producer_config(b: &Broker) -> ProducerConfig {
    let mut c = ProducerConfig::new(&b.bootstrap);
    c.linger = Duration::from_millis(2);
    c
}

async fn consumer(b: &Broker, reset: OffsetReset) -> Consumer {
    let mut c = ConsumerConfig::new(&b.bootstrap);
    c.auto_offset_reset = reset;
    c.fetch_max_wait = Duration::from_millis(100);
    Consumer::new(c).await.unwrap()
}

/// Reads `n` records from the given partitions, failing after 20 s.
async fn read(c: &mut Consumer, n: usize) -> Vec<strom_client::ConsumerRecord> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(std::time::Instant::now() < deadline, "only {} of {n} records arrived", out.len());
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn test_record(topic: &str, i: usize) -> ProducerRecord {
    let mut r = ProducerRecord::new(topic)
        .partition(0)
        .key(format!("key-{i}"))
        .value(Bytes::from(vec![(i % 256) as u8; 10 + i % 300]))
        .timestamp(1_700_000_000_000 + i as i64)
        .header("dup", Some(format!("a{i}")))
        .header("dup", Some(format!("b{i}")))
        .header("nullvalue", None::<Bytes>);
    if i % 7 == 0 {
        r.key = None;
    }
    if i % 11 == 0 {
        r.value = None;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_and_acks_round_trips_byte_identical() {
    let b = broker();
    for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
    {
        for acks in [0i16, 1, -1] {
            let topic = unique(&format!("rt-{compression:?}-{acks}").to_lowercase());
            create(&b, &topic, 1).await;
            let mut cfg = producer_config(&b);
            cfg.compression = compression;
            cfg.acks = acks;
            let p = Producer::new(cfg).await.unwrap();
            let n = 300;
            let mut futures = Vec::new();
            for i in 0..n {
                futures.push(p.send(test_record(&topic, i)).await.unwrap());
            }
            p.flush().await;
            for (i, f) in futures.into_iter().enumerate() {
                let m = f.await.unwrap();
                assert_eq!(m.partition, 0);
                if acks == 0 {
                    assert_eq!(m.offset, -1);
                } else {
                    assert_eq!(m.offset, i as i64, "{compression:?} acks={acks}");
                }
            }
            let mut c = consumer(&b, OffsetReset::Earliest).await;
            c.assign(vec![TopicPartition::new(&topic, 0)]).await.unwrap();
            let got = read(&mut c, n).await;
            assert_eq!(got.len(), n);
            for (i, r) in got.iter().enumerate() {
                let want = test_record(&topic, i);
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.key, want.key, "key of record {i} ({compression:?}, acks={acks})");
                assert_eq!(r.value, want.value, "value of record {i}");
                assert_eq!(r.timestamp, want.timestamp.unwrap());
                assert_eq!(r.headers, want.headers, "duplicate header keys survive");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_java_clients_partition() {
    let b = broker();
    let topic = unique("keys");
    create(&b, &topic, 50).await;
    let p = Producer::new(producer_config(&b)).await.unwrap();
    // Kafka's own vector: toPositive(murmur2("foobar")) % 50 = 16.
    let m = p.send_and_wait(ProducerRecord::new(&topic).key("foobar").value("v")).await.unwrap();
    assert_eq!(m.partition, 16);
    for k in ["21", "abc", "a-little-bit-long-string", "user-1", "user-2", "order-42"] {
        let m = p.send_and_wait(ProducerRecord::new(&topic).key(k).value("v")).await.unwrap();
        assert_eq!(m.partition, partition_for_key(k.as_bytes(), 50), "key {k}");
    }
    // Keyless records stick to one partition within a batch.
    let mut fs = Vec::new();
    for _ in 0..20 {
        fs.push(p.send(ProducerRecord::new(&topic).value("x")).await.unwrap());
    }
    let parts: Vec<i32> = futures_join(fs).await.into_iter().map(|m| m.partition).collect();
    assert!(parts.iter().all(|x| *x == parts[0]), "{parts:?}");
}

async fn futures_join(fs: Vec<strom_client::DeliveryFuture>) -> Vec<strom_client::RecordMetadata> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_offsets_for_times_and_auto_offset_reset() {
    let b = broker();
    let topic = unique("seek");
    create(&b, &topic, 1).await;
    let p = Producer::new(producer_config(&b)).await.unwrap();
    for i in 0..10i64 {
        p.send(ProducerRecord::new(&topic).partition(0).value(format!("v{i}")).timestamp(1_000_000 + i * 1000))
            .await
            .unwrap();
    }
    p.flush().await;
    let tp = TopicPartition::new(&topic, 0);

    // offsets_for_times: first record at or after the time; none after the last.
    let c = consumer(&b, OffsetReset::Earliest).await;
    let r = c.offsets_for_times(&[(tp.clone(), 1_003_500)]).await.unwrap();
    assert_eq!(r[&tp].map(|o| (o.offset, o.timestamp)), Some((4, 1_004_000)));
    let r = c.offsets_for_times(&[(tp.clone(), 9_999_999)]).await.unwrap();
    assert_eq!(r[&tp], None);
    assert_eq!(c.beginning_offsets(std::slice::from_ref(&tp)).await.unwrap()[&tp], 0);
    assert_eq!(c.end_offsets(std::slice::from_ref(&tp)).await.unwrap()[&tp], 10);

    // earliest: from 0; seek moves; seek_to_end waits for new records.
    let mut c = consumer(&b, OffsetReset::Earliest).await;
    c.assign(vec![tp.clone()]).await.unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 0);
    c.seek(&tp, 7).unwrap();
    let got = read(&mut c, 3).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![7, 8, 9]);
    c.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(read(&mut c, 1).await[0].offset, 0);
    c.seek_to_end(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 10);
    assert!(c.poll(Duration::from_millis(300)).await.unwrap().is_empty());

    // latest: only what arrives after assignment.
    let mut latest = consumer(&b, OffsetReset::Latest).await;
    latest.assign(vec![tp.clone()]).await.unwrap();
    assert_eq!(latest.position(&tp).await.unwrap(), 10);
    p.send_and_wait(ProducerRecord::new(&topic).partition(0).value("new")).await.unwrap();
    let got = read(&mut latest, 1).await;
    assert_eq!((got[0].offset, got[0].value.as_deref()), (10, Some(&b"new"[..])));

    // Out of range with earliest: back to the log start.
    c.seek(&tp, 500).unwrap();
    assert_eq!(read(&mut c, 1).await[0].offset, 0);

    // none: no position is an error, and so is an out-of-range offset.
    let mut none = consumer(&b, OffsetReset::None).await;
    none.assign(vec![tp.clone()]).await.unwrap();
    assert!(matches!(none.poll(Duration::from_millis(100)).await, Err(Error::NoOffset(..))));
    none.seek(&tp, 500).unwrap();
    let e = none.poll(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(e.code(), Some(1), "{e}");
    none.seek(&tp, 3).unwrap();
    assert_eq!(read(&mut none, 1).await[0].offset, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_topics_partitions_configs_and_cluster() {
    let b = broker();
    let a = admin(&b).await;
    let topic = unique("adm");
    a.create_topic(NewTopic::new(&topic, 2, 1).config("retention.ms", "3600000")).await.unwrap();
    let e = a.create_topic(NewTopic::new(&topic, 2, 1)).await.unwrap_err();
    assert_eq!(e.code(), Some(36), "TOPIC_ALREADY_EXISTS: {e}");

    common::eventually("the new topic is listed with 2 partitions", || async {
        a.list_topics(false).await.unwrap().iter().any(|t| t.name == topic && t.partitions == 2)
    })
    .await;
    let d = a.describe_topics(std::slice::from_ref(&topic)).await.unwrap();
    assert_eq!(d[0].partitions.len(), 2);
    assert!(d[0].partitions.iter().all(|p| p.leader >= 0 && !p.replicas.is_empty()));

    a.create_partitions(&topic, 4, false).await.unwrap();
    common::eventually("the topic has 4 partitions", || async {
        a.describe_topics(std::slice::from_ref(&topic)).await.unwrap()[0].partitions.len() == 4
    })
    .await;
    assert!(a.create_partitions(&topic, 2, false).await.is_err(), "cannot shrink");

    let cfg = a.describe_configs(&ConfigResource::topic(&topic), None).await.unwrap();
    let retention = cfg.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.source.name(), "DYNAMIC_TOPIC_CONFIG");

    let cluster = a.describe_cluster().await.unwrap();
    assert!(!cluster.brokers.is_empty());
    let broker_cfg = a.describe_configs(&ConfigResource::broker(cluster.brokers[0].id), None).await.unwrap();
    assert!(broker_cfg.iter().any(|c| c.name == "log.retention.hours" || c.name == "num.partitions"));

    let tp = TopicPartition::new(&topic, 0);
    let offsets = a.list_offsets(&[(tp.clone(), strom_client::offsets::LATEST)]).await.unwrap();
    assert_eq!(offsets[&tp].map(|o| o.offset), Some(0));

    // Alter configs, incremental and legacy.
    a.incremental_alter_configs(
        &ConfigResource::topic(&topic),
        &[AlterOp::Set("retention.ms".into(), "7200000".into())],
        false,
    )
    .await
    .unwrap();
    let cfg = a.describe_configs(&ConfigResource::topic(&topic), Some(&["retention.ms".into()])).await.unwrap();
    assert_eq!(cfg[0].value.as_deref(), Some("7200000"));
    a.alter_configs(&ConfigResource::topic(&topic), &[("segment.bytes".into(), "2000000".into())], false)
        .await
        .unwrap();
    let cfg = a.describe_configs(&ConfigResource::topic(&topic), None).await.unwrap();
    let get = |n: &str| cfg.iter().find(|c| c.name == n).unwrap();
    assert_eq!(get("segment.bytes").value.as_deref(), Some("2000000"));
    assert_eq!(get("retention.ms").source.name(), "DEFAULT_CONFIG", "legacy AlterConfigs replaces the whole set");

    a.delete_topic(&topic).await.unwrap();
    assert!(matches!(a.delete_topic(&topic).await, Err(Error::UnknownTopic(_))));
    common::eventually("the deleted topic is unknown", || async {
        matches!(a.describe_topics(std::slice::from_ref(&topic)).await, Err(Error::UnknownTopic(_)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_and_unreachable_brokers_are_typed_errors() {
    let b = broker();
    let mut c = consumer(&b, OffsetReset::Earliest).await;
    let e = c.assign(vec![TopicPartition::new("no-such-topic-here", 0)]).await.unwrap_err();
    assert!(matches!(e, Error::UnknownTopic(ref t) if t == "no-such-topic-here"), "{e}");

    let mut cfg = producer_config(&b);
    cfg.allow_auto_create_topics = false;
    cfg.max_block = Duration::from_secs(2);
    let p = Producer::new(cfg).await.unwrap();
    let e = p.send(ProducerRecord::new("no-such-topic-here").value("x")).await.unwrap_err();
    assert!(matches!(e, Error::UnknownTopic(_)), "{e}");

    let topic = unique("small");
    create(&b, &topic, 1).await;
    let e = p.send(ProducerRecord::new(&topic).partition(3).value("x")).await.unwrap_err();
    assert!(matches!(e, Error::UnknownPartition(_, 3)), "{e}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = Producer::new(ProducerConfig::new(format!("127.0.0.1:{port}"))).await.err().unwrap();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    assert!(e.is_retriable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_producer_is_idempotent_and_delivers_each_record_once_in_order() {
    let b = broker();
    let topic = unique("idem");
    create(&b, &topic, 3).await;
    let p = Producer::new(producer_config(&b)).await.unwrap();
    assert!(p.producer_id().is_some_and(|id| id >= 0), "idempotence is the default, as in Java");
    let n = 3000;
    let mut futures = Vec::new();
    for i in 0..n {
        futures
            .push(p.send(ProducerRecord::new(&topic).partition((i % 3) as i32).value(format!("{i}"))).await.unwrap());
    }
    p.flush().await;
    let metas = futures_join(futures).await;
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(m.offset, (i / 3) as i64, "record {i}");
    }
    let mut c = consumer(&b, OffsetReset::Earliest).await;
    c.assign((0..3).map(|p| TopicPartition::new(&topic, p)).collect()).await.unwrap();
    let got = read(&mut c, n).await;
    assert_eq!(got.len(), n);
    for part in 0..3 {
        let values: Vec<usize> = got
            .iter()
            .filter(|r| r.partition == part)
            .map(|r| std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap())
            .collect();
        assert_eq!(values, (0..n).filter(|i| i % 3 == part as usize).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_across_a_broker_restart_and_back_pressure() {
    let mut b = broker();
    let Some(server) = b.server.as_mut() else { return };
    let topic = unique("restart");
    let bootstrap = b.bootstrap.clone();
    Admin::new(ClientConfig::new(&bootstrap)).await.unwrap().create_topic(NewTopic::new(&topic, 1, 1)).await.unwrap();
    let mut cfg = ProducerConfig::new(&bootstrap);
    cfg.linger = Duration::from_millis(1);
    cfg.buffer_memory = 64 * 1024;
    cfg.batch_size = 16 * 1024;
    cfg.max_block = Duration::from_millis(300);
    cfg.client.retry_backoff = Duration::from_millis(50);
    cfg.client.request_timeout = Duration::from_secs(5);
    let p = Producer::new(cfg).await.unwrap();
    p.send_and_wait(ProducerRecord::new(&topic).value("before")).await.unwrap();

    server.kill9();
    // With the broker gone, records wait in the buffer until buffer.memory is used up; then send blocks for
    // max.block.ms and fails.
    let mut pending = Vec::new();
    let err = loop {
        match p.send(ProducerRecord::new(&topic).value(vec![b'x'; 1000])).await {
            Ok(f) => pending.push(f),
            Err(e) => break e,
        }
        assert!(pending.len() < 1000, "send never blocked");
    };
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    assert!(pending.len() > 10 && pending.len() < 70, "{} records fit in 64 KiB", pending.len());

    server.restart_after_kill9();
    for f in pending {
        let m = f.await.expect("delivered after the restart");
        assert!(m.offset >= 1);
    }
    let mut c = consumer(&b, OffsetReset::Earliest).await;
    c.assign(vec![TopicPartition::new(&topic, 0)]).await.unwrap();
    let got = read(&mut c, 2).await;
    assert_eq!(got[0].value.as_deref(), Some(&b"before"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_custom_partitioners() {
    use strom_client::partitioner::Partitioner;
    struct Last;
    impl Partitioner for Last {
        fn partition(&self, _topic: &str, _key: Option<&[u8]>, partitions: i32) -> i32 {
            partitions - 1
        }
    }
    let b = broker();
    let topic = unique("rr");
    create(&b, &topic, 3).await;
    let mut cfg = producer_config(&b);
    cfg.partitioner = strom_client::PartitionerKind::RoundRobin;
    let p = Producer::new(cfg).await.unwrap();
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let m = p.send_and_wait(ProducerRecord::new(&topic).key("same").value("v")).await.unwrap();
        *seen.entry(m.partition).or_insert(0) += 1;
    }
    assert_eq!(seen, HashMap::from([(0, 2), (1, 2), (2, 2)]));
    let p = Producer::with_partitioner(producer_config(&b), std::sync::Arc::new(Last)).await.unwrap();
    assert_eq!(p.send_and_wait(ProducerRecord::new(&topic).key("k").value("v")).await.unwrap().partition, 2);
    let _ = Header { key: String::new(), value: None };
}
