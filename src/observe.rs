//! What a pipeline tells the world while it works, and nothing about how it
//! is shown.
//!
//! Every pipeline takes an [`Observer`]: the command line renders events as
//! progress bars and human lines, or as JSON lines (`--json`); tests collect
//! them; a library user may ignore them ([`Silent`]). Work inside a pipeline
//! reports through a [`Progress`], a counter bound to one observer.

use serde::Serialize;

use crate::schema::EpochLog;

/// One thing that happened.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A step of a multi-step pipeline (`run`) starts.
    Step {
        index: usize,
        of: usize,
        name: String,
        exp: String,
    },
    /// A training epoch finished and was saved.
    Epoch {
        /// start_model, end_model, model_<i> or curve.
        model: String,
        #[serde(flatten)]
        log: EpochLog,
    },
    /// Something the user should know that is not a failure (a step skipped,
    /// a file written, how long a pass took).
    Note { text: String },
    /// Something probably wrong that did not stop the work.
    Warning { text: String },
}

/// Receives events and progress. Every method has a do-nothing default.
pub trait Observer {
    fn event(&self, _e: &Event) {}
    /// A task of `total` units starts (`done` already finished, on a resume).
    fn start(&self, _task: &str, _done: u64, _total: u64) {}
    /// `done` of the current task's units are finished.
    fn advance(&self, _done: u64) {}
    /// A short status for the current task ("epoch 3/10").
    fn status(&self, _msg: &str) {}
    /// The current task is over.
    fn finish(&self) {}
}

/// The observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Collects events (for tests and for library users who inspect them).
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);
impl Observer for Collect {
    fn event(&self, e: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e.clone());
        }
    }
}

/// A note for `obs`.
pub fn note(obs: &dyn Observer, text: impl Into<String>) {
    obs.event(&Event::Note { text: text.into() });
}

/// Counts units of one task and forwards them to an observer.
pub struct Progress<'o> {
    obs: &'o dyn Observer,
    total: u64,
    done: u64,
    finished: std::cell::Cell<bool>,
}

impl<'o> Progress<'o> {
    /// A task over `total` units of work.
    pub fn new(obs: &'o dyn Observer, task: &str, total: u64) -> Progress<'o> {
        obs.start(task, 0, total);
        Progress {
            obs,
            total,
            done: 0,
            finished: std::cell::Cell::new(false),
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        self.obs.advance(self.done);
    }

    /// Units of work done so far.
    pub fn position(&self) -> u64 {
        self.done
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn set_message(&self, msg: String) {
        self.obs.status(&msg);
    }

    pub fn observer(&self) -> &'o dyn Observer {
        self.obs
    }

    pub fn event(&self, e: Event) {
        self.obs.event(&e);
    }

    pub fn finish(&self) {
        if !self.finished.replace(true) {
            self.obs.finish();
        }
    }
}

impl Drop for Progress<'_> {
    /// A task left by an error is finished too, so a bar never lingers.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Seconds as "1h02m", "3m07s" or "42s".
pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
