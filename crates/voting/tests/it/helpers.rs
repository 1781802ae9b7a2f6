//! The harness: testkit's (a Redis, a fresh PostgreSQL database, the app in this process on
//! port 0, a WebSocket client, polling with a deadline), and the `voting` binary as a child
//! process.
//!
//! Nothing reads or changes this process's environment: configurations are built from the
//! built-in defaults with figment, and the binary gets its settings in its own environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::config::{Config, Program};
use hyper::Method;
use testkit::http::Answer;
pub use testkit::{App, Infra, Socket, Tally, eventually};
use tokio::sync::mpsc;

/// How long any awaited condition may take before the test fails instead of hanging (the
/// binary's first start runs initdb).
pub const DEADLINE: Duration = Duration::from_secs(90);
/// Where the all-in-one serves the tally JSON.
pub const TALLY: &str = "/result/api/tally";

/// Redis and a fresh database (no schema: the app applies it).
pub async fn infra() -> Infra {
    Infra::database().await.with_redis()
}

/// The all-in-one configuration against `infra`, its servers not supervised.
pub fn config(infra: &Infra) -> Config {
    infra.config(Program::Voting, |f| f.merge(("voting.supervise", false)))
}

/// `voting::run` in this process.
pub async fn spawn_app(infra: &Infra) -> App {
    let mut app = App::spawn(voting::run, config(infra), None).await;
    app.results = "/result";
    app
}

/// `POST /vote/` with the form a browser sends, as a new voter.
pub async fn vote_form(addr: SocketAddr, key: &str) -> Answer {
    testkit::http::request(
        addr,
        Method::POST,
        "/vote/",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("vote={key}"),
    )
    .await
}

/// A temporary directory the `postgres` user can traverse when the tests run as root (the
/// binary's data directory goes inside it).
pub fn traversable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("voting-it-")
        .tempdir()
        .expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("the temp dir can be made traversable");
    dir
}

/// The `voting` binary, running with its output captured: stdout line by line, stderr in a file.
pub struct Binary {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: PathBuf,
}

impl Binary {
    /// Starts the binary with `env` added to a copy of this environment without any `VOTING_…`
    /// or `OPTION_…` variable, nor `REDIS_PORT` or `POSTGRES_PORT`; its stderr goes to
    /// `stderr`.
    pub fn spawn(env: &[(&str, String)], stderr: &Path) -> Binary {
        let mut command = voting_command();
        command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).expect("a file for stderr"));
        let mut child = command.spawn().expect("the voting binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Binary {
            child,
            stdout: rx,
            stderr: stderr.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line on stdout that contains every one of `parts`, and returns it.
    pub async fn line_with(&mut self, parts: &[&str]) -> String {
        let read = async {
            while let Some(line) = self.stdout.recv().await {
                if parts.iter().all(|p| line.contains(p)) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(DEADLINE, read).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "the binary ended its output without a line with {parts:?}; exit {:?}\n{}",
                self.child.try_wait(),
                self.stderr_text()
            ),
            Err(_) => panic!("no line with {parts:?} in time\n{}", self.stderr_text()),
        }
    }

    /// Sends `signal` (e.g. `"TERM"`) to the binary.
    pub fn signal(&self, signal: &str) {
        testkit::signal(self.pid(), signal).expect("kill runs");
    }

    /// Waits for the binary to exit.
    pub async fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the binary did not exit in time\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Binary {
    /// A failed test still stops the binary cleanly, so it stops its servers too.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = testkit::signal(self.child.id(), "TERM");
            let deadline = Instant::now() + DEADLINE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `voting` binary with this environment, less any `VOTING_…` or `OPTION_…` variable and
/// `REDIS_PORT` and `POSTGRES_PORT` (they move the default URLs).
pub fn voting_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_voting"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("VOTING_")
            || text.starts_with("OPTION_")
            || text == "REDIS_PORT"
            || text == "POSTGRES_PORT"
        {
            command.env_remove(&name);
        }
    }
    command
}

/// The URL of the Redis `voting` starts itself with its data in `data_dir`.
pub fn own_redis_url(data_dir: &Path) -> String {
    format!("redis+unix://{}/redis/redis.sock", data_dir.display())
}

/// Whether process `pid` exists (a zombie counts: it was not reaped).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The pid of the Redis server at `url`, from `INFO server`; `None` while it does not answer.
pub async fn redis_pid(url: &str) -> Option<u32> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// The pid of the postmaster of the cluster in `cluster`, from its `postmaster.pid`.
pub fn postmaster_pid(cluster: &Path) -> Option<u32> {
    std::fs::read_to_string(cluster.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}
