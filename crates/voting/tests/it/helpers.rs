//! The harness: throwaway Redis and PostgreSQL (testkit), the app in this process on port 0,
//! the `voting` binary as a child process, a WebSocket client, and polling with a deadline.
//!
//! Nothing reads or changes this process's environment: configurations are built from the
//! built-in defaults with figment, and the binary gets its settings in its own environment.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use figment::Figment;
use figment::providers::Serialized;
use futures_util::StreamExt;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use testkit::http::Answer;
use testkit::{Postgres, Redis};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any awaited condition may take before the test fails instead of hanging (the
/// binary's first start runs initdb).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `check` until it gives `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testkit::eventually(DEADLINE, what, check).await
}

/// Redis and a fresh PostgreSQL database.
pub struct Infra {
    pub redis: Redis,
    /// Kept alive for the test's duration.
    _pg: Postgres,
    pub db_url: String,
}

impl Infra {
    pub async fn start() -> Infra {
        testkit::init_logging();
        let redis = Redis::start().expect("redis-server starts");
        let pg = Postgres::start().expect("PostgreSQL starts");
        let db_url = pg.create_database().await.expect("a fresh database");
        Infra {
            redis,
            _pg: pg,
            db_url,
        }
    }

    /// The all-in-one configuration against this infrastructure.
    pub fn config(&self) -> Config {
        let figment = Figment::from(Serialized::defaults(Config::defaults(Service::Voting)))
            .merge(("listen", "127.0.0.1:0"))
            .merge(("redis.url", self.redis.url()))
            .merge(("postgres.url", self.db_url.clone()))
            .merge(("worker.block_ms", 50))
            .merge(("voting.supervise", false));
        Config::from_figment(&figment).expect("the test configuration is valid")
    }
}

/// `voting::run` in this process.
pub struct App {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(infra: &Infra) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(voting::run(infra.config(), listener, async move {
        let _ = stopped.await;
    }));
    App {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

impl App {
    pub async fn get(&self, path: &str) -> Answer {
        request(self.addr, Method::GET, path, &[], String::new()).await
    }

    /// A browser's form vote on the vote page.
    pub async fn vote_form(&self, key: &str) -> Answer {
        vote_form(self.addr, key).await
    }

    /// Stops the app as SIGTERM would, and waits until it returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the app stops in time")
            .expect("the app did not panic")
    }
}

/// One request to `addr`, within the deadline.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Answer {
    let exchange = testkit::http::send(addr, method.clone(), path, headers, body);
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in time"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// `POST /vote/` with the form a browser sends, as a new voter.
pub async fn vote_form(addr: SocketAddr, key: &str) -> Answer {
    request(
        addr,
        Method::POST,
        "/vote/",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("vote={key}"),
    )
    .await
}

/// `GET /result/api/tally`, parsed.
pub async fn tally(addr: SocketAddr) -> Tally {
    let answer = request(addr, Method::GET, "/result/api/tally", &[], String::new()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_str(&answer.body).expect("the tally is JSON")
}

/// Polls the tally until `pred` holds.
pub async fn tally_where(addr: SocketAddr, what: &str, pred: impl Fn(&Tally) -> bool) -> Tally {
    eventually(what, || async {
        let tally = tally(addr).await;
        pred(&tally).then_some(tally)
    })
    .await
}

/// The snapshot JSON.
#[derive(Clone, Debug, Deserialize)]
pub struct Tally {
    pub options: Vec<TallyOption>,
    pub total: u64,
    pub stale: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TallyOption {
    pub key: String,
    pub count: u64,
}

impl Tally {
    pub fn count(&self, key: &str) -> u64 {
        self.options
            .iter()
            .find(|o| o.key == key)
            .unwrap_or_else(|| panic!("option {key} is in the tally"))
            .count
    }
}

/// A WebSocket client.
pub struct Socket(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Socket {
    pub async fn connect(url: &str) -> Socket {
        let (ws, answer) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .expect("the handshake completes in time")
            .unwrap_or_else(|e| panic!("the socket at {url} opens: {e}"));
        assert_eq!(answer.status(), StatusCode::SWITCHING_PROTOCOLS);
        Socket(ws)
    }

    /// The next snapshot, skipping control frames.
    pub async fn next_tally(&mut self) -> Tally {
        let read = async {
            loop {
                match self.0.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("a snapshot: {e}: {text}"));
                    }
                    Some(Ok(Message::Close(frame))) => panic!("the socket closed: {frame:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("the socket failed: {e}"),
                    None => panic!("the socket ended"),
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a snapshot arrives in time")
    }

    /// Reads snapshots until one satisfies `pred`.
    pub async fn tally_where(&mut self, what: &str, pred: impl Fn(&Tally) -> bool) -> Tally {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let tally = self.next_tally().await;
            if pred(&tally) {
                return tally;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        }
    }
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
        send_signal(self.pid(), signal);
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
            send_signal(self.child.id(), "TERM");
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

/// `kill -s <signal> <pid>`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal} {pid} failed");
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
