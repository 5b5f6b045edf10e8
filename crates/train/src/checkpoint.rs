//! Atomic checkpoint directories and files: a checkpoint either exists completely or not at all.
//!
//! A directory is written under a hidden temporary name next to its destination
//! (`.tmp-<name>.<pid>`), every file and the directory are fsynced, and only then is it renamed to
//! its final name (a rename within one directory is atomic on POSIX filesystems) and the parent
//! fsynced. A write that fails or panics removes its temporary directory; a process killed
//! mid-write leaves only a `.tmp-*` directory, which listing ignores and
//! [`Checkpoints::remove_stale`] deletes. Deleting an old checkpoint first renames it to a
//! temporary name, so an interrupted deletion never leaves a half-empty `step-<N>`.

use coordexp_core::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const TMP_PREFIX: &str = ".tmp-";

/// A directory being written; it becomes visible at its destination only on [`commit`].
///
/// [`commit`]: PendingDir::commit
pub struct PendingDir {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl PendingDir {
    /// Start writing the directory that will become `dest` (which must not exist yet).
    pub fn create(dest: &Path) -> Result<PendingDir> {
        if dest.exists() {
            return Err(Error::input(format!("{} already exists", dest.display()))
                .hint("checkpoints are never overwritten: remove it or resume from it"));
        }
        let (parent, name) = split(dest)?;
        fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, &e))?;
        let tmp = parent.join(format!("{TMP_PREFIX}{name}.{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, &e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io("create", &tmp, &e))?;
        Ok(PendingDir { tmp, dest: dest.to_path_buf(), committed: false })
    }

    /// Where to write the directory's files meanwhile.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Flush everything to disk and move the directory to its destination.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_tree(&self.tmp)?;
        fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::io("rename into place", &self.dest, &e))?;
        self.committed = true;
        sync_dir(parent_of(&self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover is hidden and removed by `Checkpoints::remove_stale`.
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Write a directory atomically: `fill` writes into a temporary directory, which is committed
/// to `dest` only if `fill` succeeds.
pub fn write_dir_atomically(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let pending = PendingDir::create(dest)?;
    fill(pending.path())?;
    pending.commit()
}

/// Replace `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the parent).
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let (parent, name) = split(path)?;
    let tmp = parent.join(format!("{TMP_PREFIX}{name}.{}", std::process::id()));
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| Error::io("write", &tmp, &e))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, &e))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&parent)
}

/// The `step-<N>` checkpoints of a run (`runs/<name>/checkpoints/`).
pub struct Checkpoints {
    root: PathBuf,
}

impl Checkpoints {
    pub fn new(root: &Path) -> Checkpoints {
        Checkpoints { root: root.to_path_buf() }
    }

    /// Destination of the checkpoint after optimizer step `step`.
    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.root.join(format!("step-{step}"))
    }

    /// Complete checkpoints, oldest first (an absent root has none).
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out: Vec<(u64, PathBuf)> = self
            .entries()?
            .into_iter()
            .filter_map(|(name, path)| {
                let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                path.is_dir().then_some((step, path))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>> {
        Ok(self.list()?.pop())
    }

    /// Delete temporary directories left by interrupted writes or deletions; returns how many.
    pub fn remove_stale(&self) -> Result<usize> {
        let mut n = 0;
        for (name, path) in self.entries()? {
            if name.starts_with(TMP_PREFIX) {
                remove_any(&path)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Keep the newest `keep_last` checkpoints (0 keeps all); returns the deleted directories.
    pub fn prune(&self, keep_last: u32) -> Result<Vec<PathBuf>> {
        let all = self.list()?;
        if keep_last == 0 || all.len() <= keep_last as usize {
            return Ok(Vec::new());
        }
        let mut removed = Vec::new();
        for (step, path) in &all[..all.len() - keep_last as usize] {
            let doomed = self.root.join(format!("{TMP_PREFIX}delete-step-{step}"));
            fs::rename(path, &doomed).map_err(|e| Error::io("rename for deletion", path, &e))?;
            fs::remove_dir_all(&doomed).map_err(|e| Error::io("remove", &doomed, &e))?;
            removed.push(path.clone());
        }
        sync_dir(&self.root)?;
        Ok(removed)
    }

    fn entries(&self) -> Result<Vec<(String, PathBuf)>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &self.root, &e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list", &self.root, &e))?;
            out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
        Ok(out)
    }
}

fn remove_any(path: &Path) -> Result<()> {
    let r = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    r.map_err(|e| Error::io("remove", path, &e))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn split(path: &Path) -> Result<(PathBuf, String)> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
        Error::runtime(format!("`{}` names no file or directory", path.display()))
    })?;
    Ok((parent_of(path).to_path_buf(), name))
}

/// fsync every file below `dir`, then the directories themselves.
fn sync_tree(dir: &Path) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("list", dir, &e))?;
    for entry in rd {
        let path = entry.map_err(|e| Error::io("list", dir, &e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("sync", &path, &e))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", dir, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
        let p = dir.join(name);
        fs::write(&p, text).map_err(|e| Error::io("write", &p, &e))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_committed_directory_appears_whole_at_its_destination() {
        let d = tempfile::tempdir().unwrap();
        let ck = Checkpoints::new(d.path());
        let dest = ck.step_dir(10);
        write_dir_atomically(&dest, |p| {
            fs::create_dir(p.join("sub")).unwrap();
            write(p, "a.txt", "A")?;
            write(&p.join("sub"), "b.txt", "B")
        })
        .unwrap();
        assert_eq!(fs::read_to_string(dest.join("sub/b.txt")).unwrap(), "B");
        assert_eq!(names(d.path()), vec!["step-10"]);
        let again = write_dir_atomically(&dest, |_| Ok(()));
        assert!(again.unwrap_err().what().contains("already exists"));
    }

    #[test]
    fn a_write_failing_midway_leaves_no_checkpoint_and_no_debris() {
        let d = tempfile::tempdir().unwrap();
        let ck = Checkpoints::new(d.path());
        write_dir_atomically(&ck.step_dir(1), |p| write(p, "w", "ok")).unwrap();
        let r = write_dir_atomically(&ck.step_dir(2), |p| {
            write(p, "weights.safetensors", "half")?;
            Err(Error::runtime("disk full (simulated)"))
        });
        assert!(r.is_err());
        assert_eq!(names(d.path()), vec!["step-1"]);
        assert_eq!(ck.latest().unwrap().unwrap().0, 1);

        // A panic in the writer unwinds through the guard too.
        let dest = ck.step_dir(3);
        let caught = std::panic::catch_unwind(|| {
            let _ = write_dir_atomically(&dest, |p| {
                write(p, "x", "x")?;
                panic!("simulated crash in the writer")
            });
        });
        assert!(caught.is_err());
        assert_eq!(names(d.path()), vec!["step-1"]);
    }

    #[test]
    fn a_process_killed_mid_write_leaves_only_a_hidden_temp_dir_that_is_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let ck = Checkpoints::new(d.path());
        write_dir_atomically(&ck.step_dir(5), |p| write(p, "w", "ok")).unwrap();
        let pending = PendingDir::create(&ck.step_dir(6)).unwrap();
        write(pending.path(), "weights.safetensors", "partial").unwrap();
        std::mem::forget(pending); // the process dies here: no Drop, no commit
        assert_eq!(ck.list().unwrap().len(), 1);
        assert_eq!(ck.latest().unwrap().unwrap().0, 5, "resume uses the last complete one");
        assert_eq!(ck.remove_stale().unwrap(), 1);
        assert_eq!(names(d.path()), vec!["step-5"]);
    }

    #[test]
    fn prune_keeps_the_newest_in_step_order() {
        let d = tempfile::tempdir().unwrap();
        let ck = Checkpoints::new(d.path());
        for s in [2, 10, 4, 8] {
            write_dir_atomically(&ck.step_dir(s), |p| write(p, "w", "x")).unwrap();
        }
        let removed = ck.prune(2).unwrap();
        assert_eq!(removed, vec![ck.step_dir(2), ck.step_dir(4)]);
        assert_eq!(names(d.path()), vec!["step-10", "step-8"]);
        assert!(ck.prune(0).unwrap().is_empty());
        assert!(Checkpoints::new(&d.path().join("absent")).list().unwrap().is_empty());
    }

    #[test]
    fn files_are_replaced_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("manifest.json");
        write_file_atomically(&p, b"one").unwrap();
        write_file_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(names(d.path()), vec!["manifest.json"]);
    }
}
