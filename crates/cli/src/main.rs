//! The `strom` binary.

mod perf;
mod server;

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
    /// Load generators (kafka-producer-perf-test / kafka-consumer-perf-test equivalents).
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::run(args),
        Command::Perf(cmd) => perf::run(cmd),
    }
}
