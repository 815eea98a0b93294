//! The response scrubber (`gateway::transform::scrub::Scrubber`): however a body is cut into chunks, no
//! real value reaches the client (invariant 3). Secrets are drawn from `a`–`d` and placeholders
//! from `P`–`Z` and never empty, so a placeholder can never spell or join a secret; with one secret, the chunked
//! output equals the whole-body output.
#![no_main]

use bytes::Bytes;
use gateway::transform::scrub::Scrubber;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Case {
    secrets: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    cuts: Vec<u16>,
}

fn map(bytes: &[u8], base: u8, span: u8) -> Vec<u8> {
    bytes.iter().map(|b| base + b % span).collect()
}

fn scrub(pairs: &[(Vec<u8>, Vec<u8>)], body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut s = Scrubber::new(pairs.to_vec());
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        out.extend_from_slice(&s.push(Bytes::copy_from_slice(&body[last..c])));
        last = c;
    }
    out.extend_from_slice(&s.finish());
    out
}

fuzz_target!(|case: Case| {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = case
        .secrets
        .iter()
        .take(4)
        .map(|(v, p)| {
            // A placeholder is never empty (removing a value could join two halves of one).
            let mut p = map(&p[..p.len().min(8)], b'P', 11);
            p.push(b'Z');
            (map(&v[..v.len().min(24)], b'a', 4), p)
        })
        .filter(|(v, _)| !v.is_empty())
        .collect();
    let body = &case.body[..case.body.len().min(4096)];
    let mut cuts: Vec<usize> = case
        .cuts
        .iter()
        .map(|c| usize::from(*c) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let chunked = scrub(&pairs, body, &cuts);
    for (v, _) in &pairs {
        assert!(
            !chunked.windows(v.len()).any(|w| w == v.as_slice()),
            "secret {v:?} leaked from {body:?} cut at {cuts:?}: {chunked:?}"
        );
    }
    if pairs.len() == 1 {
        assert_eq!(chunked, scrub(&pairs, body, &[]));
    }
});
