//! Opening authenticated WebSocket connections to the gateway, spread over source
//! addresses 127.0.0.1–127.0.0.N so the number of connections is not capped by one
//! address's ephemeral ports.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::wire::{Frame, Reader};

/// Read buffer per connection: several write batches of 100-byte frames.
const READ_BUFFER: usize = 16 * 1024;

/// Where and how clients connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Authorization` header value.
    pub authorization: String,
    /// Whether the gateway sends a welcome frame first (it is read before a connection
    /// counts as open: it proves the gateway accepted the client).
    pub welcome: bool,
    /// Source addresses used: 127.0.0.1 up to 127.0.0.`sources`.
    pub sources: u8,
    pub timeout: Duration,
    /// The subprotocol offered (`sluice.v1` for multiplexed connections).
    pub protocol: Option<String>,
    /// Connections numbered below this get the smallest receive buffer the kernel allows,
    /// so when they stop reading the gateway meets a full socket at once rather than
    /// after the megabytes loopback buffers can hold.
    pub tiny_window_below: usize,
}

impl Target {
    pub fn basic(addr: SocketAddr, user: &str, password: &str, welcome: bool, sources: u8) -> Target {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Target {
            addr,
            authorization: format!("Basic {credentials}"),
            welcome,
            sources: sources.max(1),
            timeout: Duration::from_secs(15),
            protocol: None,
            tiny_window_below: 0,
        }
    }

    fn source(&self, n: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 1 + (n % usize::from(self.sources)) as u8)
    }
}

/// An open, upgraded connection and the bytes already read from it.
pub struct Conn {
    pub stream: TcpStream,
    pub reader: Reader,
    /// Index in the order connections were asked for.
    pub index: usize,
}

/// Opens connection number `n` to `path` (its source address follows from `n`).
pub async fn open(target: &Target, path: &str, n: usize) -> Result<Conn> {
    let socket = TcpSocket::new_v4().context("socket")?;
    // Let connect() pick the source port for the full 4-tuple, instead of bind() picking
    // one unique across every destination: more connections per source address.
    set_bind_no_port(&socket);
    if n < target.tiny_window_below {
        // Before connect: window scale and segment size are agreed in the handshake. A
        // small segment size matters as much as the buffer: on loopback (64 KiB segments)
        // the gateway's send buffer would otherwise grow to megabytes at once.
        socket.set_recv_buffer_size(1).context("receive buffer")?;
        set_int_option(&socket, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536);
    }
    socket.bind(SocketAddr::new(target.source(n).into(), 0)).context("bind")?;
    let mut stream = socket.connect(target.addr).await.context("connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    let host = target.addr.to_string();
    let request = crate::wire::upgrade_request(&host, path, &target.authorization, target.protocol.as_deref());
    stream.write_all(&request).await.context("write")?;

    let mut reader = Reader::new(READ_BUFFER);
    let mut upgraded = false;
    loop {
        let read = stream.read(reader.spare()).await.context("read")?;
        if read == 0 {
            bail!("closed during the upgrade");
        }
        reader.filled(read);
        if !upgraded {
            match reader.response_status()? {
                None => continue,
                Some(101) => upgraded = true,
                Some(status) => bail!("status {status}"),
            }
        }
        if !target.welcome {
            break;
        }
        match reader.next_frame()? {
            None => continue,
            Some(Frame::Data(_)) => break,
            Some(other) => bail!("expected the welcome frame, got {other:?}"),
        }
    }
    Ok(Conn { stream, reader, index: n })
}

fn set_bind_no_port(socket: &TcpSocket) {
    // Failure only means ports are picked at bind time, which works for fewer connections.
    set_int_option(socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
}

/// Sets an integer socket option, best effort (tokio exposes neither option used here).
fn set_int_option(socket: &TcpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a plain setsockopt on a socket this function borrows, with a c_int value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The result of opening many connections.
pub struct Opened {
    pub conns: Vec<Conn>,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// From the first attempt to the last connection open.
    pub elapsed: Duration,
    /// Time from attempt to open (welcome received), microseconds.
    pub handshake_us: Histogram<u64>,
}

impl Opened {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn describe_failures(&self) -> String {
        self.failures.iter().map(|(k, v)| format!("{v}× {k}")).collect::<Vec<_>>().join(", ")
    }
}

/// Opens one connection per path, at most `concurrency` handshakes in flight.
/// `first_index` numbers them, so later batches use the next source addresses.
pub async fn open_many(target: &Target, paths: &[String], first_index: usize, concurrency: usize) -> Opened {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let (target, path, permits) = (target.clone(), path.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let began = Instant::now();
            let result = tokio::time::timeout(target.timeout, open(&target, &path, first_index + i))
                .await
                .map_err(|_| anyhow!("timeout"))
                .and_then(|r| r);
            (result, began.elapsed())
        }));
    }
    let mut opened = Opened {
        conns: Vec::with_capacity(paths.len()),
        failures: BTreeMap::new(),
        elapsed: Duration::ZERO,
        handshake_us: crate::tally::latency_histogram(),
    };
    for task in tasks {
        match task.await {
            Ok((Ok(conn), took)) => {
                opened.handshake_us.saturating_record(took.as_micros() as u64);
                opened.conns.push(conn);
            }
            Ok((Err(e), _)) => *opened.failures.entry(failure_kind(&e)).or_default() += 1,
            Err(e) => *opened.failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    opened.elapsed = started.elapsed();
    opened
}

/// A short, countable description of why a connection failed.
fn failure_kind(e: &anyhow::Error) -> String {
    let mut kind = e.to_string();
    if let Some(cause) = e.source() {
        kind = format!("{kind}: {cause}");
    }
    kind
}

/// Sends `requests` (JSON text frames) on a multiplexed connection and reads until every one
/// is answered `subscribed`; an `error` answer is an error.
pub async fn subscribe(conn: &mut Conn, requests: &[String]) -> Result<()> {
    for r in requests {
        conn.stream.write_all(&crate::wire::text(r.as_bytes())).await.context("subscribe")?;
    }
    let mut answered = 0;
    while answered < requests.len() {
        while let Some(frame) = conn.reader.next_frame()? {
            if let Frame::Data(data) = frame {
                // Control frames are small JSON objects whose fields come in any order.
                let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
                if has(br#""type":"subscribed""#) {
                    answered += 1;
                } else if has(br#""type":"error""#) {
                    bail!("subscribe refused: {}", String::from_utf8_lossy(data));
                }
            }
        }
        if answered == requests.len() {
            break;
        }
        let read = conn.stream.read(conn.reader.spare()).await.context("read")?;
        if read == 0 {
            bail!("closed while subscribing");
        }
        conn.reader.filled(read);
    }
    Ok(())
}

/// Subscribes every connection, `concurrency` at once; connection `i` sends `requests(i)`.
pub async fn subscribe_all(
    conns: Vec<Conn>,
    requests: &(dyn Fn(usize) -> Vec<String> + Sync),
    concurrency: usize,
) -> Result<Vec<Conn>> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(conns.len());
    for mut conn in conns {
        let (asks, permits) = (requests(conn.index), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            subscribe(&mut conn, &asks).await.map(|()| conn)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}
