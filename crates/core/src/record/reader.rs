//! Streaming JSONL reading: one line in memory at a time, line numbers kept for every message.
//!
//! Blank lines are not records; they are skipped and counted (see
//! [`RecordReader::blank_lines`] and [`ValidationReport::blank_lines`]). Line endings may be
//! `\n` or `\r\n`.

use super::{Problem, Reason, Record, ValidationReport};
use crate::Error;
use crate::progress::{Progress, Task};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// What one line of a JSONL file held.
enum Line {
    Blank,
    Record(Result<Record, Vec<Problem>>),
}

/// Reads records line by line from any buffered reader.
///
/// As an iterator it yields `(line_no, Record)` and stops at the first invalid line with an
/// [`Error`] located at `FILE:LINE` (fail fast, for training and evaluation inputs). Use
/// [`validate_file`] to see every problem instead.
pub struct RecordReader<R> {
    inner: R,
    file: PathBuf,
    line_no: usize,
    blank_lines: usize,
    /// Bytes read so far (progress of a file).
    bytes: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl RecordReader<BufReader<File>> {
    /// Open a JSONL file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let f = File::open(path).map_err(|e| Error::io("open", path, &e))?;
        Ok(RecordReader::new(BufReader::with_capacity(1 << 16, f), path))
    }
}

impl<R: BufRead> RecordReader<R> {
    /// Read from `inner`; `file` names the source in messages.
    pub fn new(inner: R, file: impl Into<PathBuf>) -> Self {
        RecordReader {
            inner,
            file: file.into(),
            line_no: 0,
            blank_lines: 0,
            bytes: 0,
            buf: Vec::with_capacity(4096),
            failed: false,
        }
    }

    /// Blank lines skipped so far.
    pub fn blank_lines(&self) -> usize {
        self.blank_lines
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next line, parsed; `None` at end of input.
    fn next_line(&mut self) -> Option<Result<(usize, Line), Error>> {
        self.buf.clear();
        match self.inner.read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(n) => self.bytes += n as u64,
            Err(e) => return Some(Err(Error::io("read", &self.file, &e))),
        }
        self.line_no += 1;
        let bytes = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = match std::str::from_utf8(bytes) {
            Ok(text) if text.trim().is_empty() => {
                self.blank_lines += 1;
                Line::Blank
            }
            Ok(text) => Line::Record(Record::from_json_line(text)),
            Err(e) => Line::Record(Err(vec![Problem::new(
                "",
                Reason::MalformedJson,
                format!("line is not valid UTF-8 (invalid byte at column {})", e.valid_up_to() + 1),
            )])),
        };
        Some(Ok((self.line_no, line)))
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<(usize, Record), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let item = match self.next_line()? {
                Err(e) => Err(e),
                Ok((_, Line::Blank)) => continue,
                Ok((n, Line::Record(Ok(r)))) => Ok((n, r)),
                Ok((n, Line::Record(Err(problems)))) => Err(line_error(problems, &self.file, n)),
            };
            self.failed = item.is_err();
            return Some(item);
        }
    }
}

/// The error for an invalid line: its first problem, located at `FILE:LINE`, with a hint that
/// says how many more problems the line has.
pub fn line_error(problems: Vec<Problem>, file: &Path, line: usize) -> Error {
    let location = format!("{}:{line}", file.display());
    let more = problems.len().saturating_sub(1);
    let Some(first) = problems.into_iter().next() else {
        return Error::input("invalid record").at(location);
    };
    let hint = if more > 0 {
        format!(
            "{} ({more} more problems on this line; `coordexp data validate {}` lists all)",
            first.hint,
            file.display()
        )
    } else {
        first.hint.clone()
    };
    first.with_hint(hint).into_error(location)
}

/// Read every record of a JSONL file, failing on the first invalid line with `FILE:LINE`.
pub fn read_records(path: &Path) -> Result<Vec<(usize, Record)>, Error> {
    RecordReader::open(path)?.collect()
}

/// The record on 1-based `line` of `path`: the one reader of "record at line N" (CLI commands,
/// `model logits`, `inspect`, the audit). Errors name `FILE:LINE` and say what to do: line 0, a
/// line past the end (with the file's line count), a blank line, invalid UTF-8, and an invalid
/// record (its first problem, with the number of further problems).
pub fn read_record_at(path: &Path, line: usize) -> Result<Record, Error> {
    if line == 0 {
        return Err(Error::input("line numbers are 1-based; got 0")
            .at(path.display().to_string())
            .hint("the first record is on line 1"));
    }
    let mut reader = RecordReader::open(path)?;
    loop {
        match reader.next_line() {
            None => {
                return Err(Error::input(format!(
                    "{} has no line {line}: it has only {} lines",
                    path.display(),
                    reader.line_no
                ))
                .at(format!("{}:{line}", path.display()))
                .hint("pick a line within the file (lines are 1-based)"));
            }
            Some(Err(e)) => return Err(e),
            Some(Ok((n, _))) if n < line => continue,
            Some(Ok((_, Line::Blank))) => {
                return Err(Error::input("the line is blank: it holds no record")
                    .at(format!("{}:{line}", path.display()))
                    .hint("pick a line that holds a record"));
            }
            Some(Ok((_, Line::Record(Ok(r))))) => return Ok(r),
            Some(Ok((_, Line::Record(Err(problems))))) => {
                return Err(line_error(problems, path, line));
            }
        }
    }
}

/// Validate every line of a JSONL file and collect every problem.
///
/// Fails only when the file cannot be opened or read; invalid content is in the report.
pub fn validate_file(path: &Path) -> Result<ValidationReport, Error> {
    validate_file_with(path, Progress::OFF, |_, _| {})
}

/// [`validate_file`], showing `progress` (in bytes of the file) and handing each valid record
/// with its line number to `on_valid` (e.g. to queue image checks that then extend the report).
pub fn validate_file_with(
    path: &Path,
    progress: Progress,
    mut on_valid: impl FnMut(usize, Record),
) -> Result<ValidationReport, Error> {
    let mut reader = RecordReader::open(path)?;
    let task = file_task(progress, "validate", path);
    let mut report = ValidationReport::new(path);
    while let Some(next) = reader.next_line() {
        task.inc(reader.bytes.saturating_sub(task.done()));
        match next? {
            (_, Line::Blank) => report.count_blank_line(),
            (n, Line::Record(result)) => {
                report.count_record();
                match result {
                    Ok(r) => on_valid(n, r),
                    Err(problems) => problems.into_iter().for_each(|p| report.push(n, p)),
                }
            }
        }
    }
    task.finish();
    Ok(report)
}

/// A task counting the bytes of `path` (its size as the total when it can be read).
pub fn file_task(progress: Progress, label: &str, path: &Path) -> Task {
    let total = std::fs::metadata(path).ok().map(|m| m.len());
    progress.task(&format!("{label} {}", path.display()), total, "bytes")
}
