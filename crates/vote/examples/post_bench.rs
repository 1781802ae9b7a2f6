//! Benchmark: `POST /api/vote` straight to the vote service, and the idle memory of the
//! `vote` and `worker` binaries.
//!
//! ```text
//! cargo build --release -p vote -p worker
//! cargo run --release -p vote --example post_bench -- [SECONDS] [CONNECTIONS]
//! ```
//! (defaults 10 s, 64 connections). Starts a throwaway redis-server (append-only file on, as
//! in production) and PostgreSQL on 127.0.0.1, runs the release `vote` and `worker` binaries
//! as child processes, records their idle RSS, then sends JSON votes from CONNECTIONS
//! keep-alive connections, each request a new voter, for SECONDS. Every 202 must be in the
//! stream: the figure counts only votes that Redis holds at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    // target/release/examples/post_bench -> target/release/<name>
    let exe = std::env::current_exe()?;
    let path = exe.parent().and_then(|p| p.parent()).map(|p| p.join(name));
    match path {
        Some(p) if p.exists() => Ok(p),
        _ => anyhow::bail!(
            "{name} binary not found next to the example: run `cargo build --release -p vote -p worker` first"
        ),
    }
}

fn spawn(name: &str, port: u16, redis: &str, pg: &str) -> anyhow::Result<Proc> {
    let child = Command::new(release_binary(name)?)
        .env("VOTING_LISTEN", format!("127.0.0.1:{port}"))
        .env("VOTING_REDIS__URL", redis)
        .env("VOTING_POSTGRES__URL", pg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Proc(child))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

async fn get_status(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .ok()?;
    Some(sender.send_request(req).await.ok()?.status())
}

async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_status(addr, "/readyz").await != Some(StatusCode::OK) {
        anyhow::ensure!(Instant::now() < deadline, "{addr} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let connections: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let redis = testkit::Redis::start()?;
    let pg = testkit::Postgres::start()?;
    let db = pg.create_database().await?;
    let (vote_port, worker_port) = (testkit::free_port(), testkit::free_port());
    let vote = spawn("vote", vote_port, &redis.url(), &db)?;
    let worker = spawn("worker", worker_port, &redis.url(), &db)?;
    let vote_addr = SocketAddr::from(([127, 0, 0, 1], vote_port));
    wait_ready(vote_addr).await?;
    wait_ready(SocketAddr::from(([127, 0, 0, 1], worker_port))).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (vote_rss, worker_rss) = (rss_kib(vote.0.id()), rss_kib(worker.0.id()));
    // The worker stays on during the load, as in production, but must not drain the stream
    // before it is counted: stop it and count what the stream received.
    drop(worker);

    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0u64;
            let stream = tokio::net::TcpStream::connect(vote_addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            while Instant::now() < stop_at {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/api/vote")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(br#"{"vote":"a"}"#)))?;
                let started = Instant::now();
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                if status == StatusCode::ACCEPTED {
                    latencies.push(started.elapsed());
                } else {
                    refused += 1;
                }
            }
            anyhow::Ok((latencies, refused))
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (l, r) = t.await??;
        latencies.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let accepted = latencies.len() as u64;
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let queued: u64 = redis::cmd("XLEN")
        .arg("ballots")
        .query_async(&mut conn)
        .await?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let per_call = |name: &str| -> String {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split(',').find(|f| f.starts_with("usec_per_call=")))
            .map(|f| f.trim_start_matches("usec_per_call=").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!("vote idle RSS      {:.1} MB", vote_rss as f64 / 1024.0);
    println!("worker idle RSS    {:.1} MB", worker_rss as f64 / 1024.0);
    println!("connections        {connections}");
    println!(
        "accepted (202)     {accepted} in {elapsed:.1} s = {:.0} votes/s",
        accepted as f64 / elapsed
    );
    println!("refused            {refused}");
    println!("in the stream      {queued}");
    println!("latency p50/p99    {:?} / {:?}", pct(0.50), pct(0.99));
    println!(
        "redis usec/call    evalsha {}, xadd {}",
        per_call("evalsha"),
        per_call("xadd")
    );
    anyhow::ensure!(
        queued == accepted,
        "{accepted} votes answered 202 but {queued} are in the stream"
    );
    drop(vote);
    Ok(())
}
