//! One writer per experiment: an advisory lock on `<exp>/.lock`.
//!
//! Every command that writes into an experiment takes the lock before it
//! reads or writes anything there, and holds it until the process exits.
//! The operating system releases it on any exit, `kill -9` included, so a
//! stale lock file never blocks anyone: only a live holder does. The file
//! keeps the holder's PID and command line, for the error the second
//! process prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name inside an experiment directory.
pub const LOCK_FILE: &str = ".lock";

/// A held experiment lock; dropping it releases the lock. A directory that
/// the lock itself created and that holds nothing else by then is removed
/// again, so a command that fails before its first write leaves no trace.
#[derive(Debug)]
pub struct ExperimentLock {
    _file: File,
    path: PathBuf,
    created: Option<PathBuf>,
}

impl Drop for ExperimentLock {
    fn drop(&mut self) {
        let Some(dir) = &self.created else { return };
        let only_lock = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().all(|e| e.file_name() == LOCK_FILE))
            .unwrap_or(false);
        if only_lock {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl ExperimentLock {
    /// Takes the lock of `exp` (creating the directory if needed), or fails
    /// naming the process that holds it.
    pub fn acquire(exp: &Path) -> Result<ExperimentLock> {
        let existed = exp.is_dir();
        std::fs::create_dir_all(exp)
            .with_context(|| format!("cannot create the experiment directory {}", exp.display()))?;
        let mut lock = Self::lock(exp)?;
        if !existed {
            lock.created = Some(exp.to_path_buf());
        }
        Ok(lock)
    }

    /// Takes the lock of an experiment that must already exist (for steps
    /// that only add to one: a missing directory is an error, not created).
    pub fn acquire_existing(exp: &Path) -> Result<ExperimentLock> {
        if !exp.is_dir() {
            bail!(
                "{} is not an experiment directory; create one with `modeconn run --exp {}` or `modeconn train-endpoints --exp {}`",
                exp.display(),
                exp.display(),
                exp.display()
            );
        }
        Self::lock(exp)
    }

    fn lock(exp: &Path) -> Result<ExperimentLock> {
        let path = exp.join(LOCK_FILE);
        if path.is_symlink() {
            bail!(
                "{} is a symbolic link; modeconn does not write through links it did not create. Remove it and run again.",
                path.display()
            );
        }
        // O_NOFOLLOW: a link planted between the check above and this open
        // fails the open instead of being followed.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // What the holder wrote, at most 4 KiB of it; unreadable is shown as unknown.
                (&mut file).take(4096).read_to_string(&mut holder).ok();
                let holder = holder.trim();
                bail!(
                    "another modeconn process is working on {}: {}. Wait for it to finish (or stop it), then run again; two processes on one experiment would mix their outputs.",
                    exp.display(),
                    if holder.is_empty() {
                        "its PID is not recorded yet".to_string()
                    } else {
                        holder.to_string()
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        let cmd: Vec<String> = std::env::args().collect();
        let text = format!("PID {} ({})\n", std::process::id(), cmd.join(" "));
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        // With the lock held, no other modeconn writes here: temporary files
        // of dead processes are leftovers of a kill or a full disk.
        crate::checkpoint::sweep_temp_files(exp);
        Ok(ExperimentLock {
            _file: file,
            path,
            created: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_one_s_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path().join("e");
        let first = ExperimentLock::acquire(&exp).unwrap();
        // flock locks belong to the open file: a second open in the same
        // process conflicts just as another process would.
        let err = ExperimentLock::acquire(&exp).unwrap_err().to_string();
        assert!(err.contains("another modeconn process"), "{err}");
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = ExperimentLock::acquire(&exp).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }

    #[test]
    fn a_directory_the_lock_created_goes_away_unless_something_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path().join("new");
        drop(ExperimentLock::acquire(&exp).unwrap());
        assert!(
            !exp.exists(),
            "an unused experiment directory was left behind"
        );
        let lock = ExperimentLock::acquire(&exp).unwrap();
        std::fs::write(exp.join("config.json"), "{}").unwrap();
        drop(lock);
        assert!(exp.join("config.json").exists());
        // An existing directory is never removed, even if empty.
        let old = dir.path().join("old");
        std::fs::create_dir(&old).unwrap();
        drop(ExperimentLock::acquire(&old).unwrap());
        assert!(old.is_dir());
    }

    #[test]
    fn a_lock_file_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path().join("e");
        std::fs::create_dir_all(&exp).unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, exp.join(LOCK_FILE)).unwrap();
        let err = ExperimentLock::acquire(&exp).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!target.exists(), "the link's target was created");
    }
}
