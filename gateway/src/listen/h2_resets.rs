//! Streams the HTTP/2 library resets on its own (a malformed request's HEADERS, a flow-control
//! or frame-size violation, too many concurrent streams) never reach the gateway as requests.
//! The client connection's writes are read as HTTP/2 frames — headers only; payloads are
//! skipped — and every `RST_STREAM` with a client-fault code is reported, to be audited.

use std::fmt;
use std::sync::Arc;

/// The HTTP/2 client preface starts so. Its first four bytes already differ from every
/// HTTP/1.1 request line (`POST`, `PUT `, `PROPFIND`, `PATCH` share at most two).
const PREFACE: &[u8; 4] = b"PRI ";

/// Decides whether a connection speaks HTTP/2 from its first bytes, however the reads split
/// them: a connection served after a sniffed first byte reads that byte alone first.
#[derive(Debug, Default)]
pub struct Preface {
    /// Preface bytes matched so far.
    matched: usize,
    decided: bool,
}

impl Preface {
    /// Feeds bytes read: `Some(true)` for HTTP/2 or `Some(false)` at the read that decides,
    /// `None` before and after.
    pub fn decide(&mut self, bytes: &[u8]) -> Option<bool> {
        if self.decided {
            return None;
        }
        for &b in bytes {
            if b != PREFACE[self.matched] {
                self.decided = true;
                return Some(false);
            }
            self.matched += 1;
            if self.matched == PREFACE.len() {
                self.decided = true;
                return Some(true);
            }
        }
        None
    }
}

/// `RST_STREAM`.
const RST_STREAM: u8 = 0x3;

/// Called with (stream id, error code) for each reset the client caused.
pub type OnReset = Arc<dyn Fn(u32, u32) + Send + Sync>;

/// The error codes (RFC 9113 section 7) that mean the client broke the protocol or a limit;
/// `NO_ERROR` (an early answer), `INTERNAL_ERROR` (the gateway's own failure, recorded with
/// its request) and `CANCEL` (a stream given up) are not.
pub fn client_fault(code: u32) -> Option<&'static str> {
    Some(match code {
        0x1 => "PROTOCOL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x9 => "COMPRESSION_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        _ => return None,
    })
}

/// Watches a connection: off until its first read shows the HTTP/2 preface.
pub struct ResetWatch {
    on_reset: OnReset,
    state: State,
}

enum State {
    Undecided,
    Off,
    Frames(Frames),
}

impl fmt::Debug for ResetWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetWatch")
    }
}

impl ResetWatch {
    /// A watch that calls `on_reset`.
    pub fn new(on_reset: OnReset) -> Self {
        ResetWatch {
            on_reset,
            state: State::Undecided,
        }
    }

    /// Whether the connection speaks HTTP/2, once its first bytes have said ([`Preface`]).
    pub fn speaks_http2(&mut self, http2: bool) {
        if matches!(self.state, State::Undecided) {
            self.state = match http2 {
                true => State::Frames(Frames::default()),
                false => State::Off,
            };
        }
    }

    /// Bytes the server wrote to the client.
    pub fn written(&mut self, bytes: &[u8]) {
        if let State::Frames(f) = &mut self.state {
            let on_reset = &self.on_reset;
            f.push(bytes, &mut |id, code| on_reset(id, code));
        }
    }
}

/// Frame boundaries in the server's byte stream.
#[derive(Default)]
struct Frames {
    head: [u8; 9],
    have: usize,
    skip: usize,
    /// Inside a `RST_STREAM` payload: its stream and the error code read so far.
    reset: Option<(u32, [u8; 4], usize)>,
}

impl Frames {
    fn push(&mut self, mut buf: &[u8], found: &mut impl FnMut(u32, u32)) {
        while !buf.is_empty() {
            if let Some((id, code, have)) = &mut self.reset {
                let n = (4 - *have).min(buf.len());
                code[*have..*have + n].copy_from_slice(&buf[..n]);
                *have += n;
                buf = &buf[n..];
                if *have == 4 {
                    found(*id, u32::from_be_bytes(*code));
                    self.reset = None;
                }
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                self.skip -= n;
                buf = &buf[n..];
                continue;
            }
            let n = (9 - self.have).min(buf.len());
            self.head[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            buf = &buf[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.head;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                match h[3] == RST_STREAM && len == 4 {
                    true => self.reset = Some((id, [0; 4], 0)),
                    false => self.skip = len,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_preface_is_told_from_http1_methods_however_the_reads_split_it() {
        let decide = |reads: &[&[u8]]| {
            let mut p = Preface::default();
            let found: Vec<_> = reads.iter().map(|r| p.decide(r)).collect();
            assert!(
                found.iter().filter(|d| d.is_some()).count() <= 1,
                "{found:?}"
            );
            found.into_iter().flatten().next()
        };
        assert_eq!(decide(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), Some(true));
        assert_eq!(decide(&[b"P", b"R", b"I", b" * HTTP/2.0"]), Some(true));
        assert_eq!(decide(&[b"P", b"OST / HTTP/1.1"]), Some(false));
        assert_eq!(decide(&[b"P", b"UT /"]), Some(false));
        assert_eq!(decide(&[b"PR", b"OPFIND /"]), Some(false));
        assert_eq!(decide(&[b"GET / HTTP/1.1", b"PRI "]), Some(false));
        assert_eq!(decide(&[b"P", b"R"]), None);
    }

    #[test]
    fn resets_are_found_across_any_split_of_the_byte_stream() {
        let mut stream = frame(0x4, 0, &[0; 12]); // SETTINGS
        stream.extend(frame(0x0, 1, &vec![7; 5000])); // DATA
        stream.extend(frame(RST_STREAM, 3, &1u32.to_be_bytes()));
        stream.extend(frame(0x1, 5, &[0x88])); // HEADERS
        stream.extend(frame(RST_STREAM, 7, &8u32.to_be_bytes()));
        for chunk in [1, 3, 9, 13, 4096, stream.len()] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = seen.clone();
            let mut w = ResetWatch::new(Arc::new(move |id, code| {
                s.lock().unwrap().push((id, code));
            }));
            w.speaks_http2(true);
            for part in stream.chunks(chunk) {
                w.written(part);
            }
            assert_eq!(
                *seen.lock().unwrap(),
                vec![(3, 1), (7, 8)],
                "chunks of {chunk}"
            );
        }
        let mut h1 = ResetWatch::new(Arc::new(|_, _| panic!("HTTP/1.1 has no frames")));
        h1.speaks_http2(false);
        h1.written(&frame(RST_STREAM, 1, &1u32.to_be_bytes()));
        assert_eq!(client_fault(1), Some("PROTOCOL_ERROR"));
        assert_eq!(client_fault(0), None);
        assert_eq!(client_fault(2), None);
        assert_eq!(client_fault(8), None);
    }
}
