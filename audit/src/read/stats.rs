//! `centaur audit stats`: a summary of a window — outcomes, top groups (hosts by default),
//! denies by reason, secrets used per host, bytes, and p50/p95/p99 latency per group, in
//! bounded memory (latency in log buckets, 2% precision).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::read::filter::Filter;
use crate::read::row::Row;
use crate::read::{Lines, sources};

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Destination host.
    Host,
    /// Sandbox labels.
    Sandbox,
    /// Reason code.
    Reason,
}

const BUCKETS: usize = 1400;
const BASE_MS: f64 = 0.001;
const GROWTH: f64 = 1.02;

/// Latency histogram with logarithmic buckets.
#[derive(Debug, Clone)]
struct Hist(Vec<u32>, u64);

impl Hist {
    fn new() -> Hist {
        Hist(Vec::new(), 0)
    }
    fn add(&mut self, ms: f64) {
        let i = if ms <= BASE_MS {
            0
        } else {
            ((ms / BASE_MS).ln() / GROWTH.ln()).ceil() as usize
        }
        .min(BUCKETS - 1);
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] += 1;
        self.1 += 1;
    }
    fn quantile(&self, q: f64) -> f64 {
        if self.1 == 0 {
            return 0.0;
        }
        let rank = ((q * self.1 as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in self.0.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                let v = BASE_MS * GROWTH.powi(i as i32);
                return (v * 1000.0).round() / 1000.0;
            }
        }
        0.0
    }
}

/// Counters for one group.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Records.
    pub count: u64,
    /// Allowed.
    pub allow: u64,
    /// Refused.
    pub deny: u64,
    /// Failed.
    pub error: u64,
    /// Cancelled by the client.
    pub cancel: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    #[serde(skip)]
    hist: Hist,
}

impl Group {
    fn new() -> Group {
        Group {
            count: 0,
            allow: 0,
            deny: 0,
            error: 0,
            cancel: 0,
            bytes_in: 0,
            bytes_out: 0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            hist: Hist::new(),
        }
    }

    fn add(&mut self, r: &Row<'_>) {
        self.count += 1;
        match r.action.as_ref() {
            "allow" => self.allow += 1,
            "reject" => self.deny += 1,
            "error" => self.error += 1,
            _ => self.cancel += 1,
        }
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
        self.hist.add(r.duration_ms);
    }

    fn seal(&mut self) {
        self.p50_ms = self.hist.quantile(0.50);
        self.p95_ms = self.hist.quantile(0.95);
        self.p99_ms = self.hist.quantile(0.99);
    }
}

/// The summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// First record's time.
    pub from: Option<String>,
    /// Last record's time.
    pub to: Option<String>,
    /// All matching records.
    pub total: Group,
    /// What `groups` is keyed by.
    pub by: &'static str,
    /// Per group, most records first.
    pub groups: Vec<(String, Group)>,
    /// Refusals by reason code, most first.
    pub denies_by_reason: Vec<(String, u64)>,
    /// Secrets put on requests, per host: (host, secret, requests).
    pub secrets_by_host: Vec<(String, String, u64)>,
    /// Lines that could not be read.
    pub bad_lines: u64,
}

/// Summarises the records of `paths` that pass `filter`.
pub fn stats(paths: &[PathBuf], filter: &Filter, by: By) -> io::Result<Summary> {
    let (srcs, _) = sources(paths);
    let mut total = Group::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut denies: BTreeMap<String, u64> = BTreeMap::new();
    let mut secrets: BTreeMap<(String, String), u64> = BTreeMap::new();
    let (mut from, mut to): (Option<String>, Option<String>) = (None, None);
    let mut bad = 0;
    for s in srcs {
        let mut lines = Lines::open(&s.path)?;
        while lines.next_line()? {
            let line = &lines.buf;
            if filter.skip_fast(line) {
                continue;
            }
            let Ok(r) = serde_json::from_slice::<Row<'_>>(line) else {
                bad += 1;
                continue;
            };
            if !filter.matches(&r) {
                continue;
            }
            total.add(&r);
            let key = match by {
                By::Host => r.host.to_string(),
                By::Reason => r.reason.to_string(),
                By::Sandbox => match r.get("sandbox").text().as_ref() {
                    "" => "-".to_string(),
                    s => s.to_string(),
                },
            };
            groups.entry(key).or_insert_with(Group::new).add(&r);
            if r.action == "reject" {
                *denies.entry(r.reason.to_string()).or_default() += 1;
            }
            for name in r.secrets() {
                *secrets
                    .entry((r.host.to_string(), name.to_string()))
                    .or_default() += 1;
            }
            if from.as_deref().is_none_or(|f| *r.ts < *f) {
                from = Some(r.ts.to_string());
            }
            if to.as_deref().is_none_or(|t| *r.ts > *t) {
                to = Some(r.ts.to_string());
            }
        }
    }
    total.seal();
    let mut groups: Vec<(String, Group)> = groups.into_iter().collect();
    for (_, g) in &mut groups {
        g.seal();
    }
    groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
    let mut denies: Vec<(String, u64)> = denies.into_iter().collect();
    denies.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let secrets = secrets.into_iter().map(|((h, s), n)| (h, s, n)).collect();
    Ok(Summary {
        from,
        to,
        total,
        by: match by {
            By::Host => "host",
            By::Sandbox => "sandbox",
            By::Reason => "reason",
        },
        groups,
        denies_by_reason: denies,
        secrets_by_host: secrets,
        bad_lines: bad,
    })
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[u]),
    }
}

/// Writes the summary for people; `top` limits the group table.
pub fn render(s: &Summary, top: usize, out: &mut dyn Write) -> io::Result<()> {
    let t = &s.total;
    writeln!(
        out,
        "{} records ({} allowed, {} denied, {} errors, {} cancelled){}",
        t.count,
        t.allow,
        t.deny,
        t.error,
        t.cancel,
        match (&s.from, &s.to) {
            (Some(f), Some(to)) => format!(" from {f} to {to}"),
            _ => String::new(),
        }
    )?;
    writeln!(
        out,
        "bytes in {}, out {}; latency p50 {} ms, p95 {} ms, p99 {} ms",
        bytes(t.bytes_in),
        bytes(t.bytes_out),
        t.p50_ms,
        t.p95_ms,
        t.p99_ms
    )?;
    groups(s, top, out)?;
    if s.groups.len() > top {
        writeln!(out, "… {} more (use --top)", s.groups.len() - top)?;
    }
    if !s.denies_by_reason.is_empty() {
        writeln!(out, "\nDENIES BY REASON")?;
        for (r, n) in &s.denies_by_reason {
            writeln!(out, "{r:<40} {n:>8}")?;
        }
    }
    if !s.secrets_by_host.is_empty() {
        writeln!(out, "\nSECRETS USED BY HOST")?;
        for (h, sec, n) in &s.secrets_by_host {
            writeln!(out, "{h:<40} {sec:<30} {n:>8}")?;
        }
    }
    if s.bad_lines > 0 {
        writeln!(out, "\n{} unreadable lines skipped", s.bad_lines)?;
    }
    Ok(())
}

/// The table of the top `top` groups.
fn groups(s: &Summary, top: usize, out: &mut dyn Write) -> io::Result<()> {
    let w = s
        .groups
        .iter()
        .take(top)
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(s.by.len())
        .min(60);
    writeln!(
        out,
        "\n{:<w$}  {:>8} {:>7} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9}",
        s.by.to_uppercase(),
        "COUNT",
        "DENY",
        "ERROR",
        "BYTES_IN",
        "BYTES_OUT",
        "P50_MS",
        "P95_MS",
        "P99_MS"
    )?;
    for (k, g) in s.groups.iter().take(top) {
        writeln!(
            out,
            "{:<w$}  {:>8} {:>7} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9}",
            k,
            g.count,
            g.deny,
            g.error,
            bytes(g.bytes_in),
            bytes(g.bytes_out),
            g.p50_ms,
            g.p95_ms,
            g.p99_ms
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Hist::new();
        for i in 1..=1000 {
            h.add(f64::from(i));
        }
        for (q, want) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = h.quantile(q);
            assert!((got - want).abs() / want < 0.021, "q{q}: {got} vs {want}");
        }
    }
}
