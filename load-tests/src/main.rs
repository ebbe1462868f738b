//! `lychee-load`: drives real lychee-live nodes through the public API (REST
//! and WebSocket) and reports what buyers and viewers would see.

mod chat;
mod common;
mod idle;
mod room;
mod rush;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lychee-load", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Rush(a) => rush::run(a).await,
        Command::Chat(a) => chat::run(a).await,
        Command::Room(a) => room::run(a).await,
        Command::Idle(a) => idle::run(a).await,
    };
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
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
