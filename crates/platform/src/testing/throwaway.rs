//! Servers of a test's own (`nats-server`, `redis-server`) on a free loopback
//! port, for the fault tests that stop and start them under load: the machine's
//! shared servers must never be stopped.

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cluster::free_port;
use super::poll_until;

/// A throwaway server process. Killed on drop.
pub struct TemporaryServer {
    program: String,
    args: Vec<OsString>,
    scheme: &'static str,
    port: u16,
    child: Option<Child>,
    /// The store of a server that keeps one (NATS' JetStream), kept across restarts.
    _store: Option<tempfile::TempDir>,
}

impl TemporaryServer {
    /// `nats-server -js` (`NATS_SERVER` names another binary), its store in a
    /// temp dir kept across restarts.
    ///
    /// # Panics
    /// When `nats-server` (Debian package `nats-server`) is missing or does not start.
    pub async fn nats() -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
            .map(OsString::from)
            .into_iter()
            .chain([store.path().into()])
            .collect();
        let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        Self::start(program, args, "nats", port, Some(store)).await
    }

    /// `redis-server` without persistence: empty after each restart.
    ///
    /// # Panics
    /// When `redis-server` (Debian package `redis-server`) is missing or does not start.
    pub async fn redis() -> Self {
        let port = free_port();
        let args = ["--bind", "127.0.0.1", "--port", &port.to_string()]
            .into_iter()
            .chain(["--save", "", "--appendonly", "no"])
            .map(OsString::from)
            .collect();
        Self::start("redis-server".to_owned(), args, "redis", port, None).await
    }

    async fn start(
        program: String,
        args: Vec<OsString>,
        scheme: &'static str,
        port: u16,
        store: Option<tempfile::TempDir>,
    ) -> Self {
        let mut server = Self {
            program,
            args,
            scheme,
            port,
            child: None,
            _store: store,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Starts it (again, on the same port); returns once it accepts connections.
    pub async fn restart(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs (apt-get install it): {e}", self.program));
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let up = poll_until(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&address).await.is_ok()
        })
        .await;
        assert!(
            up.is_some(),
            "{} did not accept connections on {address}",
            self.program
        );
    }

    /// Kills it and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }
}

impl Drop for TemporaryServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
