//! Just enough of the WebSocket protocol (RFC 6455) for a load client: the upgrade
//! request, and a reader that walks server frames in place in one reusable buffer.
//!
//! A general-purpose client allocates a message per frame; at a million frames a second
//! on a shared 2-core machine that cost would land on the figures being measured, so
//! frames are borrowed from the read buffer and never copied. The `Sec-WebSocket-Accept`
//! answer is not checked: the server under test is known, only its status matters.

use anyhow::{bail, Result};

/// A fixed, valid key: the server must answer it but the harness has no use for a fresh one.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Longest upgrade response accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The upgrade request for `path`, with an `Authorization` header value, offering
/// `protocol` as its subprotocol when given.
pub fn upgrade_request(host: &str, path: &str, authorization: &str, protocol: Option<&str>) -> Vec<u8> {
    let protocol = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nAuthorization: {authorization}\r\n{protocol}\r\n"
    )
    .into_bytes()
}

/// One server frame, borrowed from the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Data(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The close code, if the frame had one.
    Close(Option<u16>),
}

/// A read buffer and the position of the next unparsed frame in it.
pub struct Reader {
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
}

impl Reader {
    pub fn new(capacity: usize) -> Reader {
        Reader { buf: vec![0; capacity], pos: 0, filled: 0 }
    }

    /// Where the next read should land: moves unparsed bytes to the front first, and grows
    /// the buffer only when one frame is larger than it.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Records that `n` bytes were read into [`Reader::spare`].
    pub fn filled(&mut self, n: usize) {
        self.filled += n;
    }

    /// Parses the HTTP response head of the upgrade: `Some(status)` once it is complete.
    /// Bytes after the head stay in the buffer as the first frames.
    pub fn response_status(&mut self) -> Result<Option<u16>> {
        let data = &self.buf[self.pos..self.filled];
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            if data.len() > MAX_HEAD {
                bail!("upgrade response head longer than {MAX_HEAD} bytes");
            }
            return Ok(None);
        };
        // "HTTP/1.1 101 Switching Protocols"
        let status = data
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("malformed status line"))?;
        self.pos += end + 4;
        Ok(Some(status))
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        let data = &self.buf[self.pos..self.filled];
        if data.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (data[0], data[1]);
        if b1 & 0x80 != 0 {
            bail!("server frames must not be masked");
        }
        if b0 & 0x80 == 0 {
            // Sluice sends every message as one frame; fragments would need reassembly.
            bail!("fragmented message");
        }
        let (head, len) = match b1 & 0x7f {
            126 if data.len() >= 4 => (4, u16::from_be_bytes([data[2], data[3]]) as usize),
            127 if data.len() >= 10 => (10, u64::from_be_bytes(data[2..10].try_into().expect("8 bytes")) as usize),
            126 | 127 => return Ok(None),
            n => (2, n as usize),
        };
        if data.len() < head + len {
            return Ok(None);
        }
        self.pos += head + len;
        let payload = &data[head..head + len];
        Ok(Some(match b0 & 0x0f {
            0x1 | 0x2 => Frame::Data(payload),
            0x8 => Frame::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong,
            op => bail!("unexpected opcode {op:#x}"),
        }))
    }
}

/// A client frame (clients must mask; a zero mask leaves the payload as is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= 125, "control frames only");
    let mut f = Vec::with_capacity(6 + payload.len());
    f.extend_from_slice(&[0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A text frame from the client (the harness's requests are short: under 126 bytes).
pub fn text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "a short frame");
    client_frame(0x1, payload)
}

/// The answer to a ping.
pub fn pong(payload: &[u8]) -> Vec<u8> {
    client_frame(0xA, payload)
}

/// A close frame with a code.
pub fn close(code: u16) -> Vec<u8> {
    client_frame(0x8, &code.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `bytes` in, as many reads as the buffer needs (it grows when full).
    fn feed(r: &mut Reader, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = r.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            r.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// Parses what the buffer holds: the status once the head is complete, then frames.
    fn parse(r: &mut Reader, status: &mut Option<u16>, frames: &mut Vec<String>) {
        if status.is_none() {
            *status = r.response_status().unwrap();
        }
        if status.is_some() {
            while let Some(f) = r.next_frame().unwrap() {
                frames.push(format!("{f:?}"));
            }
        }
    }

    #[test]
    fn head_then_frames_split_anywhere() {
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        wire.extend_from_slice(&[0x81, 3, b'a', b'b', b'c']);
        let long = vec![b'x'; 300];
        wire.extend_from_slice(&[0x82, 126, 1, 44]);
        wire.extend_from_slice(&long);
        wire.extend_from_slice(&[0x89, 0, 0x88, 2, 0x03, 0xE8]);
        for split in 0..=wire.len() {
            let mut r = Reader::new(64);
            let (mut status, mut frames) = (None, Vec::new());
            feed(&mut r, &wire[..split]);
            parse(&mut r, &mut status, &mut frames);
            feed(&mut r, &wire[split..]);
            parse(&mut r, &mut status, &mut frames);
            assert_eq!(status, Some(101));
            let expected = [Frame::Data(b"abc"), Frame::Data(&long), Frame::Ping(b""), Frame::Close(Some(1000))];
            let expected: Vec<String> = expected.iter().map(|f| format!("{f:?}")).collect();
            assert_eq!(frames, expected, "split at {split}");
        }
    }

    #[test]
    fn refusals_report_their_status() {
        let mut r = Reader::new(64);
        feed(&mut r, b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(r.response_status().unwrap(), Some(401));
    }
}
