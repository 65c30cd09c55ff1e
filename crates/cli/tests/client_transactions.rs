//! strom-client's exactly-once side end to end: the transactional producer, read_committed consumers, offsets in
//! transactions, fencing, the `strom transactions` tools, and the idempotent producer's 5 in-flight batches per
//! partition under retries (through a proxy that loses requests and connections).
//! Set STROM_TEST_BOOTSTRAP=host:port to run them against another broker (e.g. Apache Kafka).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use strom_client::admin::NewTopic;
use strom_client::group::offsets::OffsetAndMetadata;
use strom_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecord, Error, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition, TransactionState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Broker {
    _server: Option<common::Server>,
    bootstrap: String,
}

fn broker() -> Broker {
    match std::env::var("STROM_TEST_BOOTSTRAP") {
        Ok(b) => Broker { _server: None, bootstrap: b },
        Err(_) => {
            let s = common::Server::start(&[]);
            Broker { bootstrap: format!("127.0.0.1:{}", s.port), _server: Some(s) }
        }
    }
}

fn unique(name: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}", n % 1_000_000_000)
}

async fn create(b: &Broker, topic: &str, partitions: i32) {
    let admin = Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap();
    admin.create_topic(NewTopic::new(topic, partitions, 1)).await.unwrap();
    common::topic_is_ready(&admin, topic, partitions).await;
}

async fn transactional(bootstrap: &str, id: &str) -> Producer {
    let mut c = ProducerConfig::new(bootstrap);
    c.linger = Duration::from_millis(2);
    c.transactional_id = Some(id.to_string());
    c.transaction_timeout = Duration::from_secs(20);
    c.max_block = Duration::from_secs(20);
    let p = Producer::new(c).await.unwrap();
    p.init_transactions().await.unwrap();
    p
}

async fn consumer(b: &Broker, isolation: &str, partitions: Vec<TopicPartition>) -> Consumer {
    let mut c = ConsumerConfig::new(&b.bootstrap);
    c.auto_offset_reset = OffsetReset::Earliest;
    c.fetch_max_wait = Duration::from_millis(100);
    c.set("isolation.level", isolation).unwrap();
    let mut c = Consumer::new(c).await.unwrap();
    c.assign(partitions).await.unwrap();
    c
}

/// Everything readable now: polls until nothing arrived for 1.5 s.
async fn read_all(c: &mut Consumer) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(1500) {
        let got = c.poll(Duration::from_millis(200)).await.unwrap();
        if !got.is_empty() {
            quiet_since = Instant::now();
        }
        out.extend(got);
    }
    out
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()).collect()
}

async fn send(p: &Producer, topic: &str, partition: i32, value: &str) -> strom_client::DeliveryFuture {
    p.send(ProducerRecord::new(topic).partition(partition).value(value.to_string())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_reach_read_committed_and_aborted_ones_only_read_uncommitted() {
    let b = broker();
    let topic = unique("txn-vis");
    create(&b, &topic, 2).await;
    let id = unique("tx-vis");
    let p = transactional(&b.bootstrap, &id).await;
    assert_eq!(p.transaction_state(), Some(TransactionState::Ready));
    assert!(matches!(send_err(&p, &topic).await, Error::TransactionState(_)), "send outside a transaction");
    let (pid, epoch) = (p.producer_id().unwrap(), p.producer_epoch().unwrap());

    p.begin_transaction().unwrap();
    for i in 0..3 {
        send(&p, &topic, i % 2, &format!("committed-{i}")).await;
    }
    p.commit_transaction().await.unwrap();
    // Transactions v2 (both brokers finalize transaction.version 2): every EndTxn bumps the epoch, the producer
    // adopts it, and the coordinator agrees.
    assert_eq!((p.producer_id(), p.producer_epoch()), (Some(pid), Some(epoch + 1)), "commit bumps the epoch");
    let admin = Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap();
    let described = admin.describe_transactions(std::slice::from_ref(&id)).await.unwrap().remove(0).1.unwrap();
    assert_eq!((described.producer_id, described.producer_epoch), (pid, epoch + 1), "{described:?}");

    p.begin_transaction().unwrap();
    let aborted: Vec<_> = futures_util::future::join_all([
        send(&p, &topic, 0, "aborted-0").await,
        send(&p, &topic, 1, "aborted-1").await,
    ])
    .await;
    // Flushed before the abort, so they are in the log and read_uncommitted sees them.
    assert!(aborted.iter().all(|r| r.is_ok()), "{aborted:?}");
    p.abort_transaction().await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch + 2), "abort bumps the epoch too");

    // An open transaction holds read_committed back at its first offset (the last stable offset).
    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "open-then-committed").await;
    p.flush().await;
    let tp0 = TopicPartition::new(&topic, 0);
    let parts = vec![tp0.clone(), TopicPartition::new(&topic, 1)];
    let mut rc = consumer(&b, "read_committed", parts.clone()).await;
    let before = values(&read_all(&mut rc).await);
    let mut sorted = before.clone();
    sorted.sort();
    assert_eq!(sorted, ["committed-0", "committed-1", "committed-2"]);
    let stable = rc.end_offsets(std::slice::from_ref(&tp0)).await.unwrap()[&tp0];
    let mut ru = consumer(&b, "read_uncommitted", parts.clone()).await;
    let high = ru.end_offsets(std::slice::from_ref(&tp0)).await.unwrap()[&tp0];
    assert!(stable < high, "last stable offset {stable} must stay below the high watermark {high} while open");

    p.commit_transaction().await.unwrap();
    let after = values(&read_all(&mut rc).await);
    assert_eq!(after, ["open-then-committed"]);

    let mut all = values(&read_all(&mut ru).await);
    all.sort();
    assert_eq!(all, ["aborted-0", "aborted-1", "committed-0", "committed-1", "committed-2", "open-then-committed"]);
    // Markers take offsets but never reach the application: offsets have gaps, values do not repeat.
    p.close().await;
}

async fn send_err(p: &Producer, topic: &str) -> Error {
    p.send(ProducerRecord::new(topic).partition(0).value("x")).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let b = broker();
    let topic = unique("txn-fence");
    create(&b, &topic, 1).await;
    let id = unique("tx-fence");
    let first = transactional(&b.bootstrap, &id).await;
    first.begin_transaction().unwrap();
    for i in 0..5 {
        send(&first, &topic, 0, &format!("zombie-{i}")).await;
    }
    first.flush().await;

    // InitProducerId with the same id bumps the epoch and aborts the first producer's open transaction.
    let second = transactional(&b.bootstrap, &id).await;
    assert!(
        second.producer_epoch() > first.producer_epoch(),
        "{:?} vs {:?}",
        second.producer_epoch(),
        first.producer_epoch()
    );
    second.begin_transaction().unwrap();
    send(&second, &topic, 0, "survivor").await;

    let err = first.commit_transaction().await.unwrap_err();
    assert!(err.is_producer_fenced(), "commit of the fenced producer: {err}");
    assert_eq!(first.transaction_state(), Some(TransactionState::FatalError));
    // Fatal: nothing but close is left.
    assert!(first.begin_transaction().is_err());
    assert!(first.abort_transaction().await.unwrap_err().is_producer_fenced());

    second.commit_transaction().await.unwrap();
    let mut rc = consumer(&b, "read_committed", vec![TopicPartition::new(&topic, 0)]).await;
    assert_eq!(values(&read_all(&mut rc).await), ["survivor"]);
    let mut ru = consumer(&b, "read_uncommitted", vec![TopicPartition::new(&topic, 0)]).await;
    assert_eq!(read_all(&mut ru).await.len(), 6, "the zombie's records are in the log, aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_are_committed_only_with_it() {
    let b = broker();
    let input = unique("txn-in");
    let output = unique("txn-out");
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    let group = unique("txn-group");
    let p = transactional(&b.bootstrap, &unique("tx-offsets")).await;
    let admin = Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap();
    let tp = TopicPartition::new(&input, 0);
    let offsets = |o: i64| BTreeMap::from([(tp.clone(), OffsetAndMetadata { offset: o, metadata: "m".into() })]);

    let epoch = p.producer_epoch().unwrap();

    p.begin_transaction().unwrap();
    send(&p, &output, 0, "a").await;
    p.send_offsets_to_transaction(&offsets(5), &ConsumerGroupMetadata::new(&group)).await.unwrap();
    p.abort_transaction().await.unwrap();
    assert_eq!(admin.list_group_offsets(&group).await.unwrap().get(&tp), None, "aborted offsets must not be committed");

    p.begin_transaction().unwrap();
    send(&p, &output, 0, "b").await;
    p.send_offsets_to_transaction(&offsets(7), &ConsumerGroupMetadata::new(&group)).await.unwrap();
    p.commit_transaction().await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch + 2), "transactions v2: one epoch bump per transaction end");

    // Offsets alone (no record) make a transaction too: under v2 TxnOffsetCommit adds them to it.
    p.begin_transaction().unwrap();
    p.send_offsets_to_transaction(&offsets(9), &ConsumerGroupMetadata::new(&group)).await.unwrap();
    p.commit_transaction().await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch + 3));
    // The coordinator applies the offsets when the commit marker reaches __consumer_offsets: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = admin.list_group_offsets(&group).await.unwrap();
        if let Some(o) = got.get(&tp).filter(|o| o.offset == 9) {
            assert_eq!(o.metadata.as_str(), "m");
            break;
        }
        assert!(Instant::now() < deadline, "committed offsets never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_and_describes_an_open_transaction_with_its_partitions() {
    let b = broker();
    let topic = unique("txn-cli");
    create(&b, &topic, 2).await;
    let id = unique("tx-cli");
    let p = transactional(&b.bootstrap, &id).await;
    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "x").await;
    send(&p, &topic, 1, "y").await;
    p.flush().await;

    let strom = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_strom"))
            .args(args)
            .arg("--bootstrap-server")
            .arg(&b.bootstrap)
            .output()
            .unwrap();
        assert!(o.status.success(), "strom {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let list = strom(&["transactions", "list"]);
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} not listed:\n{list}"));
    assert!(line.ends_with("Ongoing"), "{line}");
    assert!(line.contains(&p.producer_id().unwrap().to_string()), "{line}");

    let described = strom(&["transactions", "describe", &id]);
    let row = described.lines().nth(1).unwrap_or_default();
    assert!(described.lines().next().unwrap_or_default().contains("TransactionDurationMs"), "{described}");
    assert!(row.contains(" Ongoing ") && row.ends_with(&format!("{topic}-0,{topic}-1")), "{described}");

    // The partition's leader shows the producer with its open transaction's start offset (DescribeProducers).
    let pid = p.producer_id().unwrap();
    let producers = strom(&["transactions", "describe-producers", "--topic", &topic, "--partition", "0"]);
    assert!(producers.lines().next().unwrap_or_default().ends_with("CurrentTransactionStartOffset"), "{producers}");
    let row = producers.lines().find(|l| l.starts_with(&pid.to_string())).unwrap_or_else(|| panic!("{producers}"));
    assert!(row.ends_with(" 0"), "the transaction starts at offset 0: {row}");
    let admin = Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap();
    let tp = TopicPartition::new(&topic, 0);
    let state = admin.describe_producers(&tp).await.unwrap();
    let mine = state.iter().find(|s| s.producer_id == pid).expect("the producer is listed");
    assert_eq!((mine.last_sequence, mine.current_transaction_start_offset), (0, Some(0)));

    p.abort_transaction().await.unwrap();
    let row = strom(&["transactions", "describe", "--transactional-id", &id]);
    assert!(row.contains("CompleteAbort") || row.contains("PrepareAbort"), "{row}");
    common::eventually("the abort marker ends the open transaction on the partition", || async {
        let state = admin.describe_producers(&tp).await.unwrap();
        state.iter().any(|s| s.producer_id == pid && s.current_transaction_start_offset.is_none())
    })
    .await;
    let unknown = admin.describe_producers(&TopicPartition::new(&topic, 7)).await.unwrap_err();
    assert!(matches!(unknown, Error::UnknownPartition(_, 7)), "{unknown}");
}

// ------------------------------------------------------------- idempotence: 5 in flight through a lossy proxy

/// A Kafka-aware TCP proxy in front of one broker: Metadata and FindCoordinator answers point back at the proxy, and
/// some Produce requests are lost (swallowed: the client times out) or cut (forwarded, then the connection drops
/// before the answer: the write happened, the client does not know).
struct LossyProxy {
    port: u16,
    produce_requests: Arc<AtomicUsize>,
}

impl LossyProxy {
    async fn start(upstream: String, swallow_every: usize, cut_every: usize) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let produce_requests = Arc::new(AtomicUsize::new(0));
        let counter = produce_requests.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let counter = counter.clone();
                tokio::spawn(Self::relay(client, server, port, counter, swallow_every, cut_every));
            }
        });
        LossyProxy { port, produce_requests }
    }

    async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Bytes> {
        let len = s.read_i32().await.ok()?;
        let mut buf = vec![0u8; len.max(0) as usize];
        s.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    async fn relay(
        client: TcpStream,
        server: TcpStream,
        port: u16,
        counter: Arc<AtomicUsize>,
        swallow_every: usize,
        cut_every: usize,
    ) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let requests: Arc<Mutex<BTreeMap<i32, (i16, i16)>>> = Arc::default();
        let seen = requests.clone();
        let upstream = tokio::spawn(async move {
            while let Some(frame) = Self::read_frame(&mut cr).await {
                let (key, version, correlation) = {
                    let mut h = &frame[..];
                    (h.get_i16(), h.get_i16(), h.get_i32())
                };
                seen.lock().unwrap().insert(correlation, (key, version));
                let mut cut = false;
                if key == 0 {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    if n % swallow_every == 0 {
                        continue;
                    }
                    cut = n % cut_every == 0;
                }
                let mut out = BytesMut::with_capacity(frame.len() + 4);
                out.put_i32(frame.len() as i32);
                out.put_slice(&frame);
                if sw.write_all(&out).await.is_err() {
                    return;
                }
                if cut {
                    // Give the broker time to take the request, then drop both directions.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return;
                }
            }
        });
        let downstream = tokio::spawn(async move {
            while let Some(frame) = Self::read_frame(&mut sr).await {
                let correlation = (&frame[..]).get_i32();
                let api = requests.lock().unwrap().remove(&correlation);
                let frame = match api {
                    Some((3, v)) => Self::point_metadata_here(frame, v, port),
                    _ => frame,
                };
                let mut out = BytesMut::with_capacity(frame.len() + 4);
                out.put_i32(frame.len() as i32);
                out.put_slice(&frame);
                if cw.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        // Whichever side ends first ends the connection.
        tokio::select! { _ = upstream => {}, _ = downstream => {} }
    }

    fn point_metadata_here(frame: Bytes, version: i16, port: u16) -> Bytes {
        let hv = MetadataResponse::header_version(version);
        let mut b = frame.clone();
        let header = ResponseHeader::decode(&mut b, hv).unwrap();
        let mut resp = MetadataResponse::decode(&mut b, version).unwrap();
        for broker in &mut resp.brokers {
            broker.host = StrBytes::from_static_str("127.0.0.1");
            broker.port = port as i32;
        }
        let mut out = BytesMut::new();
        header.encode(&mut out, hv).unwrap();
        resp.encode(&mut out, version).unwrap();
        out.freeze()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_keeps_order_with_five_in_flight_through_lost_requests_and_connections() {
    let b = broker();
    let topic = unique("idem-5");
    create(&b, &topic, 1).await;
    // Every 11th Produce request is lost (the next ones fail OUT_OF_ORDER_SEQUENCE_NUMBER until it is resent) and
    // every 7th connection is cut after the request went through (the resend must be deduplicated).
    let proxy = LossyProxy::start(b.bootstrap.clone(), 11, 7).await;
    let mut c = ProducerConfig::new(format!("127.0.0.1:{}", proxy.port));
    c.linger = Duration::ZERO;
    c.batch_size = 1200;
    c.client.max_in_flight = 5;
    c.client.request_timeout = Duration::from_millis(700);
    c.client.retry_backoff = Duration::from_millis(20);
    c.delivery_timeout = Duration::from_secs(60);
    let p = Producer::new(c).await.unwrap();
    let n = 800;
    let mut futures = Vec::new();
    for i in 0..n {
        futures.push(
            p.send(ProducerRecord::new(&topic).partition(0).value(format!("{i:06}-{}", "x".repeat(90)))).await.unwrap(),
        );
    }
    p.flush().await;
    let mut last = -1;
    for (i, f) in futures.into_iter().enumerate() {
        let m = f.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        // -1 only when the broker answered DUPLICATE_SEQUENCE_NUMBER without the offset.
        assert!(m.offset == -1 || m.offset > last, "record {i} at offset {} after {last}", m.offset);
        last = last.max(m.offset);
    }
    assert!(
        proxy.produce_requests.load(Ordering::SeqCst) > 2 * 11,
        "the proxy saw too few requests to lose and cut some"
    );
    let mut rc = consumer(&b, "read_uncommitted", vec![TopicPartition::new(&topic, 0)]).await;
    let got = values(&read_all(&mut rc).await);
    assert_eq!(got.len(), n, "no record lost, none duplicated");
    for (i, v) in got.iter().enumerate() {
        assert!(v.starts_with(&format!("{i:06}-")), "record {i} out of order: {}", &v[..6]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_makes_the_transaction_abortable_and_the_producer_carries_on() {
    let b = broker();
    let topic = unique("txn-abortable");
    let admin = Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap();
    admin.create_topic(NewTopic::new(&topic, 1, 1).config("max.message.bytes", "1000")).await.unwrap();
    common::topic_is_ready(&admin, &topic, 1).await;
    let p = transactional(&b.bootstrap, &unique("tx-abortable")).await;
    let epoch = p.producer_epoch().unwrap();

    p.begin_transaction().unwrap();
    let small = send(&p, &topic, 0, "fits").await;
    let big = p.send(ProducerRecord::new(&topic).partition(0).value(vec![b'x'; 4000])).await.unwrap();
    let err = big.await.unwrap_err();
    assert_eq!(err.code(), Some(10), "RECORD_TOO_LARGE from the broker: {err}");
    let _ = small.await;
    // The transaction cannot commit any more; abort is the way out, and the producer stays usable.
    let commit = p.commit_transaction().await.unwrap_err();
    assert_eq!(commit.code(), Some(10), "{commit}");
    assert_eq!(p.transaction_state(), Some(TransactionState::AbortableError));
    p.abort_transaction().await.unwrap();
    assert_eq!(p.transaction_state(), Some(TransactionState::Ready));
    // With a sequence in doubt, the v2 abort is a plain EndTxn whose epoch bump restarts the sequences.
    assert_eq!(p.producer_epoch(), Some(epoch + 1));

    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "after-abort").await;
    p.commit_transaction().await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch + 2));
    let mut rc = consumer(&b, "read_committed", vec![TopicPartition::new(&topic, 0)]).await;
    assert_eq!(values(&read_all(&mut rc).await), ["after-abort"]);
}

/// Under transactions v2 a send alone makes the transaction need an EndTxn, even when its records never left the
/// producer: the abort drops them and still ends the transaction on the coordinator, bumping the epoch (Java does
/// the same; the coordinator accepts an abort with nothing ongoing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_of_records_never_sent_still_ends_the_transaction() {
    let b = broker();
    let topic = unique("txn-unsent");
    create(&b, &topic, 1).await;
    let mut c = ProducerConfig::new(&b.bootstrap);
    c.linger = Duration::from_secs(30);
    c.transactional_id = Some(unique("tx-unsent"));
    c.max_block = Duration::from_secs(20);
    let p = Producer::new(c).await.unwrap();
    p.init_transactions().await.unwrap();
    let epoch = p.producer_epoch().unwrap();

    p.begin_transaction().unwrap();
    let queued = send(&p, &topic, 0, "never-sent").await;
    p.abort_transaction().await.unwrap();
    assert!(matches!(queued.await, Err(Error::TransactionAborted)));
    assert_eq!(p.producer_epoch(), Some(epoch + 1), "the aborting EndTxn bumped the epoch");

    p.begin_transaction().unwrap();
    let kept = send(&p, &topic, 0, "kept").await;
    p.commit_transaction().await.unwrap();
    kept.await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch + 2));
    let mut ru = consumer(&b, "read_uncommitted", vec![TopicPartition::new(&topic, 0)]).await;
    assert_eq!(values(&read_all(&mut ru).await), ["kept"]);
}

/// Transactions v1 stay in use against a broker that finalizes `transaction.version` below 2: a Strom started with
/// the override, or the broker at STROM_TEST_BOOTSTRAP_TV1 (e.g. Apache Kafka after `kafka-features.sh downgrade
/// --feature transaction.version=1`). AddPartitionsToTxn, AddOffsetsToTxn and EndTxn v4, which keeps the epoch, so
/// only the abort with a sequence in doubt bumps it (InitProducerId, KIP-360).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_v1_against_a_broker_that_finalizes_transaction_version_1() {
    let b = match std::env::var("STROM_TEST_BOOTSTRAP_TV1") {
        Ok(bootstrap) => Broker { _server: None, bootstrap },
        Err(_) => {
            let server = common::Server::start(&["transaction.version=1"]);
            Broker { bootstrap: format!("127.0.0.1:{}", server.port), _server: Some(server) }
        }
    };
    let topic = unique("txn-v1");
    let admin = Admin::new(ClientConfig::new(&b.bootstrap)).await.unwrap();
    admin.create_topic(NewTopic::new(&topic, 2, 1).config("max.message.bytes", "1000")).await.unwrap();
    common::topic_is_ready(&admin, &topic, 2).await;
    let id = unique("tx-v1");
    let p = transactional(&b.bootstrap, &id).await;
    let (pid, epoch) = (p.producer_id().unwrap(), p.producer_epoch().unwrap());
    let group = unique("txn-v1-group");
    let tp = TopicPartition::new(&topic, 1);
    let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata { offset: 3, metadata: String::new() })]);

    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "committed-0").await;
    send(&p, &topic, 1, "committed-1").await;
    p.flush().await;
    // AddPartitionsToTxn put both partitions in the transaction before the first record.
    let open = admin.describe_transactions(std::slice::from_ref(&id)).await.unwrap().remove(0).1.unwrap();
    assert_eq!(open.partitions, [TopicPartition::new(&topic, 0), tp.clone()], "{open:?}");
    p.send_offsets_to_transaction(&offsets, &ConsumerGroupMetadata::new(&group)).await.unwrap();
    p.commit_transaction().await.unwrap();
    assert_eq!((p.producer_id(), p.producer_epoch()), (Some(pid), Some(epoch)), "EndTxn v4 keeps the epoch");

    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "aborted").await.await.unwrap();
    p.abort_transaction().await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch), "a plain abort keeps the epoch");

    // A failed batch leaves its sequence in doubt: the abort bumps the epoch through InitProducerId.
    p.begin_transaction().unwrap();
    let big = p.send(ProducerRecord::new(&topic).partition(0).value(vec![b'x'; 4000])).await.unwrap();
    assert_eq!(big.await.unwrap_err().code(), Some(10));
    p.abort_transaction().await.unwrap();
    assert_eq!((p.producer_id(), p.producer_epoch()), (Some(pid), Some(epoch + 1)), "KIP-360 bump on abort");

    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "after-bump").await;
    p.commit_transaction().await.unwrap();
    assert_eq!(p.producer_epoch(), Some(epoch + 1));

    let mut rc = consumer(&b, "read_committed", vec![TopicPartition::new(&topic, 0), tp.clone()]).await;
    let mut got = values(&read_all(&mut rc).await);
    got.sort();
    assert_eq!(got, ["after-bump", "committed-0", "committed-1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.list_group_offsets(&group).await.unwrap().get(&tp).map(|o| o.offset) != Some(3) {
        assert!(Instant::now() < deadline, "the committed offsets never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The read-process-write loop of exactly-once processing: a group member reads `in` with read_committed, writes
/// each record to `out` and commits its offsets in the same transaction, with its group metadata (KIP-447). A
/// crashed run (aborted transaction) is redone by the next member from the last committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_process_write_moves_each_record_exactly_once_across_an_aborted_run() {
    let b = broker();
    let input = unique("rpw-in");
    let output = unique("rpw-out");
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    let mut plain = ProducerConfig::new(&b.bootstrap);
    plain.linger = Duration::ZERO;
    let feeder = Producer::new(plain).await.unwrap();
    for i in 0..20 {
        feeder.send(ProducerRecord::new(&input).partition(0).value(format!("r{i:02}"))).await.unwrap();
    }
    feeder.flush().await;
    let group = unique("rpw-group");
    let member = || async {
        let mut c = ConsumerConfig::new(&b.bootstrap);
        c.group_id = Some(group.clone());
        c.enable_auto_commit = false;
        c.auto_offset_reset = OffsetReset::Earliest;
        c.session_timeout = Duration::from_secs(6);
        c.heartbeat_interval = Duration::from_millis(500);
        c.fetch_max_wait = Duration::from_millis(100);
        c.max_poll_records = 5;
        c.set("isolation.level", "read_committed").unwrap();
        let mut c = Consumer::new(c).await.unwrap();
        c.subscribe(&[&input]).unwrap();
        c
    };
    let id = unique("tx-rpw");
    let mut c = member().await;
    let p = transactional(&b.bootstrap, &id).await;
    let mut done = 0;
    while done < 10 {
        done += step(&mut c, &p, &output, true).await;
    }
    // The "crash": the next batch is written and aborted, and the member goes away without committing.
    while step(&mut c, &p, &output, false).await == 0 {}
    c.close().await.unwrap();
    drop(p);

    let mut c = member().await;
    let p = transactional(&b.bootstrap, &id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rc = consumer(&b, "read_committed", vec![TopicPartition::new(&output, 0)]).await;
    let mut out = Vec::new();
    while out.len() < 20 {
        assert!(Instant::now() < deadline, "only {} records reached out", out.len());
        step(&mut c, &p, &output, true).await;
        out.extend(values(&rc.poll(Duration::from_millis(100)).await.unwrap()));
    }
    out.extend(values(&read_all(&mut rc).await));
    let want: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    assert_eq!(out, want, "each input exactly once, in order");
}

/// One read-process-write step: poll up to 5 records, write them, commit the offsets after them in the same
/// transaction; `commit` false plays a crash (the transaction is aborted). Returns the records processed.
async fn step(c: &mut Consumer, p: &Producer, output: &str, commit: bool) -> usize {
    let records = c.poll(Duration::from_millis(500)).await.unwrap();
    if records.is_empty() {
        return 0;
    }
    p.begin_transaction().unwrap();
    let mut next = BTreeMap::new();
    for r in &records {
        p.send(ProducerRecord::new(output).partition(0).value(r.value.clone().unwrap())).await.unwrap();
        next.insert(
            TopicPartition::new(&r.topic, r.partition),
            OffsetAndMetadata { offset: r.offset + 1, metadata: String::new() },
        );
    }
    let meta = c.consumer_group_metadata().unwrap();
    assert!(meta.generation_id > 0 && !meta.member_id.is_empty(), "{meta:?}");
    p.send_offsets_to_transaction(&next, &meta).await.unwrap();
    if commit {
        p.commit_transaction().await.unwrap();
    } else {
        p.abort_transaction().await.unwrap();
    }
    records.len()
}
