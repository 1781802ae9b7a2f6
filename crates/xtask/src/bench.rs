//! `cargo xtask bench`: every scenario of docs/benchmarks.md in one run, each figure beside
//! a reference measured in the same run (the machines are shared and noisy, so only ratios
//! compare across runs).
//!
//! The split services run as their release binaries behind Nginx with the project's routes
//! (testkit's Nginx); the reference is the same Nginx configuration in front of the trivial
//! upstream (`upstream.rs`). The worker runs throughout, and every accepted vote of a load
//! run is checked in PostgreSQL: a refused or lost vote is never counted as served.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::args::{Bench, Scenario};
use crate::feed::{self, Prober};
use crate::load::{self, Load, WrkMode};
use crate::machine;
use crate::markdown::{Row, ms, thousands};
use crate::scale;
use crate::stack::{self, Instance, Stack};

/// Connections of the load runs: the issue's 64.
const CONNECTIONS: usize = 64;
/// The background load of the second freshness figure, votes/s.
const BACKGROUND_RATE: u64 = 5_000;

/// Runs the scenarios; returns the table's rows.
pub async fn run(args: &Bench) -> anyhow::Result<Vec<Row>> {
    // target/xtask/xtask -> target/release
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|profile| profile.parent())
        .context("the xtask binary is not in a target directory")?
        .join("release");
    let has = |s: Scenario| args.scenarios.contains(&s);
    if has(Scenario::Sockets) {
        // Each side of a socket is in its own process: the bench and result each hold one
        // (result raises its own limit to the hard one).
        let need = args.sockets as u64 + 512;
        let got = stack::raise_fd_limit(need);
        anyhow::ensure!(
            got >= need,
            "{} sockets need {need} open files, the limit is {got}: run `ulimit -n {need}` first",
            args.sockets
        );
    }
    let stack = Stack::start(bin).await?;
    let mut bench = Run {
        args,
        rows: Vec::new(),
        split_vote_rate: None,
        stack,
    };
    bench.split().await?;
    if has(Scenario::Voting) {
        bench.voting().await?;
    }
    Ok(bench.rows)
}

struct Run<'a> {
    args: &'a Bench,
    stack: Stack,
    rows: Vec<Row>,
    /// loadgen's accepted votes/s through Nginx, for the one-process comparison.
    split_vote_rate: Option<f64>,
}

/// The split services behind Nginx, and the reference Nginx.
struct Split {
    vote: Instance,
    worker: Instance,
    result: Instance,
    nginx: testkit::Nginx,
    reference: testkit::Nginx,
    _upstream: stack::Proc,
}

impl Run<'_> {
    fn has(&self, s: Scenario) -> bool {
        self.args.scenarios.contains(&s)
    }

    fn progress(&self, what: &str) {
        eprintln!(
            "bench: {what} (load average {:.2})",
            machine::load_average()
        );
    }

    async fn split(&mut self) -> anyhow::Result<()> {
        // Every scenario but the one-process binary's runs against the split services.
        if self.args.scenarios.iter().all(|s| *s == Scenario::Voting) {
            return Ok(());
        }
        self.progress("starting vote, worker, result, Nginx and the trivial upstream");
        let proxied = [("VOTING_HTTP__TRUST_PROXY", "true".to_string())];
        let worker = self.stack.service("worker", &[]).await?;
        let vote = self.stack.service("vote", &proxied).await?;
        let result = self
            .stack
            .service(
                "result",
                &[
                    proxied[0].clone(),
                    ("VOTING_RESULT__MAX_SOCKETS", "50000".into()),
                    ("VOTING_HTTP__MAX_CONNECTIONS", "50000".into()),
                ],
            )
            .await?;
        let (upstream, upstream_addr) = self.stack.upstream().await?;
        let nginx = testkit::Nginx::start(vote.addr, result.addr)?;
        let reference = testkit::Nginx::start(upstream_addr, upstream_addr)?;
        let split = Split {
            vote,
            worker,
            result,
            nginx,
            reference,
            _upstream: upstream,
        };

        if self.has(Scenario::Idle) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for (name, service) in [
                ("vote", &split.vote),
                ("worker", &split.worker),
                ("result", &split.result),
            ] {
                let rss = machine::rss_mb(service.proc.pid());
                self.rows.push(
                    Row::new(format!("idle RSS of `{name}`"), format!("{rss:.1} MB"))
                        .goal("< 15 MB", rss < 15.0),
                );
            }
        }
        if self.has(Scenario::Vote) {
            self.vote(&split, false).await?;
            self.vote_wrk(&split).await?;
        }
        if self.has(Scenario::Form) {
            self.vote(&split, true).await?;
        }
        if self.has(Scenario::Tally) {
            self.tally(&split).await?;
        }
        if self.has(Scenario::Freshness) {
            self.freshness(&split).await?;
        }
        if self.has(Scenario::Sockets) {
            self.sockets(&split).await?;
        }
        if self.has(Scenario::Scale) {
            self.scale().await?;
        }
        if self.has(Scenario::Drain) {
            self.drain().await?;
        }
        self.redis_costs().await?;
        let cpu = |s: &Instance| machine::cpu_seconds(s.proc.pid());
        eprintln!(
            "bench: CPU seconds used: vote {:.1}, worker {:.1}, result {:.1}",
            cpu(&split.vote),
            cpu(&split.worker),
            cpu(&split.result)
        );
        Ok(())
    }

    /// Prints what Redis spent per call of each command the services used (for profiling).
    async fn redis_costs(&self) -> anyhow::Result<()> {
        let mut redis = self.stack.redis_conn().await?;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut redis)
            .await?;
        let costs: Vec<String> = stats
            .lines()
            .filter_map(|l| {
                let (name, fields) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                };
                Some(format!(
                    "{name} {} calls {} us/call",
                    field("calls")?,
                    field("usec_per_call")?
                ))
            })
            .collect();
        eprintln!("bench: redis: {}", costs.join("; "));
        Ok(())
    }

    /// loadgen's arguments for a closed-loop run of the configured length against `url`.
    fn loadgen_args(&self, url: &str, form: bool, verify: bool) -> Vec<String> {
        let mut args = vec![
            "--url".to_string(),
            url.to_string(),
            "--duration".into(),
            format!("{}ms", self.args.duration.as_millis()),
            "--concurrency".into(),
            CONNECTIONS.to_string(),
        ];
        if form {
            args.push("--form".into());
        }
        if verify {
            args.extend(["--verify".into(), self.stack.db.clone()]);
            args.extend(["--verify-timeout".into(), "120s".into()]);
        }
        args
    }

    /// `POST /vote/api/vote` (or the form) through Nginx with loadgen, against the reference.
    async fn vote(&mut self, split: &Split, form: bool) -> anyhow::Result<()> {
        let (what, route) = if form {
            ("form", "`POST /vote/` (303)")
        } else {
            ("vote", "`POST /vote/api/vote`")
        };
        self.progress(&format!("{what}: reference run"));
        let reference = load::loadgen(
            &self.stack.bin,
            &self.loadgen_args(&split.reference.url("/vote/"), form, false),
        )
        .await?;
        self.progress(&format!("{what}: through Nginx to vote, worker running"));
        let cpu_before = machine::descendants_cpu();
        let real = load::loadgen(
            &self.stack.bin,
            &self.loadgen_args(&split.nginx.url("/vote/"), form, true),
        )
        .await?;
        print_cpu_per(
            &format!("{what}: CPU per accepted vote"),
            &cpu_before,
            real.accepted,
        );
        let ratio = real.rate() / reference.rate();
        let (goal, met) = if form {
            (">= 40 %".to_string(), ratio >= 0.4)
        } else {
            (
                ">= 50 % and >= 9,000/s".to_string(),
                ratio >= 0.5 && real.rate() >= 9_000.0,
            )
        };
        let met = met && real.failed == 0 && real.verified == Some(true);
        if !form {
            self.split_vote_rate = Some(real.rate());
        }
        self.rows.push(
            Row::new(
                format!(
                    "{route} through Nginx, {CONNECTIONS} connections, worker running (loadgen)"
                ),
                vote_figure(&real),
            )
            .reference(
                format!(
                    "{}/s: the same Nginx, trivial upstream (loadgen)",
                    thousands(reference.rate())
                ),
                Some(ratio),
            )
            .goal(goal, met),
        );
        Ok(())
    }

    /// The same JSON votes sent by wrk, the independent client; each request a new voter.
    /// wrk cannot check PostgreSQL itself: the tallies must grow by at least its 202s.
    async fn vote_wrk(&mut self, split: &Split) -> anyhow::Result<()> {
        let client = self.stack.client().await?;
        let prefix = || format!("{:024x}", rand::random::<u128>() >> 32);
        let url = |nginx: &testkit::Nginx| nginx.url("/vote/api/vote");
        let dir = self.stack.logs().to_path_buf();
        self.progress("vote: wrk, reference run");
        let reference = load::wrk(
            &dir,
            &url(&split.reference),
            CONNECTIONS,
            self.args.duration,
            WrkMode::Vote(&prefix()),
        )
        .await?;
        self.progress("vote: wrk, through Nginx to vote");
        let before = stack::tallied(&client).await?;
        let real = load::wrk(
            &dir,
            &url(&split.nginx),
            CONNECTIONS,
            self.args.duration,
            WrkMode::Vote(&prefix()),
        )
        .await?;
        let stored = stack::wait_tallied(
            &client,
            before + real.accepted as i64,
            Duration::from_secs(120),
        )
        .await
        .map(|_| true)
        .unwrap_or(false);
        let ratio = real.rate() / reference.rate();
        let figure = format!(
            "{}/s accepted; p50 {}, p99 {}; {} refused or failed; {}",
            thousands(real.rate()),
            ms(real.p50_ms),
            ms(real.p99_ms),
            real.failed,
            if stored {
                "every 202 in PostgreSQL"
            } else {
                "**votes missing in PostgreSQL**"
            }
        );
        self.rows.push(
            Row::new(
                format!("`POST /vote/api/vote` through Nginx, {CONNECTIONS} connections (wrk, the independent check)"),
                figure,
            )
            .reference(
                format!("{}/s (wrk)", thousands(reference.rate())),
                Some(ratio),
            )
            .goal(
                ">= 50 % and >= 9,000/s",
                ratio >= 0.5 && real.rate() >= 9_000.0 && real.failed == 0 && stored,
            ),
        );
        Ok(())
    }

    /// `GET /result/api/tally` through Nginx (wrk), against the reference.
    async fn tally(&mut self, split: &Split) -> anyhow::Result<()> {
        let dir = self.stack.logs().to_path_buf();
        self.progress("tally: wrk, reference run");
        let reference = load::wrk(
            &dir,
            &split.reference.url("/result/api/tally"),
            CONNECTIONS,
            self.args.duration,
            WrkMode::Get,
        )
        .await?;
        self.progress("tally: wrk, through Nginx to result");
        let real = load::wrk(
            &dir,
            &split.nginx.url("/result/api/tally"),
            CONNECTIONS,
            self.args.duration,
            WrkMode::Get,
        )
        .await?;
        let ratio = real.rate() / reference.rate();
        self.rows.push(
            Row::new(
                format!("`GET /result/api/tally` through Nginx, {CONNECTIONS} connections (wrk)"),
                format!(
                    "{}/s; p50 {}, p99 {}; {} failed",
                    thousands(real.rate()),
                    ms(real.p50_ms),
                    ms(real.p99_ms),
                    real.failed
                ),
            )
            .reference(
                format!(
                    "{}/s: the same Nginx, trivial upstream (wrk)",
                    thousands(reference.rate())
                ),
                Some(ratio),
            )
            .goal(">= 50 %", ratio >= 0.5 && real.failed == 0),
        );
        Ok(())
    }

    /// Vote `202` -> WebSocket frame, both through Nginx: one vote at a time, then while
    /// loadgen sends 5,000 other votes/s.
    async fn freshness(&mut self, split: &Split) -> anyhow::Result<()> {
        let ws = format!("ws://127.0.0.1:{}/result/ws", split.nginx.port());
        let mut socket = feed::probe_socket(&ws).await?;
        let mut prober = Prober::open(split.nginx.addr(), "/vote/api/vote").await?;
        self.progress("freshness: one vote at a time");
        feed::freshness(&mut prober, &mut socket, 20, None).await?; // warm-up
        let quiet = feed::freshness(&mut prober, &mut socket, self.args.probes, None).await?;
        let original = "(the original polls every second: about 500 ms median, 1 s at worst)";
        self.rows.push(
            Row::new(
                "freshness: vote `202` -> WebSocket frame, one vote at a time, through Nginx",
                lag_figure(&quiet),
            )
            .reference(original, None)
            .goal("p99 < 10 ms", feed::quantile_ms(&quiet, 0.99) < 10.0),
        );

        self.progress("freshness: under 5,000 other votes/s");
        // The background runs for the configured time; the probes start after a second of
        // it and stop when it ends.
        let background_time = self.args.duration.max(Duration::from_secs(3));
        let args = vec![
            "--url".to_string(),
            split.nginx.url("/vote/"),
            "--rate".into(),
            BACKGROUND_RATE.to_string(),
            "--duration".into(),
            format!("{}ms", background_time.as_millis()),
            "--concurrency".into(),
            CONNECTIONS.to_string(),
            "--options".into(),
            "a,b".into(),
        ];
        let bin = self.stack.bin.clone();
        let started = Instant::now();
        let background = tokio::spawn(async move { load::loadgen(&bin, &args).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let until = started + background_time - Duration::from_millis(200);
        let loaded =
            feed::freshness(&mut prober, &mut socket, self.args.probes, Some(until)).await?;
        let background = background.await??;
        self.rows.push(
            Row::new(
                format!(
                    "freshness under load: the same while loadgen sends {} other votes/s",
                    thousands(BACKGROUND_RATE as f64)
                ),
                format!(
                    "{}; the load: {}/s accepted, {} refused or failed",
                    lag_figure(&loaded),
                    thousands(background.rate()),
                    background.failed
                ),
            )
            .reference(original, None)
            .goal(
                "p99 < 50 ms",
                feed::quantile_ms(&loaded, 0.99) < 50.0
                    && background.failed == 0
                    && background.rate() >= 0.95 * BACKGROUND_RATE as f64,
            ),
        );
        Ok(())
    }

    /// Many sockets straight on the result process (Nginx is out: each socket would cost it
    /// two connections), one probe vote, its frame on every socket.
    async fn sockets(&mut self, split: &Split) -> anyhow::Result<()> {
        let count = self.args.sockets;
        self.progress(&format!("sockets: opening {count} on result"));
        let ws = format!("ws://{}/ws", split.result.addr);
        let mut prober = Prober::open(split.vote.addr, "/api/vote").await?;
        let pid = split.result.proc.pid();
        let before = machine::rss_mb(pid);
        let mut rss = 0.0;
        let f = feed::fanout(&ws, count, &mut prober, || rss = machine::rss_mb(pid))
            .await
            .with_context(|| split.result.proc.log_tail())?;
        let per_socket_kib = (rss - before) * 1024.0 / count as f64;
        self.rows.push(
            Row::new(
                format!("{} WebSockets on one result process", thousands(count as f64)),
                format!(
                    "{} of {} updated; RSS {rss:.1} MB ({before:.1} MB before: {per_socket_kib:.2} KiB a socket); vote `202` -> frame on the last socket {}; opened in {:.1} s",
                    thousands(f.updated as f64),
                    thousands(f.sockets as f64),
                    ms(f.last_ms),
                    f.open_s
                ),
            )
            .goal(
                "all updated, RSS < 100 MB, last frame < 1 s",
                f.updated == f.sockets && rss < 100.0 && f.last_ms < 1000.0,
            ),
        );
        Ok(())
    }

    /// Replicas added and removed under load ([`scale`]): the split worker keeps draining.
    async fn scale(&mut self) -> anyhow::Result<()> {
        const REPLICAS: usize = 2;
        const SOCKETS: usize = 1_000;
        const RATE: u64 = 2_000;
        // Long enough for the drain of the removed replica before the load ends.
        let duration = self
            .args
            .duration
            .max(2 * scale::DRAIN + Duration::from_secs(4));
        self.progress(&format!(
            "scale: {REPLICAS} vote and {REPLICAS} result replicas behind Nginx, {SOCKETS} sockets, {RATE} votes/s"
        ));
        let s = scale::run(&self.stack, REPLICAS, SOCKETS, RATE, duration).await?;
        let rss: Vec<String> = s.result_rss_mb.iter().map(|r| format!("{r:.1}")).collect();
        // A reload of Nginx closes its idle keep-alive connections to the clients; a client
        // that sent a request on one at that moment sees it broken, unanswered (a proxy
        // configured through an API, as a Gateway's, changes its endpoints without that).
        // Every other failure counts.
        let lost_none = s.load.failed == s.load.broken && s.load.lost == Some(0);
        self.rows.push(
            Row::new(
                format!(
                    "scaling under load: {n} → {} → {n} replicas of vote and of result behind Nginx, {} votes/s, {} WebSockets that reopen when closed",
                    s.replicas + 1,
                    thousands(RATE as f64),
                    thousands(s.sockets as f64),
                    n = s.replicas,
                ),
                format!(
                    "{} votes accepted, {} refused or failed but for {} unanswered on a keep-alive connection that an Nginx reload closed, {} of the accepted missing from PostgreSQL; {} sockets closed by the removed replica, reopened ({} failed attempts), longest closed-to-fresh-tally {}; {} of {} showed the final tally, the last {} after the last vote; result RSS at the end {} MB",
                    thousands(s.load.accepted as f64),
                    s.load.failed - s.load.broken,
                    s.load.broken,
                    s.load.lost.map_or("(not checked)".to_string(), |n| n.to_string()),
                    thousands(s.reconnects as f64),
                    s.failed_opens,
                    ms(s.longest_gap_ms),
                    thousands(s.caught_up as f64),
                    thousands(s.sockets as f64),
                    ms(s.final_tally_ms),
                    rss.join(", "),
                ),
            )
            .goal(
                "none refused, failed or lost (but at Nginx's reloads); every socket back to a fresh tally < 2 s; final tally everywhere < 2 s",
                lost_none
                    && s.caught_up == s.sockets
                    && s.longest_gap_ms < 2000.0
                    && s.final_tally_ms < 2000.0,
            ),
        );
        Ok(())
    }

    /// The worker (running, idle) wakes to 100,000 votes queued at once by one Lua script;
    /// timed from the script's end until the tallies count them all. The reference is one
    /// `INSERT … SELECT unnest` of the same rows into a plain table.
    async fn drain(&mut self) -> anyhow::Result<()> {
        let votes = self.args.drain_votes;
        let client = self.stack.client().await?;
        let mut redis = self.stack.redis_conn().await?;
        // Let the earlier scenarios' votes drain first.
        let mut settled = stack::tallied(&client).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = stack::tallied(&client).await?;
            if now == settled {
                break;
            }
            settled = now;
        }
        self.progress(&format!("drain: {} queued votes", thousands(votes as f64)));
        let prefix = format!("{:016x}", rand::random::<u64>());
        let script = redis::Script::new(
            r"
for i = 1, tonumber(ARGV[2]) do
    local vote = 'b'
    if i % 3 == 0 then vote = 'a' end
    redis.call('XADD', KEYS[1], '*', 'voter_id', ARGV[1] .. string.format('%016x', i), 'vote', vote)
end
return 1
",
        );
        let _: i64 = script
            .key("ballots")
            .arg(&prefix)
            .arg(votes)
            .invoke_async(&mut redis)
            .await?;
        let queued = Instant::now();
        let cpu_before = machine::descendants_cpu();
        let done =
            stack::wait_tallied(&client, settled + votes as i64, Duration::from_secs(120)).await?;
        print_cpu_per("drain: CPU per vote", &cpu_before, votes);
        let drain_s = done.duration_since(queued).as_secs_f64();

        let ids: Vec<String> = (1..=votes).map(|i| format!("{prefix}{i:016x}")).collect();
        let choices: Vec<&str> = (1..=votes)
            .map(|i| if i % 3 == 0 { "a" } else { "b" })
            .collect();
        client
            .batch_execute(
                "DROP TABLE IF EXISTS bench_reference; \
                 CREATE TABLE bench_reference (id text PRIMARY KEY, vote text NOT NULL)",
            )
            .await?;
        let started = Instant::now();
        client
            .execute(
                "INSERT INTO bench_reference (id, vote) SELECT * FROM unnest($1::text[], $2::text[])",
                &[&ids, &choices],
            )
            .await?;
        let reference_s = started.elapsed().as_secs_f64();
        client.batch_execute("DROP TABLE bench_reference").await?;

        let rate = votes as f64 / drain_s;
        let reference = votes as f64 / reference_s;
        let ratio = rate / reference;
        self.rows.push(
            Row::new(
                format!(
                    "worker drain of {} queued votes (distinct voters)",
                    thousands(votes as f64)
                ),
                format!("{drain_s:.2} s: {}/s", thousands(rate)),
            )
            .reference(
                format!(
                    "{}/s: one `INSERT … SELECT unnest` of the same rows into a plain table",
                    thousands(reference)
                ),
                Some(ratio),
            )
            .goal(">= 50 % and >= 50,000/s", ratio >= 0.5 && rate >= 50_000.0),
        );
        Ok(())
    }

    /// The one-process `voting` binary (its own worker inside) under the same JSON load,
    /// without Nginx: it serves `/vote/` itself.
    async fn voting(&mut self) -> anyhow::Result<()> {
        self.progress("voting: the one-process binary");
        let voting = self
            .stack
            .service("voting", &[("VOTING_VOTING__SUPERVISE", "false".into())])
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = machine::rss_mb(voting.proc.pid());
        let url = format!("http://{}/vote/", voting.addr);
        let real = load::loadgen(&self.stack.bin, &self.loadgen_args(&url, false, true)).await?;
        let mut row = Row::new(
            format!(
                "one-process `voting`, `POST /vote/api/vote`, {CONNECTIONS} connections, no Nginx (loadgen)"
            ),
            format!("{}; idle RSS {rss:.1} MB", vote_figure(&real)),
        );
        if let Some(split) = self.split_vote_rate {
            row = row.reference(
                format!(
                    "{}/s: the split services through Nginx, above",
                    thousands(split)
                ),
                Some(real.rate() / split),
            );
        }
        self.rows.push(row);
        drop(voting);
        Ok(())
    }
}

/// Prints the CPU time each kind of process used since `before`, per `count` (for
/// profiling: unlike a rate, it hardly depends on what else runs on the machine).
fn print_cpu_per(what: &str, before: &BTreeMap<String, f64>, count: u64) {
    let after = machine::descendants_cpu();
    let parts: Vec<String> = after
        .iter()
        .map(|(name, t)| (name, t - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, t)| *t > 0.0)
        .map(|(name, t)| format!("{name} {:.1} us", t * 1e6 / count.max(1) as f64))
        .collect();
    eprintln!("bench: {what}: {}", parts.join(", "));
}

/// Rate, latency and what PostgreSQL holds, from a verified loadgen run.
fn vote_figure(run: &Load) -> String {
    let verified = match run.verified {
        Some(true) => format!(
            "every accepted vote in PostgreSQL {:.2} s after the last",
            run.drain_s.unwrap_or(f64::NAN)
        ),
        Some(false) => "**votes missing or wrong in PostgreSQL**".into(),
        None => "not verified".into(),
    };
    format!(
        "{}/s accepted; p50 {}, p99 {}; {} refused or failed; {verified}",
        thousands(run.rate()),
        ms(run.p50_ms),
        ms(run.p99_ms),
        run.failed
    )
}

fn lag_figure(sorted: &[Duration]) -> String {
    format!(
        "p50 {}, p99 {}, max {} ({} probes)",
        ms(feed::quantile_ms(sorted, 0.5)),
        ms(feed::quantile_ms(sorted, 0.99)),
        ms(feed::quantile_ms(sorted, 1.0)),
        sorted.len()
    )
}
