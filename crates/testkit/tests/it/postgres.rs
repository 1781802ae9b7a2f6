//! `Postgres`: startup, databases, crash and restart, isolation, drop; `Infra`'s shared server.

use std::net::TcpStream;

use testkit::{Infra, Postgres};
use tokio_postgres::Client;

/// Connects to `url`, driving the connection on a background task.
async fn connect(url: &str) -> Client {
    testkit::pg_client(url)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn create_database_gives_a_usable_url() {
    testkit::init_logging();
    let pg = Postgres::start().unwrap();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );

    let url = pg.create_database().await.unwrap();
    let other = pg.create_database().await.unwrap();
    assert_ne!(url, other);
    assert!(
        url.starts_with(&format!("postgres://postgres@127.0.0.1:{}/t_", pg.port())),
        "{url}"
    );

    let client = connect(&url).await;
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(url.ends_with(&format!("/{name}")), "{url} vs {name}");
}

#[tokio::test]
async fn stop_immediate_then_start_again_keeps_committed_data() {
    testkit::init_logging();
    let mut pg = Postgres::start().unwrap();
    let port = pg.port();
    let url = pg.create_database().await.unwrap();
    {
        let client = connect(&url).await;
        // The server runs with synchronous_commit=off; ask for a real commit
        // so the row is in the WAL before the "crash".
        client
            .batch_execute(
                "SET synchronous_commit = on;
                 CREATE TABLE t (v text);
                 INSERT INTO t VALUES ('kept');",
            )
            .await
            .unwrap();
    }

    pg.stop_immediate().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    pg.stop_immediate().unwrap(); // idempotent

    pg.start_again().unwrap();
    assert_eq!(pg.port(), port);
    assert!(pg.start_again().is_err(), "already running");

    let client = connect(&url).await;
    let v: String = client
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "kept");
}

#[test]
fn parallel_instances_are_independent() {
    testkit::init_logging();
    let servers: Vec<Postgres> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3).map(|_| scope.spawn(Postgres::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (i, pg) in servers.iter().enumerate() {
            let client = connect(&pg.url()).await;
            client
                .batch_execute(&format!("CREATE TABLE only_here_{i} ()"))
                .await
                .unwrap();
        }
        for (i, pg) in servers.iter().enumerate() {
            let client = connect(&pg.url()).await;
            let count: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'only_here_%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(count, 1, "server {i}");
        }
    });
}

#[test]
fn drop_stops_the_server() {
    testkit::init_logging();
    let pg = Postgres::start().unwrap();
    let port = pg.port();
    drop(pg);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// `require_password`: TCP clients need the password; the right one gets in.
#[tokio::test]
async fn a_password_is_required_once_asked_for() {
    let pg = testkit::Postgres::start().expect("PostgreSQL starts");
    pg.require_password("pw-1f3e").await.unwrap();
    let port = pg.port();
    let refused = testkit::eventually(
        std::time::Duration::from_secs(30),
        "TCP asks for it",
        || async {
            testkit::pg_client(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
                .await
                .err()
        },
    )
    .await;
    assert!(format!("{refused:#}").contains("password"), "{refused:#}");
    testkit::pg_client(&format!(
        "postgres://postgres:pw-1f3e@127.0.0.1:{port}/postgres"
    ))
    .await
    .expect("the password lets it in");
}

/// `Infra::database`: one server for the process, a fresh database per test, and what one
/// test writes is never seen by another.
#[tokio::test]
async fn infra_databases_share_a_server_and_nothing_else() {
    let (one, two) = (Infra::database().await, Infra::database().await);
    let (server_one, db_one) = one.db_url().rsplit_once('/').unwrap();
    let (server_two, db_two) = two.db_url().rsplit_once('/').unwrap();
    assert_eq!(server_one, server_two, "one server");
    assert_ne!(db_one, db_two, "two databases");
    one.pg()
        .await
        .batch_execute("CREATE TABLE mine ()")
        .await
        .unwrap();
    let seen = "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'";
    let count = |row: tokio_postgres::Row| row.get::<_, i64>(0);
    assert_eq!(count(one.pg().await.query_one(seen, &[]).await.unwrap()), 1);
    assert_eq!(count(two.pg().await.query_one(seen, &[]).await.unwrap()), 0);
}
