//! Response scrubbing: real secret values that this gateway put on the wire are turned back
//! into placeholders in response headers and in streamed bodies, matching across chunk
//! boundaries without buffering more than the longest value (invariant 3).

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// Replacements for one exchange: (real value, what the client sees instead).
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    carry: BytesMut,
    /// Replacements made so far.
    pub hits: u64,
}

impl Scrubber {
    /// A scrubber for these pairs; empty values are ignored.
    pub fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let pairs = pairs.into_iter().filter(|(v, _)| !v.is_empty()).collect();
        Scrubber {
            pairs,
            carry: BytesMut::new(),
            hits: 0,
        }
    }

    /// Whether there is anything to scrub.
    pub fn is_active(&self) -> bool {
        !self.pairs.is_empty()
    }

    fn longest(&self) -> usize {
        self.pairs.iter().map(|(v, _)| v.len()).max().unwrap_or(0)
    }

    /// Scrubs a complete value (a header).
    pub fn scrub_all(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let (out, done) = self.replace(input, true);
        (done > 0).then_some(out)
    }

    /// Replaces every complete match in `input`. With `last`, everything is emitted; otherwise
    /// a tail that may start a match is held back in `carry`. Returns output and hit count.
    fn replace(&mut self, input: &[u8], last: bool) -> (Vec<u8>, u64) {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        let mut hits = 0;
        loop {
            let next = self
                .pairs
                .iter()
                .filter_map(|(v, r)| memmem::find(&input[i..], v).map(|at| (i + at, v.len(), r)))
                .min_by_key(|(at, len, _)| (*at, usize::MAX - len));
            match next {
                Some((at, len, r)) => {
                    out.extend_from_slice(&input[i..at]);
                    out.extend_from_slice(r);
                    i = at + len;
                    hits += 1;
                }
                None => break,
            }
        }
        let keep = if last {
            0
        } else {
            (self.longest().saturating_sub(1)).min(input.len() - i)
        };
        out.extend_from_slice(&input[i..input.len() - keep]);
        self.carry = BytesMut::from(&input[input.len() - keep..]);
        self.hits += hits;
        (out, hits)
    }

    /// Scrubs the next body chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(chunk);
        Bytes::from(self.replace(&input, false).0)
    }

    /// The held-back tail, at the end of the body.
    pub fn finish(&mut self) -> Bytes {
        let input = std::mem::take(&mut self.carry);
        Bytes::from(self.replace(&input, true).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(vec![(b"sk-REAL-secret".to_vec(), b"PLACEHOLDER".to_vec())])
    }

    #[test]
    fn replaces_in_headers_and_counts() {
        let mut s = scrubber();
        assert_eq!(
            s.scrub_all(b"Bearer sk-REAL-secret").unwrap(),
            b"Bearer PLACEHOLDER"
        );
        assert!(s.scrub_all(b"nothing here").is_none());
        assert_eq!(s.hits, 1);
    }

    proptest! {
        /// However the body is split into chunks, no real value reaches the client.
        #[test]
        fn matches_across_any_chunk_split(prefix in "[a-z ]{0,40}", suffix in "[a-z ]{0,40}", cuts in proptest::collection::vec(0usize..100, 0..6)) {
            let body = format!("{prefix}sk-REAL-secret{suffix}sk-REAL-secret");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = scrubber();
            let mut out = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain(std::iter::once(body.len())) {
                out.extend_from_slice(&s.push(&body.as_bytes()[last..c]));
                last = c;
            }
            out.extend_from_slice(&s.finish());
            let expected = format!("{prefix}PLACEHOLDER{suffix}PLACEHOLDER");
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
