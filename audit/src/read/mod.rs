//! Reading audit files: plain or gzip (by content, not name), line by line with line
//! numbers, and the order files go in.

mod expr;
pub mod filter;
pub mod query;
pub mod row;
pub mod stats;
pub mod tail;
pub mod verify;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Opens a plain or gzip-compressed file.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

/// Lines of a file, with their numbers; the last one may lack its newline (a torn write).
pub struct Lines {
    inner: Box<dyn BufRead + Send>,
    /// The current line, without its newline.
    pub buf: Vec<u8>,
    /// Its number, from 1.
    pub number: u64,
    /// Whether it ended with a newline.
    pub complete: bool,
}

impl Lines {
    /// Lines of `path`.
    pub fn open(path: &Path) -> io::Result<Lines> {
        Ok(Lines {
            inner: open(path)?,
            buf: Vec::with_capacity(4096),
            number: 0,
            complete: true,
        })
    }

    /// Advances to the next line; `false` at the end.
    pub fn next_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        if self.inner.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(false);
        }
        self.number += 1;
        self.complete = self.buf.last() == Some(&b'\n');
        if self.complete {
            self.buf.pop();
        }
        Ok(true)
    }
}

/// What a file's first line says about it.
#[derive(Debug, Deserialize)]
pub struct First {
    /// `header` for our files.
    #[serde(default)]
    pub kind: Option<String>,
    /// Header: seq of the first record; record: its own seq.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Start time.
    #[serde(default)]
    pub ts: Option<String>,
    /// The chain hash before the first record.
    #[serde(default)]
    pub prev_hash: Option<String>,
}

/// A file to read, with what its first line says.
#[derive(Debug)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Its first line, if it is an audit header or record.
    pub first: Option<First>,
}

/// Reads the first line of each file and orders them by where they start (chain `seq`, then
/// time). Files that are not audit logs are returned in `Err` with the reason.
pub fn sources(paths: &[PathBuf]) -> (Vec<Source>, Vec<(PathBuf, NotAudit)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for p in paths {
        match first_line(p) {
            Ok(Some(first)) => ok.push(Source {
                path: p.clone(),
                first: Some(first),
            }),
            Ok(None) => ok.push(Source {
                path: p.clone(),
                first: None,
            }),
            Err(e) => bad.push((p.clone(), e)),
        }
    }
    ok.sort_by(|a, b| {
        let key = |s: &Source| {
            let f = s.first.as_ref();
            (
                f.and_then(|f| f.ts.clone()).unwrap_or_default(),
                f.and_then(|f| f.seq).unwrap_or(0),
            )
        };
        key(a).cmp(&key(b))
    });
    (ok, bad)
}

/// Why a file is not read as an audit log.
#[derive(Debug, thiserror::Error)]
pub enum NotAudit {
    /// It cannot be read.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Its first line is not JSON.
    #[error("not an audit log (its first line is not a JSON object)")]
    NotJson,
    /// Its first line is JSON of another kind.
    #[error("not an audit log (its first line is neither a centaur audit header nor a record)")]
    NotRecord,
}

/// Paths or patterns that name no audit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A glob that does not parse.
    #[error("bad pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What the glob parser said.
        message: String,
    },
    /// A glob that matches no file.
    #[error("`{0}` matches no file")]
    NoMatch(String),
    /// A plain path that is not a file.
    #[error("{0}: no such file")]
    NoFile(String),
}

/// The first line of an audit file; `Ok(None)` for an empty file.
fn first_line(p: &Path) -> Result<Option<First>, NotAudit> {
    let mut lines = Lines::open(p)?;
    if !lines.next_line()? {
        return Ok(None);
    }
    let mut first: First = serde_json::from_slice(&lines.buf).map_err(|_| NotAudit::NotJson)?;
    let is_header = first.kind.as_deref() == Some("header");
    if !is_header && (first.ts.is_none() || first.seq.is_none()) {
        return Err(NotAudit::NotRecord);
    }
    // A file is placed in time by its first record (the header's time is when the file was
    // started, which may be later than the requests it records).
    if is_header
        && lines.next_line()?
        && let Ok(r) = serde_json::from_slice::<First>(&lines.buf)
        && r.kind.is_none()
    {
        first.ts = r.ts;
    }
    Ok(Some(first))
}

/// Expands globs (`*`, `?`, `[…]`) in the given paths; a pattern that matches nothing is an
/// error, as is a missing plain path.
pub fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, PathError> {
    let mut out = Vec::new();
    for pat in patterns {
        if pat.contains(['*', '?', '[']) {
            let before = out.len();
            let paths = glob::glob(pat).map_err(|e| PathError::Pattern {
                pattern: pat.clone(),
                message: e.to_string(),
            })?;
            for p in paths.flatten() {
                if p.is_file() {
                    out.push(p);
                }
            }
            if out.len() == before {
                return Err(PathError::NoMatch(pat.clone()));
            }
        } else {
            let p = PathBuf::from(pat);
            if !p.is_file() {
                return Err(PathError::NoFile(pat.clone()));
            }
            out.push(p);
        }
    }
    out.dedup();
    Ok(out)
}
