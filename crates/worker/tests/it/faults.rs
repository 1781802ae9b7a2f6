//! Faults under load: votes flow continuously (many voters, about a third voting again) while
//! a worker, Redis or PostgreSQL fails, and afterwards every accepted vote is in PostgreSQL
//! with its voter's last accepted choice, no refused vote is, `tallies` equals the count of
//! `votes`, and nothing is left pending. Each scenario prints its figures (accepted, refused,
//! lost, wrong); `scripts/test` runs this module with `--nocapture` so CI logs show them.
//!
//! "Mid-batch" is arranged, not hoped for: a session holding `LOCK TABLE tallies` stops every
//! worker's batch inside its transaction, after the entries were read and before the commit;
//! the test waits until the victim has entries pending and a session waiting on the lock.

use std::time::Duration;

use hyper::StatusCode;

use crate::cluster::{Cluster, Figures, Load, RECOVERY, result_tally};
use crate::helpers::{eventually, own_infra};

/// Runs Redis's and PostgreSQL's blocking start and stop without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Only Redis failing may refuse a vote: a worker or PostgreSQL failing only delays it.
fn answered_every_vote(figures: &Figures) {
    assert_eq!(
        (figures.refused, figures.unanswered),
        (0, 0),
        "every vote is accepted while Redis is up: {figures}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_batch_and_restarted_loses_nothing() {
    let mut cluster = Cluster::start(1, 1, 0).await;
    let load = cluster.load(0, Load::default());
    let fault = async {
        let (hold, pending) = cluster.catch_mid_batch(0).await;
        cluster.workers[0].kill();
        println!("worker w1 SIGKILLed with {pending} entries pending on it");
        hold.release().await;
        // Votes keep coming with no worker at all for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A restarted container gets a new consumer name; it claims the dead one's entries.
        cluster.spawn_worker("w1-restarted").await;
    };
    let (report, ()) = tokio::join!(load, fault);
    let figures = cluster
        .check("worker SIGKILL mid-batch, restarted", &[report])
        .await;
    answered_every_vote(&figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_worker_carries_on_when_one_is_killed_mid_batch() {
    let mut cluster = Cluster::start(1, 2, 0).await;
    let load = cluster.load(0, Load::default());
    let fault = async {
        let (hold, pending) = cluster.catch_mid_batch(0).await;
        cluster.workers[0].kill();
        println!("worker w1 SIGKILLed with {pending} entries pending on it; w2 runs on");
        hold.release().await;
    };
    let (report, ()) = tokio::join!(load, fault);
    let figures = cluster
        .check("worker SIGKILL mid-batch, second worker", &[report])
        .await;
    answered_every_vote(&figures);
    assert!(
        cluster.workers[1].log().contains("claimed"),
        "w2 claimed w1's entries:\n{}",
        cluster.workers[1].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_from_its_append_only_file() {
    let mut cluster = Cluster::start(1, 1, 0).await;
    let load = cluster.load(0, Load::default());
    let fault = async {
        cluster.wait_for_votes(100).await;
        blocking(|| cluster.infra.redis_mut().kill());
        println!("redis-server SIGKILLed");
        tokio::time::sleep(Duration::from_secs(3)).await;
        blocking(|| cluster.infra.redis_mut().restart()).expect("redis-server restarts");
        println!("redis-server restarted from its append-only file");
    };
    let (report, ()) = tokio::join!(load, fault);
    let figures = cluster
        .check("redis SIGKILL, restart with AOF", &[report])
        .await;
    // While Redis is down votes are refused, never accepted and dropped.
    assert!(
        figures.refused_by_status.keys().all(|&s| s == 503),
        "{figures}"
    );
}

/// How many people vote during the stall, by each way.
const PEOPLE: usize = 40;
/// Presses a person makes before the test gives up on them.
const MAX_PRESSES: usize = 40;

/// One person at the vote service: how they voted and what they were told.
#[derive(Debug)]
struct Person {
    voter: String,
    choice: &'static str,
    /// The 503s they got before their vote was confirmed, by `Vote-Outcome`.
    unconfirmed: usize,
    not_recorded: usize,
}

/// A first-time voter, as a person behaves: with the form, they load the page (which gives
/// them a voter id) and press a button; with the JSON API, they send no cookie at all. On a
/// 503 they wait `Retry-After` and press again, carrying the cookie the answer set, until the
/// vote is confirmed. `first_answer` is told when the first press has been answered.
async fn person(
    vote: std::net::SocketAddr,
    form: bool,
    choice: &'static str,
    first_answer: tokio::sync::mpsc::Sender<()>,
) -> Person {
    let mut cookie = String::new();
    if form {
        let page = testkit::http::get(vote, "/").await.expect("the page loads");
        cookie = page.cookies();
        assert!(
            cookie.starts_with("voter_id="),
            "the page gives a voter id: {page:?}"
        );
    }
    let (path, content_type, body) = if form {
        (
            "/",
            "application/x-www-form-urlencoded",
            format!("vote={choice}"),
        )
    } else {
        (
            "/api/vote",
            "application/json",
            format!(r#"{{"vote":"{choice}"}}"#),
        )
    };
    let (mut unconfirmed, mut not_recorded) = (0, 0);
    for press in 0..MAX_PRESSES {
        let mut headers = vec![("content-type", content_type)];
        if !cookie.is_empty() {
            headers.push(("cookie", cookie.as_str()));
        }
        let answer = testkit::http::send(vote, hyper::Method::POST, path, &headers, body.clone())
            .await
            .expect("the vote service answers");
        if press == 0 {
            let _ = first_answer.send(()).await;
        }
        let named = answer.cookies();
        assert!(
            named.starts_with("voter_id="),
            "every answer names the voter: {answer:?}"
        );
        if !cookie.is_empty() {
            assert_eq!(
                named.split(';').next(),
                cookie.split(';').next(),
                "the same voter"
            );
        }
        let voter = named["voter_id=".len()..]
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        match answer.status {
            StatusCode::SEE_OTHER | StatusCode::ACCEPTED => {
                return Person {
                    voter,
                    choice,
                    unconfirmed,
                    not_recorded,
                };
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                match answer.header("vote-outcome") {
                    "unconfirmed" => unconfirmed += 1,
                    "not-recorded" => not_recorded += 1,
                    other => panic!("a 503 says what is known, not {other:?}: {answer:?}"),
                }
                if !form {
                    let body: serde_json::Value =
                        serde_json::from_str(&answer.body).expect("a JSON answer");
                    assert_eq!(
                        body["voter_id"],
                        voter.as_str(),
                        "the JSON 503 names the voter"
                    );
                }
                cookie = format!("voter_id={voter}");
                let wait: u64 = answer.header("retry-after").parse().expect("Retry-After");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => panic!("a vote is confirmed or answered 503, not {other}: {answer:?}"),
        }
    }
    panic!("a person pressed {MAX_PRESSES} times without a confirmed vote");
}

/// Redis stalls (SIGSTOP, as an overloaded or frozen Redis behaves) for longer than vote's
/// timeout, under load, while first-time voters vote and press again when told to. Votes
/// written to the stalled Redis are applied when it resumes, so a 503 there is "could not
/// confirm", and the retry must replace that voter's ballot: every person is one row, holding
/// their vote, and nobody else is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_while_first_time_voters_retry_counts_each_person_once() {
    let cluster = Cluster::start(1, 1, 0).await;
    let load = cluster.load(0, Load::default());
    let vote = cluster.votes[0];
    let fault = async {
        cluster.wait_for_votes(100).await;
        blocking(|| cluster.infra.redis().pause()).expect("SIGSTOP redis-server");
        println!("redis-server SIGSTOPped");
        let (tx, mut first_answers) = tokio::sync::mpsc::channel(2 * PEOPLE);
        let people: Vec<_> = (0..2 * PEOPLE)
            .map(|n| {
                let choice = if n % 3 == 0 { "a" } else { "b" };
                tokio::spawn(person(vote, n % 2 == 0, choice, tx.clone()))
            })
            .collect();
        drop(tx);
        // Everyone has pressed once, and been answered, while Redis was stopped.
        for _ in 0..2 * PEOPLE {
            first_answers.recv().await.expect("a first answer");
        }
        blocking(|| cluster.infra.redis().resume()).expect("SIGCONT redis-server");
        println!("redis-server SIGCONTed after every person's first press was answered");
        let mut done = Vec::new();
        for p in people {
            done.push(p.await.expect("a person's task"));
        }
        done
    };
    let (report, people) = tokio::join!(load, fault);
    let figures = cluster
        .check("redis SIGSTOP, first-time voters retry", &[report])
        .await;

    let pg = cluster.infra.pg().await;
    let ids: Vec<String> = people.iter().map(|p| p.voter.clone()).collect();
    let rows: std::collections::HashMap<String, String> = pg
        .query("SELECT id, vote FROM votes WHERE id = ANY($1)", &[&ids])
        .await
        .expect("the people's rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let load_voters: Vec<String> = (0..Load::default().voters)
        .map(|n| loadgen::plan::voter_id(Load::default().seed, n).to_string())
        .collect();
    let strangers: i64 = pg
        .query_one(
            "SELECT count(*) FROM votes WHERE NOT (id = ANY($1))",
            &[&load_voters],
        )
        .await
        .expect("rows of neither loadgen nor a person")
        .get(0);
    let lost = people
        .iter()
        .filter(|p| !rows.contains_key(&p.voter))
        .count();
    let wrong = people
        .iter()
        .filter(|p| rows.get(&p.voter).is_some_and(|v| v != p.choice))
        .count();
    let unconfirmed: usize = people.iter().map(|p| p.unconfirmed).sum();
    let not_recorded: usize = people.iter().map(|p| p.not_recorded).sum();
    println!(
        "[people during the stall] {} people ({PEOPLE} form, {PEOPLE} JSON) | 503s: unconfirmed \
         {unconfirmed}, not recorded {not_recorded} | rows {} | counted twice {} | lost {lost} \
         | wrong {wrong}",
        people.len(),
        strangers,
        strangers - people.len() as i64,
    );
    assert!(
        people.iter().all(|p| p.unconfirmed + p.not_recorded >= 1),
        "every person's first press met the stalled Redis: {people:?}"
    );
    assert_eq!(
        (lost, wrong),
        (0, 0),
        "every person's vote is their row: {people:?}"
    );
    assert_eq!(
        strangers,
        people.len() as i64,
        "one row per person, none for a voter id a retry made up"
    );
    assert!(
        figures.refused_by_status.keys().all(|&s| s == 503),
        "{figures}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_immediately_and_started_again() {
    let mut cluster = Cluster::start_on(own_infra().await, 1, 1, 0).await;
    let load = cluster.load(0, Load::default());
    let fault = async {
        cluster.wait_for_votes(100).await;
        blocking(|| cluster.infra.server().stop_immediate()).expect("pg_ctl -m immediate");
        println!("PostgreSQL stopped (immediate)");
        let worker = &cluster.workers[0];
        eventually(RECOVERY, "the worker reports not ready", || async {
            (worker.readyz().await == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        blocking(|| cluster.infra.server().start_again()).expect("PostgreSQL starts again");
        println!("PostgreSQL started again (crash recovery)");
    };
    let (report, ()) = tokio::join!(load, fault);
    let figures = cluster
        .check("postgres immediate stop, start", &[report])
        .await;
    answered_every_vote(&figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_loses_postgres_and_gets_it_back() {
    let mut cluster = Cluster::start_on(own_infra().await, 1, 1, 1).await;
    let result = cluster.results[0];
    let load = cluster.load(0, Load::default());
    let fault = async {
        cluster.wait_for_votes(100).await;
        blocking(|| cluster.infra.server().stop_immediate()).expect("pg_ctl -m immediate");
        println!("PostgreSQL stopped (immediate) under the result service");
        // The page keeps the last tallies, marked stale, and the service says it is not ready.
        eventually(RECOVERY, "result marks its tallies stale", || async {
            result_tally(result).await.filter(|t| t.1).map(|_| ())
        })
        .await;
        let ready = testkit::http::get(result, "/readyz").await.expect("readyz");
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        blocking(|| cluster.infra.server().start_again()).expect("PostgreSQL starts again");
        println!("PostgreSQL started again");
    };
    let (report, ()) = tokio::join!(load, fault);
    let figures = cluster
        .check("result loses postgres, gets it back", &[report])
        .await;
    cluster.results_agree(&figures.tallies).await;
    let ready = testkit::http::get(result, "/readyz").await.expect("readyz");
    assert_eq!(ready.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_wakes_after_its_entries_were_claimed_without_double_counting() {
    let cluster = Cluster::start(1, 2, 0).await;
    let load = cluster.load(0, Load::default());
    let fault = async {
        let (hold, pending) = cluster.catch_mid_batch(0).await;
        cluster.workers[0].pause();
        println!("worker w1 SIGSTOPped with {pending} entries pending on it");
        hold.release().await;
        // w2 claims w1's entries once they have been idle long enough.
        eventually(RECOVERY, "w1's entries claimed by w2", || async {
            let pending = cluster.pending_by_consumer().await;
            (pending.get("w1").copied().unwrap_or(0) == 0).then_some(())
        })
        .await;
        println!("w1's entries claimed by w2; w1 resumes");
        cluster.workers[0].resume();
    };
    let (report, ()) = tokio::join!(load, fault);
    let figures = cluster
        .check("worker SIGSTOP, claimed, SIGCONT", &[report])
        .await;
    answered_every_vote(&figures);
}

/// Scale-out: two vote services and three workers on one Redis and one PostgreSQL, under load
/// through both vote services at once (one with the JSON API, one with the form), and three
/// result services that must all end up showing the same, correct tallies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vote_services_three_workers_three_results_agree() {
    let cluster = Cluster::start(2, 3, 3).await;
    let json = cluster.load(
        0,
        Load {
            seed: 11,
            ..Load::default()
        },
    );
    let form = cluster.load(
        1,
        Load {
            seed: 12,
            form: true,
            ..Load::default()
        },
    );
    let (json, form) = tokio::join!(json, form);
    let figures = cluster
        .check("scale-out: 2 vote, 3 workers, 3 results", &[json, form])
        .await;
    answered_every_vote(&figures);
    cluster.results_agree(&figures.tallies).await;
    let deadlocks: i64 = cluster
        .infra
        .pg()
        .await
        .query_one(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .expect("pg_stat_database")
        .get(0);
    println!("deadlocks detected by PostgreSQL (each retried by the worker): {deadlocks}");
    for worker in &cluster.workers {
        assert_eq!(
            worker.readyz().await,
            Some(StatusCode::OK),
            "{}",
            worker.name
        );
    }
}
