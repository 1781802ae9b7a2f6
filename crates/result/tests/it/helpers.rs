//! The harness: a throwaway PostgreSQL (and Redis when the vote service and the worker take
//! part), the result service on `127.0.0.1:0`, and a real WebSocket client.
//!
//! Nothing is mocked and nothing reads the process environment: every configuration is built
//! from the built-in defaults with figment. Conditions are polled with a deadline, never
//! waited for with a fixed sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use figment::Figment;
use figment::providers::Serialized;
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use serde::Deserialize;
use testkit::http::Answer;
use testkit::{Postgres, Redis};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any awaited condition may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// PostgreSQL (with the schema applied) and, when asked for, Redis.
pub struct Infra {
    pub pg: Postgres,
    pub db_url: String,
    pub redis: Option<Redis>,
}

impl Infra {
    /// PostgreSQL only: votes are written the way the worker writes them, with SQL.
    pub async fn start() -> Infra {
        testkit::init_logging();
        let pg = Postgres::start().expect("PostgreSQL starts");
        let db_url = pg.create_database().await.expect("a fresh database");
        let infra = Infra {
            pg,
            db_url,
            redis: None,
        };
        common::schema::migrate(&mut infra.pg_client().await)
            .await
            .expect("the schema applies");
        infra
    }

    /// PostgreSQL and Redis, for the vote service and the worker.
    pub async fn with_redis() -> Infra {
        let mut infra = Infra::start().await;
        infra.redis = Some(Redis::start().expect("redis-server starts"));
        infra
    }

    /// A configuration of `service` against this infrastructure; `tweak` may merge more keys.
    pub fn config(&self, service: Service, tweak: impl FnOnce(Figment) -> Figment) -> Config {
        let mut figment = Figment::from(Serialized::defaults(Config::defaults(service)))
            .merge(("listen", "127.0.0.1:0"))
            .merge(("postgres.url", self.db_url.clone()))
            .merge(("worker.consumer", "test-worker"))
            .merge(("worker.block_ms", 50));
        if let Some(redis) = &self.redis {
            figment = figment.merge(("redis.url", redis.url()));
        }
        Config::from_figment(&tweak(figment)).expect("the test configuration is valid")
    }

    pub async fn pg_client(&self) -> tokio_postgres::Client {
        testkit::pg_client(&self.db_url)
            .await
            .expect("connects to PostgreSQL")
    }

    /// Records `voter`'s vote for `key` as the worker does: upsert, `NOTIFY`, one commit.
    pub async fn cast(&self, voter: &str, key: &str) {
        let mut client = self.pg_client().await;
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO votes (id, vote) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET vote = EXCLUDED.vote",
            &[&voter, &key],
        )
        .await
        .expect("the vote is written");
        tx.batch_execute("NOTIFY tallies").await.unwrap();
        tx.commit().await.expect("the vote commits");
    }

    /// `SELECT vote, count(*) FROM votes GROUP BY vote`.
    pub async fn counted(&self) -> BTreeMap<String, u64> {
        self.pg_client()
            .await
            .query("SELECT vote, count(*) FROM votes GROUP BY vote", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect()
    }

    /// Appends a ballot to the stream, as the vote service does.
    pub async fn xadd(&self, voter: &str, key: &str) {
        let redis = self.redis.as_ref().expect("this test started Redis");
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connects to Redis");
        let _: String = redis::cmd("XADD")
            .arg("ballots")
            .arg("*")
            .arg("voter_id")
            .arg(voter)
            .arg("vote")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }

    /// A worker on this infrastructure (stepped by the test).
    pub fn worker(&self, tweak: impl FnOnce(Figment) -> Figment) -> worker::Worker {
        worker::Worker::new(&self.config(Service::Worker, tweak)).expect("the worker builds")
    }
}

/// Steps `worker` until a step finds nothing new to do.
pub async fn drain(worker: &mut worker::Worker) {
    loop {
        let outcome = worker.step().await.expect("the worker step succeeds");
        if outcome.is_idle() && outcome.source == worker::step::Source::New {
            return;
        }
    }
}

/// A voter id, distinct per `n`.
pub fn voter(n: u64) -> String {
    format!("{n:032x}")
}

/// A running result service. Dropping it drops the task with the test's runtime.
pub struct App {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts the result service against `infra`, with `tweak` merged into its configuration.
pub async fn spawn_result(infra: &Infra, tweak: impl FnOnce(Figment) -> Figment) -> App {
    spawn_result_with(infra.config(Service::Result, tweak)).await
}

pub async fn spawn_result_with(config: Config) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_result_on(config, listener)
}

/// Starts the result service on `listener` (e.g. bound to the address of one just stopped).
pub fn spawn_result_on(config: Config, listener: TcpListener) -> App {
    testkit::init_logging();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(result::run(config, listener, async move {
        let _ = rx.await;
    }));
    App {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Starts the vote service against `infra`'s Redis.
pub async fn spawn_vote(infra: &Infra, tweak: impl FnOnce(Figment) -> Figment) -> SocketAddr {
    let config = infra.config(Service::Vote, tweak);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(vote::run(config, listener, std::future::pending()));
    addr
}

impl App {
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[]).await
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let exchange = testkit::http::send(self.addr, method.clone(), path, headers, "");
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in time"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    /// `GET /api/tally`, parsed.
    pub async fn tally(&self) -> Tally {
        let answer = self.get("/api/tally").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), "application/json");
        serde_json::from_str(&answer.body).expect("the tally is JSON")
    }

    /// Polls `GET /api/tally` until `pred` holds.
    pub async fn tally_where(&self, what: &str, pred: impl Fn(&Tally) -> bool) -> Tally {
        eventually(what, || async {
            let tally = self.tally().await;
            pred(&tally).then_some(tally)
        })
        .await
    }

    /// Opens a WebSocket to `/ws` (no `Origin`, like a non-browser client).
    pub async fn socket(&self) -> Socket {
        self.socket_with(&[]).await.expect("the socket opens")
    }

    /// Opens a WebSocket with extra request headers; the error is the refusal.
    pub async fn socket_with(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<Socket, tungstenite::Error> {
        Socket::open(self.addr, headers).await
    }

    /// Stops the service and waits until `run` has returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the service stops in time")
                .expect("the service did not panic"),
            None => Ok(()),
        }
    }
}

/// The snapshot JSON, as a browser sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Tally {
    pub options: Vec<TallyOption>,
    pub total: u64,
    pub stale: bool,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TallyOption {
    pub key: String,
    pub label: String,
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

    /// Non-zero counts by key.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.options
            .iter()
            .filter(|o| o.count > 0)
            .map(|o| (o.key.clone(), o.count))
            .collect()
    }
}

/// A WebSocket client.
pub struct Socket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a read from the socket gave.
#[derive(Debug)]
pub enum Received {
    Tally(Tally),
    Closed(Option<CloseFrame>),
}

impl Socket {
    /// Opens a WebSocket to `/ws` on `addr` with extra request headers; the error is the
    /// refusal.
    pub async fn open(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Socket, tungstenite::Error> {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        for (name, value) in headers {
            req.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
            .await
            .expect("the handshake finishes in time")?;
        Ok(Socket { ws })
    }

    /// The next snapshot or close, skipping control frames.
    pub async fn receive(&mut self) -> Received {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let tally = serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("a snapshot: {e}: {text}"));
                        return Received::Tally(tally);
                    }
                    Some(Ok(Message::Close(frame))) => return Received::Closed(frame),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("socket failed: {e}"),
                    None => return Received::Closed(None),
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a frame arrives in time")
    }

    pub async fn next_tally(&mut self) -> Tally {
        match self.receive().await {
            Received::Tally(t) => t,
            Received::Closed(frame) => panic!("socket closed: {frame:?}"),
        }
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

    /// Closes politely and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::Text(text.into())).await
    }
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testkit::eventually(DEADLINE, what, check).await
}

/// The value of the Prometheus sample `name` (exactly, labels included) in `text`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in:\n{text}"))
}
