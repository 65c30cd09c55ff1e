//! Group administration on the admin client (kafka-consumer-groups.sh's operations): list, describe (classic and
//! KIP-848 groups), committed offsets, delete, and offset changes for inactive groups.

use std::collections::BTreeMap;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::assignor::decode_assignment;
use super::coordinator;
use super::offsets::{self, Committer, OffsetAndMetadata};
use crate::admin::Admin;
use crate::error::{check, Error, Result};
use crate::record::TopicPartition;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    /// "classic" or "consumer" (empty when the broker does not say).
    pub group_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<TopicPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The selected assignor (classic) or the server assignor (consumer protocol).
    pub protocol: String,
    pub group_type: String,
    pub members: Vec<MemberDescription>,
}

impl GroupDescription {
    /// Kafka's tools refuse to change offsets of a group with live members.
    pub fn is_active(&self) -> bool {
        !matches!(self.state.as_str(), "Empty" | "Dead")
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Admin {
    /// Every group of every broker.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let cluster = self.cluster();
        cluster.fetch_metadata(Some(&[]), false).await?;
        let mut out = Vec::new();
        for b in cluster.brokers() {
            let conn = cluster.connection(b.id).await?;
            let resp = conn.call(&ListGroupsRequest::default()).await?;
            check(resp.error_code, || format!("ListGroups on broker {}", b.id), None)?;
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                group_type: g.group_type.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// Describes a group of either protocol. An unknown group comes back with state "Dead" and no members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let conn = coordinator::connect(self.cluster(), group).await?;
        let resp = conn.call(&DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))])).await?;
        let g =
            resp.groups.into_iter().next().ok_or_else(|| Error::Protocol("DescribeGroups answered no group".into()))?;
        let not_found = g.error_code == 69 || (g.error_code == 0 && g.group_state.as_str() == "Dead");
        if not_found && conn.supports(ApiKey::ConsumerGroupDescribe) {
            let resp =
                conn.call(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))])).await?;
            if let Some(c) = resp.groups.into_iter().next().filter(|c| c.error_code == 0) {
                return Ok(GroupDescription {
                    group_id: group.to_string(),
                    state: c.group_state.to_string(),
                    protocol_type: "consumer".into(),
                    protocol: c.assignor_name.to_string(),
                    group_type: "consumer".into(),
                    members: c
                        .members
                        .into_iter()
                        .map(|m| MemberDescription {
                            member_id: m.member_id.to_string(),
                            instance_id: m.instance_id.map(|i| i.to_string()),
                            client_id: m.client_id.to_string(),
                            host: m.client_host.to_string(),
                            assignment: m
                                .assignment
                                .topic_partitions
                                .iter()
                                .flat_map(|t| {
                                    t.partitions
                                        .iter()
                                        .map(move |p| TopicPartition::new(t.topic_name.0.to_string(), *p))
                                })
                                .collect(),
                        })
                        .collect(),
                });
            }
        }
        if not_found {
            return Ok(GroupDescription {
                group_id: group.to_string(),
                state: "Dead".into(),
                protocol_type: String::new(),
                protocol: String::new(),
                group_type: String::new(),
                members: Vec::new(),
            });
        }
        check(g.error_code, || format!("DescribeGroups for {group}"), g.error_message.as_deref())?;
        let consumer = g.protocol_type.as_str() == "consumer";
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            group_type: "classic".into(),
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.to_string(),
                    instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment: if consumer {
                        decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        })
    }

    /// Every committed offset of the group.
    pub async fn list_group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let conn = coordinator::connect(self.cluster(), group).await?;
        offsets::fetch(&conn, group, None).await
    }

    /// Commits offsets for an inactive group (standalone commit, generation -1).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let conn = coordinator::connect(self.cluster(), group).await?;
        offsets::commit(&conn, group, &Committer::standalone(), offsets).await
    }

    /// Deletes empty groups with their offsets; one result per group.
    pub async fn delete_groups(&self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::new();
        for g in groups {
            let conn = coordinator::connect(self.cluster(), g).await?;
            let resp = conn.call(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(g))])).await?;
            let code = resp.results.first().map_or(0, |r| r.error_code);
            out.push((g.clone(), check(code, || format!("DeleteGroups for {g}"), None)));
        }
        Ok(out)
    }
}
