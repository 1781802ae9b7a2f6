//! A service's `run` (vote, worker, result or the all-in-one) on a task of the test's runtime,
//! with a listener of the test's choosing, stopped the way SIGTERM stops it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use common::config::Config;
use hyper::Method;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::Answer;
use crate::{DEADLINE, Socket, Tally};

/// The shutdown signal a service's `run` is given.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running service. Dropping it asks the service to stop (the stop signal's sender goes).
pub struct App {
    pub addr: SocketAddr,
    /// Where the result service's routes start: `""`, or `"/result"` in the all-in-one.
    pub results: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    /// Starts `run` (a service's `run(config, listener, shutdown)`) with `config`, on `listener`
    /// or else on a new one bound to `127.0.0.1:0`.
    pub async fn spawn<F, Fut>(run: F, config: Config, listener: Option<TcpListener>) -> App
    where
        F: FnOnce(Config, TcpListener, Stop) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        crate::init_logging();
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binds 127.0.0.1:0"),
        };
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            config,
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));
        App {
            addr,
            results: "",
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[]).await
    }

    /// One request without a body, answered within [`DEADLINE`].
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        crate::http::request(self.addr, method, path, headers, "").await
    }

    /// The results' tally JSON.
    pub async fn tally(&self) -> Tally {
        Tally::get(self.addr, &format!("{}/api/tally", self.results)).await
    }

    /// Polls the results' tally JSON until `pred` holds.
    pub async fn tally_where(&self, what: &str, pred: impl Fn(&Tally) -> bool) -> Tally {
        Tally::when(
            self.addr,
            &format!("{}/api/tally", self.results),
            DEADLINE,
            what,
            pred,
        )
        .await
    }

    /// Opens a WebSocket to the results (no `Origin`, like a non-browser client).
    pub async fn socket(&self) -> Socket {
        self.socket_with(&[]).await.expect("the socket opens")
    }

    /// Opens a WebSocket to the results with extra request headers; the error is the refusal.
    pub async fn socket_with(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        Socket::open(&format!("ws://{}{}/ws", self.addr, self.results), headers).await
    }

    /// Stops the service and waits until `run` has returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
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
