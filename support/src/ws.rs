//! WebSocket clients of the gateway: connect with credentials, read the welcome and the
//! frames that follow, close.

use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::gateway::Sluice;
use crate::{PASSWORD, USER};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Opens a WebSocket with these request headers; the handshake error as is.
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, tokio_tungstenite::tungstenite::handshake::client::Response), tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

/// A WebSocket client whose socket has a tiny receive buffer, so that when it stops
/// reading the server's writes block soon; its welcome frame is read. Returns the socket
/// and the replyId the welcome announced.
pub async fn connect_small_window(sluice: &Sluice, path: &str) -> (Ws, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(sluice.addr).await.unwrap();
    let mut request = sluice.url(path).into_client_request().unwrap();
    request.headers_mut().insert("authorization", basic(USER, PASSWORD).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await.unwrap();
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let id = welcome["replyId"].as_str().expect("a replyId in the welcome").to_owned();
    (ws, id)
}

/// Fills the socket of a client that does not read (one from [`connect_small_window`])
/// with 16 MiB of admin messages, far more than its socket buffers hold, and waits until
/// some of them wait in its queue: the gateway's writes to it are blocked. The gateway
/// must let that much queue for one client (`--queue-bytes 67108864`).
pub async fn fill_socket(sluice: &Sluice, id: &str) {
    let body = "x".repeat(512 * 1024);
    let path = format!("/api/clients/{id}/messages");
    for _ in 0..32 {
        let (status, answer) = sluice.api("POST", &path, Some(&body)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
        assert_eq!(status, 200, "{client}");
        if client["queued"].as_u64().is_some_and(|q| q > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing stayed queued for {id}: {client}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the connection under `ws` until the server ends it (EOF or reset), answering
/// nothing: a close frame read before is left unanswered. Panics after `within`.
pub async fn wait_for_eof(ws: &mut Ws, within: Duration) {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.get_mut().read(&mut buf))
            .await
        {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server had not closed the connection after {within:?}"),
        }
    }
}

/// Connects with USER / PASSWORD and reads the welcome frame; returns the socket and the
/// replyId it announced.
pub async fn connect(sluice: &Sluice, path: &str) -> (Ws, String) {
    let (mut ws, response) =
        try_connect(&sluice.url(path), &[("authorization", &basic(USER, PASSWORD))]).await.expect("connect");
    let welcome = next_text(&mut ws).await;
    let v: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    assert_eq!(v["type"], "connected");
    let id = v["replyId"].as_str().unwrap().to_owned();
    assert_eq!(response.headers().get("sluice-connection-id").unwrap().to_str().unwrap(), id);
    (ws, id)
}

/// The next data frame (text or binary), skipping pings; panics after 15 s.
pub async fn next_frame(ws: &mut Ws) -> Message {
    next_frame_within(ws, Duration::from_secs(15)).await
}

/// The next data frame (text or binary), skipping pings; panics after `within`.
pub async fn next_frame_within(ws: &mut Ws, within: Duration) -> Message {
    let deadline = Instant::now() + within;
    loop {
        let m = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next())
            .await
            .unwrap_or_else(|_| panic!("a frame within {within:?}"))
            .expect("socket open")
            .expect("frame");
        match m {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    next_text_within(ws, Duration::from_secs(15)).await
}

pub async fn next_text_within(ws: &mut Ws, within: Duration) -> String {
    match next_frame_within(ws, within).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the close frame, returning it; data frames before it are returned too.
pub async fn read_until_close(ws: &mut Ws, within: Duration) -> (Vec<Message>, Option<CloseFrame>) {
    let mut data = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let next = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next())
            .await
            .expect("close within the deadline");
        match next {
            Some(Ok(Message::Close(frame))) => return (data, frame),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => data.push(m),
            Some(Err(e)) => panic!("socket error before a close frame: {e}"),
            None => return (data, None),
        }
    }
}

/// No data frame arrives within `wait` (used after a later frame proved delivery moved on).
pub async fn assert_silent(ws: &mut Ws, wait: Duration) {
    if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, ws.next()).await {
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            panic!("unexpected frame {m:?}");
        }
    }
}

pub async fn close(ws: &mut Ws) {
    let _ = ws.close(None).await;
}
