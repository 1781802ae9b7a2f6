//! The trivial upstream of the reference runs: a hyper server that answers every request at
//! once with no body. `POST /api/vote` gets `202` and `POST /` gets `303`, the statuses of
//! the real routes, so that the same load generator counts its answers as accepted; anything
//! else gets `204`.
//!
//! Why a hyper server of its own and not a `return 204;` block in the same Nginx: the bench
//! runs Nginx with one worker process, as the project does on one host. A `server` block in
//! that worker would add its own request handling to the proxy's, so the reference would
//! measure Nginx doing twice the work. As a separate single-threaded process the upstream
//! costs little and sits where vote does: Nginx does exactly the same proxying in both runs,
//! and only what stands behind it changes.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Serves on `listen` until killed.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let status = match (req.method(), req.uri().path()) {
        (&Method::POST, "/api/vote") => StatusCode::ACCEPTED,
        (&Method::POST, "/") => StatusCode::SEE_OTHER,
        _ => StatusCode::NO_CONTENT,
    };
    // Read the (tiny) body, as a real service does, so the connection stays reusable.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = status;
    if status == StatusCode::SEE_OTHER {
        resp.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_static("./"),
        );
    }
    Ok(resp)
}
