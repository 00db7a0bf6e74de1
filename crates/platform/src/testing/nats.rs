//! A throwaway `nats-server` of the test's own, to stop and start under load
//! (the machine's shared server must never be).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cluster::free_port;
use super::poll_until;

/// A `nats-server -js` of the test's own on a free loopback port, with its
/// store in a temp dir (kept across restarts). Killed on drop.
pub struct TemporaryNats {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl TemporaryNats {
    /// # Panics
    /// When `nats-server` (Debian package `nats-server`) is missing or does not start.
    pub async fn start() -> Self {
        let mut nats = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
        };
        nats.restart().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and store); returns once it accepts connections.
    pub async fn restart(&mut self) {
        let child =
            Command::new(std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned()))
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server runs (apt-get install nats-server)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let up = poll_until(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&address).await.is_ok()
        })
        .await;
        assert!(
            up.is_some(),
            "nats-server did not accept connections on {address}"
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

impl Drop for TemporaryNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
