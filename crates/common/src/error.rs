//! Error text for people: every log line, `/readyz` body and start-up message that shows an
//! error goes through [`describe`].
//!
//! An error and its sources are joined with `: `, as anyhow's `{:#}` does, but a source whose
//! text its parent already shows is left out (redis-rs shows an I/O error's text and gives it
//! as the source too, so `{:#}` printed "broken pipe: broken pipe"), and so is the bare "db
//! error" that tokio-postgres puts before the server's own message. The few texts that are
//! crate jargon ("Timed out in bb8") are said in words, and redis-rs' name of the error kind
//! after its message ("Password authentication failed - AuthenticationFailed") is left out.

use std::error::Error;

/// `error` and its sources, each text once: see the module documentation.
pub fn describe(error: &anyhow::Error) -> String {
    join(error.chain())
}

/// [`describe`] for any error type.
pub fn describe_error(error: &(dyn Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        chain.push(e);
        next = e.source();
    }
    join(chain.into_iter())
}

fn join<'a>(chain: impl Iterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut out = String::new();
    for error in chain {
        let mut text = error.to_string();
        if let Some(redis) = error.downcast_ref::<redis::RedisError>() {
            let kind = format!(" - {:?}", redis.kind());
            if let Some(i) = text.find(&kind) {
                text.replace_range(i..i + kind.len(), "");
            }
        }
        let text = match text.trim() {
            // tokio-postgres' wrapper of a server error: the server's message follows.
            "db error" => continue,
            // bb8's pool gave no connection within its connection timeout.
            "Timed out in bb8" => "no connection within the pool's wait",
            text => text,
        };
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    if out.is_empty() {
        out.push_str("unknown error");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use std::io;

    #[test]
    fn an_io_error_shows_once_however_it_is_wrapped() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused");
        let redis = redis::RedisError::from(io);
        let shown = describe_error(&redis);
        assert_eq!(shown.matches("Connection refused").count(), 1, "{shown}");
        // As anyhow's `{:#}` showed it before.
        let wrapped = anyhow::Error::new(redis).context("no Redis connection");
        assert_eq!(
            format!("{wrapped:#}").matches("Connection refused").count(),
            2,
            "the duplicate this module removes"
        );
        let shown = describe(&wrapped);
        assert!(shown.starts_with("no Redis connection: "), "{shown}");
        assert_eq!(shown.matches("Connection refused").count(), 1, "{shown}");
    }

    #[test]
    fn a_broken_pipe_is_said_once() {
        let redis = redis::RedisError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(describe_error(&redis), "broken pipe");
    }

    #[test]
    fn bb8_time_outs_are_said_in_words() {
        let timed_out: bb8::RunError<redis::RedisError> = bb8::RunError::TimedOut;
        let e = anyhow::Error::new(timed_out).context("no Redis connection");
        assert_eq!(
            describe(&e),
            "no Redis connection: no connection within the pool's wait"
        );
        let refused = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let user: bb8::RunError<redis::RedisError> = bb8::RunError::User(refused);
        let shown = describe_error(&user);
        assert_eq!(shown, "connection refused");
    }

    #[tokio::test]
    async fn tokio_postgres_errors_keep_their_cause_once() {
        // Nothing listens on port 1.
        let e = tokio_postgres::connect(
            "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2",
            tokio_postgres::NoTls,
        )
        .await
        .map(|_| ())
        .unwrap_err();
        let shown = describe(&anyhow::Error::new(e).context("connecting to PostgreSQL"));
        assert!(
            shown.starts_with("connecting to PostgreSQL: error connecting to server: "),
            "{shown}"
        );
        let refused = shown.to_lowercase().matches("connection refused").count();
        assert_eq!(refused, 1, "{shown}");
    }

    #[test]
    fn redis_kinds_are_not_shown() {
        let e = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(describe_error(&e), "Password authentication failed");
        let e = redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection marked dead",
            "by the pool".to_string(),
        ));
        assert_eq!(describe_error(&e), "connection marked dead: by the pool");
    }

    #[test]
    fn plain_chains_are_joined_like_anyhow() {
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("inner")).context("outer");
        assert_eq!(describe(&e.unwrap_err()), "outer: inner");
        let same: anyhow::Result<()> = Err(anyhow::anyhow!("same")).context("same");
        assert_eq!(describe(&same.unwrap_err()), "same");
    }
}
