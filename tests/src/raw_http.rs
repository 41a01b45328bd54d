//! HTTP/1.1 over a plain TCP connection, for tests about what happens on the connection itself:
//! a client that writes its whole request before it reads, several requests on one connection,
//! headers no ordinary client would send.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// One keep-alive connection to a server.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    /// Bytes read past the last answer.
    buffered: Vec<u8>,
}

/// An answer read from the connection.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// Its status.
    pub status: u16,
    /// Its header fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether it is a problem document with its own status and this `code`.
    pub fn is_problem(&self, code: &str) -> bool {
        let body = self.json();
        self.header("content-type").starts_with("application/problem+json")
            && body["status"].as_u64() == Some(u64::from(self.status))
            && body["code"] == code
            && body["title"].is_string()
            && body["type"].is_string()
            && body["detail"].is_string()
    }
}

impl RawConnection {
    /// Connects to `base` (`http://host:port`), with a 30 s bound on every read and write.
    pub fn open(base: &str) -> std::io::Result<Self> {
        let address = base.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { stream, buffered: Vec::new() })
    }

    /// Writes all of `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one answer (its body by `Content-Length`, or to the end of the connection).
    pub fn read_answer(&mut self) -> std::io::Result<RawAnswer> {
        let head_end = loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if !self.fill()? {
                return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the connection ended before an answer"));
            }
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        self.buffered.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
            std::io::Error::new(ErrorKind::InvalidData, format!("not a status line: {status_line:?}"))
        })?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
        let body = match length {
            Some(length) => {
                while self.buffered.len() < length {
                    if !self.fill()? {
                        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the body was cut short"));
                    }
                }
                self.buffered.drain(..length).collect()
            }
            None => {
                while self.fill()? {}
                std::mem::take(&mut self.buffered)
            }
        };
        Ok(RawAnswer { status, headers, body })
    }

    /// Reads more; false at the end of the connection.
    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk)?;
        self.buffered.extend_from_slice(&chunk[..read]);
        Ok(read > 0)
    }
}
