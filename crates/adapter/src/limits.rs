//! Oversized requests answer `RESOURCE_EXHAUSTED`, as the contract promises.
//!
//! tonic refuses a message above its decoding limit with `OUT_OF_RANGE`; this layer turns that
//! answer into `RESOURCE_EXHAUSTED` with a message an agency's developer can act on. Nothing was
//! decoded, so nothing was written.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// Wraps a gRPC service; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimitLayer {
    pub(crate) limit: usize,
}

impl<S> Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestLimit<S> {
    inner: S,
    limit: usize,
}

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

impl<S, B, R> Service<Request<B>> for RequestLimit<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limit = self.limit;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers();
            let too_large = headers
                .get("grpc-status")
                .is_some_and(|s| s == OUT_OF_RANGE)
                && headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .is_some_and(|m| {
                        m.contains("message%20length%20too%20large")
                            || m.contains("message length too large")
                    });
            if too_large {
                let message = format!(
                    "the request is larger than this adapter accepts ({limit} bytes); send large documents outside refbus"
                );
                let headers = response.headers_mut();
                headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
                if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
                    headers.insert("grpc-message", value);
                }
            }
            Ok(response)
        })
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
