//! A PostgreSQL cluster of the test's own, to stop and start under load, and
//! the outage scenario both services' fault tests run on it.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;

use super::{
    Answer, Load, TestClient, assert_documented, assert_eventually, created_ids, poll_until,
};

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

/// When an outage made by [`database_outage_under_load`] began, ended, and
/// when the service was whole again; what the load saw.
pub struct Outage {
    pub down: std::time::Instant,
    pub up: std::time::Instant,
    pub recovered: std::time::Instant,
    /// From the stop to the first failing readiness probe.
    pub ready_failed_after: Duration,
    /// From the restart to the first successful answer, and to full recovery.
    pub first_success_after: Option<Duration>,
    pub recovered_after: Duration,
    /// Every answer of the load, and their count per status.
    pub answers: Vec<Answer>,
    pub statuses: BTreeMap<u16, usize>,
    /// The ids the load was told were created (each once): what must not be lost.
    pub created: Vec<i64>,
}

/// Once `load` is running (20 answers of 201), stops `postgres` (`mode`:
/// `fast`, or `immediate` for a crash) and proves the service noticed:
/// readiness fails and the load sees 503s. Then restarts it and waits, up to
/// `recovery`, until the service is ready and the load has had a successful
/// `write` and `read` (answer labels) again; keeps the load on a little longer,
/// then stops it and checks its answers: each a 200, a 201 or a 503 envelope
/// within `max_latency`, each asked after recovery a success, and no id created
/// twice.
///
/// # Panics
/// When any of that does not happen in time.
pub async fn database_outage_under_load(
    postgres: &TemporaryPostgres,
    mode: &str,
    service: &TestClient,
    load: Load,
    (write, read): (&str, &str),
    recovery: Duration,
    max_latency: Duration,
) -> Outage {
    assert_eventually(
        Duration::from_secs(30),
        || async { load.count(|a| a.status == Some(201)) >= 20 },
        "load is running",
    )
    .await;
    let (down, ready_failed_after) = stop_and_notice(postgres, mode, service, &load).await;
    postgres.restart().await;
    let up = std::time::Instant::now();
    let succeeded =
        |label: &str| load.count(|a| a.started > up && a.is_success() && a.label == label) > 0;
    let whole = poll_until(recovery, || async {
        service.get("/health/ready").await.status == StatusCode::OK
            && succeeded(write)
            && succeeded(read)
    })
    .await;
    let first_success_after = load
        .answers()
        .iter()
        .filter(|a| a.finished > up && a.is_success())
        .map(|a| a.finished - up)
        .min();
    assert!(
        whole.is_some(),
        "not recovered within {recovery:?} of the database returning (first 2xx after {first_success_after:?})"
    );
    let recovered = std::time::Instant::now();
    // Keep the load on a little longer: after recovery everything must succeed.
    let settle = load.count(|_| true) + 60;
    poll_until(Duration::from_secs(30), || async {
        load.count(|_| true) >= settle
    })
    .await;
    let answers = load.finish().await;
    let statuses = assert_documented(&answers, &[200, 201], max_latency);
    for answer in answers.iter().filter(|a| a.started > recovered) {
        assert!(answer.is_success(), "a failure after recovery: {answer:?}");
    }
    Outage {
        down,
        up,
        recovered,
        ready_failed_after,
        first_success_after,
        recovered_after: whole.unwrap_or_default(),
        created: created_ids(&answers),
        answers,
        statuses,
    }
}

/// Stops `postgres` and waits until readiness fails and the load sees 503s;
/// returns when it stopped and how long readiness took to fail.
async fn stop_and_notice(
    postgres: &TemporaryPostgres,
    mode: &str,
    service: &TestClient,
    load: &Load,
) -> (std::time::Instant, Duration) {
    postgres.stop(mode).await;
    let down = std::time::Instant::now();
    let unready = assert_eventually(
        Duration::from_secs(15),
        || async { service.get("/health/ready").await.status == StatusCode::SERVICE_UNAVAILABLE },
        "/health/ready keeps passing with the database down",
    )
    .await;
    assert_eventually(
        Duration::from_secs(30),
        || async { load.count(|a| a.started > down && a.status == Some(503)) >= 6 },
        "the load saw no 503 while the database was down",
    )
    .await;
    (down, unready)
}
