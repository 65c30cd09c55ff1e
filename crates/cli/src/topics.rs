//! `strom topics create|list|describe|delete|alter`, with kafka-topics.sh's flags and output shape.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use strom_client::admin::{AlterOp, ConfigResource, ConfigSource, NewTopic};
use strom_client::{Admin, Error};

use crate::connect_args::{key_value, runtime, Bootstrap};

#[derive(Args, Clone)]
pub struct TopicName {
    /// The topic (also accepted as `--topic NAME`).
    #[arg(value_name = "TOPIC")]
    name: Option<String>,
    #[arg(long = "topic", conflicts_with = "name")]
    topic: Option<String>,
}

impl TopicName {
    fn get(&self) -> anyhow::Result<String> {
        self.name.clone().or_else(|| self.topic.clone()).context("a topic name is required (TOPIC or --topic)")
    }
}

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        #[command(flatten)]
        topic: TopicName,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Partition count (default: the broker's num.partitions).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        partitions: i32,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(long = "replication-factor", default_value_t = -1, allow_hyphen_values = true)]
        replication_factor: i16,
        /// A topic config, key=value (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        config: Vec<(String, String)>,
        /// Succeed when the topic already exists.
        #[arg(long = "if-not-exists")]
        if_not_exists: bool,
    },
    /// List topic names.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Leave out internal topics.
        #[arg(long = "exclude-internal")]
        exclude_internal: bool,
    },
    /// Describe one topic, or all.
    Describe {
        #[arg(value_name = "TOPIC")]
        name: Option<String>,
        #[arg(long = "topic", conflicts_with = "name")]
        topic: Option<String>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Delete a topic.
    Delete {
        #[command(flatten)]
        topic: TopicName,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Succeed when the topic does not exist.
        #[arg(long = "if-exists")]
        if_exists: bool,
    },
    /// Raise the partition count and/or change topic configs.
    Alter {
        #[command(flatten)]
        topic: TopicName,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// New (larger) partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic config, key=value (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        config: Vec<(String, String)>,
        /// Remove a topic config override (repeatable).
        #[arg(long = "delete-config")]
        delete_config: Vec<String>,
    },
}

pub fn run(cmd: TopicsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            TopicsCommand::Create { topic, bootstrap, partitions, replication_factor, config, if_not_exists } => {
                let name = topic.get()?;
                let admin = Admin::new(bootstrap.client_config()).await?;
                let mut t = NewTopic::new(&name, partitions, replication_factor);
                t.configs = config;
                match admin.create_topic(t).await {
                    Ok(()) => println!("Created topic {name}."),
                    Err(e) if if_not_exists && e.code() == Some(36) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            TopicsCommand::List { bootstrap, exclude_internal } => {
                let admin = Admin::new(bootstrap.client_config()).await?;
                for t in admin.list_topics(!exclude_internal).await? {
                    println!("{}", t.name);
                }
            }
            TopicsCommand::Describe { name, topic, bootstrap } => {
                let admin = Admin::new(bootstrap.client_config()).await?;
                let names = match name.or(topic) {
                    Some(n) => vec![n],
                    None => admin.list_topics(true).await?.into_iter().map(|t| t.name).collect(),
                };
                if names.is_empty() {
                    return Ok(());
                }
                for t in admin.describe_topics(&names).await? {
                    describe(&admin, &t).await?;
                }
            }
            TopicsCommand::Delete { topic, bootstrap, if_exists } => {
                let name = topic.get()?;
                let admin = Admin::new(bootstrap.client_config()).await?;
                match admin.delete_topic(&name).await {
                    Ok(()) => println!("Deleted topic {name}."),
                    Err(Error::UnknownTopic(_)) if if_exists => {}
                    Err(e) => return Err(e.into()),
                }
            }
            TopicsCommand::Alter { topic, bootstrap, partitions, config, delete_config } => {
                let name = topic.get()?;
                if partitions.is_none() && config.is_empty() && delete_config.is_empty() {
                    bail!("nothing to alter: give --partitions, --config or --delete-config");
                }
                let admin = Admin::new(bootstrap.client_config()).await?;
                if let Some(n) = partitions {
                    admin.create_partitions(&name, n, false).await?;
                    println!("Topic {name} now has {n} partitions.");
                }
                if !config.is_empty() || !delete_config.is_empty() {
                    let ops: Vec<AlterOp> = config
                        .into_iter()
                        .map(|(k, v)| AlterOp::Set(k, v))
                        .chain(delete_config.into_iter().map(AlterOp::Delete))
                        .collect();
                    admin.incremental_alter_configs(&ConfigResource::topic(&name), &ops, false).await?;
                    println!("Updated configs of topic {name}.");
                }
            }
        }
        Ok(())
    })
}

/// kafka-topics.sh --describe's layout: a topic line, then one tab-indented line per partition.
async fn describe(admin: &Admin, t: &strom_client::cluster::TopicInfo) -> anyhow::Result<()> {
    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
    let configs = admin.describe_configs(&ConfigResource::topic(&t.name), None).await?;
    let overrides: Vec<String> = configs
        .iter()
        .filter(|c| c.source == ConfigSource::DynamicTopic)
        .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("")))
        .collect();
    println!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
        t.name,
        t.id,
        t.partitions.len(),
        rf,
        overrides.join(",")
    );
    let list = |v: &[i32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    for p in &t.partitions {
        println!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            t.name,
            p.id,
            if p.leader >= 0 { p.leader.to_string() } else { "none".into() },
            list(&p.replicas),
            list(&p.isr)
        );
    }
    Ok(())
}
