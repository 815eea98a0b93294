//! The audit file sink: a hash-chained JSON lines file that rotates by size and age, keeps a
//! number of rotated files, and can gzip them. Each file starts with a header line that names
//! the chain state where it begins, so the chain verifies across rotations and restarts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use policy::AuditFile;
use serde::{Deserialize, Serialize};

use crate::chain::{self, FORMAT, GENESIS, Hash};
use crate::record::now_rfc3339;
use crate::write::sink::{Link, Sink};

/// A file's first line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    /// Always `header`.
    pub kind: String,
    /// [`FORMAT`].
    pub format: String,
    /// When the file was started.
    pub ts: String,
    /// `seq` of the file's first record.
    pub seq: u64,
    /// `prev_hash` the file's first record carries: the previous file's last hash.
    pub prev_hash: String,
    /// The writing gateway's labels.
    #[serde(default)]
    pub sandbox: std::collections::BTreeMap<String, String>,
}

/// A rotated file's last line: where the chain stands when the file closes. Without it, a
/// file that is not the newest was cut short.
#[derive(Debug, Serialize, Deserialize)]
pub struct Footer {
    /// Always `footer`.
    pub kind: String,
    /// When the file was closed.
    pub ts: String,
    /// `seq` of the file's last record.
    pub seq: u64,
    /// `hash` of the file's last record.
    pub prev_hash: String,
    /// `rotated`, or `recovered` when the gateway closed the file at start after a crash
    /// (a torn last record may precede it).
    pub reason: String,
}

/// Appends a footer; after a crash the torn last line is ended first, so it stays visible.
fn close_file(f: &mut File, head: Link, reason: &str) -> io::Result<()> {
    let len = f.metadata()?.len();
    let mut out = Vec::new();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            out.push(b'\n');
        }
    }
    let footer = Footer {
        kind: "footer".into(),
        ts: now_rfc3339(),
        seq: head.seq,
        prev_hash: head.hash.to_string(),
        reason: reason.into(),
    };
    let mut line = serde_json::to_vec(&footer).map_err(io::Error::other)?;
    chain::seal(&mut line, &head.hash);
    out.extend_from_slice(&line);
    out.push(b'\n');
    f.seek(SeekFrom::End(0))?;
    // A footer cut short by a full disk is taken back, so that a later attempt starts clean.
    f.write_all(&out)
        .and_then(|()| f.sync_data())
        .inspect_err(|_| {
            let _ = f.set_len(len);
        })
}

/// How far a rotation got when a step failed (a full disk): the next attempt resumes there,
/// and nothing is written until it has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    /// No rotation under way.
    Idle,
    /// The live file has its footer; it is still to be renamed.
    Closed,
    /// Renamed; the new live file is still to be started.
    Renamed,
}

/// The live audit file.
pub struct FileSink {
    cfg: AuditFile,
    path: PathBuf,
    labels: std::collections::BTreeMap<String, String>,
    out: BufWriter<File>,
    bytes: u64,
    records: u64,
    first_at: Option<Instant>,
    head: Link,
    file_seq: u64,
    maintenance: mpsc::Sender<PathBuf>,
    rotation: Rotation,
}

impl FileSink {
    /// Opens the sink: recovers the chain head from the files already there, moves a
    /// non-empty live file aside (a crash may have left a torn last line in it), and starts
    /// a new live file. Returns the head the next record continues from.
    pub fn open(
        cfg: &AuditFile,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> io::Result<(FileSink, Link)> {
        let path = PathBuf::from(&cfg.path);
        if let Ok(meta) = fs::metadata(&path)
            && !meta.is_file()
        {
            return Err(io::Error::other(format!(
                "{} is not a regular file: the audit file is fsynced, rotated and hash-chained \
                 (to pass records on, use `stdout: true` or `otlp`)",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let live_len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let head = if live_len > 0 {
            last_link(&path)?
        } else {
            match rotated(&path)?.last() {
                Some((_, p)) => last_link(p)?,
                None => None,
            }
        }
        .unwrap_or(Link {
            seq: 0,
            hash: GENESIS,
        });
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let (keep, compress, base) = (cfg.keep, cfg.compress, path.clone());
        std::thread::Builder::new()
            .name("audit-maintenance".into())
            .spawn(move || {
                for p in rx {
                    if compress && let Err(e) = gzip(&p) {
                        tracing::error!(error = %e, file = %p.display(), "audit: could not compress a rotated file");
                    }
                    if let Some(keep) = keep
                        && let Err(e) = retain(&base, keep)
                    {
                        tracing::error!(error = %e, "audit: could not remove old files");
                    }
                }
            })?;
        if live_len > 0 {
            let mut old = OpenOptions::new().read(true).write(true).open(&path)?;
            close_file(&mut old, head, "recovered")?;
            let first = first_seq(&path).unwrap_or(head.seq + 1);
            let to = rotated_name(&path, first);
            fs::rename(&path, &to)?;
            let _ = tx.send(to);
        }
        let out = start_file(&path, head, labels)?;
        let bytes = out.get_ref().metadata()?.len();
        Ok((
            FileSink {
                cfg: cfg.clone(),
                path,
                labels: labels.clone(),
                out,
                bytes,
                records: 0,
                first_at: None,
                head,
                file_seq: head.seq + 1,
                maintenance: tx,
                rotation: Rotation::Idle,
            },
            head,
        ))
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.rotation == Rotation::Idle {
            self.out.flush()?;
            close_file(self.out.get_mut(), self.head, "rotated")?;
            self.rotation = Rotation::Closed;
        }
        if self.rotation == Rotation::Closed {
            let to = rotated_name(&self.path, self.file_seq);
            fs::rename(&self.path, &to)?;
            let _ = self.maintenance.send(to);
            self.rotation = Rotation::Renamed;
        }
        self.out = start_file(&self.path, self.head, &self.labels)?;
        self.rotation = Rotation::Idle;
        self.bytes = self.out.get_ref().metadata()?.len();
        self.records = 0;
        self.first_at = None;
        self.file_seq = self.head.seq + 1;
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, line: &[u8], link: Link) -> io::Result<()> {
        let rotate = self
            .cfg
            .max_bytes
            .is_some_and(|max| self.records > 0 && self.bytes + line.len() as u64 + 1 > max);
        if rotate || self.rotation != Rotation::Idle {
            self.rotate()?;
        }
        // A record goes into the buffer whole or not at all: when the disk is full the flush
        // that would make room fails first, and a line is never left half written.
        if self.out.capacity() - self.out.buffer().len() <= line.len() {
            self.out.flush()?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.bytes += line.len() as u64 + 1;
        self.records += 1;
        self.first_at.get_or_insert_with(Instant::now);
        self.head = link;
        Ok(())
    }

    fn commit(&mut self, sync: bool) -> io::Result<()> {
        self.out.flush()?;
        if sync {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }

    fn tick(&mut self) -> io::Result<()> {
        if let (Some(age), Some(first)) = (self.cfg.max_age, self.first_at)
            && first.elapsed() >= age
        {
            self.rotate()?;
        }
        Ok(())
    }

    fn probe(&mut self) -> io::Result<()> {
        if self.rotation != Rotation::Idle {
            self.rotate()?;
        }
        self.commit(true)
    }

    fn durable(&self) -> bool {
        true
    }
}

/// Creates a new live file holding only its header, on disk before any record.
fn start_file(
    path: &Path,
    head: Link,
    labels: &std::collections::BTreeMap<String, String>,
) -> io::Result<BufWriter<File>> {
    let header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        ts: now_rfc3339(),
        seq: head.seq + 1,
        prev_hash: head.hash.to_string(),
        sandbox: labels.clone(),
    };
    let mut line = serde_json::to_vec(&header).map_err(io::Error::other)?;
    chain::seal(&mut line, &head.hash);
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    f.write_all(&line)?;
    f.sync_data()?;
    sync_dir(path);
    Ok(BufWriter::with_capacity(256 * 1024, f))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// `PATH.<first seq, 12 digits>`.
pub fn rotated_name(path: &Path, first_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{first_seq:012}"));
    let mut p = PathBuf::from(name);
    let mut n = 1;
    while p.exists() || with_gz(&p).exists() {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{first_seq:012}-{n}"));
        p = PathBuf::from(name);
        n += 1;
    }
    p
}

fn with_gz(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".gz");
    PathBuf::from(s)
}

/// Rotated files of `path`, oldest first.
pub fn rotated(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        let rest = rest.strip_suffix(".gz").unwrap_or(rest);
        let digits = rest.split('-').next().unwrap_or("");
        if digits.len() == 12
            && let Ok(n) = digits.parse::<u64>()
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes all but the newest `keep` rotated files.
fn retain(path: &Path, keep: usize) -> io::Result<()> {
    let files = rotated(path)?;
    let excess = files.len().saturating_sub(keep);
    for (_, p) in files.into_iter().take(excess) {
        fs::remove_file(&p)?;
    }
    Ok(())
}

fn gzip(p: &Path) -> io::Result<()> {
    let gz = with_gz(p);
    let mut tmp = gz.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut input = File::open(p)?;
    let out = File::create(&tmp)?;
    let mut enc = flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::fast());
    io::copy(&mut input, &mut enc)?;
    let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    fs::rename(&tmp, &gz)?;
    fs::remove_file(p)?;
    sync_dir(p);
    Ok(())
}

#[derive(Deserialize)]
struct SeqOnly {
    #[serde(default)]
    kind: Option<String>,
    seq: u64,
    #[serde(default)]
    prev_hash: Option<String>,
}

/// The chain state after the last complete line of a file (plain or gzip).
fn last_link(path: &Path) -> io::Result<Option<Link>> {
    let tail = read_tail(path)?;
    for line in tail.split(|b| *b == b'\n').rev() {
        let Ok(s) = serde_json::from_slice::<SeqOnly>(line) else {
            continue;
        };
        if s.kind.as_deref() == Some("footer") {
            let hash = s.prev_hash.as_deref().and_then(Hash::parse);
            return Ok(hash.map(|hash| Link { seq: s.seq, hash }));
        }
        if s.kind.as_deref() == Some("header") {
            let prev = s.prev_hash.as_deref().and_then(Hash::parse);
            return Ok(prev.map(|hash| Link {
                seq: s.seq.saturating_sub(1),
                hash,
            }));
        }
        if let Some(hash) = chain::stated_hash(line) {
            return Ok(Some(Link { seq: s.seq, hash }));
        }
    }
    Ok(None)
}

/// The seq a file starts at, from its header.
fn first_seq(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read(&mut buf).ok()?;
    let line = buf[..n].split(|b| *b == b'\n').next()?;
    serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
}

/// The last complete lines of a file (up to 1 MiB of a plain file; all of a gzip file).
fn read_tail(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::new();
    if n == 2 && magic == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(f).read_to_end(&mut buf)?;
    } else {
        let len = f.metadata()?.len();
        let start = len.saturating_sub(1 << 20);
        f.seek(SeekFrom::Start(start))?;
        f.read_to_end(&mut buf)?;
    }
    // A torn last line (a crash mid-write) ends without a newline: leave it out.
    match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => buf.truncate(i),
        None => buf.clear(),
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_or_directory_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["/dev/null".to_string(), dir.path().display().to_string()] {
            let cfg = AuditFile {
                path: path.clone(),
                max_bytes: None,
                max_age: None,
                keep: None,
                compress: false,
            };
            let Err(e) = FileSink::open(&cfg, &Default::default()) else {
                panic!("{path} was accepted");
            };
            assert!(
                e.to_string().contains("is not a regular file"),
                "{path}: {e}"
            );
        }
    }
}
