//! Response scrubbing: real secret values that this gateway put on the wire are turned back
//! into placeholders in response headers and in streamed bodies, matching across chunk
//! boundaries without buffering more than the longest value (invariant 3).

use std::cell::RefCell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// Replacements for one exchange: (real value, what the client sees instead).
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    pairs: Vec<Pair>,
    /// The longest value's length less one: the most a tail can hold back.
    window: usize,
    carry: BytesMut,
    /// Replacements made so far.
    pub hits: u64,
}

/// One value and what replaces it. Searched with [`find`], which handles the short haystacks
/// of headers and small bodies without building a searcher (building one per value costs more
/// than a whole small exchange's searching: `bench/profile`). Shared, so that the forms of a
/// value computed once serve every later exchange.
#[derive(Debug, Clone)]
struct Pair {
    value: Arc<[u8]>,
    shown: Arc<[u8]>,
}

/// The forms of recently scrubbed values, per thread: a secret's encodings are computed on
/// its first exchange, not on every one (`bench/profile`: they cost a tenth of a request).
const FORMS_CACHED: usize = 32;

thread_local! {
    static FORMS: RefCell<Vec<Arc<[Pair]>>> = const { RefCell::new(Vec::new()) };
}

/// A value and its encoded forms, each with the same form of `shown`; the value itself first.
fn forms(value: &[u8], shown: &[u8]) -> Arc<[Pair]> {
    FORMS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(f) = cache
            .iter()
            .find(|f| *f[0].value == *value && *f[0].shown == *shown)
        {
            return f.clone();
        }
        let mut all = vec![Pair {
            value: value.into(),
            shown: shown.into(),
        }];
        for (v, s) in encodings(value, shown) {
            if !all.iter().any(|p| *p.value == *v) {
                all.push(Pair {
                    value: v.into(),
                    shown: s.into(),
                });
            }
        }
        let f: Arc<[Pair]> = all.into();
        if cache.len() >= FORMS_CACHED {
            cache.remove(0);
        }
        cache.push(f.clone());
        f
    })
}

impl Scrubber {
    /// A scrubber for these pairs, and for the forms an origin may echo a value in: base64
    /// (standard and URL-safe) and percent-encoded. Empty values are ignored.
    pub fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let mut all: Vec<Pair> = Vec::with_capacity(pairs.len() * 3);
        for (value, shown) in pairs.iter().filter(|(v, _)| !v.is_empty()) {
            for p in forms(value, shown).iter() {
                if !all.iter().any(|q| q.value == p.value) {
                    all.push(p.clone());
                }
            }
        }
        let pairs = all;
        let window = pairs.iter().map(|p| p.value.len() - 1).max();
        Scrubber {
            pairs,
            window: window.unwrap_or(0),
            carry: BytesMut::new(),
            hits: 0,
        }
    }

    /// Whether there is anything to scrub.
    pub fn is_active(&self) -> bool {
        !self.pairs.is_empty()
    }

    fn any_in(&self, input: &[u8]) -> bool {
        self.pairs.iter().any(|p| find(input, &p.value).is_some())
    }

    /// The length of the longest tail of `rest` that could still grow into a value: a proper
    /// prefix of some value. Only that much is held back, so a streamed event that cannot begin
    /// a secret goes out whole and at once (an SSE event is not delayed until the next one).
    fn open_tail(&self, rest: &[u8]) -> usize {
        let window = self.window.min(rest.len());
        (rest.len() - window..rest.len())
            .map(|at| &rest[at..])
            .find(|tail| {
                // The first byte first: most tails differ there, and a byte costs less than
                // a comparison call (13 tails by 6 forms were 1.3% of a small request).
                self.pairs.iter().any(|p| {
                    p.value.len() > tail.len() && p.value[0] == tail[0] && p.value.starts_with(tail)
                })
            })
            .map_or(0, <[u8]>::len)
    }

    /// Scrubs a complete value (a header): `None` when it holds no value.
    pub fn scrub_all(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        if !self.any_in(input) {
            return None;
        }
        let mut out = Vec::with_capacity(input.len());
        let end = self.replace_into(input, &mut out);
        out.extend_from_slice(&input[end..]);
        Some(out)
    }

    /// Appends `input` to `out` with every complete match replaced (the leftmost first, the
    /// longest of those starting there), up to the end of the last match; returns where the
    /// unmatched rest begins.
    fn replace_into(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while let Some((at, len, shown)) = self
            .pairs
            .iter()
            .filter_map(|p| {
                let at = find(&input[i..], &p.value)?;
                Some((i + at, p.value.len(), &p.shown))
            })
            .min_by_key(|(at, len, _)| (*at, usize::MAX - len))
        {
            out.extend_from_slice(&input[i..at]);
            out.extend_from_slice(shown);
            i = at + len;
            self.hits += 1;
        }
        i
    }

    /// Scrubs the next body chunk. A chunk with no value in it and nothing held back before
    /// it goes out as it came, without a copy.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() && !self.any_in(&chunk) {
            let keep = self.open_tail(&chunk);
            self.carry = BytesMut::from(&chunk[chunk.len() - keep..]);
            return chunk.slice(..chunk.len() - keep);
        }
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(input.len());
        let end = self.replace_into(&input, &mut out);
        let keep = self.open_tail(&input[end..]);
        out.extend_from_slice(&input[end..input.len() - keep]);
        self.carry = BytesMut::from(&input[input.len() - keep..]);
        Bytes::from(out)
    }

    /// The held-back tail, at the end of the body. It holds no complete value: that would
    /// have been replaced when it arrived.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.carry).freeze()
    }
}

/// The encoded forms of a value worth scrubbing (those that differ from the value itself),
/// each with the same encoding of what is shown instead.
fn encodings(value: &[u8], shown: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
    const URL: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut out = Vec::with_capacity(3);
    // Shorter than 6 bytes, an encoded form is too likely to occur by chance.
    if value.len() >= 6 {
        let b64 = STANDARD.encode(value).into_bytes();
        let url_b64 = URL_SAFE_NO_PAD.encode(value).into_bytes();
        if url_b64 != b64 {
            out.push((url_b64, URL_SAFE_NO_PAD.encode(shown).into_bytes()));
        }
        out.push((b64, STANDARD.encode(shown).into_bytes()));
    }
    let unreserved = |b: &u8| b.is_ascii_alphanumeric() || b"-._~".contains(b);
    if !value.iter().all(unreserved) {
        let pct = percent_encode(value, URL).to_string().into_bytes();
        out.push((pct, percent_encode(shown, URL).to_string().into_bytes()));
    }
    out
}

/// Where `needle` first occurs in `hay`. A haystack shorter than the needle (most header
/// values against a secret) is answered before `memmem` hashes the needle, which it does
/// first: 18 such searches were 3% of a small request's instructions (`bench/profile`).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    memmem::find(hay, needle)
}

/// `hay` with every `from` replaced by `to`, or `None` when it holds no `from` (or `from` is
/// empty).
pub fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() {
        return None;
    }
    let mut at = find(hay, from)?;
    let mut out = Vec::with_capacity(hay.len() + to.len());
    let mut i = 0;
    // Leftmost first, then on after the match: matches do not overlap.
    loop {
        out.extend_from_slice(&hay[i..i + at]);
        out.extend_from_slice(to);
        i += at + from.len();
        match find(&hay[i..], from) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&hay[i..]);
    Some(out)
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

    #[test]
    fn base64_and_percent_encoded_forms_are_scrubbed_too() {
        use base64::Engine as _;
        let real = b"sk-real/+value=1";
        let mut s = Scrubber::new(vec![(real.to_vec(), b"[centaur:k]".to_vec())]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(real);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(real);
        let echo = format!("std={b64} url={url} pct=sk-real%2F%2Bvalue%3D1 raw=sk-real/+value=1");
        let out = String::from_utf8(s.scrub_all(echo.as_bytes()).unwrap()).unwrap();
        let shown_b64 = base64::engine::general_purpose::STANDARD.encode(b"[centaur:k]");
        assert!(out.contains(&format!("std={shown_b64}")), "{out}");
        assert!(
            out.contains("pct=%5Bcentaur%3Ak%5D") && out.ends_with("raw=[centaur:k]"),
            "{out}"
        );
        assert!(!out.contains(&b64) && !out.contains(&url), "{out}");
        assert_eq!(s.hits, 4);
    }

    #[test]
    fn replace_all_swaps_every_occurrence_left_to_right() {
        assert_eq!(
            replace_all(b"PH and PH, PHPH", b"PH", b"real").unwrap(),
            b"real and real, realreal"
        );
        assert_eq!(replace_all(b"aaa", b"aa", b"b").unwrap(), b"ba");
        assert!(replace_all(b"nothing here", b"PH", b"real").is_none());
        assert!(replace_all(b"anything", b"", b"real").is_none());
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
