//! How the command line shows what pipelines report: progress bars with ETA
//! on a terminal (plain lines otherwise) on stderr, and on stdout either
//! human lines or, with `--json`, JSON lines only (docs/FORMATS.md).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use modeconn::observe::{fmt_secs, Event, Observer};

/// The observer of every command.
pub struct Terminal {
    json: bool,
    quiet: bool,
    tty: bool,
    task: Mutex<Option<Task>>,
    warned: Mutex<Vec<String>>,
}

struct Task {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Terminal {
    /// `json`: stdout carries JSON lines only. `MODECONN_QUIET` silences
    /// progress (not results).
    pub fn new(json: bool) -> Terminal {
        Terminal {
            json,
            quiet: std::env::var_os("MODECONN_QUIET").is_some(),
            tty: std::io::stderr().is_terminal(),
            task: Mutex::new(None),
            warned: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with any bar hidden, so lines printed by it stay clean.
    fn above_bar(&self, f: impl FnOnce()) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        match task.as_ref().and_then(|t| t.bar.as_ref()) {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// A result for stdout: `human` normally, `value` as one JSON line with `--json`.
    pub fn result(&self, human: &str, value: &serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            print!("{human}");
        }
    }

    /// A warning on stderr, once per process.
    pub fn warn(&self, text: &str) {
        let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if !w.iter().any(|s| s == text) {
            w.push(text.to_string());
            drop(w);
            self.above_bar(|| eprintln!("{text}"));
        }
    }
}

/// The human line for an epoch.
fn epoch_line(model: &str, l: &modeconn::schema::EpochLog) -> String {
    let test = match (l.test_loss, l.test_acc) {
        (Some(nll), Some(acc)) => match l.test_t {
            Some(t) => format!(" | test at t={t}: loss {nll:.4} acc {acc:.2}%"),
            None => format!(" | test loss {nll:.4} acc {acc:.2}%"),
        },
        _ => String::new(),
    };
    let t = if l.test_t.is_some() {
        " (random t)"
    } else {
        ""
    };
    format!(
        "{model} epoch {}: train loss {:.4} acc {:.2}%{t}{test}  [{}]",
        l.epoch,
        l.train_loss,
        l.train_acc,
        fmt_secs(l.seconds)
    )
}

impl Observer for Terminal {
    fn event(&self, e: &Event) {
        match e {
            Event::Warning { text } => self.warn(text),
            _ if self.json => {
                if let Ok(s) = serde_json::to_string(e) {
                    self.above_bar(|| println!("{s}"));
                }
            }
            Event::Epoch { model, log } => {
                let line = epoch_line(model, log);
                self.above_bar(|| println!("{line}"));
            }
            Event::Step {
                index,
                of,
                name,
                exp,
            } => self.above_bar(|| eprintln!("\n== step {index}/{of}: {name} ({exp}) ==")),
            Event::Note { text } => self.above_bar(|| eprintln!("{text}")),
        }
    }

    fn start(&self, task: &str, done: u64, total: u64) {
        let bar = (self.tty && !self.quiet).then(|| {
            let b =
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14.bold} [{bar:32.cyan/blue}] {pos}/{len} {msg} ({elapsed} < {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(task.to_string());
            b.set_position(done);
            b
        });
        let now = Instant::now();
        let mut t = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = t.take().and_then(|t| t.bar) {
            old.finish_and_clear();
        }
        *t = Some(Task {
            label: task.to_string(),
            total,
            done,
            started: now,
            last_line: now,
            bar,
        });
    }

    fn advance(&self, done: u64) {
        let mut guard = self.task.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = guard.as_mut() else { return };
        t.done = done;
        match &t.bar {
            Some(b) => b.set_position(done),
            None => {
                // Plain lines: at most one every 15 s.
                if !self.quiet && t.last_line.elapsed() > Duration::from_secs(15) && done < t.total
                {
                    t.last_line = Instant::now();
                    let per = t.started.elapsed().as_secs_f64() / done.max(1) as f64;
                    let eta = fmt_secs(per * t.total.saturating_sub(done) as f64);
                    let pct = 100.0 * done as f64 / t.total.max(1) as f64;
                    eprintln!("[{}] {done}/{} ({pct:.0}%), eta {eta}", t.label, t.total);
                }
            }
        }
    }

    fn status(&self, msg: &str) {
        let guard = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = guard.as_ref().and_then(|t| t.bar.as_ref()) {
            b.set_message(msg.to_string());
        }
    }

    fn finish(&self) {
        let mut guard = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = guard.take().and_then(|t| t.bar) {
            b.finish_and_clear();
        }
    }
}
