//! The `strom` binary: the broker (`server`) and the operator tools (`topics`, `produce`, `consume`, `configs`,
//! `groups`, `transactions`, `perf`), the tools built on strom-client so they work against any Kafka-compatible broker.

mod configs;
mod connect_args;
mod consume;
mod groups;
mod perf;
mod produce;
mod server;
mod topics;
mod transactions;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "strom", version, about = "Strom: an event-streaming platform that speaks the Apache Kafka protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (single node: 127.0.0.1:9092, data in ./strom-data, unless configured otherwise).
    Server(server::ServerArgs),
    /// Create, list, describe, alter and delete topics (kafka-topics.sh).
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Send lines from stdin as records (kafka-console-producer.sh).
    Produce(produce::ProduceArgs),
    /// Print records of a topic (kafka-console-consumer.sh).
    Consume(consume::ConsumeArgs),
    /// Describe and alter topic and broker configs (kafka-configs.sh).
    #[command(subcommand)]
    Configs(configs::ConfigsCommand),
    /// List, describe (offsets, lag, members), delete consumer groups and reset their offsets
    /// (kafka-consumer-groups.sh).
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// List and describe transactions: state, producer, partitions and age (kafka-transactions.sh).
    #[command(subcommand)]
    Transactions(transactions::TransactionsCommand),
    /// Load generators (kafka-producer-perf-test / kafka-consumer-perf-test equivalents).
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Topics(cmd) => topics::run(cmd),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Configs(cmd) => configs::run(cmd),
        Command::Groups(cmd) => groups::run(cmd),
        Command::Perf(cmd) => perf::run(cmd),
        Command::Transactions(cmd) => transactions::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes joined with ": ".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
