//! Files on disk, safely: atomic writes that never follow a planted link
//! and leave no temporary file behind, a sweep of those left by killed
//! processes, and reads that accept only regular files of sane size.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// What marks modeconn's temporary files: `.<name>.modeconn-tmp.<pid>.<n>`.
pub(crate) const TMP_TAG: &str = ".modeconn-tmp.";

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory with a name no other write uses, created exclusively (an
/// existing file or a planted link there is an error, never followed),
/// flushed and synced, then renamed over the target (a link at the target
/// is replaced, not followed). The temporary file is removed on any error;
/// one left by a killed process is removed by [`sweep_temp_files`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, &mut |w| Ok(w.write_all(bytes)?))
}

/// [`write_atomic`] for contents too large to hold twice: `fill` writes
/// them (buffered) into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}{TMP_TAG}{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new_with(&tmp, fill).and_then(|_| {
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    });
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        fs::remove_file(&tmp).ok();
    }
    written
}

/// Creates `path` (which must not exist, and is never followed if it is a
/// link) and writes what `fill` gives it to disk.
pub(crate) fn write_new_with(
    path: &Path,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    fill(&mut w)
        .and_then(|_| {
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok(())
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates (mode 0700) or checks a directory that only this user may write
/// to, such as the decoded-image cache: refused when it is a link, belongs
/// to another user, or others can write to it (they could plant files).
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let m = fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() {
        bail!("{} is not a directory (it is a link or a file); remove it or set MODECONN_CACHE to a directory of your own", dir.display());
    }
    if m.uid() != me || m.mode() & 0o022 != 0 {
        bail!(
            "{} belongs to another user or others may write to it (mode {:o}), so files in it cannot be trusted; use a directory of your own (MODECONN_CACHE) or `chmod go-w` it",
            dir.display(),
            m.mode() & 0o777
        );
    }
    Ok(())
}

/// Removes the temporary files of processes that no longer run (killed, or
/// stopped by a full disk, in the middle of a write) from `dir` and its
/// subfolders, two levels deep. Returns what it removed.
pub fn sweep_temp_files(dir: &Path) -> Vec<PathBuf> {
    fn stale(name: &str) -> bool {
        let Some((_, rest)) = name.split_once(TMP_TAG) else {
            return false;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            return false;
        };
        // kill(pid, 0) fails with ESRCH when no such process exists.
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        !alive
    }
    let mut removed = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() && depth < 2 {
                dirs.push((e.path(), depth + 1));
            } else if ft.is_file() && stale(&name) && fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// Removes every temporary file of `path` (`.<name>.modeconn-tmp.*` beside
/// it), whatever process wrote it: for a file that only the caller writes
/// (a shard's part, under its part lock), any such file is a leftover, even
/// one from another machine whose PID means nothing here.
pub fn sweep_temp_files_of(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!(".{}{TMP_TAG}", name.to_string_lossy());
    let mut removed = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && e.file_name().to_string_lossy().starts_with(&prefix)
            && fs::remove_file(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}

/// The bytes of a regular file of at most `max` bytes. Anything else a
/// hostile directory may hold in its place (a FIFO that would block, a
/// device, a directory, a file far larger than such a file can be) is an
/// error naming it.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file; remove it (modeconn rewrites it when the step that makes it runs)",
            path.display()
        );
    }
    if meta.len() > max {
        bail!(
            "{} is {} bytes, far more than such a file holds (at most {max}); remove it",
            path.display(),
            meta.len()
        );
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut buf))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| anyhow!("{} is not UTF-8 text; remove it", path.display()))
}

/// The size limit for the JSON files of an experiment (config, logs, eval
/// results, planes): far above any real one.
pub const JSON_MAX: u64 = 256 << 20;

/// The size limit for a checkpoint: far above any network modeconn builds.
pub const CHECKPOINT_MAX: u64 = 16 << 30;
