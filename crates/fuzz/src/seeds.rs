//! Well-formed request bodies built from the protocol's own message types (the kafka-protocol crate is generated
//! from Kafka's message schemas): each API's default request, and for the APIs with nested structures a request
//! that fills them, so mutations land on real array counts, string lengths and record batches.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// The topic the seeds name; the fuzzer creates it first so requests reach deep into the handlers.
pub const TOPIC: &str = "fuzz";

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic() -> TopicName {
    TopicName(s(TOPIC))
}

fn record_batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; 40])),
            headers: [(s("h"), Some(Bytes::from_static(b"x")))].into_iter().collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    match RecordBatchEncoder::encode(&mut buf, &records, &options) {
        Ok(()) => buf.freeze(),
        Err(_) => Bytes::new(),
    }
}

/// A request that encodes itself at a version, or not when it has fields that version cannot carry.
type SeedBuilder = Box<dyn Fn(i16) -> Option<Vec<u8>>>;

fn populated(key: ApiKey) -> Vec<SeedBuilder> {
    fn enc<T: Encodable>(req: T) -> impl Fn(i16) -> Option<Vec<u8>> {
        move |version| {
            let mut buf = BytesMut::new();
            req.encode(&mut buf, version).ok()?;
            Some(buf.to_vec())
        }
    }
    let mut out: Vec<SeedBuilder> = Vec::new();
    match key {
        ApiKey::Metadata => {
            out.push(Box::new(enc(MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(topic()))])))));
        }
        ApiKey::Produce => {
            for compression in
                [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
            {
                out.push(Box::new(enc(ProduceRequest::default().with_acks(1).with_timeout_ms(1000).with_topic_data(
                    vec![produce_request::TopicProduceData::default().with_name(topic()).with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(record_batch(compression))),
                    ])],
                ))));
            }
        }
        ApiKey::Fetch => {
            out.push(Box::new(enc(FetchRequest::default()
                .with_max_wait_ms(10)
                .with_max_bytes(1 << 20)
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![fetch_request::FetchTopic::default().with_topic(topic()).with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20),
                ])]))));
        }
        ApiKey::ListOffsets => {
            out.push(Box::new(enc(ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default().with_name(topic()).with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1),
                ]),
            ]))));
        }
        ApiKey::CreateTopics => {
            out.push(Box::new(enc(CreateTopicsRequest::default().with_timeout_ms(1000).with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s("fuzz-created")))
                    .with_num_partitions(2)
                    .with_replication_factor(-1)
                    .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("60000")))]),
            ]))));
        }
        ApiKey::CreatePartitions => {
            out.push(Box::new(enc(CreatePartitionsRequest::default().with_timeout_ms(1000).with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default().with_name(topic()).with_count(2),
            ]))));
        }
        ApiKey::DeleteRecords => {
            out.push(Box::new(enc(DeleteRecordsRequest::default().with_timeout_ms(1000).with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default().with_name(topic()).with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default().with_partition_index(0).with_offset(1),
                ]),
            ]))));
        }
        ApiKey::DescribeConfigs => {
            out.push(Box::new(enc(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(TOPIC))
                    .with_configuration_keys(Some(vec![s("retention.ms")])),
            ]))));
        }
        ApiKey::IncrementalAlterConfigs => {
            out.push(Box::new(enc(IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(TOPIC))
                    .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("120000")))]),
            ]))));
        }
        ApiKey::OffsetCommit => {
            out.push(Box::new(enc(OffsetCommitRequest::default()
                .with_group_id(GroupId(s("fuzz-group")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_metadata(Some(s("m")))])]))));
        }
        ApiKey::OffsetFetch => {
            out.push(Box::new(enc(OffsetFetchRequest::default().with_group_id(GroupId(s("fuzz-group"))).with_groups(
                vec![offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(s("fuzz-group")))],
            ))));
        }
        ApiKey::JoinGroup => {
            out.push(Box::new(enc(JoinGroupRequest::default()
                .with_group_id(GroupId(s("fuzz-group")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(100)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z']))]))));
        }
        ApiKey::SyncGroup => {
            out.push(Box::new(enc(SyncGroupRequest::default()
                .with_group_id(GroupId(s("fuzz-group")))
                .with_member_id(s("m"))
                .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("m"))
                    .with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0]))]))));
        }
        ApiKey::ConsumerGroupHeartbeat => {
            out.push(Box::new(enc(ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("fuzz-848")))
                .with_member_id(s("m1"))
                .with_rebalance_timeout_ms(1000)
                .with_subscribed_topic_names(Some(vec![topic()]))
                .with_topic_partitions(Some(vec![])))));
        }
        ApiKey::InitProducerId => {
            out.push(Box::new(enc(InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("fuzz-txn"))))
                .with_transaction_timeout_ms(10_000))));
        }
        ApiKey::AddPartitionsToTxn => {
            out.push(Box::new(enc(AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("fuzz-txn")))
                .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![0])])
                .with_transactions(vec![add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(s("fuzz-txn")))
                    .with_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![0])])]))));
        }
        ApiKey::TxnOffsetCommit => {
            out.push(Box::new(enc(TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("fuzz-txn")))
                .with_group_id(GroupId(s("fuzz-group")))
                .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]))));
        }
        ApiKey::WriteTxnMarkers => {
            out.push(Box::new(enc(WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default().with_producer_id(ProducerId(1)).with_topics(
                    vec![write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0])],
                ),
            ]))));
        }
        _ => {}
    }
    out
}

macro_rules! defaults {
    ($key:expr, $version:expr, $($api:ident => $t:ty),* $(,)?) => {
        match $key {
            $(ApiKey::$api => {
                let mut buf = BytesMut::new();
                <$t>::default().encode(&mut buf, $version).ok().map(|()| buf.to_vec())
            })*
            _ => None,
        }
    };
}

/// Every seed body for one API key and version: its default request, and the populated ones that encode at
/// this version. An API without a known type gets an empty body (the mutations grow it).
pub fn seeds(key: ApiKey, version: i16) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let default = defaults!(key, version,
        Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest, OffsetCommit => OffsetCommitRequest, OffsetFetch => OffsetFetchRequest,
        FindCoordinator => FindCoordinatorRequest, JoinGroup => JoinGroupRequest, Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest, SyncGroup => SyncGroupRequest, DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest, ApiVersions => ApiVersionsRequest, CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest, DeleteRecords => DeleteRecordsRequest,
        InitProducerId => InitProducerIdRequest, AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest, EndTxn => EndTxnRequest, WriteTxnMarkers => WriteTxnMarkersRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest, DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest, CreatePartitions => CreatePartitionsRequest,
        DeleteGroups => DeleteGroupsRequest, IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        OffsetDelete => OffsetDeleteRequest, DescribeCluster => DescribeClusterRequest,
        DescribeProducers => DescribeProducersRequest, DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest, ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest, SaslHandshake => SaslHandshakeRequest,
        SaslAuthenticate => SaslAuthenticateRequest, DescribeLogDirs => DescribeLogDirsRequest,
        DescribeAcls => DescribeAclsRequest, CreateAcls => CreateAclsRequest,
        ShareGroupHeartbeat => ShareGroupHeartbeatRequest, ShareFetch => ShareFetchRequest,
        DescribeTopicPartitions => DescribeTopicPartitionsRequest,
    );
    out.push(default.unwrap_or_default());
    for build in populated(key) {
        if let Some(body) = build(version) {
            out.push(body);
        }
    }
    out
}
