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

    /// The length of the longest tail of `rest` that could still grow into a value: a proper
    /// prefix of some value. Only that much is held back, so a streamed event that cannot begin
    /// a secret goes out whole and at once (an SSE event is not delayed until the next one).
    fn open_tail(&self, rest: &[u8]) -> usize {
        let window = self
            .pairs
            .iter()
            .map(|(v, _)| v.len() - 1)
            .max()
            .unwrap_or(0)
            .min(rest.len());
        (rest.len() - window..rest.len())
            .map(|at| &rest[at..])
            .find(|tail| {
                self.pairs
                    .iter()
                    .any(|(v, _)| v.len() > tail.len() && v.starts_with(tail))
            })
            .map_or(0, <[u8]>::len)
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
        let keep = if last { 0 } else { self.open_tail(&input[i..]) };
        out.extend_from_slice(&input[i..input.len() - keep]);
        self.carry = BytesMut::from(&input[input.len() - keep..]);
        self.hits += hits;
        (out, hits)
    }

    /// Scrubs the next body chunk. A chunk with no value in it and nothing held back before
    /// it goes out as it came, without a copy.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty()
            && !self
                .pairs
                .iter()
                .any(|(v, _)| memmem::find(&chunk, v).is_some())
        {
            let keep = self.open_tail(&chunk);
            self.carry = BytesMut::from(&chunk[chunk.len() - keep..]);
            return chunk.slice(..chunk.len() - keep);
        }
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(&chunk);
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

    /// A chunk that cannot begin a secret goes out whole: a streamed event is not held back
    /// until the next one arrives (the SSE latency fault the benchmark found).
    #[test]
    fn holds_back_only_a_tail_that_can_begin_a_secret() {
        let mut s = scrubber();
        assert_eq!(
            &s.push(Bytes::from_static(b"data: 1\n\n"))[..],
            b"data: 1\n\n"
        );
        assert_eq!(&s.push(Bytes::from_static(b"data: sk-RE"))[..], b"data: ");
        assert_eq!(
            &s.push(Bytes::from_static(b"AL-secret\n\n"))[..],
            b"PLACEHOLDER\n\n"
        );
        assert_eq!(&s.push(Bytes::from_static(b"x sk-REX"))[..], b"x sk-REX");
        assert_eq!(&s.push(Bytes::from_static(b"s"))[..], b"");
        assert_eq!(&s.finish()[..], b"s");
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
                out.extend_from_slice(&s.push(Bytes::copy_from_slice(&body.as_bytes()[last..c])));
                last = c;
            }
            out.extend_from_slice(&s.finish());
            let expected = format!("{prefix}PLACEHOLDER{suffix}PLACEHOLDER");
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
