//! A minimal HTTP GET for the server's monitoring endpoints (`/healthz`, `/jsz`, `/varz`).
//!
//! The endpoints are plain HTTP on loopback; an HTTP/1.0 request makes the server close the
//! connection after the body, so reading to the end is the whole protocol.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP status and body of `GET path` on the monitoring port, or why it could not be had.
pub(crate) fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&address, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    parse(&String::from_utf8_lossy(&response))
}

fn parse(response: &str) -> Result<(u16, String), String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("malformed HTTP status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let response = "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n\
                        {\"status\":\"unavailable\"}";
        assert_eq!(
            parse(response),
            Ok((503, "{\"status\":\"unavailable\"}".to_owned()))
        );
    }

    #[test]
    fn rejects_a_response_without_headers_end() {
        assert!(parse("HTTP/1.0 200 OK\r\n").is_err());
    }
}
