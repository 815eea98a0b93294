//! `centaur audit query` and `tail`: stream the records of many files (plain or gzip) through
//! the filters, in time order, to a table, JSON lines or CSV.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use crate::read::filter::Filter;
use crate::read::row::{FIELDS, Row, known};
use crate::read::{Lines, sources};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line (the records as written, unless `--fields` is given).
    Json,
    /// CSV with a header row.
    Csv,
}

/// Columns shown when `--fields` is not given.
pub const DEFAULT_FIELDS: &[&str] = &[
    "ts",
    "action",
    "status",
    "method",
    "host",
    "path",
    "reason",
    "duration_ms",
];

/// A `--fields` list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A field no record has.
    #[error("unknown field `{0}`; known fields: {known}", known = FIELDS.join(", "))]
    Unknown(String),
    /// No field at all.
    #[error("--fields is empty")]
    Empty,
}

/// Checks `--fields`; the error lists the known fields.
pub fn fields(list: &str) -> Result<Vec<String>, FieldError> {
    let out: Vec<String> = list
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if let Some(bad) = out.iter().find(|f| !known(f)) {
        return Err(FieldError::Unknown(bad.clone()));
    }
    if out.is_empty() {
        return Err(FieldError::Empty);
    }
    Ok(out)
}

/// A problem with one line, reported and skipped.
#[derive(Debug)]
pub struct BadLine {
    /// File.
    pub file: PathBuf,
    /// Line number.
    pub line: u64,
    /// Why.
    pub message: String,
}

/// What a query saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records read (headers and footers excluded).
    pub scanned: u64,
    /// Records that matched.
    pub matched: u64,
    /// Lines that could not be read as records.
    pub bad: Vec<BadLine>,
    /// Files that are not audit logs.
    pub not_audit: Vec<(PathBuf, crate::read::NotAudit)>,
}

/// Reads one line through the filter: `Some(Some(ts))` when it matches.
fn step(
    lines: &mut Lines,
    path: &Path,
    f: &Filter,
    s: &mut Summary,
) -> io::Result<Option<Option<String>>> {
    if !lines.next_line()? {
        return Ok(None);
    }
    let line = &lines.buf;
    if line.starts_with(b"{\"kind\":") {
        return Ok(Some(None));
    }
    s.scanned += 1;
    if f.skip_fast(line) {
        return Ok(Some(None));
    }
    match serde_json::from_slice::<Row<'_>>(line) {
        Ok(r) if f.matches(&r) => Ok(Some(Some(r.ts.into_owned()))),
        Ok(_) => Ok(Some(None)),
        Err(e) => {
            let message = match lines.complete {
                true => format!("not a valid record: {e}"),
                false => "torn last line (a crash mid-write)".into(),
            };
            s.bad.push(BadLine {
                file: path.to_path_buf(),
                line: lines.number,
                message,
            });
            s.scanned -= 1;
            Ok(Some(None))
        }
    }
}

/// Matches of one file, from its scanning thread, in file order.
enum Batch {
    Matches(Vec<(String, Vec<u8>)>),
    End(io::Result<Summary>),
}

/// Matches per batch, and batches a scanner may run ahead of the output.
const BATCH: usize = 512;
const AHEAD: usize = 16;

/// One file being scanned on a thread of its own.
struct Cursor {
    rx: mpsc::Receiver<Batch>,
    buf: std::collections::VecDeque<(String, Vec<u8>)>,
    done: bool,
}

impl Cursor {
    fn spawn(path: PathBuf, filter: Arc<Filter>) -> Cursor {
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        std::thread::spawn(move || {
            let mut s = Summary::default();
            let mut batch = Vec::new();
            let result = (|| {
                let mut lines = Lines::open(&path)?;
                while let Some(hit) = step(&mut lines, &path, &filter, &mut s)? {
                    if let Some(ts) = hit {
                        batch.push((ts, lines.buf.clone()));
                        if batch.len() == BATCH
                            && tx.send(Batch::Matches(std::mem::take(&mut batch))).is_err()
                        {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            })();
            let _ = tx.send(Batch::Matches(batch));
            let _ = tx.send(Batch::End(result.map(|()| s)));
        });
        Cursor {
            rx,
            buf: Default::default(),
            done: false,
        }
    }

    /// The next match, waiting for the scanner; folds the scanner's counts into `total`.
    fn next(&mut self, total: &mut Summary) -> io::Result<Option<(String, Vec<u8>)>> {
        while self.buf.is_empty() && !self.done {
            match self.rx.recv() {
                Ok(Batch::Matches(m)) => self.buf.extend(m),
                Ok(Batch::End(r)) => {
                    let s = r?;
                    total.scanned += s.scanned;
                    total.bad.extend(s.bad);
                    self.done = true;
                }
                Err(_) => self.done = true,
            }
        }
        Ok(self.buf.pop_front())
    }
}

/// Runs a query over `paths`, writing matches to `out`. Within one gateway's files records
/// come in the order they were written; files of several gateways are merged by `ts`. Files
/// are scanned on parallel threads, ahead of the output, in bounded memory.
pub fn query(
    paths: &[PathBuf],
    filter: &Filter,
    out: &mut dyn Write,
    printer: &mut Printer,
    limit: Option<u64>,
) -> io::Result<Summary> {
    let (srcs, not_audit) = sources(paths);
    let mut summary = Summary {
        not_audit,
        ..Summary::default()
    };
    let filter = Arc::new(filter.clone());
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let starts: Vec<String> = srcs
        .iter()
        .map(|s| {
            s.first
                .as_ref()
                .and_then(|f| f.ts.clone())
                .unwrap_or_default()
        })
        .collect();
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(String, usize, Vec<u8>)>> = BinaryHeap::new();
    let mut next = 0;
    loop {
        // Start the files that may hold the earliest record, and keep `parallel` scanning.
        loop {
            let running = cursors.iter().filter(|c| !c.done).count();
            let needed = heap
                .peek()
                .is_none_or(|Reverse((ts, ..))| starts.get(next).is_some_and(|s| s <= ts));
            if next >= srcs.len() || !(needed || running < parallel) {
                break;
            }
            cursors.push(Cursor::spawn(srcs[next].path.clone(), filter.clone()));
            if let Some((ts, line)) = cursors[next].next(&mut summary)? {
                heap.push(Reverse((ts, next, line)));
            }
            next += 1;
        }
        let Some(Reverse((_, i, line))) = heap.pop() else {
            break;
        };
        if limit.is_some_and(|l| summary.matched >= l) {
            break;
        }
        summary.matched += 1;
        printer.line(out, &line)?;
        if let Some((ts, line)) = cursors[i].next(&mut summary)? {
            heap.push(Reverse((ts, i, line)));
        }
    }
    printer.finish(out)?;
    Ok(summary)
}

/// Writes matched records in the chosen format.
pub struct Printer {
    format: Format,
    fields: Vec<String>,
    /// Table: rows held until the column widths are known.
    held: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
    csv_header: bool,
}

/// Rows a table holds back to size its columns.
const TABLE_SAMPLE: usize = 200;
/// Widest a table column gets; longer values are cut with `…`.
const TABLE_MAX: usize = 60;

impl Printer {
    /// A printer for `fields` (the defaults when empty).
    pub fn new(format: Format, fields: &[String]) -> Printer {
        let fields = match (fields.is_empty(), format) {
            (false, _) => fields.to_vec(),
            (true, Format::Json) => Vec::new(),
            (true, _) => DEFAULT_FIELDS.iter().map(|f| f.to_string()).collect(),
        };
        Printer {
            format,
            fields,
            held: Vec::new(),
            widths: None,
            csv_header: false,
        }
    }

    /// Prints one record line.
    pub fn line(&mut self, out: &mut dyn Write, line: &[u8]) -> io::Result<()> {
        if self.format == Format::Json && self.fields.is_empty() {
            out.write_all(line)?;
            return out.write_all(b"\n");
        }
        let Ok(row) = serde_json::from_slice::<Row<'_>>(line) else {
            return Ok(());
        };
        let values: Vec<String> = self
            .fields
            .iter()
            .map(|f| row.get(f).text().into_owned())
            .collect();
        match self.format {
            Format::Json => {
                let mut m = serde_json::Map::new();
                for (f, v) in self.fields.iter().zip(values) {
                    let v = match row.get(f) {
                        crate::read::row::Val::Num(n) => serde_json::json!(n),
                        crate::read::row::Val::Null => serde_json::Value::Null,
                        crate::read::row::Val::Str(_) => serde_json::Value::String(v),
                    };
                    m.insert(f.clone(), v);
                }
                serde_json::to_writer(&mut *out, &m)?;
                out.write_all(b"\n")
            }
            Format::Csv => {
                if !self.csv_header {
                    self.csv_header = true;
                    writeln!(
                        out,
                        "{}",
                        self.fields
                            .iter()
                            .map(|f| csv(f))
                            .collect::<Vec<_>>()
                            .join(",")
                    )?;
                }
                writeln!(
                    out,
                    "{}",
                    values.iter().map(|v| csv(v)).collect::<Vec<_>>().join(",")
                )
            }
            Format::Table => {
                if self.widths.is_none() {
                    self.held.push(values);
                    if self.held.len() >= TABLE_SAMPLE {
                        self.flush_table(out)?;
                    }
                    return Ok(());
                }
                self.row(out, &values)
            }
        }
    }

    fn flush_table(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut w: Vec<usize> = self.fields.iter().map(|f| f.chars().count()).collect();
        for r in &self.held {
            for (i, v) in r.iter().enumerate() {
                w[i] = w[i].max(v.chars().count().min(TABLE_MAX));
            }
        }
        self.widths = Some(w);
        let header: Vec<String> = self.fields.iter().map(|f| f.to_uppercase()).collect();
        self.row(out, &header)?;
        for r in std::mem::take(&mut self.held) {
            self.row(out, &r)?;
        }
        Ok(())
    }

    fn row(&self, out: &mut dyn Write, values: &[String]) -> io::Result<()> {
        let widths = self.widths.as_deref().unwrap_or(&[]);
        let mut line = String::new();
        for (i, v) in values.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(10);
            let n = v.chars().count();
            let cell: String = if n > w {
                v.chars().take(w.saturating_sub(1)).chain(['…']).collect()
            } else {
                v.clone()
            };
            if i + 1 < values.len() {
                line.push_str(&format!("{cell:<w$}  "));
            } else {
                line.push_str(&cell);
            }
        }
        writeln!(out, "{}", line.trim_end())
    }

    /// Ends the output (prints a table still held back).
    pub fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.format == Format::Table && self.widths.is_none() && !self.held.is_empty() {
            self.flush_table(out)?;
        }
        out.flush()
    }
}

fn csv(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}
