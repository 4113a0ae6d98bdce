//! Server-Sent Events clients of the gateway: a raw `text/event-stream` response, read
//! event by event.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::gateway::Sluice;
use crate::ws::basic;
use crate::{PASSWORD, USER};

/// Events of a raw `text/event-stream` response: (event, id, data).
pub struct EventStream {
    lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
}

impl EventStream {
    /// Opens a stream with USER / PASSWORD (and `Last-Event-ID` when given); returns it
    /// and the response head.
    pub async fn open(sluice: &Sluice, path: &str, last_event_id: Option<&str>) -> (EventStream, String) {
        let mut stream = tokio::net::TcpStream::connect(sluice.addr).await.unwrap();
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: {}\r\n",
            sluice.addr,
            basic(USER, PASSWORD)
        );
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let mut head = String::new();
        loop {
            let line = lines.next_line().await.unwrap().expect("a response head");
            if line.is_empty() {
                break;
            }
            head.push_str(&line);
            head.push('\n');
        }
        (EventStream { lines }, head)
    }

    /// The next event; comments (heartbeats) and chunk-size lines of the chunked body
    /// are skipped.
    pub async fn next(&mut self) -> (String, Option<String>, String) {
        let (mut event, mut id, mut data) = ("message".to_owned(), None, Vec::new());
        loop {
            let line = tokio::time::timeout(Duration::from_secs(15), self.lines.next_line())
                .await
                .expect("an event within 15 s")
                .unwrap()
                .expect("stream open");
            if line.is_empty() {
                if !data.is_empty() {
                    return (event, id, data.join("\n"));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v.to_owned());
            }
        }
    }

    /// Waits for the end of the body (its last chunk, or the end of the connection);
    /// panics if another event comes first, or after `within`.
    pub async fn end(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the stream had not ended after {within:?}"));
            match line {
                Ok(None) | Err(_) => return,
                // The last chunk of a chunked body has size 0.
                Ok(Some(line)) if line == "0" => return,
                Ok(Some(line)) => {
                    assert!(!line.starts_with("event:") && !line.starts_with("data:"), "after the last event: {line}")
                }
            }
        }
    }
}
