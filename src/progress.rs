//! Progress display: an indicatif bar with ETA on a terminal, plain log
//! lines (at most one every few seconds, plus every message) otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    quiet: bool,
}

impl Progress {
    /// A progress display over `total` units of work.
    pub fn new(label: &str, total: u64) -> Progress {
        let quiet = std::env::var_os("MODECONN_QUIET").is_some();
        let bar = if std::io::stderr().is_terminal() && !quiet {
            let b =
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14.bold} [{bar:32.cyan/blue}] {pos}/{len} {msg} ({elapsed} < {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            Some(b)
        } else {
            None
        };
        let now = Instant::now();
        Progress {
            bar,
            label: label.to_string(),
            total,
            done: 0,
            started: now,
            last_line: now,
            quiet,
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None => {
                if !self.quiet
                    && self.last_line.elapsed() > Duration::from_secs(15)
                    && self.done < self.total
                {
                    self.last_line = Instant::now();
                    eprintln!(
                        "[{}] {}/{} ({:.0}%), eta {}",
                        self.label,
                        self.done,
                        self.total,
                        self.percent(),
                        self.eta()
                    );
                }
            }
        }
    }

    /// Units of work done so far.
    pub fn position(&self) -> u64 {
        self.done
    }

    pub fn set_message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// A line for the log: printed above the bar on a terminal, to stderr otherwise.
    pub fn log(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("[{}] {line}", self.label),
            None => {}
        }
    }

    fn percent(&self) -> f64 {
        100.0 * self.done as f64 / self.total.max(1) as f64
    }

    fn eta(&self) -> String {
        if self.done == 0 {
            return "?".into();
        }
        let per = self.started.elapsed().as_secs_f64() / self.done as f64;
        fmt_secs(per * (self.total.saturating_sub(self.done)) as f64)
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

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
