//! A thousand sockets open at once all get the update; a client that never reads delays
//! nobody.

use futures_util::future::join_all;

use crate::helpers::{DEADLINE, Infra, Socket, cast, eventually, metric, spawn_result, voter};

const SOCKETS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_all_get_the_update_and_a_stalled_client_delays_none() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    app.tally_where("a fresh tally", |t| !t.stale).await;

    // A client that completes the handshake and then never reads a byte.
    let stalled = app.socket().await;

    // Open the sockets a hundred at a time (the listen backlog is finite), each reading its
    // first snapshot.
    let mut sockets: Vec<Socket> = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS / 100 {
        let batch = join_all((0..100).map(|_| async {
            let mut socket = app.socket().await;
            let first = socket.next_tally().await;
            assert_eq!(first.total, 0);
            socket
        }))
        .await;
        sockets.extend(batch);
    }
    let text = app.get("/metrics").await.body;
    assert!(
        metric(&text, "result_sockets_open") > SOCKETS as u64,
        "{text}"
    );

    cast(&infra, &voter(1), "a").await;
    let tasks = sockets.into_iter().map(|mut socket| {
        tokio::spawn(async move {
            let tally = socket.tally_where("the update", |t| t.total == 1).await;
            assert_eq!(tally.count("a"), 1);
            socket
        })
    });
    let sockets: Vec<Socket> = join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("every socket got the update"))
        .collect();
    assert_eq!(sockets.len(), SOCKETS);

    // A second update still reaches everyone while the stalled client holds its frames.
    cast(&infra, &voter(2), "b").await;
    let tasks = sockets.into_iter().map(|mut socket| {
        tokio::spawn(async move {
            socket
                .tally_where("the second update", |t| t.total == 2)
                .await;
        })
    });
    for joined in join_all(tasks).await {
        joined.expect("every socket got the second update");
    }
    eventually(DEADLINE, "the frames were counted", || async {
        let text = app.get("/metrics").await.body;
        (metric(&text, "result_frames_sent_total") >= 3 * SOCKETS as u64).then_some(())
    })
    .await;
    drop(stalled);
}
