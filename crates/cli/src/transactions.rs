//! `strom transactions list|describe|describe-producers`, with kafka-transactions.sh's columns: open transactions,
//! their partitions and how long they have been running, and per partition the producers and the start offset of
//! each one's open transaction (a stuck transaction holds read_committed consumers at its first offset).

use anyhow::bail;
use clap::Subcommand;
use strom_client::transaction_admin::ListTransactionsOptions;
use strom_client::{Admin, TopicPartition};

use crate::connect_args::{runtime, Bootstrap};

#[derive(Subcommand)]
pub enum TransactionsCommand {
    /// List transactional ids with their producer id and state, from every broker's transaction coordinator.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, ...).
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only transactions open for longer than this many milliseconds.
        #[arg(long = "duration-filter")]
        duration_filter: Option<i64>,
    },
    /// Describe transactional ids: state, producer id and epoch, timeout, start time and age, partitions.
    Describe {
        /// Transactional ids (also accepted as --transactional-id, as kafka-transactions.sh).
        ids: Vec<String>,
        #[arg(long = "transactional-id")]
        transactional_ids: Vec<String>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Describe the producers with state on one partition, with the start offset of any open transaction.
    DescribeProducers {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

pub fn run(cmd: TransactionsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            TransactionsCommand::List { bootstrap, states, duration_filter } => {
                let admin = Admin::new(bootstrap.client_config()).await?;
                let options =
                    ListTransactionsOptions { states, producer_ids: Vec::new(), duration_filter_ms: duration_filter };
                let list = admin.list_transactions(&options).await?;
                println!("{:<40} {:<12} {:<15} TransactionState", "TransactionalId", "Coordinator", "ProducerId");
                for t in list {
                    println!("{:<40} {:<12} {:<15} {}", t.transactional_id, t.coordinator_id, t.producer_id, t.state);
                }
                Ok(())
            }
            TransactionsCommand::Describe { mut ids, transactional_ids, bootstrap } => {
                ids.extend(transactional_ids);
                if ids.is_empty() {
                    bail!("give at least one transactional id");
                }
                let admin = Admin::new(bootstrap.client_config()).await?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                println!(
                    "{:<14} {:<30} {:<12} {:<14} {:<17} {:<28} {:<30} {:<22} TopicPartitions",
                    "CoordinatorId",
                    "TransactionalId",
                    "ProducerId",
                    "ProducerEpoch",
                    "TransactionState",
                    "CurrentTransactionTimeoutMs",
                    "CurrentTransactionStartTimeMs",
                    "TransactionDurationMs"
                );
                let mut failed = None;
                for (id, result) in admin.describe_transactions(&ids).await? {
                    match result {
                        Ok(d) => {
                            let (start, age) = if d.transaction_start_time_ms >= 0 {
                                (
                                    d.transaction_start_time_ms.to_string(),
                                    (now - d.transaction_start_time_ms).max(0).to_string(),
                                )
                            } else {
                                ("None".to_string(), "None".to_string())
                            };
                            let parts: Vec<String> = d.partitions.iter().map(|tp| tp.to_string()).collect();
                            println!(
                                "{:<14} {:<30} {:<12} {:<14} {:<17} {:<28} {:<30} {:<22} {}",
                                d.coordinator_id,
                                d.transactional_id,
                                d.producer_id,
                                d.producer_epoch,
                                d.state,
                                d.transaction_timeout_ms,
                                start,
                                age,
                                parts.join(",")
                            );
                        }
                        Err(e) => failed = Some(anyhow::anyhow!("describing transactional id '{id}': {e}")),
                    }
                }
                failed.map_or(Ok(()), Err)
            }
            TransactionsCommand::DescribeProducers { topic, partition, bootstrap } => {
                let admin = Admin::new(bootstrap.client_config()).await?;
                let producers = admin.describe_producers(&TopicPartition::new(topic, partition)).await?;
                println!(
                    "{:<12} {:<14} {:<23} {:<13} {:<16} CurrentTransactionStartOffset",
                    "ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence", "LastTimestamp"
                );
                for p in producers {
                    let start = p.current_transaction_start_offset.map_or("None".to_string(), |o| o.to_string());
                    println!(
                        "{:<12} {:<14} {:<23} {:<13} {:<16} {}",
                        p.producer_id, p.producer_epoch, p.coordinator_epoch, p.last_sequence, p.last_timestamp, start
                    );
                }
                Ok(())
            }
        }
    })
}
