//! Output files are written through a temporary file and renamed into place, so that an
//! interrupted run never leaves half a JSONL that looks complete — and a hard-linked image is
//! replaced, never written through (which would alter the source dataset).

use coordexp_core::Error;
use std::fs;
use std::path::Path;

/// Write `bytes` to `path` atomically (temporary sibling file + rename).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, &e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, &e))
}

/// Serialise `value` as pretty JSON (with a final newline) and write it atomically.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| Error::runtime(format!("cannot serialise {}: {e}", path.display())))?;
    write_atomically(path, (json + "\n").as_bytes())
}
