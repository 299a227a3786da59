//! How far long work has got, on stderr, only when stderr is a terminal (and, for output
//! written to stdout, only when stdout is not the same terminal): one line, redrawn at most
//! twice a second and cleared at the end, so scripts and pipes see nothing of it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Shortest time between two redraws.
const REDRAW_EVERY: Duration = Duration::from_millis(500);

/// A progress line: "N records WHAT".
pub struct Progress {
    what: &'static str,
    enabled: bool,
    last_drawn: Option<Instant>,
}

impl Progress {
    /// Progress of work whose records go elsewhere than the terminal (`sluice produce`).
    pub fn on_terminal(what: &'static str) -> Progress {
        Progress::new(what, std::io::stderr().is_terminal())
    }

    /// Progress of work that writes its records to stdout (`sluice consume`): shown only
    /// when stdout goes to a file or a pipe, not to the terminal the line would cut into.
    pub fn beside_stdout(what: &'static str) -> Progress {
        let enabled = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
        Progress::new(what, enabled)
    }

    fn new(what: &'static str, enabled: bool) -> Progress {
        Progress {
            what,
            enabled,
            last_drawn: None,
        }
    }

    /// Shows `count` if the line was last drawn long enough ago.
    pub fn update(&mut self, count: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_drawn
            .is_some_and(|at| now.duration_since(at) < REDRAW_EVERY)
        {
            return;
        }
        self.last_drawn = Some(now);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{count} records {}", self.what);
        let _ = stderr.flush();
    }

    /// Clears the line, so what is printed next starts on a clean one; the next update
    /// draws it again.
    pub fn clear(&mut self) {
        if self.last_drawn.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_line_never_draws() {
        let mut progress = Progress::new("sent", false);
        progress.update(1);
        assert!(progress.last_drawn.is_none());
    }

    #[test]
    fn an_enabled_line_draws_at_most_twice_a_second() {
        let mut progress = Progress::new("sent", true);
        progress.update(1);
        let first = progress.last_drawn.expect("drawn at once");
        progress.update(2);
        assert_eq!(
            progress.last_drawn,
            Some(first),
            "not redrawn within 500 ms"
        );
    }
}
