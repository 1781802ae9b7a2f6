//! A vote travels the whole way inside one process: the form under `/vote/`, Redis, the
//! worker's loop, PostgreSQL, and back out under `/result/`, on the page's API and on an open
//! WebSocket at `/result/ws`.

use hyper::StatusCode;

use crate::helpers::{DEADLINE, Socket, TALLY, Tally, infra, spawn_app, vote_form};

#[tokio::test]
async fn a_form_vote_reaches_the_tally_and_an_open_socket() {
    let infra = infra().await;
    let mut app = spawn_app(&infra).await;

    let mut socket = Socket::open(&format!("ws://{}/result/ws", app.addr), &[])
        .await
        .expect("the socket opens");
    let before = socket.tally_where("a fresh snapshot", |t| !t.stale).await;
    assert_eq!(before.total, 0);

    let answer = vote_form(app.addr, "a").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.header("location"), "./");
    assert!(
        answer.cookies().contains("voter_id="),
        "{:?}",
        answer.headers
    );

    let after = socket
        .tally_where("the vote on the socket", |t| t.total == 1)
        .await;
    assert_eq!(after.count("a"), 1);
    let tally = Tally::when(
        app.addr,
        TALLY,
        DEADLINE,
        "the vote in /result/api/tally",
        |t| t.total == 1,
    )
    .await;
    assert_eq!(tally.count("a"), 1);
    assert_eq!(tally.count("b"), 0);

    let answer = vote_form(app.addr, "b").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let after = socket
        .tally_where("the second vote", |t| t.total == 2)
        .await;
    assert_eq!((after.count("a"), after.count("b")), (1, 1));

    app.stop().await.expect("the app stops cleanly");
}
