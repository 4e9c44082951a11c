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

#[test]
fn shards_share_the_experiment_and_keep_exclusive_steps_out() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("e");
    std::fs::create_dir_all(&exp).unwrap();
    let (a, b) = (Shard { index: 0, count: 2 }, Shard { index: 1, count: 2 });
    let s0 = ShardLock::acquire(&exp, Target::Plane, a, false).unwrap();
    let s1 = ShardLock::acquire(&exp, Target::Plane, b, false).unwrap();
    let other = ShardLock::acquire(&exp, Target::Along, a, false).unwrap();
    // The same shard twice is refused, naming its holder.
    let e = ShardLock::acquire(&exp, Target::Plane, a, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shard 0/2") && e.contains(&format!("PID {}", std::process::id())),
        "{e}"
    );
    // An exclusive step is refused, naming the running shards.
    let e = ExperimentLock::acquire_existing(&exp)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shards are running") && e.contains("0-of-2.lock"),
        "{e}"
    );
    // A merge of the plane waits for its shards, not for the other result's.
    let e = ShardLock::acquire_merge(&exp, &[(Target::Plane, 2)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("already running"), "{e}");
    drop((s0, s1));
    let merge = ShardLock::acquire_merge(&exp, &[(Target::Plane, 2)]).unwrap();
    drop((merge, other));
    // With no shard left, a whole step takes the experiment, and shards wait.
    let whole = ExperimentLock::acquire_existing(&exp).unwrap();
    let e = ShardLock::acquire(&exp, Target::Plane, a, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another modeconn process"), "{e}");
    drop(whole);
}

#[test]
fn a_shard_sweeps_the_leftovers_of_its_own_part_only() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("e");
    let s = Shard { index: 1, count: 3 };
    let part = Target::Along.part(&exp, s);
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    // A leftover from a process on another machine (a PID alive here) and another shard's.
    let mine = part.with_file_name(format!(
        ".1-of-3.json{}{}.0",
        crate::files::TMP_TAG,
        std::process::id()
    ));
    let theirs = part.with_file_name(format!(
        ".2-of-3.json{}{}.0",
        crate::files::TMP_TAG,
        std::process::id()
    ));
    std::fs::write(&mine, "x").unwrap();
    std::fs::write(&theirs, "x").unwrap();
    let _l = ShardLock::acquire(&exp, Target::Along, s, true).unwrap();
    assert!(!mine.exists() && theirs.exists());
}
