//! Puts a ruleset in the kernel: the whole table at first (replacing what a
//! previous run left), then only what changed, each in one atomic nft
//! transaction; after any failure the next sync is a full one again.

use std::time::{Duration, Instant};

use strait_linux::nft_apply;

use crate::render::{render_diff, render_full, Ruleset, TABLE};
use crate::Result;

/// Keeps what it last applied, to send only the difference next time.
#[derive(Default)]
pub struct Applier {
    applied: Option<Ruleset>,
}

/// What one sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    Full(Duration),
    Partial(Duration),
    Unchanged,
}

impl Applier {
    pub fn new() -> Applier {
        Applier::default()
    }

    /// Apply `ruleset` in the calling thread's network namespace.
    pub fn sync(&mut self, ruleset: &Ruleset) -> Result<Sync> {
        let started = Instant::now();
        if let Some(applied) = &self.applied {
            let Some(script) = render_diff(applied, ruleset) else {
                return Ok(Sync::Unchanged);
            };
            match nft_apply(&script) {
                Ok(()) => {
                    self.applied = Some(ruleset.clone());
                    return Ok(Sync::Partial(started.elapsed()));
                }
                Err(e) => {
                    // The kernel's table is not what we think: start over.
                    tracing::warn!("partial sync failed, doing a full one: {e}");
                    self.applied = None;
                }
            }
        }
        let started = Instant::now();
        nft_apply(&render_full(ruleset))?;
        self.applied = Some(ruleset.clone());
        Ok(Sync::Full(started.elapsed()))
    }

    /// Remove strait's table (`strait proxy --cleanup`). Missing is fine.
    pub fn cleanup() -> Result<()> {
        nft_apply(&format!("add table {TABLE}\ndelete table {TABLE}\n"))?;
        Ok(())
    }
}
