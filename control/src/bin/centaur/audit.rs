//! `centaur audit`: query, follow, summarise and verify audit logs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use audit::read::filter::{Expr, Filter, Glob, StatusFilter, time_bound};
use audit::read::query::{Format, Printer};
use audit::read::stats::By;
use clap::{Args, Subcommand, ValueEnum};

/// Audit log subcommands.
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print matching records from one or many files, in time order.
    #[command(after_help = "Examples:
  centaur audit query /var/log/centaur/audit.jsonl* --since 1h --host '*.openai.com'
  centaur audit query 'logs/*.jsonl*' --action deny --output csv --fields ts,host,reason
  centaur audit query audit.jsonl --where 'duration_ms > 500 and status >= 500'
  centaur audit query audit.jsonl --secret GITHUB_TOKEN --output json

Files may be rotated (audit.jsonl.000000001234) or gzip-compressed; globs are expanded.
Files of several gateways are merged by time.")]
    Query {
        /// Files and filters.
        #[command(flatten)]
        input: Input,
        /// Output format.
        #[command(flatten)]
        out: Out,
        /// Stop after this many records.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Print the last records of live files and, with -f, new ones as they are written.
    #[command(
        after_help = "Example:\n  centaur audit tail -f /var/log/centaur/audit.jsonl --action deny"
    )]
    Tail {
        /// Files and filters.
        #[command(flatten)]
        input: Input,
        /// Output format.
        #[command(flatten)]
        out: Out,
        /// Keep printing records as they are written (follows rotation).
        #[arg(short, long)]
        follow: bool,
        /// How many past records to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// Summarise a window: outcomes, top hosts, denies by reason, secrets per host, bytes,
    /// and p50/p95/p99 latency.
    #[command(
        after_help = "Examples:\n  centaur audit stats audit.jsonl* --since 24h\n  centaur audit stats audit.jsonl* --by sandbox --output json"
    )]
    Stats {
        /// Files and filters.
        #[command(flatten)]
        input: Input,
        /// Group by.
        #[arg(long, value_enum, default_value_t = ByArg::Host)]
        by: ByArg,
        /// Groups shown.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// `table` (default) or `json`.
        #[arg(long, short, value_enum)]
        output: Option<OutArg>,
    },
    /// Check the hash chain through the given files; report the first break.
    #[command(
        after_help = "Exit status: 0 the chain is whole (notes such as a torn final line after a crash are
printed but are not tampering); 1 a break was found; 2 the files could not be read.

Example:\n  centaur audit verify /var/log/centaur/audit.jsonl*"
    )]
    Verify {
        /// Audit files (globs allowed), in any order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Files and filters shared by query, tail and stats.
#[derive(Args)]
pub struct Input {
    /// Audit files (globs allowed; plain, rotated or .gz).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// Records at or after: `1h`, `30m`, `2d` ago, or a UTC time (`2026-11-21T10:00:00Z`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Records before: same forms as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Sandbox: `LABEL=VALUE` or a value of any label (globs allowed).
    #[arg(long, value_name = "LABEL=VALUE")]
    sandbox: Option<String>,
    /// Destination host glob, e.g. `*.openai.com`.
    #[arg(long, value_name = "GLOB")]
    host: Option<String>,
    /// allow, deny, error or cancel (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_name = "ACTION")]
    action: Vec<String>,
    /// Reason code (docs/reason-codes.md; repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    reason: Vec<String>,
    /// Requests where this secret was injected or swapped.
    #[arg(long, value_name = "NAME")]
    secret: Option<String>,
    /// Status: `404`, `5xx`, `4xx,502`.
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// HTTP method.
    #[arg(long)]
    method: Option<String>,
    /// Path glob, e.g. `/v1/*`.
    #[arg(long, value_name = "GLOB")]
    path: Option<String>,
    /// An expression over any field: `duration_ms > 500 and host ~ "*.openai.com"`
    /// (= != > >= < <= ~ !~, and, or, not, parentheses).
    #[arg(long = "where", value_name = "EXPR")]
    expr: Option<String>,
}

/// Output options of query and tail.
#[derive(Args)]
pub struct Out {
    /// `table` (default on a terminal), `json` (default otherwise) or `csv`.
    #[arg(long, short, value_enum)]
    output: Option<OutArg>,
    /// Comma-separated columns, e.g. `ts,host,reason,sandbox.team`.
    #[arg(long, value_name = "LIST")]
    fields: Option<String>,
}

/// Output formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum OutArg {
    /// Aligned columns.
    Table,
    /// JSON lines.
    Json,
    /// CSV.
    Csv,
}

/// Grouping of `stats`.
#[derive(Clone, Copy, ValueEnum)]
pub enum ByArg {
    /// Destination host.
    Host,
    /// Sandbox labels.
    Sandbox,
    /// Reason code.
    Reason,
}

impl Input {
    fn filter(&self) -> anyhow::Result<Filter> {
        let now = time::OffsetDateTime::now_utc();
        let actions = self
            .action
            .iter()
            .map(|a| Filter::action(a).map(str::to_string))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            since: self
                .since
                .as_deref()
                .map(|s| time_bound(s, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|s| time_bound(s, now))
                .transpose()?,
            sandbox: self.sandbox.as_deref().map(Filter::sandbox),
            host: self.host.as_deref().map(Glob::new),
            actions,
            reasons: self.reason.clone(),
            secret: self.secret.clone(),
            status: self
                .status
                .as_deref()
                .map(StatusFilter::parse)
                .transpose()?,
            method: self.method.clone(),
            path: self.path.as_deref().map(Glob::new),
            expr: self.expr.as_deref().map(Expr::parse).transpose()?,
        })
    }

    fn paths(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(audit::read::expand(&self.files)?)
    }
}

impl Out {
    fn printer(&self) -> anyhow::Result<Printer> {
        let fields = match &self.fields {
            Some(f) => audit::read::query::fields(f)?,
            None => Vec::new(),
        };
        let format = match self.output {
            Some(OutArg::Table) => Format::Table,
            Some(OutArg::Json) => Format::Json,
            Some(OutArg::Csv) => Format::Csv,
            None if std::io::stdout().is_terminal() => Format::Table,
            None => Format::Json,
        };
        Ok(Printer::new(format, &fields))
    }
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("centaur audit: {e}");
    ExitCode::from(2)
}

/// Runs an audit subcommand.
pub fn run(cmd: AuditCmd) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    match cmd {
        AuditCmd::Query {
            input,
            out: o,
            limit,
        } => {
            let (filter, paths, mut printer) = match (input.filter(), input.paths(), o.printer()) {
                (Ok(f), Ok(p), Ok(pr)) => (f, p, pr),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(e),
            };
            match audit::read::query::query(&paths, &filter, &mut out, &mut printer, limit) {
                Ok(s) => {
                    let _ = out.flush();
                    report(&s.bad, &s.not_audit);
                    ExitCode::SUCCESS
                }
                Err(e) => broken_pipe_or(e),
            }
        }
        AuditCmd::Tail {
            input,
            out: o,
            follow,
            lines,
        } => {
            let (filter, paths, mut printer) = match (input.filter(), input.paths(), o.printer()) {
                (Ok(f), Ok(p), Ok(pr)) => (f, p, pr),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(e),
            };
            match audit::read::tail::tail(&paths, &filter, &mut printer, lines, follow, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => broken_pipe_or(e),
            }
        }
        AuditCmd::Stats {
            input,
            by,
            top,
            output,
        } => stats(&input, by, top, output, &mut out),
        AuditCmd::Verify { files, json } => verify(&files, json, &mut out),
    }
}

/// `centaur audit stats`: a table, or JSON.
fn stats(
    input: &Input,
    by: ByArg,
    top: usize,
    output: Option<OutArg>,
    out: &mut impl Write,
) -> ExitCode {
    let (filter, paths) = match (input.filter(), input.paths()) {
        (Ok(f), Ok(p)) => (f, p),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let by = match by {
        ByArg::Host => By::Host,
        ByArg::Sandbox => By::Sandbox,
        ByArg::Reason => By::Reason,
    };
    let s = match audit::read::stats::stats(&paths, &filter, by) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let written = match output {
        Some(OutArg::Json) => serde_json::to_writer_pretty(&mut *out, &s)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        _ => audit::read::stats::render(&s, top, &mut *out),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => broken_pipe_or(e),
    }
}

/// `centaur audit verify`: exit 1 when the chain is broken.
fn verify(files: &[String], json: bool, out: &mut impl Write) -> ExitCode {
    let paths = match audit::read::expand(files) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let v = match audit::read::verify::verify(&paths) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let _ = if json {
        serde_json::to_writer_pretty(&mut *out, &v)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        print_verdict(&v, out)
    };
    let _ = out.flush();
    match v.problem {
        Some(_) => ExitCode::from(1),
        None => ExitCode::SUCCESS,
    }
}

fn print_verdict(v: &audit::read::verify::Verdict, out: &mut dyn Write) -> std::io::Result<()> {
    for n in &v.notes {
        writeln!(out, "note: {n}")?;
    }
    match &v.problem {
        Some(p) => writeln!(
            out,
            "BROKEN at {}:{} ({}): {}\n{} records verified before it{}",
            p.file.display(),
            p.line,
            p.kind,
            p.message,
            v.records,
            v.last_seq
                .map(|s| format!(", up to seq {s}"))
                .unwrap_or_default()
        ),
        None => writeln!(
            out,
            "OK: {} records in {} file(s){}{}",
            v.records,
            v.files.len(),
            match (v.first_seq, v.last_seq) {
                (Some(a), Some(b)) => format!(", seq {a}..={b}"),
                _ => String::new(),
            },
            v.head
                .as_deref()
                .map(|h| format!("; head {h}"))
                .unwrap_or_default()
        ),
    }
}

fn report(bad: &[audit::read::query::BadLine], not_audit: &[(PathBuf, audit::read::NotAudit)]) {
    for (p, why) in not_audit {
        eprintln!("centaur audit: {}: {why}; skipped", p.display());
    }
    for b in bad.iter().take(20) {
        eprintln!(
            "centaur audit: {}:{}: {}; skipped",
            b.file.display(),
            b.line,
            b.message
        );
    }
    if bad.len() > 20 {
        eprintln!(
            "centaur audit: … and {} more unreadable lines",
            bad.len() - 20
        );
    }
}

fn broken_pipe_or(e: std::io::Error) -> ExitCode {
    // `| head` closing the pipe is a normal end.
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return ExitCode::SUCCESS;
    }
    usage(e)
}
