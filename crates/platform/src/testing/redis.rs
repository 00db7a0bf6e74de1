//! Redis for the rate-limit tests: a key prefix of the test's own on the
//! machine's shared server, and a throwaway `redis-server` to stop and start
//! under load (the shared one must never be).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cluster::free_port;
use super::poll_until;

/// The shared server for the Redis tests; `TEST_REDIS_URL` overrides it.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses (its keys expire by themselves).
pub fn redis_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// A `redis-server` of the test's own on a free loopback port, without
/// persistence. Killed on drop.
pub struct TemporaryRedis {
    port: u16,
    child: Option<Child>,
}

impl TemporaryRedis {
    /// # Panics
    /// When `redis-server` (Debian package `redis-server`) is missing or does not start.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port, empty); returns once it accepts connections.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let up = poll_until(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&address).await.is_ok()
        })
        .await;
        assert!(
            up.is_some(),
            "redis-server did not accept connections on {address}"
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

impl Drop for TemporaryRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
