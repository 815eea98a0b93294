//! The hash chain. Every record carries `seq`, `prev_hash` and `hash`, where
//! `hash = SHA-256(prev_hash ‖ "\n" ‖ canonical)` and `canonical` is the record's JSON line as
//! written, without its final `,"hash":"…"` member. `hash` is always the last member, so the
//! canonical bytes are the line minus a fixed-length suffix plus `}`.
//!
//! Each audit file starts with a header line naming the chain's state where the file begins:
//! the `seq` of its first record and the `prev_hash` that record must carry (the last hash of
//! the previous file). The header is sealed the same way, so it cannot be edited either.

use std::fmt;
use std::io::Write;

use aws_lc_rs::digest::{Context, SHA256};

/// `,"hash":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = 9 + 64 + 2;

/// The `prev_hash` of the first record of a chain.
pub const GENESIS: Hash = Hash([0; 32]);

/// The format named by file headers.
pub const FORMAT: &str = "centaur-audit/1";

/// A SHA-256 chain hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Parses 64 lowercase hex digits.
    pub fn parse(hex: &str) -> Option<Hash> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Hash(out))
    }

    /// Lowercase hex.
    pub fn hex(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        out
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn digest(prev: &Hash, body_without_close: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&prev.hex());
    ctx.update(b"\n");
    ctx.update(body_without_close);
    ctx.update(b"}");
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Hash(out)
}

/// Appends the chain position to a JSON object in `buf` (which must end with `}`): the
/// `seq` and `prev_hash` members, before [`seal`] adds `hash`.
pub fn link(buf: &mut Vec<u8>, seq: u64, prev: &Hash) {
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    // Writing into a Vec cannot fail.
    let _ = write!(buf, ",\"seq\":{seq},\"prev_hash\":\"");
    buf.extend_from_slice(&prev.hex());
    buf.extend_from_slice(b"\"}");
}

/// Seals a JSON object in `buf` (which must end with `}`): appends the `hash` member computed
/// over the object and `prev`, and returns the hash.
pub fn seal(buf: &mut Vec<u8>, prev: &Hash) -> Hash {
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    let hash = digest(prev, buf);
    buf.extend_from_slice(b",\"hash\":\"");
    buf.extend_from_slice(&hash.hex());
    buf.extend_from_slice(b"\"}");
    hash
}

/// A sealed line's stated hash, and whether it matches its content given `prev`.
pub fn check(line: &[u8], prev: &Hash) -> Option<(Hash, bool)> {
    let (body, stated) = stated(line)?;
    Some((stated, digest(prev, body) == stated))
}

/// The stated hash of a sealed line, and the bytes it covers (without the closing brace).
fn stated(line: &[u8]) -> Option<(&[u8], Hash)> {
    let cut = line.len().checked_sub(SUFFIX_LEN)?;
    let (body, suffix) = line.split_at(cut);
    let hex = suffix.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?;
    Some((body, Hash::parse(std::str::from_utf8(hex).ok()?)?))
}

/// The stated hash of a sealed line, without checking it.
pub fn stated_hash(line: &[u8]) -> Option<Hash> {
    stated(line).map(|(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_check_round_trips_and_detects_edits() {
        let mut line = br#"{"seq":1,"host":"a.test","prev_hash":"00"}"#.to_vec();
        let h = seal(&mut line, &GENESIS);
        assert_eq!(check(&line, &GENESIS), Some((h, true)));
        let edited = String::from_utf8(line.clone())
            .unwrap()
            .replace("a.test", "b.test");
        assert_eq!(check(edited.as_bytes(), &GENESIS), Some((h, false)));
        // The same content under another predecessor does not verify.
        assert_eq!(check(&line, &h), Some((h, false)));
        assert_eq!(check(b"{\"seq\":1}", &GENESIS), None);
        assert_eq!(Hash::parse(&h.to_string()), Some(h));
    }
}
