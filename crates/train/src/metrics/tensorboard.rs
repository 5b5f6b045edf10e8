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
    fn a_scalar_value_encodes_as_the_expected_protobuf_bytes() {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, b"a");
        put_float(&mut v, 2, 1.0);
        assert_eq!(v, [0x0A, 0x01, b'a', 0x15, 0x00, 0x00, 0x80, 0x3F]);
    }
}
