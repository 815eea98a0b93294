//! `centaur audit tail`: the last records of live files, then (with `-f`) new ones as they
//! are written, across rotations: the old file is read to its end before the new one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::read::filter::Filter;
use crate::read::query::Printer;
use crate::read::row::Row;

fn keep(filter: &Filter, line: &[u8]) -> bool {
    if filter.skip_fast(line) {
        return false;
    }
    serde_json::from_slice::<Row<'_>>(line).is_ok_and(|r| filter.matches(&r))
}

/// Prints the last `n` matching records of each file, then follows them if `follow`.
pub fn tail(
    paths: &[PathBuf],
    filter: &Filter,
    printer: &mut Printer,
    n: usize,
    follow: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut followed = Vec::new();
    let mut last: VecDeque<Vec<u8>> = VecDeque::with_capacity(n + 1);
    for p in paths {
        let mut f = File::open(p)?;
        let mut r = BufReader::new(&mut f);
        let mut line = Vec::new();
        let mut offset = 0u64;
        loop {
            line.clear();
            let got = r.read_until(b'\n', &mut line)?;
            if got == 0 || line.last() != Some(&b'\n') {
                break;
            }
            offset += got as u64;
            line.pop();
            if n > 0 && keep(filter, &line) {
                if last.len() == n {
                    last.pop_front();
                }
                last.push_back(line.clone());
            }
        }
        drop(r);
        followed.push(Followed {
            path: p.clone(),
            file: f,
            offset,
            partial: Vec::new(),
        });
    }
    for l in &last {
        printer.line(out, l)?;
    }
    printer.finish(out)?;
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for f in &mut followed {
            f.poll(filter, printer, out)?;
        }
        printer.finish(out)?;
    }
}

struct Followed {
    path: PathBuf,
    file: File,
    offset: u64,
    partial: Vec<u8>,
}

impl Followed {
    fn poll(
        &mut self,
        filter: &Filter,
        printer: &mut Printer,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        self.read_new(filter, printer, out)?;
        // Rotated: the path now names a new file. The old one is read to its end above.
        if let (Ok(now), Ok(cur)) = (std::fs::metadata(&self.path), self.file.metadata())
            && (now.ino() != cur.ino() || now.dev() != cur.dev())
        {
            self.file = File::open(&self.path)?;
            self.offset = 0;
            self.partial.clear();
            self.read_new(filter, printer, out)?;
        }
        Ok(())
    }

    fn read_new(
        &mut self,
        filter: &Filter,
        printer: &mut Printer,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        self.offset += (&mut self.file).take(64 << 20).read_to_end(&mut buf)? as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(i) = memchr::memchr(b'\n', &self.partial) {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let line = &line[..line.len() - 1];
            if keep(filter, line) {
                printer.line(out, line)?;
            }
        }
        Ok(())
    }
}
