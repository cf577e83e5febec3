//! Progress reporting from library code without knowing about terminals: the CLI implements
//! [`Progress`] with a progress bar on stderr, tests and `--json` runs use [`NoProgress`].

/// Receives progress of one long operation.
pub trait Progress {
    /// Work of `total` units starts; `what` says what it is.
    fn on_start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn on_advance(&self, n: u64);
    /// The operation finished (or was abandoned).
    fn on_finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on_start(&self, _: &str, _: u64) {}
    fn on_advance(&self, _: u64) {}
    fn on_finish(&self) {}
}
