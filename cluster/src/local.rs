//! Local NATS servers for tests, benchmarks and demos: `nats-server`
//! processes (Debian's package, 2.9) started on free loopback ports, each in
//! its own temporary directory, and killed when the [`LocalNats`] is dropped.
//!
//! Owns those child processes and their directories, nothing else. It never
//! talks to a server it did not start, and never binds anything but
//! 127.0.0.1. `deploy/nats/cluster.sh` starts the same layout by hand.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why local servers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalNatsError {
    /// `nats-server` is not installed (`apt-get install nats-server`).
    #[error("could not run `{binary}` (install Debian's nats-server): {source}")]
    Spawn {
        /// The binary that was run.
        binary: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A temporary directory, a config file or a free port could not be had.
    #[error("could not prepare a local nats-server: {0}")]
    Io(#[from] std::io::Error),
    /// A server did not accept connections in time.
    #[error("nats-server {name} did not listen on 127.0.0.1:{port} within {waited:?}; its log:\n{log}")]
    NotListening {
        /// The server's name.
        name: String,
        /// Its client port.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// The tail of its log.
        log: String,
    },
}

/// One server of a [`LocalNats`].
struct Server {
    /// `n1`, `n2`, …: the JetStream server name, also in the logs.
    name: String,
    /// Where clients connect.
    port: u16,
    /// The route port the other servers of the cluster dial.
    cluster_port: u16,
    /// The running process, `None` once killed.
    child: Option<Child>,
    /// The config file, kept so a killed server can be started again.
    config: PathBuf,
    /// Its log file (`-l`), read when it fails to start.
    log: PathBuf,
}

/// One NATS server or a 3-server JetStream cluster on loopback, killed on drop.
pub struct LocalNats {
    /// Holds the servers' config, store and log directories; removed on drop.
    dir: tempfile::TempDir,
    /// The servers, in the order of [`LocalNats::urls`].
    servers: Vec<Server>,
}

impl LocalNats {
    /// One JetStream server (streams and buckets must be R1).
    pub fn single() -> Result<LocalNats, LocalNatsError> {
        LocalNats::start(1)
    }

    /// A 3-server JetStream cluster (streams and buckets may be R3).
    pub fn cluster3() -> Result<LocalNats, LocalNatsError> {
        LocalNats::start(3)
    }

    /// Starts `count` servers; a start that fails (a port taken between
    /// picking it and the server binding it) is tried again, three times in
    /// all.
    fn start(count: usize) -> Result<LocalNats, LocalNatsError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match LocalNats::try_start(count) {
                Err(LocalNatsError::NotListening { .. }) if tries < 3 => continue,
                result => return result,
            }
        }
    }

    fn try_start(count: usize) -> Result<LocalNats, LocalNatsError> {
        let dir = tempfile::Builder::new().prefix("sugang-nats-").tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..count * 2 {
            ports.push(free_port()?);
        }
        let mut servers = Vec::new();
        for i in 0..count {
            let name = format!("n{}", i + 1);
            let port = ports[i * 2];
            let cluster_port = ports[i * 2 + 1];
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store)?;
            let mut config = String::new();
            let _ = writeln!(config, "server_name: {name}");
            let _ = writeln!(config, "listen: 127.0.0.1:{port}");
            let _ = writeln!(config, "jetstream {{ store_dir: {:?} }}", store.display().to_string());
            if count > 1 {
                let routes: Vec<String> = (0..count)
                    .filter(|&j| j != i)
                    .map(|j| format!("nats-route://127.0.0.1:{}", ports[j * 2 + 1]))
                    .collect();
                let _ = writeln!(
                    config,
                    "cluster {{ name: sugang-test, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}",
                    routes.join(", ")
                );
            }
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config)?;
            let log = dir.path().join(format!("{name}.log"));
            servers.push(Server { name, port, cluster_port, child: None, config: path, log });
        }
        let mut nats = LocalNats { dir, servers };
        for i in 0..count {
            nats.spawn(i)?;
        }
        for i in 0..count {
            nats.wait_listening(i)?;
        }
        Ok(nats)
    }

    fn spawn(&mut self, i: usize) -> Result<(), LocalNatsError> {
        let binary = std::env::var("SUGANG_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_string());
        let server = &mut self.servers[i];
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&server.config)
            .arg("-l")
            .arg(&server.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LocalNatsError::Spawn { binary, source })?;
        server.child = Some(child);
        Ok(())
    }

    /// Waits until server `i` accepts connections, and is still running (a
    /// server that exited did not get its port: whatever answers is not it).
    fn wait_listening(&mut self, i: usize) -> Result<(), LocalNatsError> {
        let waited = Duration::from_secs(10);
        let start = Instant::now();
        while start.elapsed() < waited {
            let server = &mut self.servers[i];
            let exited = match server.child.as_mut() {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => true,
            };
            if exited {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let server = &self.servers[i];
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        Err(LocalNatsError::NotListening {
            name: server.name.clone(),
            port: server.port,
            waited,
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }

    /// The client URLs of every server, `nats://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| format!("nats://127.0.0.1:{}", s.port)).collect()
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].port)
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always false: there is at least one server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The route port of server `i` (the cluster's internal port).
    pub fn cluster_port(&self, i: usize) -> u16 {
        self.servers[i].cluster_port
    }

    /// SIGKILLs server `i` and waits for it to be gone. Its store stays, so
    /// [`LocalNats::restart`] brings it back with its data.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again after [`LocalNats::kill`], on the same ports
    /// and store.
    pub fn restart(&mut self, i: usize) -> Result<(), LocalNatsError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_listening(i)
    }

    /// Where the servers keep their stores and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A loopback port that was free a moment ago (bound to port 0, released).
fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
