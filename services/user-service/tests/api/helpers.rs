//! Spawns the real user-service on an ephemeral port over a fresh database.

use std::ops::Deref;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use user_service::{Application, Config, UserService};

pub use platform::testing::{
    Backend, RunningService, TestAuth, TestClient, TestDatabase, client_from,
};

/// A running service, a client for it (with an admin token), and its database.
pub struct TestApp {
    /// Its `client` sends the operator's admin token on every request.
    pub service: RunningService,
    /// That token, for requests built by hand.
    pub admin_token: String,
    /// The settings the service runs with (its client secrets, for tests that need them).
    pub config: Config,
    /// Kept so the database outlives the app; dropped (and removed) after it.
    _database: TestDatabase,
}

impl Deref for TestApp {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.service
    }
}

/// Test variables on top of the defaults: ephemeral port, loopback, limiter
/// off, the test process's signing key and secrets.
pub fn config_with(database_url: &str, overrides: &[(&str, &str)]) -> Config {
    let variables = [("USER_SERVICE_DATABASE_STARTUP_TIMEOUT", "5")];
    platform::testing::test_config::<UserService>(database_url, &[&variables, overrides].concat())
}

/// The signing key and client secrets of this test process (tests of key
/// handling pass their own).
pub static TEST_AUTH: std::sync::LazyLock<&'static TestAuth> =
    std::sync::LazyLock::new(platform::testing::test_auth);

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Spawns the service with extra `USER_SERVICE_*` / `AUTH_*` variables.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let config = config_with(&database.url, overrides);
    let service = RunningService::spawn(config.clone()).await;
    with_admin_token(service, config, database)
}

/// Runs an already built application in the background.
pub fn start(
    app: Application,
    shutdown: CancellationToken,
    database: TestDatabase,
    config: Config,
) -> TestApp {
    with_admin_token(RunningService::start(app, shutdown), config, database)
}

/// Gives the service's client an admin token of the operator client, signed
/// with the service's key (as the token endpoint would, without spending a
/// rate-limit token on it).
fn with_admin_token(
    mut service: RunningService,
    config: Config,
    database: TestDatabase,
) -> TestApp {
    let token = user_service::auth::issuer::TokenIssuer::new(&config.own.auth)
        .issue(&config.own.auth.operator.id, &[platform::auth::Role::Admin])
        .expect("admin token")
        .access_token;
    service.client = service.client.with_token(&token);
    TestApp {
        service,
        admin_token: token,
        config,
        _database: database,
    }
}

impl TestApp {
    /// Where the service keeps its users, for writing and reading behind its back.
    pub fn database_url(&self) -> &str {
        &self._database.url
    }

    /// A token for a client of this service, with `roles` (all of the client's when empty).
    pub async fn token_for(&self, client_id: &str, secret: &str, roles: &[&str]) -> String {
        let mut body = json!({"client_id": client_id, "client_secret": secret});
        if !roles.is_empty() {
            body["roles"] = json!(roles);
        }
        self.anonymous()
            .post_json("/api/v1/auth/token", &body)
            .await
            .access_token()
    }

    /// A client with the service client's token (role `service`).
    pub async fn as_service(&self) -> TestClient {
        let service = &self.config.own.auth.service;
        let token = self
            .token_for(&service.id, service.secret.expose(), &[])
            .await;
        self.client.with_token(&token)
    }

    /// Registers a user with a password (no token), logs in, and returns the
    /// user's `data` and a client carrying its token.
    pub async fn user_session(&self, email: &str, password: &str) -> (Value, TestClient) {
        let (user, token) = self.client.register_and_log_in(email, password).await;
        (user, self.client.with_token(&token))
    }

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
        let mut child = Self::command(&dir)
            .env("USER_SERVICE_DATABASE_URL", database_url)
            .envs(TEST_AUTH.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(overrides.iter().copied())
            .spawn()
            .expect("user-service binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let address = listening_address(stdout);
        Self {
            client: TestClient::new(address),
            child,
            _dir: dir,
        }
    }

    /// The binary in `dir`, with no environment but `PATH`: on the loopback
    /// address, port 0, log level `info`, the rate limiter off, stdout piped.
    fn command(dir: &tempfile::TempDir) -> std::process::Command {
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
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        command
    }

    /// A client for the process that carries the operator's admin token.
    pub async fn admin_client(&self) -> TestClient {
        let token = self
            .client
            .client_token("operator", TEST_AUTH.var("AUTH_CLIENT_SECRET"))
            .await;
        self.client.with_token(&token)
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

/// Another instance over the database at `url`, as a second replica would run
/// (the database belongs to whoever created it).
pub async fn spawn_replica(url: &str, overrides: &[(&str, &str)]) -> TestApp {
    let config = config_with(url, overrides);
    let shutdown = CancellationToken::new();
    let app = Application::build(config.clone(), shutdown.clone())
        .await
        .expect("application starts");
    start(app, shutdown, TestDatabase::external(url), config)
}

/// Every line a process wrote to stdout and stderr, kept as it arrives.
#[derive(Clone, Default)]
pub struct ProcessLog(std::sync::Arc<std::sync::Mutex<ProcessLogState>>);

#[derive(Default)]
struct ProcessLogState {
    lines: Vec<String>,
    closed_streams: usize,
}

impl ProcessLog {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log lock").lines.clone()
    }

    /// The lines that are JSON log entries.
    pub fn entries(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits (at most `limit`) until both streams are closed, i.e. the process
    /// has exited and every line it wrote is here.
    pub async fn wait_closed(&self, limit: std::time::Duration) -> bool {
        platform::testing::poll_until(limit, || async {
            self.0.lock().expect("log lock").closed_streams == 2
        })
        .await
        .is_some()
    }

    /// Reads `stream` line by line on a thread; sends the address of the
    /// `listening` line to `listening`, when given.
    fn keep(
        &self,
        stream: impl std::io::Read + Send + 'static,
        mut listening: Option<std::sync::mpsc::Sender<String>>,
    ) {
        use std::io::BufRead;
        let log = self.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "listening"
                    && let Some(sender) = listening.take()
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = sender.send(address.to_owned());
                }
                log.0.lock().expect("log lock").lines.push(line);
            }
            log.0.lock().expect("log lock").closed_streams += 1;
        });
    }
}

impl ServiceProcess {
    /// Starts the binary with the loopback address, port 0, log level `info`,
    /// the rate limiter off, and otherwise only `vars`: no test secrets, so
    /// without `AUTH_*` the embedded default's own are used. Every line it
    /// writes is kept in the returned log.
    pub fn spawn_bare(vars: &[(&str, &str)]) -> (Self, ProcessLog) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Self::command(&dir)
            .envs(vars.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("user-service binary starts");
        let log = ProcessLog::default();
        let (sender, address) = std::sync::mpsc::channel();
        log.keep(child.stdout.take().expect("stdout"), Some(sender));
        log.keep(child.stderr.take().expect("stderr"), None);
        let address = address
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("user-service never logged `listening`: {:?}", log.lines()));
        let process = Self {
            client: TestClient::new(address.parse().expect("a socket address")),
            child,
            _dir: dir,
        };
        (process, log)
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 7515), to build tokens by hand.
pub fn base64url(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (i, byte)| {
            group | u32::from(*byte) << (16 - 8 * i)
        });
        for i in 0..=chunk.len() {
            text.push(char::from(BASE64URL[(group >> (18 - 6 * i) & 63) as usize]));
        }
    }
    text
}

/// The bytes of unpadded base64url text, to read a token's parts.
///
/// # Panics
/// On a character outside the base64url alphabet.
pub fn from_base64url(text: &str) -> Vec<u8> {
    let (mut bits, mut held, mut bytes) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let value = BASE64URL
            .iter()
            .position(|b| *b == c)
            .unwrap_or_else(|| panic!("not base64url: {text}"));
        bits = (bits << 6 | value as u32) & 0xFFFF;
        held += 6;
        if held >= 8 {
            held -= 8;
            bytes.push((bits >> held) as u8);
        }
    }
    bytes
}

/// The JSON of a JWT's header (part 0) or payload (part 1).
pub fn jwt_part(token: &str, part: usize) -> Value {
    let segment = token.split('.').nth(part).expect("a JWT part");
    serde_json::from_slice(&from_base64url(segment)).expect("a JSON part")
}

impl TestApp {
    /// A token signed with this service's key: the claims it issues itself
    /// (subject `sub`, role `user`, valid for 15 minutes), with `overrides`
    /// replacing or (as null) removing some.
    pub fn sign_claims(&self, sub: &str, overrides: Value) -> String {
        let now = platform::auth::unix_now();
        let mut claims = json!({
            "iss": self.config.own.auth.verifier.issuer, "aud": self.config.own.auth.verifier.audience,
            "sub": sub, "roles": ["user"], "iat": now, "nbf": now, "exp": now + 900,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        for (name, value) in overrides.as_object().expect("claim overrides") {
            match value {
                Value::Null => claims.as_object_mut().expect("claims").remove(name),
                _ => claims
                    .as_object_mut()
                    .expect("claims")
                    .insert(name.clone(), value.clone()),
            };
        }
        self.config
            .own
            .auth
            .signing_key
            .sign(&claims)
            .expect("signed token")
    }
}
