//! `strom configs describe|alter` for topic and broker configs (kafka-configs.sh).

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use strom_client::admin::{AlterOp, ConfigResource, ConfigSource};
use strom_client::Admin;

use crate::connect_args::{key_value, runtime, Bootstrap};

#[derive(Clone, Copy, ValueEnum)]
pub enum EntityType {
    Topics,
    Brokers,
}

#[derive(Args, Clone)]
pub struct Entity {
    #[arg(long = "entity-type", value_enum)]
    entity_type: EntityType,
    /// Topic name or broker id.
    #[arg(long = "entity-name")]
    entity_name: Option<String>,
    /// The cluster-wide broker default (brokers only).
    #[arg(long = "entity-default")]
    entity_default: bool,
}

impl Entity {
    fn resource(&self) -> anyhow::Result<ConfigResource> {
        match (self.entity_type, &self.entity_name, self.entity_default) {
            (EntityType::Topics, Some(n), false) => Ok(ConfigResource::topic(n)),
            (EntityType::Brokers, Some(n), false) => Ok(ConfigResource::broker(n)),
            (EntityType::Brokers, None, true) => Ok(ConfigResource::broker("")),
            (EntityType::Topics, _, true) => bail!("--entity-default applies to brokers only"),
            _ => bail!("give --entity-name (or --entity-default for brokers)"),
        }
    }
}

#[derive(Subcommand)]
pub enum ConfigsCommand {
    /// Print configs: overrides only, or every config with --all.
    Describe {
        #[command(flatten)]
        entity: Entity,
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[arg(long)]
        all: bool,
    },
    /// Set or remove configs (IncrementalAlterConfigs).
    Alter {
        #[command(flatten)]
        entity: Entity,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// key=value pairs, comma-separated and/or repeated.
        #[arg(long = "add-config", value_delimiter = ',', value_parser = key_value)]
        add_config: Vec<(String, String)>,
        /// Keys to remove, comma-separated and/or repeated.
        #[arg(long = "delete-config", value_delimiter = ',')]
        delete_config: Vec<String>,
    },
}

pub fn run(cmd: ConfigsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            ConfigsCommand::Describe { entity, bootstrap, all } => {
                let resource = entity.resource()?;
                let admin = Admin::new(bootstrap.client_config()).await?;
                let entries = admin.describe_configs(&resource, None).await?;
                let what = match entity.entity_type {
                    EntityType::Topics => format!("topic {}", resource.name),
                    EntityType::Brokers if resource.name.is_empty() => "the default broker".to_string(),
                    EntityType::Brokers => format!("broker {}", resource.name),
                };
                println!("{} configs for {what} are:", if all { "All" } else { "Dynamic" });
                for c in entries {
                    let dynamic = matches!(
                        c.source,
                        ConfigSource::DynamicTopic | ConfigSource::DynamicBroker | ConfigSource::DynamicDefaultBroker
                    );
                    if !all && !dynamic {
                        continue;
                    }
                    let value = if c.sensitive { "null".to_string() } else { c.value.unwrap_or_else(|| "null".into()) };
                    println!("  {}={} sensitive={} source={}", c.name, value, c.sensitive, c.source.name());
                }
            }
            ConfigsCommand::Alter { entity, bootstrap, add_config, delete_config } => {
                let resource = entity.resource()?;
                if add_config.is_empty() && delete_config.is_empty() {
                    bail!("nothing to alter: give --add-config or --delete-config");
                }
                let ops: Vec<AlterOp> = add_config
                    .into_iter()
                    .map(|(k, v)| AlterOp::Set(k, v))
                    .chain(delete_config.into_iter().map(AlterOp::Delete))
                    .collect();
                let admin = Admin::new(bootstrap.client_config()).await?;
                admin.incremental_alter_configs(&resource, &ops, false).await?;
                println!(
                    "Completed updating config for {} {}.",
                    if resource.name.is_empty() { "default" } else { "entity" },
                    resource.name
                );
            }
        }
        Ok(())
    })
}
