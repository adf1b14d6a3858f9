//! The `sugang` binary: parse the command line, set up tracing, run.
//!
//! `serve` opens the data directory, starts the supervision tree (resuming or
//! compensating any saga the last run left unfinished) and runs until SIGINT
//! or SIGTERM, then stops the tree and the journal cleanly. The HTTP front of
//! shared/API.md is built by a later issue; until then `serve` runs the actor
//! system and its recovery without a listener, and says so.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sugang_actors::{Config, Sugang};

#[derive(Parser)]
#[command(name = "sugang", version, about = "Online course enrollment as an actor system on a supervision tree")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// The data directory (a sled store), created if missing.
        #[arg(long, env = "SUGANG_DATA_DIR", default_value = "./sugang-data")]
        data_dir: PathBuf,
        /// How long a payment gateway call may take, in milliseconds.
        #[arg(long, env = "SUGANG_PAYMENT_TIMEOUT_MS", default_value_t = 1000)]
        payment_timeout_ms: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { data_dir, payment_timeout_ms } => {
            let mut config = Config::new(data_dir);
            config.payment.timeout = std::time::Duration::from_millis(payment_timeout_ms);
            let system = match Sugang::start(config).await {
                Ok(system) => system,
                Err(e) => {
                    eprintln!("sugang: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(last_seq = system.last_seq(), "sugang is running (no HTTP listener yet: issue 5)");
            wait_for_signal().await;
            tracing::info!("stopping");
            system.shutdown().await;
            ExitCode::SUCCESS
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops sugang");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
