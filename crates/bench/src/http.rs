//! A minimal HTTP/1.1 client for `bench dashboard`: what a browser does to the board (a login,
//! a page, a live feed of server-sent events), on plain TCP, one request per connection. Small
//! on purpose: no client library in the bench's way, and nothing the dashboard serves needs
//! more (no redirects followed, no compression asked for).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// A response read to its end.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The `name=value` of every `Set-Cookie`.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(name, _)| name == "set-cookie")
            .filter_map(|(_, value)| {
                let pair = value.split(';').next()?;
                let (name, value) = pair.split_once('=')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn http(message: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("HTTP: {message}"))
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, BenchError> {
    let mut stream = send(addr, method, target, headers, body, true).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let (status, headers, rest) = head(&raw)?.ok_or_else(|| http("no complete head"))?;
    let body = if is_chunked(&headers) {
        let mut chunks = Chunks::default();
        let mut body = Vec::new();
        chunks.feed(&raw[rest..], &mut body)?;
        body
    } else {
        raw[rest..].to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Result<TcpStream, BenchError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        text.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await?;
    Ok(stream)
}

type Head = (u16, Vec<(String, String)>, usize);

/// The status, headers and where the body starts, once the head is complete.
fn head(raw: &[u8]) -> Result<Option<Head>, BenchError> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&raw[..end]).map_err(http)?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| http("no status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Some((status, headers, end + 4)))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Undoes chunked transfer encoding as bytes arrive.
#[derive(Debug, Default)]
struct Chunks {
    pending: Vec<u8>,
    /// Bytes of the current chunk still to come (then its CRLF).
    left: usize,
    /// The CRLF after a chunk's data is still to skip.
    trailer: bool,
}

impl Chunks {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), BenchError> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            if self.left > 0 {
                let take = self.left.min(self.pending.len() - at);
                out.extend_from_slice(&self.pending[at..at + take]);
                at += take;
                self.left -= take;
                if self.left > 0 {
                    break;
                }
                self.trailer = true;
            }
            if self.trailer {
                if self.pending.len() - at < 2 {
                    break;
                }
                at += 2;
                self.trailer = false;
            }
            let Some(line) = find(&self.pending[at..], b"\r\n") else {
                break;
            };
            let size = std::str::from_utf8(&self.pending[at..at + line])
                .ok()
                .and_then(|text| usize::from_str_radix(text.split(';').next()?.trim(), 16).ok())
                .ok_or_else(|| http("bad chunk size"))?;
            at += line + 2;
            if size == 0 {
                at = self.pending.len();
                break;
            }
            self.left = size;
        }
        self.pending.drain(..at);
        Ok(())
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub id: String,
    pub data: String,
}

/// A live feed: a `GET` whose response is read as server-sent events as they come.
pub struct EventStream {
    stream: TcpStream,
    chunked: bool,
    chunks: Chunks,
    /// Decoded body not yet split into events.
    text: Vec<u8>,
    /// What each read fills.
    buffer: Vec<u8>,
    pub status: u16,
}

impl EventStream {
    pub async fn open(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventStream, BenchError> {
        let mut stream = send(addr, "GET", target, headers, b"", false).await?;
        let mut raw = Vec::new();
        // On the heap: a future holding it would be large.
        let mut buffer = vec![0u8; 64 * 1024];
        let (status, headers, rest) = loop {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                return Err(http("the feed closed before its head"));
            }
            raw.extend_from_slice(&buffer[..read]);
            if let Some(head) = head(&raw)? {
                break head;
            }
        };
        let mut feed = EventStream {
            stream,
            chunked: is_chunked(&headers),
            chunks: Chunks::default(),
            text: Vec::new(),
            buffer,
            status,
        };
        feed.take(&raw[rest..])?;
        Ok(feed)
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        if self.chunked {
            self.chunks.feed(bytes, &mut self.text)
        } else {
            self.text.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// The next events (at least one), or `None` once the feed ended.
    pub async fn next(&mut self) -> Result<Option<Vec<Event>>, BenchError> {
        loop {
            let events = split_events(&mut self.text);
            if !events.is_empty() {
                return Ok(Some(events));
            }
            let read = self.stream.read(&mut self.buffer).await?;
            if read == 0 {
                return Ok(None);
            }
            let bytes = std::mem::take(&mut self.buffer);
            let taken = self.take(&bytes[..read]);
            self.buffer = bytes;
            taken?;
        }
    }
}

/// Takes the complete events out of a feed's decoded text (comments dropped).
fn split_events(text: &mut Vec<u8>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(end) = find(text, b"\n\n") {
        let block: Vec<u8> = text.drain(..end + 2).collect();
        let mut event = Event::default();
        let mut data = Vec::new();
        for line in String::from_utf8_lossy(&block).lines() {
            if let Some(value) = line.strip_prefix("event:") {
                event.event = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("id:") {
                event.id = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        if !event.event.is_empty() || !data.is_empty() {
            event.data = data.join("\n");
            events.push(event);
        }
    }
    events
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The value of the hidden field `name` in an HTML form.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

/// The value of attribute `name` (first occurrence) in an HTML text.
pub fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_undone_across_reads() {
        let mut chunks = Chunks::default();
        let mut out = Vec::new();
        let raw = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        for piece in raw.chunks(3) {
            chunks.feed(piece, &mut out).unwrap();
        }
        assert_eq!(out, b"hello, world");
    }

    #[test]
    fn events_are_split_with_their_name_id_and_data() {
        let mut text =
            b": up to date\n\nevent: row\nid: e.5\ndata: <tr>\ndata: </tr>\n\nevent: rem".to_vec();
        let events = split_events(&mut text);
        assert_eq!(
            events,
            vec![Event {
                event: "row".to_owned(),
                id: "e.5".to_owned(),
                data: "<tr>\n</tr>".to_owned()
            }]
        );
        assert_eq!(text, b"event: rem");
    }

    #[test]
    fn forms_are_encoded_and_hidden_fields_read() {
        assert_eq!(
            form(&[("username", "koordinator"), ("csrf", "a b+c")]),
            "username=koordinator&csrf=a%20b%2Bc"
        );
        assert_eq!(
            hidden_field(r#"<input type="hidden" name="csrf" value="abc">"#, "csrf").as_deref(),
            Some("abc")
        );
    }
}
