//! TensorBoard event files, written from scratch (no TensorFlow or protobuf dependency).
//!
//! A file `events.out.tfevents.<unix secs>.<host>.<pid>.0` is a sequence of records:
//!
//! ```text
//! u64 LE  length of data
//! u32 LE  masked CRC32C of those 8 length bytes
//! bytes   data: one serialized `Event` protobuf
//! u32 LE  masked CRC32C of data
//! ```
//!
//! where `masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8` (wrapping). The first event carries
//! `file_version = "brain.Event:2"`; each later event a `Summary` of scalar values.
//!
//! The protobuf subset used (field number, wire type):
//! `Event { wall_time: double = 1 (I64), step: int64 = 2 (VARINT), file_version: string = 3 (LEN),
//! summary: Summary = 5 (LEN) }`, `Summary { value: repeated Value = 1 (LEN) }`,
//! `Value { tag: string = 1 (LEN), simple_value: float = 2 (I32) }`.

use coordexp_core::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes scalar summaries to one event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create a new event file in `dir` and write its version record.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let now = unix_time();
        // The trailing index tells apart files created in the same second by the same process
        // (a run resumed in-process).
        let mut index = 0;
        let (path, file) = loop {
            let name = format!(
                "events.out.tfevents.{}.{}.{}.{index}",
                now as u64,
                hostname(),
                std::process::id()
            );
            let path = dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && index < 1000 => {
                    index += 1
                }
                Err(e) => return Err(Error::io("create", &path, &e)),
            }
        };
        let mut w = EventWriter { path, out: BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, now);
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one event holding every `(tag, value)` of `values` at `step`; tags are
    /// `<prefix>/<name>` (e.g. `train/loss`). Values are stored as f32, TensorBoard's scalar type.
    pub fn scalars(&mut self, prefix: &str, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (name, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, format!("{prefix}/{name}").as_bytes());
            put_float(&mut v, 2, *value as f32);
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_double(&mut event, 1, unix_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)?;
        self.flush()
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&buf).map_err(|e| Error::io("write", &self.path, &e))
    }

    /// Push buffered records to the file (done after every event).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io("write", &self.path, &e))
    }
}

/// The event files of `dir` (TensorBoard's naming), sorted by name.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, &e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, &e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("events.out.tfevents.") && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// What truncating a run's event files after a step would do: for each file, its bytes with
/// every scalar event of a later step removed (`None` when the file is unchanged).
///
/// Why a plan: a resume must check everything before it touches a file; the plan is computed
/// (reading and validating every record) during the checks and written only after they pass.
pub struct Truncation {
    rewrites: Vec<(PathBuf, Vec<u8>)>,
    /// Scalar events dropped over all files.
    pub dropped: usize,
}

impl Truncation {
    /// Plan dropping the events of steps after `step` from the event files of `dir`, so a
    /// resumed run never shows a step twice. A record that does not read back (a torn last
    /// record of a killed process) ends its file: it and anything after it are dropped.
    pub fn plan(dir: &Path, step: u64) -> Result<Truncation> {
        let mut rewrites = Vec::new();
        let mut dropped = 0;
        for path in event_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, &e))?;
            let mut kept = Vec::with_capacity(bytes.len());
            let mut at = 0;
            while let Some((data, end)) = read_record(&bytes, at) {
                if event_step(data).is_some_and(|s| s > step) && is_summary(data) {
                    dropped += 1;
                } else {
                    kept.extend_from_slice(&bytes[at..end]);
                }
                at = end;
            }
            if kept.len() != bytes.len() {
                rewrites.push((path, kept));
            }
        }
        Ok(Truncation { rewrites, dropped })
    }

    /// Rewrite the changed files (each atomically).
    pub fn apply(self) -> Result<usize> {
        for (path, bytes) in &self.rewrites {
            crate::checkpoint::write_file_atomically(path, bytes)?;
        }
        Ok(self.dropped)
    }
}

/// The steps of the scalar events in an event file's bytes, in file order (reading stops at the
/// first record that does not read back).
pub fn scalar_steps(bytes: &[u8]) -> Vec<u64> {
    let mut steps = Vec::new();
    let mut at = 0;
    while let Some((data, end)) = read_record(bytes, at) {
        if is_summary(data) {
            steps.extend(event_step(data));
        }
        at = end;
    }
    steps
}

/// The record at `at` (its data and the offset after it), if complete and intact.
fn read_record(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(12)?)?;
    let len_bytes: [u8; 8] = header[..8].try_into().ok()?;
    let crc_len = u32::from_le_bytes(header[8..12].try_into().ok()?);
    if masked_crc32c(&len_bytes) != crc_len {
        return None;
    }
    let len = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
    let start = at + 12;
    let end = start.checked_add(len)?;
    let data = bytes.get(start..end)?;
    let crc = u32::from_le_bytes(bytes.get(end..end.checked_add(4)?)?.try_into().ok()?);
    (masked_crc32c(data) == crc).then_some((data, end + 4))
}

/// The `step` field of an `Event`, if present.
fn event_step(data: &[u8]) -> Option<u64> {
    fields(data).find(|(field, _)| *field == 2).and_then(|(_, v)| match v {
        Field::Varint(v) => Some(v),
        _ => None,
    })
}

/// True when the event carries a summary (not the file-version header).
fn is_summary(data: &[u8]) -> bool {
    fields(data).any(|(field, _)| field == 5)
}

enum Field {
    Varint(u64),
    Other,
}

/// The top-level fields of a protobuf message (stops at the first malformed field).
fn fields(data: &[u8]) -> impl Iterator<Item = (u32, Field)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let key = get_varint(data, &mut at)?;
        let field = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => Field::Varint(get_varint(data, &mut at)?),
            1 => {
                at = at.checked_add(8).filter(|&e| e <= data.len())?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(get_varint(data, &mut at)?).ok()?;
                at = at.checked_add(len).filter(|&e| e <= data.len())?;
                Field::Other
            }
            5 => {
                at = at.checked_add(4).filter(|&e| e <= data.len())?;
                Field::Other
            }
            _ => return None,
        };
        Some((field, value))
    })
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn unix_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The host name for the file name (TensorBoard's convention); `localhost` when unreadable.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, 0);
    put_varint(buf, v);
}

fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_float(buf: &mut Vec<u8>, field: u32, v: f32) {
    put_key(buf, field, 5);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) lookup table.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| CRC32C_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_use_seven_bit_groups_low_first() {
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xAC, 0x02]);
        b.clear();
        put_varint(&mut b, u64::MAX);
        assert_eq!(b.len(), 10);
    }

    #[test]
    fn truncation_drops_later_steps_and_keeps_the_header_and_earlier_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        for step in [1u64, 2, 3, 300] {
            w.scalars("train", step, &[("loss", step as f64)]).unwrap();
        }
        drop(w);
        let plan = Truncation::plan(dir.path(), 2).unwrap();
        assert_eq!(plan.dropped, 2);
        assert_eq!(plan.apply().unwrap(), 2);
        let files = event_files(dir.path()).unwrap();
        let bytes = std::fs::read(&files[0]).unwrap();
        let mut at = 0;
        let mut steps = Vec::new();
        while let Some((data, end)) = read_record(&bytes, at) {
            steps.push((event_step(data), is_summary(data)));
            at = end;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(steps, vec![(None, false), (Some(1), true), (Some(2), true)]);
        // Nothing later than step 2 remains: a second plan changes nothing.
        let again = Truncation::plan(dir.path(), 2).unwrap();
        assert_eq!((again.dropped, again.rewrites.len()), (0, 0));
    }

    #[test]
    fn a_torn_last_record_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars("train", 1, &[("loss", 1.0)]).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0, 1]);
        std::fs::write(&path, &bytes).unwrap();
        Truncation::plan(dir.path(), 5).unwrap().apply().unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), whole);
    }

    #[test]
    fn a_scalar_value_encodes_as_the_expected_protobuf_bytes() {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, b"a");
        put_float(&mut v, 2, 1.0);
        assert_eq!(v, [0x0A, 0x01, b'a', 0x15, 0x00, 0x00, 0x80, 0x3F]);
    }
}
