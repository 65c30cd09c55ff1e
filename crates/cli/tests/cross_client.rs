//! Cross-client checks: records written by strom-client are read intact by confluent-kafka (librdkafka) and
//! kafka-python, and records they write are read intact by strom-client (keys, values, duplicate headers,
//! timestamps). Needs the compat venv (`scripts/test` creates .cache/venv) or STROM_TEST_PYTHON; skipped without.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use strom_client::admin::NewTopic;
use strom_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("STROM_TEST_PYTHON") {
        return Some(p.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/python");
    let ok = venv.exists()
        && Command::new(&venv).args(["-c", "import confluent_kafka, kafka"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(venv)
}

/// Record i as (key hex or None, value hex or None, [(header, value hex)], timestamp).
type Row = (Option<String>, Option<String>, Vec<(String, Option<String>)>, i64);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn expected(i: usize) -> Row {
    let key = (i % 5 != 0).then(|| hex(format!("key-{i}").as_bytes()));
    // Never both null: kafka-python refuses a record without key and value.
    let value = (i % 7 != 0 || i % 5 == 0).then(|| hex(&[(i % 256) as u8, 0, 0xff, b'v']));
    let headers = vec![
        ("dup".to_string(), Some(hex(format!("a{i}").as_bytes()))),
        ("dup".to_string(), Some(hex(format!("b{i}").as_bytes()))),
        ("other".to_string(), Some(hex(b"x"))),
    ];
    (key, value, headers, 1_650_000_000_000 + i as i64)
}

const N: usize = 50;

const READ_CONFLUENT: &str = r#"
import sys, json
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "x", "enable.auto.commit": False})
c.assign([TopicPartition(sys.argv[2], 0, 0)])
n = int(sys.argv[3]); out = []
while len(out) < n:
    m = c.poll(10)
    if m is None: raise SystemExit("timeout")
    if m.error(): raise SystemExit(str(m.error()))
    h = [(k, v.hex() if v is not None else None) for k, v in (m.headers() or [])]
    out.append([m.key().hex() if m.key() is not None else None, m.value().hex() if m.value() is not None else None, h, m.timestamp()[1]])
print(json.dumps(out))
"#;

const READ_KAFKA_PYTHON: &str = r#"
import sys, json
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=sys.argv[1], enable_auto_commit=False, consumer_timeout_ms=10000)
tp = TopicPartition(sys.argv[2], 0)
c.assign([tp]); c.seek(tp, 0)
n = int(sys.argv[3]); out = []
for m in c:
    h = [(k, v.hex() if v is not None else None) for k, v in m.headers]
    out.append([m.key.hex() if m.key is not None else None, m.value.hex() if m.value is not None else None, h, m.timestamp])
    if len(out) == n: break
print(json.dumps(out))
"#;

const WRITE_CONFLUENT: &str = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "enable.idempotence": False, "compression.type": "zstd"})
for i in range(int(sys.argv[3])):
    key = ("key-%d" % i).encode() if i % 5 else None
    value = bytes([i % 256, 0, 0xff, ord("v")]) if (i % 7 or i % 5 == 0) else None
    hs = [("dup", ("a%d" % i).encode()), ("dup", ("b%d" % i).encode()), ("other", b"x")]
    p.produce(sys.argv[2], value=value, key=key, partition=0, headers=hs, timestamp=1650000000000 + i)
p.flush(10)
"#;

const WRITE_KAFKA_PYTHON: &str = r#"
import sys
from kafka import KafkaProducer
# kafka-python 3 turns idempotence on by default; Strom has no InitProducerId yet.
p = KafkaProducer(bootstrap_servers=sys.argv[1], compression_type="gzip", enable_idempotence=False)
fs = []
for i in range(int(sys.argv[3])):
    key = ("key-%d" % i).encode() if i % 5 else None
    value = bytes([i % 256, 0, 0xff, ord("v")]) if (i % 7 or i % 5 == 0) else None
    hs = [("dup", ("a%d" % i).encode()), ("dup", ("b%d" % i).encode()), ("other", b"x")]
    fs.append(p.send(sys.argv[2], value=value, key=key, partition=0, headers=hs, timestamp_ms=1650000000000 + i))
p.flush(10)
for f in fs: f.get(10)
"#;

fn run_python(py: &PathBuf, script: &str, bootstrap: &str, topic: &str) -> String {
    let o = Command::new(py).args(["-c", script, bootstrap, topic, &N.to_string()]).output().unwrap();
    assert!(o.status.success(), "python failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

async fn rust_read(bootstrap: &str, topic: &str) -> Vec<Row> {
    let mut cfg = ConsumerConfig::new(bootstrap);
    cfg.auto_offset_reset = OffsetReset::Earliest;
    let mut c = Consumer::new(cfg).await.unwrap();
    c.assign(vec![TopicPartition::new(topic, 0)]).await.unwrap();
    let mut out = Vec::new();
    while out.len() < N {
        let rs = c.poll(Duration::from_secs(10)).await.unwrap();
        assert!(!rs.is_empty(), "timed out after {} records", out.len());
        for r in rs {
            let headers = r.headers.iter().map(|h| (h.key.clone(), h.value.as_deref().map(hex))).collect();
            out.push((r.key.as_deref().map(hex), r.value.as_deref().map(hex), headers, r.timestamp));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_cross_between_strom_client_librdkafka_and_kafka_python() {
    let Some(py) = python() else {
        eprintln!("skipped: no Python venv with confluent-kafka and kafka-python");
        return;
    };
    let s = common::Server::start(&[]);
    let b = format!("127.0.0.1:{}", s.port);
    let admin = Admin::new(ClientConfig::new(&b)).await.unwrap();
    for t in ["from-rust", "from-confluent", "from-kafka-python"] {
        admin.create_topic(NewTopic::new(t, 1, 1)).await.unwrap();
    }
    let want: Vec<Row> = (0..N).map(expected).collect();

    // strom-client writes (snappy, duplicate headers, explicit timestamps); both Python clients read.
    let mut cfg = ProducerConfig::new(&b);
    cfg.compression = strom_client::Compression::Snappy;
    let p = Producer::new(cfg).await.unwrap();
    for i in 0..N {
        let (key, value, headers, ts) = expected(i);
        let unhex = |s: &str| {
            (0..s.len()).step_by(2).map(|j| u8::from_str_radix(&s[j..j + 2], 16).unwrap()).collect::<Vec<u8>>()
        };
        let mut r = ProducerRecord::new("from-rust").partition(0).timestamp(ts);
        r.key = key.map(|k| unhex(&k).into());
        r.value = value.map(|v| unhex(&v).into());
        for (k, v) in headers {
            r = r.header(k, v.map(|v| unhex(&v)));
        }
        p.send(r).await.unwrap();
    }
    p.flush().await;
    for script in [READ_CONFLUENT, READ_KAFKA_PYTHON] {
        let got: Vec<Row> = serde_json::from_str(&run_python(&py, script, &b, "from-rust")).unwrap();
        assert_eq!(got, want);
    }

    // Both Python clients write; strom-client reads.
    run_python(&py, WRITE_CONFLUENT, &b, "from-confluent");
    assert_eq!(rust_read(&b, "from-confluent").await, want);
    run_python(&py, WRITE_KAFKA_PYTHON, &b, "from-kafka-python");
    assert_eq!(rust_read(&b, "from-kafka-python").await, want);
}
