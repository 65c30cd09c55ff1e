//! DescribeConfigs: topic configs (override, dynamic or static broker value, or default, with synonyms) and broker
//! configs (dynamic per-broker, dynamic cluster default, static, default).

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::config::defs::{broker_defs, find, is_dynamic_broker_config, topic_defs, ConfigDef, Scope};
use crate::config::{describe_topic_config, ConfigSource};
use crate::dispatch::ConnectionContext;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

pub fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let broker = &ctx.broker;
    let image = broker.image();
    let config = crate::broker::effective_config(&broker.config, &image);
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let keys: Option<Vec<String>> =
                res.configuration_keys.map(|k| k.into_iter().map(|s| s.to_string()).collect());
            let wanted = |def: &ConfigDef| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == def.name));
            let name = res.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone())
                .with_error_message(None);
            let entry = |def: &'static ConfigDef,
                         value: Option<String>,
                         source: ConfigSource,
                         synonyms: Vec<(String, Option<String>, ConfigSource)>| {
                let mut e = DescribeConfigsResourceResult::default()
                    .with_name(StrBytes::from_static_str(def.name))
                    .with_value(value.map(StrBytes::from_string))
                    .with_read_only(
                        def.read_only && !(def.scope == Scope::Broker && is_dynamic_broker_config(def.name)),
                    )
                    .with_config_source(source as i8)
                    .with_is_sensitive(false)
                    .with_documentation(None);
                if req.include_synonyms {
                    e.synonyms = synonyms
                        .into_iter()
                        .map(|(n, v, s)| {
                            DescribeConfigsSynonym::default()
                                .with_name(StrBytes::from_string(n))
                                .with_value(v.map(StrBytes::from_string))
                                .with_source(s as i8)
                        })
                        .collect();
                }
                if version >= 3 {
                    e.config_type = def.config_type as i8;
                    if req.include_documentation {
                        e.documentation = Some(StrBytes::from_static_str(def.doc));
                    }
                }
                e
            };
            match res.resource_type {
                TOPIC if crate::topic_name::validate(&name).is_err() => result
                    .with_error_code(ResponseError::InvalidTopicException.code())
                    .with_error_message(crate::topic_name::validate(&name).err().map(StrBytes::from_string)),
                TOPIC => match image.topic(&name) {
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!("Topic '{name}' does not exist.")))),
                    Some(t) => result.with_configs(
                        topic_defs()
                            .filter(|d| wanted(d))
                            .map(|def| {
                                let d = describe_topic_config(&config, &t.configs, def);
                                entry(def, d.value, d.source, d.synonyms)
                            })
                            .collect(),
                    ),
                },
                // The cluster default resource lists only the dynamic defaults that are set, as Kafka does.
                BROKER if name.is_empty() => result.with_configs(
                    image
                        .broker_config("")
                        .iter()
                        .filter_map(|(k, v)| find(k).filter(|d| d.scope == Scope::Broker).map(|d| (d, v)))
                        .filter(|(d, _)| wanted(d))
                        .map(|(def, v)| {
                            let source = ConfigSource::DynamicDefaultBroker;
                            entry(def, Some(v.clone()), source, vec![(def.name.to_string(), Some(v.clone()), source)])
                        })
                        .collect(),
                ),
                BROKER if name == broker.config.node_id.to_string() => result.with_configs(
                    broker_defs()
                        .filter(|d| wanted(d))
                        .map(|def| {
                            let (value, source) = config.broker_value(def.name);
                            let mut synonyms: Vec<_> = config
                                .set_values(def.name)
                                .into_iter()
                                .map(|(v, s)| (def.name.to_string(), Some(v), s))
                                .collect();
                            if def.default.is_some() {
                                synonyms.push((
                                    def.name.to_string(),
                                    def.default.map(str::to_string),
                                    ConfigSource::Default,
                                ));
                            }
                            entry(def, value, source, synonyms)
                        })
                        .collect(),
                ),
                BROKER => result.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(Some(
                    StrBytes::from_string(format!(
                        "Unexpected broker id, expected {} but received {name}",
                        broker.config.node_id
                    )),
                )),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!("Unsupported resource type {other}")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
