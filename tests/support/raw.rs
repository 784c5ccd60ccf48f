//! Raw HTTP/1.1 over TCP, for requests an HTTP client would normalise or refuse to send:
//! duplicated or non-UTF-8 headers, control characters, path tricks, lying framing, stalls.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long [`send`] waits for an answer before calling the server hung.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A response as read off the socket.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The head, lossily decoded, lines joined by `\n`.
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// The `error` code of a JSON error body, if it is one.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["error"].as_str().map(str::to_owned)
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Builds a request from parts; header values are bytes so they may be non-UTF-8. Adds
/// `Host` and `Connection: close`; adds nothing else (no Content-Length unless given).
pub fn request(method: &str, path: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: zkvault.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `Authorization: Bearer <token>` as a header pair's value.
pub fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// Chunked transfer encoding of `body` in pieces of at most `piece` bytes, with the final chunk.
pub fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Sends `request` and reads the answer. `None`: the server closed the connection (or reset it)
/// without a response. Panics if neither happens within [`ANSWER_WITHIN`]: a hang is a bug.
pub async fn send(addr: SocketAddr, request: &[u8]) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (413, 431) and close before it has read everything: a failed write
    // is not the end, the answer may already be waiting.
    let _ = stream.write_all(request).await;
    read_reply(&mut stream, ANSWER_WITHIN)
        .await
        .unwrap_or_else(|| panic!("no answer and no close within {ANSWER_WITHIN:?}"))
}

/// Reads one response from `stream`: `Some(None)` for a close or reset without a complete head,
/// `None` if `wait` passes with the connection still open and silent.
pub async fn read_reply(stream: &mut TcpStream, wait: Duration) -> Option<Option<Reply>> {
    let work = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(reply) = parse(&buf) {
                return Some(reply);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return parse_partial(&buf),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, work).await.ok()
}

/// Skips interim (1xx) responses such as `100 Continue`: the final response is what counts.
fn skip_interim(mut buf: &[u8]) -> &[u8] {
    while buf.starts_with(b"HTTP/1.1 1") {
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => buf = &buf[end + 4..],
            None => break,
        }
    }
    buf
}

/// A complete response (head and, per Content-Length, body) in `buf`, if there is one yet.
fn parse(buf: &[u8]) -> Option<Reply> {
    let buf = skip_interim(buf);
    if buf.starts_with(b"HTTP/1.1 1") {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).replace("\r\n", "\n");
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    let body = &buf[end + 4..];
    match reply
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(len) if body.len() >= len => Some(Reply {
            body: body[..len].to_vec(),
            ..reply
        }),
        Some(_) => None,
        // No length: read to the close (we always send Connection: close).
        None => None,
    }
}

/// At close: whatever response is there, even without its full body.
fn parse_partial(buf: &[u8]) -> Option<Reply> {
    let buf = skip_interim(buf);
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).replace("\r\n", "\n");
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some(Reply {
        status,
        head,
        body: buf[end + 4..].to_vec(),
    })
}
