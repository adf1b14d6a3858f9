//! The `sugang` binary: parse the command line, set up tracing, run.
//!
//! `serve` binds the listener and answers on it at once (readiness 503)
//! while it opens the data directory and starts the supervision tree
//! (resuming or compensating any saga the last run left unfinished), then
//! serves the API until SIGINT or SIGTERM, drains and flushes. `token`
//! prints a bearer token for the configured secret.
//!
//! # Layout
//!
//! - `cli`: the flags and what they configure.
//! - `demo`: `sugang demo <scenario>`, fault injection narrated and checked.
//! - `memory`: glibc's arenas capped and freed memory trimmed, for `serve`.
//! - `rush`: the registration-rush load generator and its invariant check.

/// With the `mimalloc` feature: mimalloc instead of glibc's malloc (see
/// `memory`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod cluster;
mod demo;
mod memory;
mod rush;
mod store;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cli::{Cli, Command, LogFormat, ServeArgs, TokenArgs};
use sugang_actors::Sugang;
use sugang_http::Auth;

fn main() -> ExitCode {
    let command = Cli::parse().command;
    if matches!(command, Command::Serve(_)) {
        memory::cap_arenas();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the tokio runtime: {e}")),
    };
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve(*args).await,
            Command::Token(args) => token(args),
            Command::Demo { scenario } => demo::run(scenario).await,
            Command::Rush(args) => rush::run(*args).await,
            Command::Store(command) => store::run(command).await,
        }
    })
}

async fn serve(args: ServeArgs) -> ExitCode {
    init_tracing(args.log_format);
    sugang_http::install_metrics();
    memory::trim_periodically();
    let signal = shutdown_signal();
    let config = match args.serve_config() {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    if let Err(e) = config.check_listen(args.listen) {
        return fail(e);
    }
    if let Err(e) = args.check_durability() {
        return fail(e);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.listen)),
    };
    let mut config = config;
    let mut released = None;
    let sugang = match args.node_options() {
        None => {
            let started = sugang_http::answer_while_starting(&listener, Sugang::start(args.config())).await;
            match started {
                Ok(Ok(sugang)) => sugang,
                Ok(Err(e)) => return fail(format!("cannot use data directory {}: {e}", args.data_dir.display())),
                Err(e) => return fail(e),
            }
        }
        Some(options) => {
            if config.auth.is_open()
                && let Some(url) = options.urls.iter().find(|url| !cluster::is_loopback_url(url))
            {
                return fail(format!(
                    "refusing --nats {url} without --jwt-secret: a node forwards the commands it receives over \
                     NATS, so open mode is for NATS servers on loopback only"
                ));
            }
            let node = options.node.clone();
            let started = sugang_http::answer_while_starting(&listener, cluster::start(options, args.config())).await;
            match started {
                Ok(Ok(started)) => {
                    tracing::info!(node = %node, "joined the cluster");
                    config.cluster = Some(started.link);
                    config.forwarded = Some(started.forwarded);
                    released = Some(started.released);
                    started.sugang
                }
                Ok(Err(e)) => return fail(format!("cannot join the cluster as node {node}: {e}")),
                Err(e) => return fail(e),
            }
        }
    };
    tracing::info!(last_seq = sugang.last_seq(), data_dir = %args.data_dir.display(), "sugang started");
    if matches!(args.durability, cli::DurabilityArg::Relaxed) {
        tracing::warn!(
            flush_every_ms = 100,
            "durability is relaxed: writes are acknowledged before they are on disk, and a crash loses \
             up to 100 ms of acknowledged enrollments (for tests and demos only)"
        );
    }
    let served = sugang_http::serve(listener, sugang, config, signal).await;
    if let Some(released) = released {
        // A primary that stops gives its lease up for a takeover at once.
        let _ = tokio::time::timeout(Duration::from_secs(2), released).await;
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let auth = match Auth::with_secret(&args.jwt_secret) {
        Ok(auth) => auth,
        Err(e) => return fail(e),
    };
    match auth.issue(args.role.into(), &args.sub, Duration::from_secs(args.ttl_secs)) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// One line on stderr, and a failing exit code: through the log once it is
/// set up (so a JSON log stays JSON), else plainly. Never both: stdout and
/// stderr often end up on the same terminal or in the same journal.
fn fail(reason: impl std::fmt::Display) -> ExitCode {
    let line = reason.to_string().replace('\n', " ");
    if tracing::dispatcher::has_been_set() && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(reason = %line, "sugang could not run");
    } else {
        eprintln!("sugang: {line}");
    }
    ExitCode::FAILURE
}

/// Log lines go to stderr (stdout is for what a command prints, like
/// `token`), coloured only for a person at a terminal who has not set
/// `NO_COLOR`.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour_wanted());
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}

/// Colour when stderr is a terminal and `NO_COLOR` (https://no-color.org)
/// is unset or empty.
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// SIGTERM or SIGINT. The handlers are installed now, before anything
/// starts, so a signal that arrives while the store opens is not lost (nor
/// fatal); the returned future completes on the first one.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                tracing::warn!(error = %e, "cannot listen for one of SIGTERM and SIGINT");
                one.recv().await;
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot listen for signals; stop sugang with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutdown signal received");
    }
}
