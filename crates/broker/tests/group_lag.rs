//! Lag computed by the broker itself: for partitions with a committed offset, and for partitions of subscribed
//! topics nobody committed for, also when the group has no live member.

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strom_broker::controller::{plan_create_topic, NewTopic};
use strom_broker::coordinator::group::{PartitionLag, Request};
use strom_broker::BrokerConfig;

fn batch(n: usize) -> Vec<u8> {
    let records: Vec<kafka_protocol::records::Record> = (0..n)
        .map(|i| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1,
            key: None,
            value: Some(bytes::Bytes::from_static(b"v")),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_per_partition_without_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut values = BTreeMap::new();
    values.insert("log.dirs".to_string(), dir.path().display().to_string());
    values.insert("listeners".to_string(), "PLAINTEXT://127.0.0.1:0".to_string());
    values.insert("offsets.topic.num.partitions".to_string(), "3".to_string());
    values.insert("group.initial.rebalance.delay.ms".to_string(), "0".to_string());
    let running = strom_broker::run(BrokerConfig::from_values(values).unwrap()).await.unwrap();
    let broker = running.broker.clone();
    let b = broker.clone();
    tokio::task::spawn_blocking(move || {
        b.commit(|image| {
            let t = NewTopic {
                name: "t",
                num_partitions: 2,
                replication_factor: -1,
                assignments: vec![],
                configs: BTreeMap::new(),
            };
            plan_create_topic(image, &b.config, &t).map(|p| (p.records, ()))
        })
        .unwrap();
        b.groups.ensure_topic(&b).unwrap();
        for (p, n) in [(0, 10), (1, 4)] {
            let mut records = batch(n);
            let headers = strom_log::validate_batches(&records, u32::MAX).unwrap();
            b.replicas.get("t", p).unwrap().append(&mut records, headers).unwrap();
        }
    })
    .await
    .unwrap();
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(7)])]);
    let image = broker.image();
    let resp =
        broker.groups.call(&broker, "g", |tx| Request::OffsetCommit { req, version: 8, image, tx }).await.unwrap();
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    let lag = broker.groups.lag(&broker, "g").await.unwrap().unwrap();
    assert_eq!(
        lag,
        vec![PartitionLag { topic: "t".into(), partition: 0, committed_offset: Some(7), log_end_offset: 10, lag: 3 }]
    );
    assert_eq!(broker.groups.lag(&broker, "missing").await.unwrap(), None);

    // A member subscribing to "t" makes partition 1 count too, with all of its records as lag.
    let mut sub = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut sub, 0);
    kafka_protocol::protocol::Encodable::encode(
        &ConsumerProtocolSubscription::default().with_topics(vec![StrBytes::from_static_str("t")]),
        &mut sub,
        0,
    )
    .unwrap();
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(sub.freeze())]);
    let j = broker
        .groups
        .call(&broker, "g", |tx| Request::Join {
            req: join,
            version: 3,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            image: broker.image(),
            tx,
        })
        .await
        .unwrap();
    assert_eq!(j.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id(j.generation_id)
        .with_member_id(j.member_id.clone());
    assert_eq!(
        broker
            .groups
            .call(&broker, "g", |tx| Request::Sync { req: sync, image: broker.image(), tx })
            .await
            .unwrap()
            .error_code,
        0
    );
    let lag = broker.groups.lag(&broker, "g").await.unwrap().unwrap();
    assert_eq!(
        lag[1],
        PartitionLag { topic: "t".into(), partition: 1, committed_offset: None, log_end_offset: 4, lag: 4 }
    );
    running.shutdown().await;
}
