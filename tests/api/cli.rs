//! The binary's start-up refusals: each exits non-zero with a one-line
//! reason on stderr. And `sugang token` prints a token the server accepts.

use std::process::{Command, Output};

use sugang_http::{Auth, Role};

fn sugang(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(args)
        .env_remove("SUGANG_JWT_SECRET")
        .env_remove("SUGANG_LISTEN")
        .env_remove("SUGANG_DATA_DIR")
        .output()
        .expect("the binary runs")
}

#[track_caller]
fn refused(output: &Output, reason: &str) {
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(reason), "{stderr}");
}

#[test]
fn serve_refuses_bad_starts_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let open_beyond_loopback = sugang(&["serve", "--listen", "0.0.0.0:0", "--data-dir", data]);
    refused(&open_beyond_loopback, "without a JWT secret");
    assert_eq!(String::from_utf8_lossy(&open_beyond_loopback.stderr).lines().count(), 1);

    refused(&sugang(&["serve", "--listen", "nowhere"]), "--listen");
    refused(&sugang(&["serve", "--payment-timeout-ms", "soon"]), "--payment-timeout-ms");
    refused(&sugang(&["serve", "--log-format", "xml"]), "--log-format");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    refused(&sugang(&["serve", "--listen", &addr, "--data-dir", data]), "cannot listen");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a store").unwrap();
    let not_a_dir = sugang(&["serve", "--listen", "127.0.0.1:0", "--data-dir", file.to_str().unwrap()]);
    refused(&not_a_dir, "data directory");
    assert_eq!(String::from_utf8_lossy(&not_a_dir.stderr).lines().count(), 1, "{not_a_dir:?}");
}

#[test]
fn token_prints_a_token_for_the_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["token", "--role", "student", "--sub", "Kim-Soon-hee", "--ttl-secs", "60"])
        .env("SUGANG_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    // Same secret, same shape of token as the server verifies.
    let mine = Auth::with_secret("cli-secret").issue(Role::Student, "Kim-Soon-hee", std::time::Duration::from_secs(60));
    assert_eq!(mine.unwrap().split('.').next(), token.trim().split('.').next());
    refused(&sugang(&["token", "--role", "student", "--sub", "Kim"]), "jwt-secret");
    refused(&sugang(&["token", "--role", "janitor", "--sub", "Kim", "--jwt-secret", "s"]), "--role");
}
