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

use crate::shard::Target;
use crate::vocab::Shard;

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
        Self::check_exists(exp)?;
        Self::lock(exp)
    }

    /// Refuses a directory that is not there (with how to make one).
    fn check_exists(exp: &Path) -> Result<()> {
        if !exp.is_dir() {
            bail!(
                "{} is not an experiment directory; create one with `modeconn run --exp {}` or `modeconn train-endpoints --exp {}`",
                exp.display(),
                exp.display(),
                exp.display()
            );
        }
        Ok(())
    }

    fn lock(exp: &Path) -> Result<ExperimentLock> {
        crate::experiment::check_own_folders(exp)?;
        let path = exp.join(LOCK_FILE);
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // Shards hold the lock shared: if a shared lock is free to
                // take, the holders are shards (or merges), not one writer.
                if file.try_lock_shared().is_ok() {
                    file.unlock().ok();
                    bail!(
                        "shards are running on {}: {}. Wait for them to finish (and run `modeconn merge --exp {}`), or stop them; a step that is not sharded needs the experiment to itself.",
                        exp.display(),
                        running_shards(exp),
                        exp.display()
                    );
                }
                bail!(holder_error(exp, &mut file));
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        write_holder(&mut file, &path)?;
        // With the lock held, no other modeconn writes here: temporary files
        // of dead processes are leftovers of a kill or a full disk.
        crate::files::sweep_temp_files(exp);
        Ok(ExperimentLock {
            _file: file,
            path,
            created: None,
        })
    }

    /// The lock of `exp` shared with other shards and merges: it keeps
    /// out every step that takes the lock exclusively (a training, an
    /// unsharded evaluation), which could change the files the shards read
    /// or write the files they make. Shared holders neither record their
    /// PID here nor sweep temporary files (another shard's, possibly on
    /// another machine, may be in flight); each records itself in its own
    /// part lock.
    fn lock_shared(exp: &Path) -> Result<ExperimentLock> {
        crate::experiment::check_own_folders(exp)?;
        let path = exp.join(LOCK_FILE);
        let mut file = open_lock_file(&path)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(ExperimentLock {
                _file: file,
                path,
                created: None,
            }),
            Err(TryLockError::WouldBlock) => bail!(holder_error(exp, &mut file)),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens (creating) a lock file, refusing a link.
fn open_lock_file(path: &Path) -> Result<File> {
    if path.is_symlink() {
        bail!(
            "{} is a symbolic link; modeconn does not write through links it did not create. Remove it and run again.",
            path.display()
        );
    }
    if path.exists() && !path.is_file() {
        bail!(
            "{} is not a regular file (a FIFO, a folder or a device where modeconn keeps its lock). Remove it and run again.",
            path.display()
        );
    }
    // O_NOFOLLOW: a link planted between the check above and this open
    // fails the open instead of being followed.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

/// Records this process (PID and command line) in a lock file it holds.
fn write_holder(file: &mut File, path: &Path) -> Result<()> {
    let cmd: Vec<String> = std::env::args().collect();
    let text = format!("PID {} ({})\n", std::process::id(), cmd.join(" "));
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|_| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What the holder of a lock file recorded, at most 4 KiB of it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    // Unreadable is shown as unknown.
    file.seek(SeekFrom::Start(0)).ok();
    file.take(4096).read_to_string(&mut text).ok();
    match text.trim() {
        "" => "its PID is not recorded yet".to_string(),
        t => t.to_string(),
    }
}

/// The error for an experiment held exclusively by another process.
fn holder_error(exp: &Path, file: &mut File) -> String {
    format!(
        "another modeconn process is working on {}: {}. Wait for it to finish (or stop it), then run again; two processes on one experiment would mix their outputs.",
        exp.display(),
        holder(file)
    )
}

/// The shards that hold their part locks in `exp`, with what they recorded.
fn running_shards(exp: &Path) -> String {
    let mut found = Vec::new();
    let dirs = std::fs::read_dir(exp.join(crate::shard::SHARDS_DIR))
        .into_iter()
        .flatten();
    for d in dirs.flatten() {
        for e in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "lock") || p.is_symlink() {
                continue;
            }
            let Ok(mut f) = File::open(&p) else { continue };
            if let Err(TryLockError::WouldBlock) = f.try_lock() {
                found.push(format!("{} ({})", p.display(), holder(&mut f)));
            }
        }
    }
    if found.is_empty() {
        "a merge or a shard is starting".to_string()
    } else {
        found.join("; ")
    }
}

/// The locks of a shard or a merge: the experiment's, shared (see
/// [`ExperimentLock`]), and the part locks it works under, exclusive.
///
/// Shards of one experiment run at once, on one machine or on many (a
/// Slurm job array): each takes the experiment lock *shared*, which keeps
/// out every step that takes it exclusively (training, fitting, unsharded
/// evaluations: anything that could change what the shards read, or write
/// what they make), and its own part lock *exclusively*, so that a shard
/// never runs twice at once. `merge` takes the experiment lock shared too
/// (shards of other results may keep running) and the part locks of every
/// shard it merges, so no shard of those is running while it reads them.
/// Over NFS, these are `flock` locks, which Linux maps to NFS byte-range
/// locks; a file system without working locks (Lustre mounted without
/// `flock`) cannot keep two writers apart.
#[derive(Debug)]
pub struct ShardLock {
    _exp: ExperimentLock,
    _parts: Vec<File>,
}

impl ShardLock {
    /// The locks of `shard` of `target`. `create`: make the experiment
    /// directory if it does not exist (train-endpoints).
    pub fn acquire(exp: &Path, target: Target, shard: Shard, create: bool) -> Result<ShardLock> {
        if create {
            std::fs::create_dir_all(exp).with_context(|| {
                format!("cannot create the experiment directory {}", exp.display())
            })?;
        } else {
            ExperimentLock::check_exists(exp)?;
        }
        let lock = ExperimentLock::lock_shared(exp)?;
        let part = Self::part_lock(exp, target, shard)?;
        // Only this shard writes its part: a temporary file of it is a leftover.
        let part_path = target.part(exp, shard);
        crate::files::sweep_temp_files_of(&part_path);
        Ok(ShardLock {
            _exp: lock,
            _parts: vec![part],
        })
    }

    /// The locks of a merge of `targets` (each with its count of shards).
    pub fn acquire_merge(exp: &Path, targets: &[(Target, usize)]) -> Result<ShardLock> {
        ExperimentLock::check_exists(exp)?;
        let lock = ExperimentLock::lock_shared(exp)?;
        let mut parts = Vec::new();
        for &(target, count) in targets {
            for index in 0..count {
                parts.push(Self::part_lock(exp, target, Shard { index, count })?);
            }
        }
        Ok(ShardLock {
            _exp: lock,
            _parts: parts,
        })
    }

    fn part_lock(exp: &Path, target: Target, shard: Shard) -> Result<File> {
        let path = target.lock(exp, shard);
        let dir = target.dir(exp);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "shard {shard} of {} is already running or being merged: {}. Wait for it to finish.",
                target.output(),
                holder(&mut file)
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        write_holder(&mut file, &path)?;
        Ok(file)
    }
}

/// The lock a step holds: the experiment's alone, or a shard's.
#[derive(Debug)]
pub enum StepLock {
    Whole(ExperimentLock),
    Shard(ShardLock),
}

impl StepLock {
    /// The experiment's lock for a whole run, or the locks of `shard` of
    /// `target`. `create`: make the experiment directory if it is not there.
    pub fn acquire(exp: &Path, target: Target, shard: Shard, create: bool) -> Result<StepLock> {
        Ok(match (shard.is_whole(), create) {
            (true, true) => StepLock::Whole(ExperimentLock::acquire(exp)?),
            (true, false) => StepLock::Whole(ExperimentLock::acquire_existing(exp)?),
            (false, _) => StepLock::Shard(ShardLock::acquire(exp, target, shard, create)?),
        })
    }
}

#[cfg(test)]
mod tests;
