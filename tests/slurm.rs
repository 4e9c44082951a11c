//! A real Slurm: scripts/slurm/test-local.sh starts a one-node cluster on
//! this machine, runs a landscape and a sweep as job arrays with dependent
//! merges, and compares them with unsharded runs. Outside CI it skips,
//! saying why, where slurm-wlm and munge are not installed or the daemons
//! cannot start; in CI (and under `.ci/run`) that is a failure. `make test`
//! installs them where apt-get is available and it runs as root.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// The script's own waits add up to under 1000 s (60 s for the cluster,
/// 300 s for each unsharded run and for the jobs); past this, it hangs.
const LIMIT: Duration = Duration::from_secs(1100);

#[test]
fn a_slurm_job_array_and_its_merge_equal_the_unsharded_runs() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/test-local.sh");
    let exp = fixture_exp();
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg(env!("CARGO_BIN_EXE_modeconn"))
        .arg(&exp)
        .env("MODECONN_CACHE", fixture().join("cache"));
    let out = run_with_deadline(cmd, &["scripts/slurm/test-local.sh"], LIMIT);
    let err = stderr(&out);
    if out.status.code() == Some(77) {
        assert!(
            skips_allowed(),
            "the Slurm test could not run, and in CI it must (make test installs slurm-wlm and munge as root):\n{err}"
        );
        eprintln!("{}", err.trim());
        return;
    }
    assert!(out.status.success(), "the Slurm test failed:\n{err}");
    assert!(err.contains("PASS slurm test"), "{err}");
    assert!(
        !exp.join("shards").exists(),
        "the shared experiment was written into"
    );
}
