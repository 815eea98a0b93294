//! `centaur audit verify`: walks the hash chain through the given files in chain order and
//! reports the first break — a changed, removed, reordered or inserted record, a file cut
//! short, a file missing in the middle — or that the chain is whole. A torn final line (a
//! crash mid-write) is reported as such, not as tampering.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chain::{self, Hash};
use crate::read::{Lines, sources};
use crate::write::sink::Link;

/// What was found.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// Files read, in chain order.
    pub files: Vec<PathBuf>,
    /// Records whose place in the chain was verified.
    pub records: u64,
    /// The first seq verified.
    pub first_seq: Option<u64>,
    /// The last verified record: its seq and hash (the chain head).
    pub last_seq: Option<u64>,
    /// Hash of the last verified record.
    pub head: Option<String>,
    /// Observations that are not breaks (a torn last line, a chain that starts mid-way).
    pub notes: Vec<String>,
    /// The first break, if any.
    pub problem: Option<Problem>,
}

/// A break in the chain.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// Where.
    pub file: PathBuf,
    /// Line number (1-based; 0 for the file as a whole).
    pub line: u64,
    /// `changed`, `missing`, `reordered`, `inserted`, `truncated`, `missing_file`, `overlap`,
    /// `corrupt`, `not_audit`.
    pub kind: &'static str,
    /// What it means.
    pub message: String,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    kind: Option<String>,
    seq: u64,
    prev_hash: String,
    #[serde(default)]
    reason: Option<String>,
}

struct Walk {
    verdict: Verdict,
    link: Option<Link>,
}

impl Walk {
    fn fail(&mut self, file: &Path, line: u64, kind: &'static str, message: String) {
        self.verdict.problem = Some(Problem {
            file: file.to_path_buf(),
            line,
            kind,
            message,
        });
    }

    fn accept(&mut self, seq: u64, hash: Hash) {
        self.link = Some(Link { seq, hash });
        self.verdict.records += 1;
        self.verdict.first_seq.get_or_insert(seq);
    }
}

/// Verifies the chain through `paths` (any order; they are sorted by where they start).
pub fn verify(paths: &[PathBuf]) -> std::io::Result<Verdict> {
    let (mut srcs, bad) = sources(paths);
    // Chain order: by the seq each file starts at.
    srcs.sort_by_key(|s| s.first.as_ref().and_then(|f| f.seq).unwrap_or(0));
    let mut w = Walk {
        verdict: Verdict {
            files: srcs.iter().map(|s| s.path.clone()).collect(),
            records: 0,
            first_seq: None,
            last_seq: None,
            head: None,
            notes: Vec::new(),
            problem: None,
        },
        link: None,
    };
    if let Some((p, why)) = bad.into_iter().next() {
        w.fail(&p, 1, "not_audit", why.to_string());
        return Ok(w.verdict);
    }
    // Whether the previous file ended with its footer (closed cleanly by rotation).
    let mut prev_closed: Option<(PathBuf, bool)> = None;
    let n = srcs.len();
    for (i, src) in srcs.iter().enumerate() {
        let last_file = i + 1 == n;
        let closed = file(&mut w, &src.path, last_file, prev_closed.as_ref())?;
        if w.verdict.problem.is_some() {
            break;
        }
        prev_closed = Some((src.path.clone(), closed));
    }
    if let Some(l) = w.link {
        w.verdict.last_seq = Some(l.seq);
        w.verdict.head = Some(l.hash.to_string());
    }
    Ok(w.verdict)
}

/// Walks one file; returns whether it ended with a footer.
fn file(
    w: &mut Walk,
    path: &Path,
    last_file: bool,
    prev: Option<&(PathBuf, bool)>,
) -> std::io::Result<bool> {
    let mut lines = Lines::open(path)?;
    let mut st = FileState {
        path,
        last_file,
        prev,
        footer_seen: false,
        torn: None,
    };
    while lines.next_line()? {
        if let Next::Stop(footer_seen) = line(w, &mut st, &mut lines)? {
            return Ok(footer_seen);
        }
    }
    if let Some(t) = st.torn {
        w.fail(path, t, "corrupt", "not a complete JSON record".into());
    }
    Ok(st.footer_seen)
}

/// What one file's walk has seen so far.
struct FileState<'a> {
    path: &'a Path,
    last_file: bool,
    prev: Option<&'a (PathBuf, bool)>,
    footer_seen: bool,
    /// An unreadable line waiting for the `recovered` footer that would explain it.
    torn: Option<u64>,
}

/// Whether the walk of a file goes on after a line.
enum Next {
    Continue,
    /// Stop here; whether the file was closed by its footer.
    Stop(bool),
}

/// Checks one line: its JSON, then its place in the chain by kind.
fn line(w: &mut Walk, st: &mut FileState<'_>, lines: &mut Lines) -> std::io::Result<Next> {
    let (path, at) = (st.path, lines.number);
    if st.footer_seen {
        w.fail(
            path,
            at,
            "inserted",
            "lines after the file's closing footer".into(),
        );
        return Ok(Next::Stop(true));
    }
    let Ok(e) = serde_json::from_slice::<Entry>(&lines.buf) else {
        if !lines.complete && st.last_file {
            w.verdict.notes.push(format!(
                "{}:{at}: torn final line (a crash mid-write; the record was never complete) — not tampering",
                path.display()
            ));
            return Ok(Next::Stop(false));
        }
        // A torn line that the gateway closed off at its next start is followed by a
        // `recovered` footer; anything else unreadable is corruption.
        st.torn = Some(at);
        return Ok(Next::Continue);
    };
    if let Some(t) = st.torn.take() {
        if e.kind.as_deref() == Some("footer") && e.reason.as_deref() == Some("recovered") {
            w.verdict.notes.push(format!(
                "{}:{t}: torn line left by a crash, closed off when the gateway restarted — not tampering",
                path.display()
            ));
        } else {
            w.fail(path, t, "corrupt", "not a complete JSON record".into());
            return Ok(Next::Stop(false));
        }
    }
    let Some(prev_hash) = Hash::parse(&e.prev_hash) else {
        w.fail(
            path,
            at,
            "corrupt",
            "prev_hash is not a SHA-256 hex digest".into(),
        );
        return Ok(Next::Stop(false));
    };
    let sealed = chain::check(&lines.buf, &prev_hash);
    let line = Sealed {
        at,
        entry: &e,
        prev_hash,
        sealed,
    };
    match e.kind.as_deref() {
        Some("header") => Ok(header_line(w, st, &line)),
        Some("footer") => Ok(footer_line(w, st, &line)),
        Some(other) => {
            w.fail(path, at, "corrupt", format!("unknown line kind `{other}`"));
            Ok(Next::Stop(false))
        }
        None => record_line(w, path, lines, &line),
    }
}

/// A parsed line and what its hash says.
struct Sealed<'e> {
    at: u64,
    entry: &'e Entry,
    prev_hash: Hash,
    /// The hash at the line's end and whether it matches its content (`None`: no hash).
    sealed: Option<(Hash, bool)>,
}

fn header_line(w: &mut Walk, st: &FileState<'_>, l: &Sealed<'_>) -> Next {
    if l.at != 1 {
        w.fail(
            st.path,
            l.at,
            "inserted",
            "a file header in the middle of a file".into(),
        );
        return Next::Stop(false);
    }
    if l.sealed.is_none_or(|(_, ok)| !ok) {
        w.fail(
            st.path,
            l.at,
            "changed",
            "the file header was changed".into(),
        );
        return Next::Stop(false);
    }
    header(w, st.path, l.entry.seq, l.prev_hash, st.prev);
    if w.verdict.problem.is_some() {
        return Next::Stop(false);
    }
    Next::Continue
}

fn footer_line(w: &mut Walk, st: &mut FileState<'_>, l: &Sealed<'_>) -> Next {
    let (path, at, seq) = (st.path, l.at, l.entry.seq);
    if l.sealed.is_none_or(|(_, ok)| !ok) {
        w.fail(path, at, "changed", "the file footer was changed".into());
        return Next::Stop(false);
    }
    if let Some(last) = w.link
        && (last.seq != seq || last.hash != l.prev_hash)
    {
        let msg = if seq > last.seq {
            format!(
                "records {}..={seq} were removed from the end of this file (its footer says it ends at seq {seq})",
                last.seq + 1,
            )
        } else {
            format!(
                "the footer says the file ends at seq {seq} but its records go to seq {}",
                last.seq
            )
        };
        let kind = if seq > last.seq {
            "missing"
        } else {
            "inserted"
        };
        w.fail(path, at, kind, msg);
        return Next::Stop(false);
    }
    st.footer_seen = true;
    Next::Continue
}

fn record_line(
    w: &mut Walk,
    path: &Path,
    lines: &mut Lines,
    l: &Sealed<'_>,
) -> std::io::Result<Next> {
    let (at, seq) = (l.at, l.entry.seq);
    let Some((hash, ok)) = l.sealed else {
        w.fail(
            path,
            at,
            "corrupt",
            "record has no hash member at its end".into(),
        );
        return Ok(Next::Stop(false));
    };
    let last = w.link.unwrap_or_else(|| {
        // Headerless input (a capture of stdout): the chain starts where it starts.
        if seq > 1 {
            w.verdict.notes.push(format!(
                "the chain starts at seq {seq} (earlier records were not given)"
            ));
        }
        Link {
            seq: seq.saturating_sub(1),
            hash: l.prev_hash,
        }
    });
    if seq == last.seq + 1 && l.prev_hash == last.hash {
        if !ok {
            w.fail(
                path,
                at,
                "changed",
                format!("record seq {seq} was changed (its hash does not match its content)"),
            );
            return Ok(Next::Stop(false));
        }
        w.accept(seq, hash);
        return Ok(Next::Continue);
    }
    record_break(w, path, lines, at, seq, l.prev_hash, last)?;
    Ok(Next::Stop(false))
}

/// A header must continue the chain where the previous file left it.
fn header(w: &mut Walk, path: &Path, seq: u64, prev_hash: Hash, prev: Option<&(PathBuf, bool)>) {
    let Some(l) = w.link else {
        if prev.is_none() && seq > 1 {
            w.verdict.notes.push(format!(
                "the chain starts at seq {seq} (earlier files were not given or were removed by retention)"
            ));
        }
        w.link = Some(Link {
            seq: seq.saturating_sub(1),
            hash: prev_hash,
        });
        return;
    };
    if seq == l.seq + 1 && prev_hash == l.hash {
        return;
    }
    let prev_name = prev.map_or_else(String::new, |(p, _)| p.display().to_string());
    let prev_closed = prev.is_some_and(|(_, c)| *c);
    if seq > l.seq + 1 {
        let (kind, msg) = match prev_closed {
            true => (
                "missing_file",
                format!(
                    "records {}..={} are in none of the given files: a file between {prev_name} (ends at seq {}) and this one is missing",
                    l.seq + 1,
                    seq - 1,
                    l.seq
                ),
            ),
            false => (
                "truncated",
                format!(
                    "{prev_name} was cut short: it ends at seq {} without its closing footer, and this file starts at seq {seq}",
                    l.seq
                ),
            ),
        };
        w.fail(path, 1, kind, msg);
    } else if seq <= l.seq {
        w.fail(path, 1, "overlap", format!(
            "this file starts at seq {seq} but {prev_name} already reached seq {}: files overlap (copied or replayed)",
            l.seq
        ));
    } else {
        w.fail(path, 1, "changed", format!(
            "this file does not continue {prev_name}: its header names another hash for seq {} (the record was changed or replaced)",
            l.seq
        ));
    }
}

/// Classifies a record that does not follow its predecessor.
fn record_break(
    w: &mut Walk,
    path: &Path,
    lines: &mut Lines,
    at: u64,
    seq: u64,
    prev_hash: Hash,
    l: Link,
) -> std::io::Result<()> {
    let expected = l.seq + 1;
    if seq > expected {
        // Removed, or moved later? Look ahead in this file for the missing seq.
        let mut later = None;
        while lines.next_line()? {
            if let Ok(e) = serde_json::from_slice::<Entry>(&lines.buf)
                && e.kind.is_none()
                && e.seq == expected
            {
                later = Some(lines.number);
                break;
            }
        }
        match later {
            Some(n) => w.fail(path, at, "reordered", format!(
                "record seq {seq} comes before seq {expected} (found at line {n}): records were reordered"
            )),
            None => w.fail(path, at, "missing", format!(
                "records {expected}..={} are missing before this record (seq {seq})",
                seq - 1
            )),
        }
    } else if seq <= l.seq {
        w.fail(
            path,
            at,
            "inserted",
            format!(
                "seq {seq} appears again after seq {}: a record was inserted, replayed or moved",
                l.seq
            ),
        );
    } else if prev_hash != l.hash {
        w.fail(path, at, "inserted", format!(
            "record seq {seq} does not follow the record before it (prev_hash differs): a record was inserted or replaced here"
        ));
    }
    Ok(())
}
