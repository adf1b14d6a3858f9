//! The binary's start-up refusals: each exits non-zero with a one-line
//! reason on stderr, in colour only at a terminal without `NO_COLOR` —
//! among them an empty or short JWT secret, from the flag or the
//! environment; `--listen` takes a port, a host name or an address, and
//! names the forms when it refuses one. And `sugang token` prints a token the
//! server accepts, for a strong secret only.

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

#[test]
fn relaxed_durability_is_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = "cli-secret-cli-secret-cli-secret";
    let args = ["--listen", "0.0.0.0:0", "--jwt-secret", secret, "--durability", "relaxed", "--data-dir"];
    let (status, stderr) = serve_briefly(&[&args[..], &[data.to_str().unwrap()]].concat(), &[]);
    assert_eq!(status, Some(false), "it ran acknowledging before fsync on a public address: {stderr}");
    assert!(stderr.contains("relaxed") && stderr.contains("loopback"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
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

/// `sugang serve` run as its user runs it, over a fresh data directory;
/// killed when dropped.
pub(crate) struct Served {
    /// Where it logged it listens.
    pub(crate) addr: std::net::SocketAddr,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `sugang serve --listen <listen> <flags>` and waits until it
    /// logs where it listens and `/health/live` answers there.
    pub(crate) async fn start(listen: &str, secret: Option<&str>, flags: &[&str]) -> Served {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"));
        command
            .args(["serve", "--listen", listen, "--log-format", "json", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env_remove("SUGANG_JWT_SECRET")
            .env_remove("SUGANG_LISTEN")
            .env_remove("SUGANG_DATA_DIR")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(secret) = secret {
            command.env("SUGANG_JWT_SECRET", secret);
        }
        let mut child = command.spawn().expect("the binary runs");
        // The log goes to stderr.
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = stderr.next_line().await.expect("stderr reads") {
                seen.push(line.clone());
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if event["fields"]["message"] == "sugang is listening" {
                    return event["fields"]["addr"].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                }
            }
            None
        })
        .await;
        let Ok(Some(addr)) = addr else {
            let _ = child.kill().await;
            let status = child.wait().await;
            panic!("--listen {listen}: no 'sugang is listening' line ({status:?}): {seen:#?}");
        };
        // The rest of the log is not read: drain it so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let served = Served { addr, child, _dir: dir };
        let live = reqwest::get(served.url("/health/live")).await.expect("it answers where it listens");
        assert_eq!(live.status(), 200, "--listen {listen}");
        served
    }

    /// A URL on the server, reached over loopback when it listens on every address.
    pub(crate) fn url(&self, path: &str) -> String {
        let reach = if self.addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], self.addr.port()))
        } else {
            self.addr
        };
        format!("http://{reach}{path}")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where `sugang serve --listen <listen>` listens.
/// Relaxed durability for speed where it is allowed (loopback); the
/// default, fsync, elsewhere.
async fn listens_on(listen: &str, secret: Option<&str>) -> std::net::SocketAddr {
    let flags: &[&str] = if secret.is_none() { &["--durability", "relaxed"] } else { &[] };
    Served::start(listen, secret, flags).await.addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_bare_port_a_host_name_or_an_address() {
    let loopback_v4 = std::net::IpAddr::from([127, 0, 0, 1]);
    assert_eq!(listens_on("0", None).await.ip(), loopback_v4, "a bare port is loopback");
    assert_eq!(listens_on(":0", None).await.ip(), loopback_v4, ":PORT is loopback");
    assert!(listens_on("localhost:0", None).await.ip().is_loopback(), "localhost resolves to loopback");
    assert_eq!(listens_on("127.0.0.1:0", None).await.ip(), loopback_v4);
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        assert_eq!(listens_on("[::1]:0", None).await.ip(), std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    }
    let secret = "a-listen-test-secret-that-is-long-enough-for-any-check-0123456789";
    assert!(listens_on("0.0.0.0:0", Some(secret)).await.ip().is_unspecified());
}

#[test]
fn listen_refuses_other_forms_naming_the_accepted_ones() {
    for bad in ["nowhere", "localhost", "8080:", "99999", "::1:8080", "http://localhost:8080"] {
        let output = sugang(&["serve", "--listen", bad]);
        refused(&output, "--listen");
        refused(&output, "expected PORT, :PORT, HOST:PORT, IPv4:PORT or [IPv6]:PORT");
    }
}

#[test]
fn a_start_up_error_is_one_line_without_colour_when_piped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a store").unwrap();
    let output = sugang(&["serve", "--listen", "127.0.0.1:0", "--data-dir", file.to_str().unwrap()]);
    assert!(!output.status.success(), "{output:?}");
    let all = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.lines().count(), 1, "one line in all, on stdout and stderr together:\n{text}");
    assert!(text.contains("data directory"), "{text}");
    assert!(!all.contains(&0x1b), "no escape bytes when piped: {text:?}");
}

/// Runs `sugang serve` with a start-up error under a pseudo-terminal
/// (util-linux's `script`), so the log sees a terminal.
fn at_a_terminal(no_color: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a store").unwrap();
    let line = format!("{} serve --listen 127.0.0.1:0 --data-dir {}", env!("CARGO_BIN_EXE_sugang"), file.display());
    let mut command = Command::new("script");
    command.args(["-qec", &line, "/dev/null"]).env_remove("SUGANG_JWT_SECRET").env_remove("NO_COLOR");
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let output = command.output().expect("util-linux's script runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn colour_only_at_a_terminal_and_never_with_no_color() {
    let coloured = at_a_terminal(false);
    assert!(coloured.contains('\u{1b}'), "a terminal gets colour: {coloured:?}");
    assert_eq!(coloured.trim_end().lines().count(), 1, "printed once: {coloured:?}");
    let plain = at_a_terminal(true);
    assert!(plain.contains("data directory") && !plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}
