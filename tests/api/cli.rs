//! The binary's start-up refusals: each exits non-zero with a one-line
//! reason on stderr — among them an empty or short JWT secret, from the
//! flag or the environment. And `sugang token` prints a token the server
//! accepts, for a strong secret only.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Runs `sugang serve` with `args` and `env`; a server that is still
/// running after 10 s (it accepted its configuration) is killed and its
/// output returned with a success status of None.
fn serve_briefly(args: &[&str], env: &[(&str, &str)]) -> (Option<bool>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sugang"));
    command.arg("serve").args(args).env_remove("SUGANG_JWT_SECRET").env_remove("SUGANG_LISTEN");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait().expect("the child can be waited for") {
            Some(status) => break Some(status.success()),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

#[test]
fn serve_refuses_an_empty_or_short_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let short = "x".repeat(31);
    /// What is tried, the flags, the environment, and what the refusal says.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 5] = [
        ("--jwt-secret \"\"", vec!["--listen", "0.0.0.0:0", "--jwt-secret", ""], vec![], "empty"),
        ("SUGANG_JWT_SECRET=\"\"", vec!["--listen", "0.0.0.0:0"], vec![("SUGANG_JWT_SECRET", "")], "empty"),
        ("a 6-byte secret", vec!["--listen", "0.0.0.0:0", "--jwt-secret", "s3cret"], vec![], "6 bytes"),
        ("a 31-byte secret", vec!["--listen", "127.0.0.1:0"], vec![("SUGANG_JWT_SECRET", short.as_str())], "31 bytes"),
        ("a short secret on loopback", vec!["--listen", "127.0.0.1:0", "--jwt-secret", "abc"], vec![], "3 bytes"),
    ];
    for (what, mut args, env, reason) in cases {
        args.extend(["--data-dir", data]);
        let (status, stderr) = serve_briefly(&args, &env);
        assert_eq!(status, Some(false), "{what}: the server ran with it ({stderr})");
        assert!(stderr.contains(reason), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    }
    assert!(!dir.path().join("data").exists(), "refused before the data directory was opened");
}

const CLI_SECRET: &str = "cli-secret-cli-secret-cli-secret";

#[test]
fn token_prints_a_token_for_the_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["token", "--role", "student", "--sub", "Kim-Soon-hee", "--ttl-secs", "60"])
        .env("SUGANG_JWT_SECRET", CLI_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    // Same secret, same shape of token as the server verifies.
    let mine = Auth::with_secret(CLI_SECRET).unwrap().issue(Role::Student, "Kim-Soon-hee", Duration::from_secs(60));
    assert_eq!(mine.unwrap().split('.').next(), token.trim().split('.').next());
    refused(&sugang(&["token", "--role", "student", "--sub", "Kim"]), "jwt-secret");
    refused(&sugang(&["token", "--role", "janitor", "--sub", "Kim", "--jwt-secret", "s"]), "--role");
    refused(&sugang(&["token", "--role", "admin", "--sub", "root", "--jwt-secret", "s"]), "1 bytes");
    refused(&sugang(&["token", "--role", "admin", "--sub", "root", "--jwt-secret", ""]), "empty");
}
