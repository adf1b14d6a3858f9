//! `sugang store verify|backup`: the offline tools of an operator.
//!
//! `verify` opens a stopped store (every check [`Store::open`] makes) and
//! reads every record and event ([`Store::verify`]); `backup` writes a
//! consistent copy of a stopped store, or asks a running sugang to write one
//! (`POST /admin/backup`), since only the process that holds the directory
//! may read it. Owns nothing but the wording of what they print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sugang_storage::{Durability, OpenError, Store, StoreOptions, Verified};

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Check a stopped store: open it (damage is refused) and read every
    /// record and event; say what is wrong, or what is there.
    Verify(StoreArgs),
    /// Write a consistent copy of a stopped store, or of a running one
    /// through its `POST /admin/backup` (`--url`).
    Backup(BackupArgs),
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// The data directory.
    #[arg(long, env = "SUGANG_DATA_DIR", default_value = "./sugang-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where the copy goes: a new or empty directory.
    #[arg(long)]
    to: PathBuf,
    /// The running sugang that holds the store, e.g. http://127.0.0.1:8080:
    /// asked for the copy when the store is in use.
    #[arg(long, env = "SUGANG_URL")]
    url: Option<String>,
    /// The JWT secret of the running sugang, for an admin token.
    #[arg(long, env = "SUGANG_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

pub(crate) async fn run(command: StoreCommand) -> ExitCode {
    match command {
        StoreCommand::Verify(args) => verify(&args.data_dir),
        StoreCommand::Backup(args) => backup(args).await,
    }
}

fn open(dir: &Path) -> Result<Store, OpenError> {
    if !dir.is_dir() {
        return Err(OpenError::NotADirectory { path: dir.to_path_buf() });
    }
    Store::open(dir, StoreOptions { durability: Durability::Fsync, cache_capacity: 16 * 1024 * 1024 })
}

fn verify(dir: &Path) -> ExitCode {
    let store = match open(dir) {
        Ok(store) => store,
        Err(e @ OpenError::Locked { .. }) => {
            return crate::fail(format!("{e}: stop it first, or back it up with `sugang store backup --url`"));
        }
        Err(e) => return crate::fail(e),
    };
    match store.verify() {
        Ok(found) => {
            println!("{}: healthy: {}", dir.display(), describe(&found));
            ExitCode::SUCCESS
        }
        Err(e) => crate::fail(format!("{}: damaged: {e}", dir.display())),
    }
}

async fn backup(args: BackupArgs) -> ExitCode {
    let dir = &args.store.data_dir;
    match open(dir) {
        Ok(store) => match store.backup(&args.to) {
            Ok(copied) => {
                println!("{} → {}: {}", dir.display(), args.to.display(), describe(&copied));
                ExitCode::SUCCESS
            }
            Err(e) => crate::fail(e),
        },
        Err(e @ OpenError::Locked { .. }) => match &args.url {
            Some(url) => backup_running(url, args.jwt_secret.as_deref(), &args.to).await,
            None => {
                crate::fail(format!("{e}: give --url (SUGANG_URL) of the running sugang to have it write the copy"))
            }
        },
        Err(e) => crate::fail(e),
    }
}

/// Asks a running sugang for the copy: it holds the store, so it writes it.
async fn backup_running(url: &str, secret: Option<&str>, to: &Path) -> ExitCode {
    let to = match std::path::absolute(to) {
        Ok(to) => to,
        Err(e) => return crate::fail(format!("{}: {e}", to.display())),
    };
    let mut request = reqwest::Client::new()
        .post(format!("{}/admin/backup", url.trim_end_matches('/')))
        .json(&serde_json::json!({ "to": to }));
    if let Some(secret) = secret {
        let auth = match sugang_http::Auth::with_secret(secret) {
            Ok(auth) => auth,
            Err(e) => return crate::fail(e),
        };
        let token =
            match auth.issue(sugang_http::Role::Admin, "sugang-store-backup", std::time::Duration::from_secs(60)) {
                Ok(token) => token,
                Err(e) => return crate::fail(e),
            };
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            let body = response.text().await.unwrap_or_default();
            println!("{url} → {}: {body}", to.display());
            ExitCode::SUCCESS
        }
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            crate::fail(format!("{url} refused the backup: {status} {body}"))
        }
        Err(e) => crate::fail(format!("cannot reach {url}: {e}")),
    }
}

fn describe(found: &Verified) -> String {
    format!(
        "{} records, {} events (seq {}..={}), {:.1} MB on disk",
        found.records,
        found.events,
        found.first_seq.unwrap_or(0),
        found.last_seq,
        found.disk_bytes as f64 / 1e6
    )
}
