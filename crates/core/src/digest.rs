//! Content fingerprints: SHA-256 of files and of JSONL datasets, as run manifests and the audit
//! record them (one definition, so the two always agree on what a fingerprint is).

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's bytes, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, &e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io("read", path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of every byte of a JSONL file and its count of non-blank lines, in one pass.
pub fn jsonl_fingerprint(path: &Path) -> Result<(String, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, &e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut records = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| Error::io("read", path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&line);
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            records += 1;
        }
    }
    Ok((hex(&hasher.finalize()), records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jsonl_fingerprint_hashes_every_byte_and_counts_non_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n\n  \n{\"b\": 2}\n").unwrap();
        let (sha, n) = jsonl_fingerprint(&p).unwrap();
        assert_eq!(n, 2);
        assert_eq!(sha, sha256_file(&p).unwrap());
        assert_eq!(sha.len(), 64);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
