//! `lychee-load`: drives real lychee-live nodes through the public API (REST
//! and WebSocket) and reports what buyers and viewers would see.

mod bare;
mod chat;
mod common;
mod costs;
mod drill;
mod http1;
mod idle;
mod report;
mod room;
mod rush;
mod rush_live;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lychee-load", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Write `<name>.json` and `<name>.html` here instead of JSON on stdout.
    #[arg(long, global = true)]
    out: Option<std::path::PathBuf>,
    /// Name of the report files (default: the scenario).
    #[arg(long, global = true)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Buyers rush one SKU until it is sold out, then keep trying.
    Rush(rush::RushArgs),
    /// Viewers in one room while many senders chat.
    Chat(chat::ChatArgs),
    /// A scripted host and two viewers, printing every frame (docs, smoke).
    Room(room::RoomArgs),
    /// Idle viewers: connect rate and the server's memory per viewer.
    Idle(idle::IdleArgs),
    /// A minimal broadcast server: the fan-out ceiling for `chat --bare`.
    BareServer(bare::BareArgs),
    /// Load kept running while faults are applied; invariants checked after each.
    Drill(drill::DrillArgs),
}

/// The load generator shares the machine with the nodes: keep it cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lychee_live::payments::install_crypto();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rush(a) => rush::run(a).await,
        Command::Chat(a) => chat::run(a).await,
        Command::Room(a) => room::run(a).await,
        Command::Idle(a) => idle::run(a).await,
        Command::BareServer(a) => bare::run(a).await,
        Command::Drill(a) => drill::run(a).await,
    };
    match result {
        Ok(report) => {
            let name = cli
                .name
                .unwrap_or_else(|| report["scenario"].as_str().unwrap_or("report").to_owned());
            match &cli.out {
                Some(dir) => {
                    if let Err(e) = report::write(dir, &name, &report) {
                        eprintln!("lychee-load: cannot write the report: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                    println!("{name}: {}", dir.join(format!("{name}.html")).display());
                    report::print_table(&report);
                }
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
            }
            if report["invariants_ok"] == true {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("lychee-load: invariants violated");
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("lychee-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
