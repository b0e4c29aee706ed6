//! The log's files over HTTP, read-only, as C2SP tlog-tiles logs serve them: `GET /checkpoint`
//! and `GET /tile/...`; nothing else in the directory is reachable. Also the client a witness
//! or an auditor fetches them with.

use std::future::Future;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use crate::tiles::{TileDir, TileSource, is_log_path};

/// Serves `dir` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dir: TileDir,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/checkpoint", axum::routing::get(checkpoint))
        .route("/tile/{*rest}", axum::routing::get(tile))
        .with_state(dir);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn checkpoint(State(dir): State<TileDir>) -> Response {
    file(&dir, "checkpoint", "text/plain; charset=utf-8", "no-store")
}

async fn tile(State(dir): State<TileDir>, Path(rest): Path<String>) -> Response {
    let path = format!("tile/{rest}");
    // Full tiles never change; partial ones are replaced by wider ones.
    let cache = if path.contains(".p/") {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    file(&dir, &path, "application/octet-stream", cache)
}

fn file(dir: &TileDir, path: &str, content_type: &'static str, cache: &'static str) -> Response {
    if !is_log_path(path) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match dir.read(path) {
        Ok(Some(bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, cache),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Fetches `path` from a log served at `base` (`http://host:port`, plain HTTP/1.1; put TLS in
/// front for another office). `None` on 404.
pub async fn fetch(base: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// URLs are fetched"))?
        .trim_end_matches('/');
    let (host, prefix) = authority.split_once('/').unwrap_or((authority, ""));
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|err| format!("{base}: {err}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| format!("{base}: {err}"))?;
    tokio::spawn(connection);
    let uri = if prefix.is_empty() {
        format!("/{path}")
    } else {
        format!("/{prefix}/{path}")
    };
    let request = hyper::Request::get(uri)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("{base}/{path}: {err}"))?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Ok(None),
        status => return Err(format!("{base}/{path}: {status}")),
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("{base}/{path}: {err}"))?;
    Ok(Some(body.to_bytes().to_vec()))
}
