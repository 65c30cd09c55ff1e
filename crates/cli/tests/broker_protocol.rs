//! The real binary, spoken to over TCP: version negotiation, produce/fetch/list offsets round trips, topic admin,
//! bad input handling and crash recovery.

mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::Server;
use indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn batch(values: &[&str], ts: i64, compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.freeze()
}

fn create_topic(conn: &mut common::Conn, name: &str, partitions: i32) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let resp = conn.send(&req, 7);
    resp.topics[0].error_code
}

fn produce(
    conn: &mut common::Conn,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
    version: i16,
) -> produce_response::PartitionProduceResponse {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
            produce_request::PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ]);
    let resp = conn.send(&req, version);
    resp.responses[0].partition_responses[0].clone()
}

fn fetch(
    conn: &mut common::Conn,
    topic: &str,
    partition: i32,
    offset: i64,
    version: i16,
) -> fetch_response::PartitionData {
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ])]);
    let resp = conn.send(&req, version);
    assert_eq!(resp.error_code, 0);
    resp.responses[0].partitions[0].clone()
}

fn values_of(records: Bytes) -> Vec<(i64, String)> {
    let mut b = records;
    let mut out = Vec::new();
    while b.remaining() > 0 {
        let set = RecordBatchDecoder::decode(&mut b).unwrap();
        for r in set.records {
            out.push((r.offset, String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
        }
    }
    out
}

#[test]
fn api_versions_negotiation() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for v in 0..=4 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strom-test"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let resp = c.send(&req, v);
        assert_eq!(resp.error_code, 0, "v{v}");
        let produce = resp.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (3, 13));
        let fetch = resp.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
        assert_eq!(fetch.min_version, 4);
        let join = resp.api_keys.iter().find(|k| k.api_key == ApiKey::JoinGroup as i16).unwrap();
        assert_eq!((join.min_version, join.max_version), (0, 9));
    }
    // A version the broker does not know: a v0 response with UNSUPPORTED_VERSION and the ranges.
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(99);
    body.put_i32(7);
    body.put_i16(-1); // null client id
    body.put_u8(0); // tagged fields
    c.write_frame(&body);
    let mut resp = c.read_frame().unwrap();
    assert_eq!(resp.get_i32(), 7);
    let v0 = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(v0.error_code, 35);
    assert!(v0.api_keys.len() >= 10);
}

use kafka_protocol::protocol::Decodable;

#[test]
fn produce_fetch_list_offsets_round_trip() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_eq!(create_topic(&mut c, "t1", 2), 0);
    assert_eq!(create_topic(&mut c, "t1", 2), 36, "TOPIC_ALREADY_EXISTS");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut expected = Vec::new();
    for (i, comp) in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let vals: Vec<String> = (0..3).map(|j| format!("v{i}-{j}")).collect();
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let version = [3, 7, 9, 12, 12][i];
        let r = produce(&mut c, "t1", 1, batch(&refs, now + 10 * i as i64, comp), 1, version);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.base_offset, 3 * i as i64);
        for (j, v) in vals.iter().enumerate() {
            expected.push(((3 * i + j) as i64, v.clone()));
        }
    }
    for version in [4, 11, 12] {
        let p = fetch(&mut c, "t1", 1, 0, version);
        assert_eq!(p.error_code, 0);
        assert_eq!(p.high_watermark, 15);
        assert_eq!(values_of(p.records.unwrap()), expected);
    }
    // Fetching from the middle of a batch returns the whole batch.
    let p = fetch(&mut c, "t1", 1, 4, 12);
    assert_eq!(values_of(p.records.unwrap())[0].0, 3);
    // Out of range.
    assert_eq!(fetch(&mut c, "t1", 1, 99, 12).error_code, 1);
    // Unknown partition.
    assert_eq!(fetch(&mut c, "t1", 7, 0, 12).error_code, 3);

    let list = |c: &mut common::Conn, ts: i64, version: i16| {
        let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default().with_name(topic_name("t1")).with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_partition_index(1).with_timestamp(ts),
            ]),
        ]);
        let r = c.send(&req, version);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    for v in [1, 4, 7, 10] {
        assert_eq!(list(&mut c, -2, v).1, 0);
        assert_eq!(list(&mut c, -1, v).1, 15);
        // First record at or after now+21 is offset 7 (batch 2 has timestamps now+20..now+22).
        assert_eq!(list(&mut c, now + 21, v), (0, 7, now + 21));
        assert_eq!(list(&mut c, now + 1_000_000, v).1, -1);
    }
    // Max timestamp: the last record of the last batch.
    assert_eq!(list(&mut c, -3, 7), (0, 14, now + 42));
}

#[test]
fn metadata_auto_creates_and_validates_names() {
    let s = Server::start(&["num.partitions=3"]);
    let mut c = s.connect();
    for version in [0, 1, 4, 9, 12] {
        let name = format!("auto-{version}");
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(&name))),
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("bad/name"))),
            ]))
            .with_allow_auto_topic_creation(true);
        let resp = c.send(&req, version);
        assert_eq!(resp.brokers.len(), 1);
        assert_eq!(resp.brokers[0].port, s.port as i32);
        let t = &resp.topics[0];
        assert_eq!(t.error_code, 0, "v{version}");
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(resp.topics[1].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    }
    let s2 = Server::start(&["auto.create.topics.enable=false"]);
    let mut c2 = s2.connect();
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("nope")))]))
        .with_allow_auto_topic_creation(true);
    assert_eq!(c2.send(&req, 12).topics[0].error_code, 3);
}

#[test]
fn bad_input_closes_only_that_connection() {
    let s = Server::start(&[]);
    let mut good = s.connect();
    assert_eq!(create_topic(&mut good, "safe", 1), 0);

    // Oversize length prefix.
    let mut c = s.connect();
    use std::io::Write;
    c.stream.write_all(&(200 * 1024 * 1024i32).to_be_bytes()).unwrap();
    assert!(c.is_closed());
    // Unknown api key.
    let mut c = s.connect();
    let mut body = BytesMut::new();
    body.put_i16(999);
    body.put_i16(0);
    body.put_i32(1);
    body.put_i16(-1);
    c.write_frame(&body);
    assert!(c.is_closed());
    // Garbage body for a known api.
    let mut c = s.connect();
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::Metadata as i16);
    body.put_i16(12);
    body.put_i32(1);
    body.put_slice(&[0xff; 7]);
    c.write_frame(&body);
    assert!(c.is_closed());
    // Corrupt CRC: the partition gets CORRUPT_MESSAGE and nothing is stored.
    let mut bad = BytesMut::from(&batch(&["x"], 1, Compression::None)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let r = produce(&mut good, "safe", 0, bad.freeze(), 1, 9);
    assert_eq!(r.error_code, 2);
    // The good connection still works.
    let r = produce(&mut good, "safe", 0, batch(&["ok"], 1_700_000_000_000, Compression::None), -1, 9);
    assert_eq!((r.error_code, r.base_offset), (0, 0));
}

#[test]
fn acknowledged_records_survive_kill9() {
    let mut s = Server::start(&[]);
    let mut c = s.connect();
    assert_eq!(create_topic(&mut c, "durable", 1), 0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..50 {
        let v = format!("m{i}");
        let r = produce(&mut c, "durable", 0, batch(&[&v], now, Compression::None), -1, 9);
        assert_eq!((r.error_code, r.base_offset), (0, i));
    }
    s.restart_after_kill9();
    let mut c = s.connect();
    let p = fetch(&mut c, "durable", 0, 0, 12);
    let got = values_of(p.records.unwrap());
    assert_eq!(got.len(), 50);
    assert_eq!(got[49], (49, "m49".to_string()));
    let r = produce(&mut c, "durable", 0, batch(&["after"], now, Compression::None), 1, 9);
    assert_eq!(r.base_offset, 50);
}

#[test]
fn retention_advances_log_start_offset() {
    let s = Server::start(&["log.retention.check.interval.ms=100"]);
    let mut c = s.connect();
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(topic_name("ret"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("segment.bytes"))
                    .with_value(Some(StrBytes::from_static_str("1048576"))),
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.bytes"))
                    .with_value(Some(StrBytes::from_static_str("2097152"))),
            ])])
        .with_timeout_ms(5000);
    let resp = c.send(&req, 7);
    assert_eq!(resp.topics[0].error_code, 0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..20 {
        let v = format!("value-{i:03}-{}", "x".repeat(250_000));
        let r = produce(&mut c, "ret", 0, batch(&[&v], now, Compression::None), 1, 9);
        assert_eq!(r.error_code, 0);
    }
    // Wait for the retention check to delete old segments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let start = loop {
        let p = fetch(&mut c, "ret", 0, 19, 12);
        if p.log_start_offset > 0 || std::time::Instant::now() > deadline {
            break p.log_start_offset;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(start > 0 && start < 20, "log start offset {start}");
    // Reading below the log start offset is out of range.
    assert_eq!(fetch(&mut c, "ret", 0, 0, 12).error_code, 1);
    let p = fetch(&mut c, "ret", 0, start, 12);
    assert_eq!(values_of(p.records.unwrap())[0].0, start);
}
