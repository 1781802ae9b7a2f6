//! The whole write path under load, for the fault-injection and scale-out tests.
//!
//! Redis and PostgreSQL are real servers (testkit) that the tests kill and restart. Workers
//! are the real `worker` binary, as child processes, so they can be SIGKILLed and SIGSTOPped.
//! The vote and result services run in this test process: the faults do not hit them, they
//! hit what those services depend on. Votes come from loadgen's library entry, which sends
//! them from many voters (some voting again, never two votes of one voter in flight at once),
//! remembers every voter's last accepted vote, and afterwards waits until PostgreSQL holds
//! exactly that.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::config::Program;
use hyper::StatusCode;
use loadgen::Report;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{Infra, config, eventually, infra, tallies_checked, xlen};

/// How long a recovery (drain, claim, reconnect) may take before a test fails.
pub const RECOVERY: Duration = Duration::from_secs(60);
/// Entries idle this long on a consumer are claimed by another one (10 s by default; short
/// here so that a dead worker's entries move on within the test).
const CLAIM_IDLE_MS: u64 = 1_000;

/// Votes sent during a scenario: a fixed rate for a fixed time, from a pool of voters of
/// whom about a third vote again.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub rate: u32,
    pub seconds: u32,
    pub voters: u32,
    pub form: bool,
    pub seed: u64,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            rate: 300,
            seconds: 6,
            voters: 1_200,
            form: false,
            seed: 1,
        }
    }
}

pub struct Cluster {
    pub infra: Infra,
    /// In-process vote services.
    pub votes: Vec<SocketAddr>,
    /// In-process result services.
    pub results: Vec<SocketAddr>,
    pub workers: Vec<WorkerProcess>,
    stops: Vec<oneshot::Sender<()>>,
    logs: tempfile::TempDir,
}

impl Cluster {
    /// Redis, PostgreSQL (schema applied), `votes` vote services, `workers` worker processes
    /// named `w1`, `w2`, … (each ready), and `results` result services.
    pub async fn start(votes: usize, workers: usize, results: usize) -> Cluster {
        Cluster::start_on(infra().await, votes, workers, results).await
    }

    /// [`Cluster::start`] on `infra` (e.g. one whose PostgreSQL the test may stop).
    pub async fn start_on(infra: Infra, votes: usize, workers: usize, results: usize) -> Cluster {
        let mut cluster = Cluster {
            infra,
            votes: Vec::new(),
            results: Vec::new(),
            workers: Vec::new(),
            stops: Vec::new(),
            logs: tempfile::Builder::new()
                .prefix("faults-")
                .tempdir()
                .expect("a temp dir for the worker logs"),
        };
        for _ in 0..votes {
            let addr = cluster.serve(Program::Vote).await;
            cluster.votes.push(addr);
        }
        for _ in 0..results {
            let addr = cluster.serve(Program::Result).await;
            cluster.results.push(addr);
        }
        for n in 1..=workers {
            cluster.spawn_worker(&format!("w{n}")).await;
        }
        cluster
    }

    async fn serve(&mut self, service: Program) -> SocketAddr {
        let config = config(&self.infra, service, "", |f| f);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let (tx, rx) = oneshot::channel::<()>();
        self.stops.push(tx);
        let stop = async move {
            let _ = rx.await;
        };
        match service {
            Program::Vote => drop(tokio::spawn(vote::run(config, listener, stop))),
            Program::Result => drop(tokio::spawn(result::run(config, listener, stop))),
            other => panic!("{other:?} is not served in process here"),
        }
        addr
    }

    /// Starts the worker binary as consumer `name` and waits until its `/readyz` answers 200.
    pub async fn spawn_worker(&mut self, name: &str) -> usize {
        let port = testkit::free_port();
        let log = self.logs.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("the worker's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("VOTING_LISTEN", format!("127.0.0.1:{port}"))
            .env("VOTING_REDIS__URL", self.infra.redis().url())
            .env("VOTING_POSTGRES__URL", self.infra.db_url())
            .env("VOTING_WORKER__CONSUMER", name)
            .env("VOTING_WORKER__BLOCK_MS", "200")
            .env("VOTING_WORKER__CLAIM_IDLE_MS", CLAIM_IDLE_MS.to_string())
            .env("VOTING_WORKER__CLAIM_INTERVAL_MS", "200")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .expect("the worker binary starts");
        let worker = WorkerProcess {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
        };
        eventually(RECOVERY, &format!("worker {name} ready"), || async {
            (worker.readyz().await == Some(StatusCode::OK)).then_some(())
        })
        .await;
        self.workers.push(worker);
        self.workers.len() - 1
    }

    /// Sends `load` to vote service `vote`, then waits (bounded) until PostgreSQL holds every
    /// accepted vote. Owns everything it needs, so faults may run beside it.
    pub fn load(&self, vote: usize, load: Load) -> impl Future<Output = Report> + use<> {
        let mut args = vec![
            "--url".to_string(),
            format!("http://{}/", self.votes[vote]),
            "--rate".into(),
            load.rate.to_string(),
            "--duration".into(),
            format!("{}s", load.seconds),
            "--voters".into(),
            load.voters.to_string(),
            "--revote-ratio".into(),
            "0.3".into(),
            "--concurrency".into(),
            "16".into(),
            "--timeout".into(),
            "5s".into(),
            "--seed".into(),
            load.seed.to_string(),
            "--verify".into(),
            self.infra.db_url().to_string(),
            "--verify-timeout".into(),
            format!("{}s", RECOVERY.as_secs()),
            "--quiet".into(),
        ];
        if load.form {
            args.push("--form".into());
        }
        let config = match loadgen::args::parse(args) {
            Ok(loadgen::Command::Run(config)) => *config,
            other => panic!("loadgen arguments: {other:?}"),
        };
        async move {
            loadgen::run(&config, std::future::pending())
                .await
                .expect("the load runs")
        }
    }

    /// Rows in `votes`.
    pub async fn stored_votes(&self) -> i64 {
        self.infra
            .pg()
            .await
            .query_one("SELECT count(*) FROM votes", &[])
            .await
            .map(|row| row.get(0))
            .unwrap_or(0)
    }

    /// Waits until at least `n` votes are in PostgreSQL: the load is flowing end to end.
    pub async fn wait_for_votes(&self, n: i64) {
        eventually(RECOVERY, &format!("{n} votes in PostgreSQL"), || async {
            (self.stored_votes().await >= n).then_some(())
        })
        .await;
    }

    /// Entries pending in the consumer group, by consumer.
    pub async fn pending_by_consumer(&self) -> BTreeMap<String, u64> {
        let reply: PendingSummary = redis::cmd("XPENDING")
            .arg("ballots")
            .arg("workers")
            .query_async(&mut self.infra.redis_conn().await)
            .await
            .expect("XPENDING");
        reply
            .3
            .unwrap_or_default()
            .into_iter()
            .map(|(consumer, n)| (consumer, n.parse().expect("a count")))
            .collect()
    }

    /// Takes an exclusive lock on `tallies` in a transaction of its own, so that every
    /// worker's next batch stops inside its transaction, after reading its entries and before
    /// committing: "mid-batch", on purpose. Dropping the guard (or `release`) lets them go on.
    pub async fn hold_batches(&self) -> Hold {
        let client = self.infra.pg().await;
        client
            .batch_execute("BEGIN; LOCK TABLE tallies IN EXCLUSIVE MODE")
            .await
            .expect("lock tallies");
        Hold { client }
    }

    /// Once votes flow, stops every worker's next batch inside its transaction and waits
    /// until worker `index` is caught there; returns the hold and that worker's pending count.
    pub async fn catch_mid_batch(&self, index: usize) -> (Hold, u64) {
        self.wait_for_votes(100).await;
        let hold = self.hold_batches().await;
        let pending = self.wait_mid_batch(index).await;
        (hold, pending)
    }

    /// Waits until worker `index` is stuck mid-batch behind a [`Hold`]: entries pending on its
    /// consumer and a PostgreSQL session waiting for the lock. Returns its pending count.
    pub async fn wait_mid_batch(&self, index: usize) -> u64 {
        let name = self.workers[index].name.clone();
        eventually(
            RECOVERY,
            &format!("worker {name} stuck mid-batch"),
            || async {
                let pending = self.pending_by_consumer().await.get(&name).copied();
                let waiting: i64 = self
                    .infra
                    .pg()
                    .await
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .expect("pg_stat_activity")
                    .get(0);
                pending.filter(|&n| n > 0 && waiting > 0)
            },
        )
        .await
    }

    /// Checks what must hold after any fault, prints the figures, and returns them:
    /// - every voter's last accepted vote is their row in `votes`, and no voter whose votes
    ///   were all refused has a row (loadgen's verification);
    /// - `tallies` equals `SELECT vote, count(*) FROM votes GROUP BY vote`;
    /// - nothing is left pending in the consumer group, nothing went to the dead letters.
    pub async fn check(&self, scenario: &str, reports: &[Report]) -> Figures {
        eventually(RECOVERY, "no entry left pending in the group", || async {
            self.pending_by_consumer()
                .await
                .values()
                .all(|&n| n == 0)
                .then_some(())
        })
        .await;
        let tallies = tallies_checked(&self.infra).await;
        let mut figures = Figures {
            scenario: scenario.to_string(),
            tallies,
            dead_letters: xlen(&self.infra, "ballots:dead").await,
            ..Figures::default()
        };
        for report in reports {
            let verify = report.verify.as_ref().expect("loadgen verified the votes");
            figures.sent += report.sent;
            figures.accepted += report.accepted;
            figures.refused += report.refused;
            for (status, n) in &report.refused_by_status {
                *figures.refused_by_status.entry(*status).or_default() += n;
            }
            figures.unconfirmed += report.unconfirmed;
            figures.unanswered += report.errors.total;
            figures.voters += verify.voters;
            figures.lost += verify.missing;
            figures.wrong += verify.wrong;
            figures.refused_but_stored += verify.refused_but_stored;
            figures.complete &= verify.complete;
            figures
                .examples
                .extend(verify.examples.iter().map(|m| format!("{m:?}")));
        }
        println!("{figures}");
        assert!(figures.accepted > 0, "{figures}");
        assert!(
            figures.complete && figures.lost == 0 && figures.wrong == 0,
            "an accepted vote is missing or wrong in PostgreSQL: {figures}"
        );
        assert_eq!(
            figures.refused_but_stored, 0,
            "a refused vote was stored: {figures}"
        );
        assert_eq!(figures.dead_letters, 0, "valid votes were dead-lettered");
        let stored: i64 = figures.tallies.values().sum();
        assert_eq!(
            stored,
            self.stored_votes().await,
            "tallies count every stored vote once"
        );
        figures
    }

    /// Waits until every result service shows, fresh, exactly the tallies in PostgreSQL.
    pub async fn results_agree(&self, tallies: &BTreeMap<String, i64>) {
        for &addr in &self.results {
            eventually(
                RECOVERY,
                &format!("result at {addr} shows the tallies"),
                || async {
                    let shown = result_tally(addr).await?;
                    (shown.0 == *tallies && !shown.1).then_some(())
                },
            )
            .await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// `XPENDING <stream> <group>`: count, first and last ID, and `[consumer, count]` pairs.
type PendingSummary = (
    u64,
    redis::Value,
    redis::Value,
    Option<Vec<(String, String)>>,
);

/// A transaction holding `LOCK TABLE tallies`; see [`Cluster::hold_batches`].
pub struct Hold {
    client: tokio_postgres::Client,
}

impl Hold {
    pub async fn release(self) {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .expect("release the lock");
    }
}

/// A `worker` child process.
pub struct WorkerProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// `GET /readyz`'s status, or `None` when nothing answers.
    pub async fn readyz(&self) -> Option<StatusCode> {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            testkit::http::get(self.addr, "/readyz"),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => Some(answer.status),
            _ => None,
        }
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        let status = self.child.wait().expect("reap the worker");
        assert!(!status.success(), "the worker was killed: {status}");
    }

    /// SIGSTOP: the process stays, holding its connections, and does nothing.
    pub fn pause(&self) {
        testkit::signal(self.child.id(), "STOP").expect("SIGSTOP the worker");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        testkit::signal(self.child.id(), "CONT").expect("SIGCONT the worker");
    }

    /// The worker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = testkit::signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /api/tally` of a result service: the non-zero counts by option, and `stale`.
pub async fn result_tally(addr: SocketAddr) -> Option<(BTreeMap<String, i64>, bool)> {
    let answer = testkit::http::get(addr, "/api/tally").await.ok()?;
    if answer.status != StatusCode::OK {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    let counts = json["options"]
        .as_array()?
        .iter()
        .filter_map(|o| Some((o["key"].as_str()?.to_string(), o["count"].as_i64()?)))
        .filter(|(_, count)| *count != 0)
        .collect();
    Some((counts, json["stale"].as_bool()?))
}

/// What a scenario did to the votes.
#[derive(Debug)]
pub struct Figures {
    pub scenario: String,
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub refused_by_status: BTreeMap<u16, u64>,
    /// Of the refusals, the 503s marked unconfirmed (the vote may be counted; not judged).
    pub unconfirmed: u64,
    /// No answer (timeout, broken connection): such a voter is not judged.
    pub unanswered: u64,
    /// Voters with an accepted vote, each checked.
    pub voters: u64,
    pub lost: u64,
    pub wrong: u64,
    pub refused_but_stored: u64,
    pub complete: bool,
    pub dead_letters: u64,
    pub tallies: BTreeMap<String, i64>,
    pub examples: Vec<String>,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            scenario: String::new(),
            sent: 0,
            accepted: 0,
            refused: 0,
            refused_by_status: BTreeMap::new(),
            unconfirmed: 0,
            unanswered: 0,
            voters: 0,
            lost: 0,
            wrong: 0,
            refused_but_stored: 0,
            complete: true,
            dead_letters: 0,
            tallies: BTreeMap::new(),
            examples: Vec::new(),
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] sent {} | accepted {} | refused {} {:?}, unconfirmed {} | unanswered {} \
             | voters checked {} | lost {} | wrong {} | refused but stored {} | dead letters {} \
             | tallies {:?}",
            self.scenario,
            self.sent,
            self.accepted,
            self.refused,
            self.refused_by_status,
            self.unconfirmed,
            self.unanswered,
            self.voters,
            self.lost,
            self.wrong,
            self.refused_but_stored,
            self.dead_letters,
            self.tallies,
        )?;
        if !self.examples.is_empty() {
            write!(f, " | examples {:?}", self.examples)?;
        }
        Ok(())
    }
}
