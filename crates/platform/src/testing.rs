//! Test support shared by the services' integration tests (feature `testing`):
//! a fresh database per test on either backend, an HTTP client that reads our
//! envelope, and a macro that runs a test body on SQLite and on PostgreSQL.

use std::net::{IpAddr, SocketAddr};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

/// Runs each named test body once per backend, as `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { body($crate::testing::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { body($crate::testing::Backend::Postgres).await }
            async fn body($backend: $crate::testing::Backend) $body
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Server for the PostgreSQL tests; `TEST_DATABASE_URL` overrides it.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test: a temp SQLite file, or a randomly named
/// PostgreSQL database dropped (with its connections) when this value drops.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        name: String,
    },
    /// Someone else's (a [`TemporaryPostgres`] the test owns): nothing to drop.
    None,
}

impl TestDatabase {
    /// # Panics
    /// When PostgreSQL is requested and cannot be reached: those tests fail, never skip.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("test.db").display());
                Self {
                    url,
                    cleanup: Cleanup::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let admin = admin_url();
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL tests need a server at {admin} (set TEST_DATABASE_URL): {e}")
                });
                let name = format!("test_{}", uuid::Uuid::new_v4().simple());
                // The name is ours (a UUID), so formatting it into SQL is safe.
                conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .await
                    .expect("create test database");
                let (base, _) = admin.rsplit_once('/').expect("admin url names a database");
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { name },
                }
            }
        }
    }
}

impl TestDatabase {
    /// A database the test manages itself; dropping this leaves it alone.
    pub fn external(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            cleanup: Cleanup::None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { name } = &self.cleanup {
            let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
            // Drop runs inside the test's runtime, which cannot block on itself.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                        let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                    }
                });
            })
            .join()
            .ok();
        }
    }
}

/// One HTTP answer, body parsed as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Words that would mean an answer leaks SQL, driver, panic or source details.
pub const INTERNALS: [&str; 15] = [
    "SELECT",
    "INSERT",
    "UPDATE users",
    "UPDATE orders",
    "sqlx",
    "SqlxError",
    "tokio_postgres",
    "deadpool",
    "panicked",
    ".rs:",
    "/src/",
    "constraint",
    "SQLSTATE",
    "syntax error at",
    "rust_decimal",
];

/// # Panics
/// When `text` contains one of [`INTERNALS`].
pub fn assert_no_internals(text: &str) {
    for word in INTERNALS {
        assert!(!text.contains(word), "leaks {word:?}: {text}");
    }
}

impl TestResponse {
    /// Asserts the error envelope like [`Self::assert_error`], and that the body
    /// gives nothing of the inside away; returns the message.
    ///
    /// # Panics
    /// When the status, code or envelope differ, or the body leaks internals.
    pub fn assert_clean_error(&self, status: u16, code: &str) -> String {
        let message = self.assert_error(status, code);
        assert_no_internals(&self.body.to_string());
        message
    }

    /// Asserts the error envelope with this status and code, and returns its message.
    ///
    /// # Panics
    /// When the answer is anything else.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["success"], false, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        self.body["error"]["message"]
            .as_str()
            .expect("error message")
            .to_owned()
    }

    /// The field names listed in `error.details`.
    pub fn invalid_fields(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A client for one running service.
#[derive(Clone)]
pub struct TestClient {
    pub address: SocketAddr,
    pub http: reqwest::Client,
}

/// A client whose connections come from `local` (any 127.x address works on
/// Linux), so tests can act as different client IPs.
pub fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .no_proxy()
        .build()
        .expect("client")
}

impl TestClient {
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            http: client_from(IpAddr::from([127, 0, 0, 1])),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// # Panics
    /// When the request cannot be sent at all.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> TestResponse {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// The raw `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// The value of one sample in Prometheus text output, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Asserts that the committed OpenAPI file (relative to the workspace root) is what
/// the code generates, and says how to regenerate it when not.
///
/// # Panics
/// When the file is missing, not JSON, or stale.
pub fn assert_committed_spec(manifest_dir: &str, service: &str, spec: &utoipa::openapi::OpenApi) {
    let relative = format!("docs/openapi/{service}.json");
    let path = std::path::Path::new(manifest_dir)
        .join("../..")
        .join(&relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let committed: Value = serde_json::from_str(&text).expect("committed spec is JSON");
    let generated = serde_json::to_value(spec).expect("spec serializes");
    assert!(
        committed == generated,
        "{relative} is stale: run `cargo run -q -p {service} -- --print-openapi > {relative}`"
    );
}

/// A throwaway PostgreSQL cluster of its own (`initdb` + `pg_ctl` in a temp dir, on
/// a free loopback port) that a test can stop and start again under load, which the
/// shared server on 5432 must never be. Stopped and removed on drop.
///
/// The binaries come from `PG_BIN`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin`. PostgreSQL refuses to run as root, so as
/// root every command runs as the `postgres` user (`runuser`), which owns the dir.
pub struct TemporaryPostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl TemporaryPostgres {
    /// Creates the cluster (trust auth, user `postgres`) and starts it.
    ///
    /// # Panics
    /// When the PostgreSQL binaries are missing or the cluster cannot start.
    pub async fn start() -> Self {
        blocking(Self::init).await
    }

    fn init() -> Self {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = std::fs::metadata(dir.path()).expect("temp dir").uid() == 0;
        let cluster = Self {
            bin: postgres_bin_dir(),
            port: free_port(),
            as_postgres,
            dir,
        };
        if as_postgres {
            run_checked(std::process::Command::new("chown").args(["postgres:", &cluster.path("")]));
        }
        run_checked(
            cluster
                .pg("initdb")
                .args(["-D", &cluster.path("data"), "-A", "trust", "-U", "postgres"])
                .args(["--no-sync", "-E", "UTF8", "--locale", "C"]),
        );
        run_checked(&mut cluster.start_command());
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server and waits until it is gone: `fast` (sessions terminated,
    /// clean shutdown) or `immediate` (as a crash: recovery on the next start).
    pub async fn stop(&self, mode: &str) {
        let mut command = self.pg("pg_ctl");
        command.args([
            "stop",
            "-w",
            "-t",
            "60",
            "-m",
            mode,
            "-D",
            &self.path("data"),
        ]);
        blocking(move || run_checked(&mut command)).await;
    }

    /// Starts it again on the same port and data; returns once it accepts connections.
    pub async fn restart(&self) {
        let mut command = self.start_command();
        blocking(move || run_checked(&mut command)).await;
    }

    fn start_command(&self) -> std::process::Command {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.path("")
        );
        let mut command = self.pg("pg_ctl");
        command.args(["start", "-w", "-t", "60", "-D", &self.path("data")]);
        command.args(["-l", &self.path("server.log"), "-o", &options]);
        command
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A command for one PostgreSQL binary, as the `postgres` user when we are root.
    fn pg(&self, name: &str) -> std::process::Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }
}

impl Drop for TemporaryPostgres {
    fn drop(&mut self) {
        // Best effort: the server may already be stopped; the dir goes either way.
        let _ = self
            .pg("pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D", &self.path("data")])
            .output();
    }
}

fn run_checked(command: &mut std::process::Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs blocking work (process spawning) off the async workers, so a test's load
/// keeps running while a cluster stops or starts.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}
fn postgres_bin_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return dir.into();
    }
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").exists());
    if let Some(dir) = from_pg_config {
        return dir;
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL binaries (initdb, pg_ctl): set PG_BIN or install PostgreSQL")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `check` every 20 ms until it holds, for at most `limit`; returns how long
/// it took, or `None` when it never held.
pub async fn poll_until<F, Fut>(
    limit: std::time::Duration,
    mut check: F,
) -> Option<std::time::Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One answer seen by a load generator, with when it was asked and answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub label: &'static str,
    pub started: std::time::Instant,
    pub finished: std::time::Instant,
    /// `None` when no HTTP answer came back (refused, reset, client timeout).
    pub status: Option<u16>,
    pub body: Value,
    pub error: Option<String>,
}

impl Answer {
    /// Sends `request` and records what came back; never panics.
    pub async fn of(label: &'static str, request: reqwest::RequestBuilder) -> Self {
        let started = std::time::Instant::now();
        let (status, body, error) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => (
                        Some(status),
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        None,
                    ),
                    Err(e) => (Some(status), Value::Null, Some(format!("body: {e}"))),
                }
            }
            Err(e) => (None, Value::Null, Some(format!("{e:?}"))),
        };
        Self {
            label,
            started,
            finished: std::time::Instant::now(),
            status,
            body,
            error,
        }
    }

    pub fn latency(&self) -> std::time::Duration {
        self.finished - self.started
    }

    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// `error.code` of an envelope, if any.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// `data.id` of a 201.
    pub fn created_id(&self) -> Option<i64> {
        (self.status == Some(201))
            .then(|| self.body["data"]["id"].as_i64())
            .flatten()
    }
}

/// A bounded concurrent load: `workers` tasks call `step(worker, n)` (which sends
/// a request or two and returns their answers) until stopped or until
/// `max_steps` steps in all have run.
pub struct Load {
    stop: tokio_util::sync::CancellationToken,
    answers: std::sync::Arc<std::sync::Mutex<Vec<Answer>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start<F, Fut>(workers: usize, max_steps: u64, step: F) -> Self
    where
        F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Vec<Answer>> + Send,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        let stop = tokio_util::sync::CancellationToken::new();
        let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let steps = std::sync::Arc::new(AtomicU64::new(0));
        let workers = (0..workers)
            .map(|worker| {
                let (stop, answers, steps, step) =
                    (stop.clone(), answers.clone(), steps.clone(), step.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let n = steps.fetch_add(1, Ordering::Relaxed);
                        if n >= max_steps {
                            break;
                        }
                        let got = step(worker, n).await;
                        answers.lock().expect("answers").extend(got);
                    }
                })
            })
            .collect();
        Self {
            stop,
            answers,
            workers,
        }
    }

    /// The answers so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().expect("answers").clone()
    }

    /// How many answers so far satisfy `predicate`.
    pub fn count(&self, predicate: impl Fn(&Answer) -> bool) -> usize {
        self.answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| predicate(a))
            .count()
    }

    /// Stops the workers after their current step and returns every answer.
    pub async fn finish(self) -> Vec<Answer> {
        self.stop.cancel();
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        std::mem::take(&mut *self.answers.lock().expect("answers"))
    }
}

/// A pool on the database at `url` (`postgres://…` or `sqlite:…`), for tests that
/// read what a service stored, bypassing it.
///
/// # Panics
/// When the URL is not one the services accept or the database cannot be reached.
pub async fn connect(url: &str) -> crate::db::Database {
    let lookup = |name: &str| (name == "T_DATABASE_URL").then(|| url.to_owned());
    let env = crate::config::Env::new("T", &lookup);
    let settings =
        crate::db::DatabaseSettings::from_env(&env, "test", "test").expect("a database URL");
    crate::db::connect(&settings)
        .await
        .expect("direct connection")
}
