//! Progress reporting from library code without knowing about terminals: the CLI implements
//! [`Progress`] with a progress bar on stderr, tests and `--json` runs use [`NoProgress`].
//!
//! Two levels: a pipeline's stages ([`Progress::on_stage`], [`Progress::on_stage_done`]), and the
//! items of one long operation inside a stage (passes run, samples verified, files hashed).

/// Receives progress of pipeline stages and of the long operations inside them.
pub trait Progress {
    /// Work of `total` units starts; `what` says what it is.
    fn on_start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn on_advance(&self, n: u64);
    /// The operation finished (or was abandoned).
    fn on_finish(&self);
    /// A pipeline stage starts.
    fn on_stage(&self, _stage: &str) {}
    /// A pipeline stage ended after `seconds`; `outcome` says how (`done`, `up to date`,
    /// `failed`).
    fn on_stage_done(&self, _stage: &str, _seconds: f64, _outcome: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on_start(&self, _: &str, _: u64) {}
    fn on_advance(&self, _: u64) {}
    fn on_finish(&self) {}
}
