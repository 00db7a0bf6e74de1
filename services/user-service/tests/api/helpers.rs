//! Spawns the real user-service on an ephemeral port over a fresh database.

use std::ops::Deref;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use user_service::{Application, Config, UserService};

pub use platform::testing::{Backend, RunningService, TestClient, TestDatabase, client_from};

/// A running service, a client for it, and its database.
pub struct TestApp {
    pub service: RunningService,
    /// Kept so the database outlives the app; dropped (and removed) after it.
    _database: TestDatabase,
}

impl Deref for TestApp {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.service
    }
}

/// Test variables on top of the defaults: ephemeral port, loopback, limiter off.
pub fn config_with(database_url: &str, overrides: &[(&str, &str)]) -> Config {
    let variables = [("USER_SERVICE_DATABASE_STARTUP_TIMEOUT", "5")];
    platform::testing::test_config::<UserService>(database_url, &[&variables, overrides].concat())
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Spawns the service with extra `USER_SERVICE_*` variables.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let config = config_with(&database.url, overrides);
    TestApp {
        service: RunningService::spawn(config).await,
        _database: database,
    }
}

/// Runs an already built application in the background.
pub fn start(app: Application, shutdown: CancellationToken, database: TestDatabase) -> TestApp {
    TestApp {
        service: RunningService::start(app, shutdown),
        _database: database,
    }
}

impl TestApp {
    /// Creates a user and returns its `data`, asserting 201.
    pub async fn create_user(&self, email: &str, name: &str, age: i64) -> Value {
        let response = self
            .post_json(
                "/api/v1/users",
                &json!({ "email": email, "name": name, "age": age }),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body["data"].clone()
    }
}

/// The real `user-service` binary, run as a child process: for what only a
/// process shows (signals, exit status).
pub struct ServiceProcess {
    pub client: TestClient,
    pub child: std::process::Child,
    /// The working directory (so no stray `.env` or `./data` is picked up).
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts the binary on a free loopback port with these `USER_SERVICE_*`
    /// variables, and returns once it logs the address it listens on.
    pub fn spawn(database_url: &str, overrides: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"));
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("USER_SERVICE_HOST", "127.0.0.1"),
                ("USER_SERVICE_PORT", "0"),
                ("USER_SERVICE_RATE_LIMIT", "0"),
                ("USER_SERVICE_LOG_LEVEL", "info"),
                ("USER_SERVICE_DATABASE_URL", database_url),
            ])
            .envs(overrides.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        let mut child = command.spawn().expect("user-service binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let address = listening_address(stdout);
        Self {
            client: TestClient::new(address),
            child,
            _dir: dir,
        }
    }

    /// Sends SIGTERM, as an orchestrator stopping the pod would.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Polls for the exit status for at most `limit`.
    pub async fn wait_exit(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the JSON log until the `listening` line and returns its address; a
/// thread keeps draining the log after that, so the service never blocks on a
/// full pipe.
fn listening_address(stdout: std::process::ChildStdout) -> std::net::SocketAddr {
    use std::io::BufRead;
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "listening"
                && let Some(sender) = found.take()
            {
                let _ = sender.send(entry["fields"]["address"].as_str().map(str::to_owned));
            }
        }
    });
    let address = address
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("user-service logs `listening` within 60 s")
        .expect("the listening line has an address");
    address.parse().expect("a socket address")
}
