//! `Redis`: startup, restart with the append-only file, isolation, drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use testkit::Redis;

/// Sends one command as a RESP array and returns the reply, simplified:
/// `+OK` → `OK`, bulk strings → their content, nil → `(nil)`,
/// integers → the digits, errors → `ERR: ...`.
fn command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();

    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => rest.to_owned(),
        "-" => format!("ERR: {rest}"),
        "$" => {
            let len: i64 = rest.parse().unwrap();
            if len < 0 {
                return "(nil)".to_owned();
            }
            let mut body = vec![0_u8; usize::try_from(len).unwrap() + 2];
            reader.read_exact(&mut body).unwrap();
            body.truncate(body.len() - 2);
            String::from_utf8(body).unwrap()
        }
        other => panic!("unexpected reply type {other:?} in {line:?}"),
    }
}

#[test]
fn starts_and_answers_ping() {
    testkit::init_logging();
    let redis = Redis::start().unwrap();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(command(redis.port(), &["PING"]), "PONG");
    assert_eq!(command(redis.port(), &["DBSIZE"]), "0");
}

#[test]
fn a_required_password_is_asked_of_new_connections() {
    testkit::init_logging();
    let redis = Redis::start().unwrap();
    redis.require_password("pw-81c3").unwrap();
    assert!(
        command(redis.port(), &["PING"]).starts_with("ERR: NOAUTH"),
        "a new connection must authenticate"
    );
}

#[test]
fn restart_after_kill_keeps_appended_keys() {
    testkit::init_logging();
    let mut redis = Redis::start().unwrap();
    let port = redis.port();
    // With the default `everysec`, a SIGKILL may lose the last second.
    assert_eq!(
        command(port, &["CONFIG", "SET", "appendfsync", "always"]),
        "OK"
    );
    assert_eq!(command(port, &["SET", "survivor", "still here"]), "OK");

    redis.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.kill(); // idempotent

    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(command(port, &["GET", "survivor"]), "still here");

    // Restarting a running server works too.
    redis.restart().unwrap();
    assert_eq!(command(port, &["GET", "survivor"]), "still here");
}

#[test]
fn parallel_instances_are_independent() {
    testkit::init_logging();
    let servers: Vec<Redis> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(Redis::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    for (i, server) in servers.iter().enumerate() {
        assert_eq!(command(server.port(), &["SET", "me", &i.to_string()]), "OK");
    }
    for (i, server) in servers.iter().enumerate() {
        assert_eq!(command(server.port(), &["GET", "me"]), i.to_string());
    }
}

#[test]
fn drop_stops_the_server() {
    testkit::init_logging();
    let redis = Redis::start().unwrap();
    let port = redis.port();
    drop(redis);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
