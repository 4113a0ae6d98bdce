//! The task that reads one client's socket until told to stop, tallying every frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::clock;
use crate::connect::Conn;
use crate::tally::Tally;
use crate::wire::{self, Frame};

/// Reads `conn` into `tally` until `stop` turns true or the connection ends. `progress`
/// counts stamped frames over all clients, so the caller can tell when delivery is done
/// without asking every task.
pub async fn run(
    mut conn: Conn,
    mut tally: Tally,
    progress: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> (Conn, Tally) {
    if *stop.borrow() {
        return (conn, tally);
    }
    // Frames that arrived with the welcome.
    if let Err(e) = drain(&mut conn, &mut tally, &progress).await {
        tally.lost = Some(e.to_string());
        return (conn, tally);
    }
    while tally.closed.is_none() {
        let read = tokio::select! {
            biased;
            _ = stop.changed() => break,
            read = conn.stream.read(conn.reader.spare()) => read,
        };
        match read {
            Ok(0) => {
                tally.lost = Some("closed without a close frame".into());
                break;
            }
            Ok(n) => conn.reader.filled(n),
            Err(e) => {
                tally.lost = Some(e.to_string());
                break;
            }
        }
        if let Err(e) = drain(&mut conn, &mut tally, &progress).await {
            tally.lost = Some(e.to_string());
            break;
        }
    }
    (conn, tally)
}

/// Tallies every complete frame in the buffer, answering pings and closes.
async fn drain(conn: &mut Conn, tally: &mut Tally, progress: &AtomicU64) -> anyhow::Result<()> {
    // One clock reading per read: frames of one read arrived together.
    let now = clock::now_ns();
    let before = tally.received;
    let mut reply = None;
    while let Some(frame) = conn.reader.next_frame()? {
        match frame {
            // A multiplexed connection's records are envelopes: the stamp is their value.
            Frame::Data(data) if data.first() == Some(&b'{') => {
                if let Some(value) = crate::envelope::value(data) {
                    tally.frame(value, now);
                }
            }
            Frame::Data(value) => tally.frame(value, now),
            Frame::Ping(payload) => reply = Some(wire::pong(payload)),
            Frame::Pong => {}
            Frame::Close(code) => {
                tally.closed = Some(code.unwrap_or(1005));
                reply = Some(wire::close(code.unwrap_or(1000)));
                break;
            }
        }
    }
    progress.fetch_add(tally.received - before, Ordering::Relaxed);
    if let Some(reply) = reply {
        conn.stream.write_all(&reply).await?;
    }
    Ok(())
}
