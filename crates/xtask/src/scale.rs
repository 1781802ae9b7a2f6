//! The `scale` scenario: the story of scaling out and in, measured. N vote and N result
//! processes behind one Nginx (each upstream block lists them all); under a steady vote
//! load and with WebSocket clients open through Nginx, a replica of each is added (Nginx
//! reloaded with it), then one of each removed the way Kubernetes does it (out of Nginx
//! first, then SIGTERM: vote drains its requests, result closes its sockets with 1001).
//!
//! Each client behaves as the results page does: when its socket closes, it opens a new one.
//! What counts: no vote refused or lost (loadgen verifies every accepted vote in PostgreSQL),
//! the longest time a client went from a closed socket to a fresh tally on a new one, and
//! that every client showed the final tally soon after the last vote.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::load::{self, Load};
use crate::stack::{Instance, Stack};

/// What the scenario showed.
#[derive(Debug)]
pub struct Scale {
    pub replicas: usize,
    pub sockets: usize,
    pub load: Load,
    /// Sockets closed under a client (by the replica that was removed) and opened again.
    pub reconnects: u64,
    /// Failed attempts to open a socket again (each retried 100 ms later).
    pub failed_opens: u64,
    /// The longest time from a closed socket to the first frame on the next one.
    pub longest_gap_ms: f64,
    /// From the end of the load until the last client showed the final tally.
    pub final_tally_ms: f64,
    /// Clients that showed the final tally within 10 s.
    pub caught_up: usize,
    /// RSS of each result replica left at the end, MB.
    pub result_rss_mb: Vec<f64>,
}

/// One client's record: the totals it showed, its reconnects, its longest gap.
struct Client {
    total: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    failed_opens: AtomicU64,
    longest_gap_us: AtomicU64,
}

fn total_of(frame: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(frame).ok()?["total"].as_u64()
}

/// A results page: one socket at a time at `url`, a new one when it closes.
fn client(url: String, counters: Arc<Counters>) -> Client {
    let (tx, rx) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut closed_at: Option<Instant> = None;
        loop {
            let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((ws, _)) => ws,
                Err(_) => {
                    counters.failed_opens.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (_, mut frames) = ws.split();
            while let Some(Ok(msg)) = frames.next().await {
                if let Some(total) = msg.to_text().ok().and_then(total_of) {
                    if let Some(at) = closed_at.take() {
                        let gap = at.elapsed().as_micros() as u64;
                        counters.longest_gap_us.fetch_max(gap, Ordering::Relaxed);
                    }
                    let _ = tx.send(total);
                }
            }
            if tx.is_closed() {
                return;
            }
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
            closed_at.get_or_insert_with(Instant::now);
        }
    });
    Client { total: rx, task }
}

/// How long a removed replica keeps serving after it is out of Nginx, before SIGTERM: the
/// pods' preStop sleep, while the proxy's old workers finish with it.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Starts `replicas` of vote and of result, `sockets` clients, a vote load of `rate` votes/s
/// for `duration`, adds a replica of each after a quarter of it and takes one out of Nginx
/// at half, stopped [`DRAIN`] later.
pub async fn run(
    stack: &Stack,
    replicas: usize,
    sockets: usize,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Scale> {
    let proxied = || vec![("VOTING_HTTP__TRUST_PROXY", "true".to_string())];
    let mut votes: Vec<Instance> = Vec::new();
    let mut results: Vec<Instance> = Vec::new();
    for i in 0..replicas {
        votes.push(
            stack
                .service_as("vote", &format!("vote-{i}"), &proxied())
                .await?,
        );
        results.push(
            stack
                .service_as("result", &format!("result-{i}"), &proxied())
                .await?,
        );
    }
    let addrs = |list: &[Instance]| list.iter().map(|s| s.addr).collect::<Vec<SocketAddr>>();
    let mut nginx = testkit::Nginx::start_many(&addrs(&votes), &addrs(&results))?;

    let counters = Arc::new(Counters::default());
    let url = format!("ws://{}/result/ws", nginx.addr());
    let mut clients = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        clients.push(client(url.clone(), counters.clone()));
    }
    for c in &mut clients {
        tokio::time::timeout(Duration::from_secs(30), c.total.changed())
            .await
            .map_err(|_| anyhow::anyhow!("a client got no first tally within 30 s"))??;
    }

    let args = vec![
        "--url".to_string(),
        nginx.url("/vote/"),
        "--rate".into(),
        rate.to_string(),
        "--duration".into(),
        format!("{}ms", duration.as_millis()),
        "--concurrency".into(),
        "64".into(),
        "--options".into(),
        "a,b".into(),
        "--verify".into(),
        stack.db.clone(),
        "--verify-timeout".into(),
        "120s".into(),
    ];
    let bin = stack.bin.clone();
    let started = Instant::now();
    let loading = tokio::spawn(async move { load::loadgen(&bin, &args).await });

    // Scale out: a new replica of each, then Nginx reloaded with it.
    tokio::time::sleep_until((started + duration / 4).into()).await;
    eprintln!("bench: scale: adding a replica of vote and of result");
    votes.push(stack.service_as("vote", "vote-added", &proxied()).await?);
    results.push(
        stack
            .service_as("result", "result-added", &proxied())
            .await?,
    );
    nginx.set_upstreams(&addrs(&votes), &addrs(&results))?;

    // Scale in: the first replica of each out of Nginx, then stopped with SIGTERM.
    tokio::time::sleep_until((started + duration / 2).into()).await;
    eprintln!("bench: scale: removing a replica of vote and of result");
    let vote_gone = votes.remove(0);
    let result_gone = results.remove(0);
    nginx.set_upstreams(&addrs(&votes), &addrs(&results))?;
    tokio::time::sleep(DRAIN).await;
    for gone in [vote_gone, result_gone] {
        gone.proc.terminate(Duration::from_secs(30))?;
    }

    let load = loading.await??;
    let ended = Instant::now();
    // The final tally: what PostgreSQL counts once every accepted vote is in (loadgen's
    // verification waited for that).
    let client_db = stack.client().await?;
    let final_total = crate::stack::tallied(&client_db).await? as u64;
    let deadline = ended + Duration::from_secs(10);
    let (mut caught_up, mut last) = (0, ended);
    for c in &mut clients {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(_)) = tokio::time::timeout(left, c.total.wait_for(|t| *t >= final_total)).await
        {
            caught_up += 1;
            last = last.max(Instant::now());
        }
    }
    let final_tally_ms = last.saturating_duration_since(ended).as_secs_f64() * 1000.0;
    let result_rss_mb = results
        .iter()
        .map(|r| crate::machine::rss_mb(r.proc.pid()))
        .collect();
    for c in clients {
        drop(c.total);
        c.task.abort();
    }
    Ok(Scale {
        replicas,
        sockets,
        load,
        reconnects: counters.reconnects.load(Ordering::Relaxed),
        failed_opens: counters.failed_opens.load(Ordering::Relaxed),
        longest_gap_ms: counters.longest_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
        final_tally_ms,
        caught_up,
        result_rss_mb,
    })
}
