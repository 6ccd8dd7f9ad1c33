//! The applier: the planned tables into the kernel of the calling thread's
//! network namespace, each change one atomic transaction.
//!
//! At start (and after any failure) both tables are replaced whole, which
//! also adopts whatever a previous run left. Afterwards a change set of
//! pods and namespaces goes through the incremental planner
//! ([`Incremental`]: only what the changed objects reach is planned again,
//! and the transaction is made of the touched sets and chains), and any
//! other change plans again in full and sends the difference
//! ([`strait_nft::diff::diff`]): a pod that changes labels or comes and
//! goes is a verdict-map element; a policy change is set elements, and
//! chains only for policy classes that appear or vanish.
//! Netlink first; when the kernel's netlink refuses a batch the same
//! change goes through `nft -f` (which names the problem in its words).

use std::time::{Duration, Instant};

use strait_linux::nft_apply;
use strait_model::{ChangeSet, ClusterState};
use strait_nft::netlink::Socket;
use strait_nft::{text, Family, Op, Table, Transaction};

use crate::plan::{Incremental, Stats, TABLE_NAME};
use crate::{Error, Result};

/// What one sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Both tables replaced.
    Full(Duration),
    /// Only the difference sent (this many steps).
    Partial(Duration, usize),
    Unchanged,
}

/// The policy tables of one node.
pub struct PolicyApplier {
    node: String,
    netlink: Option<Socket>,
    /// The plan as last made, and what changes to it need.
    planner: Option<Incremental>,
    /// Whether the kernel has the planner's tables: not until a full sync
    /// went through, nor after a failure.
    in_kernel: bool,
    stats: Stats,
    /// How the last change went in: "netlink" or "nft".
    last_path: &'static str,
    /// How long the kernel's transactions of the last sync took.
    last_transaction: Duration,
}

impl PolicyApplier {
    pub fn new(node: &str) -> PolicyApplier {
        PolicyApplier {
            node: node.to_owned(),
            netlink: None,
            planner: None,
            in_kernel: false,
            stats: Stats::default(),
            last_path: "none",
            last_transaction: Duration::ZERO,
        }
    }

    /// The node whose pods are programmed.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The size of what is programmed.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// What the last plan could not honour (it opened nothing for them).
    pub fn problems(&self) -> &[Error] {
        self.planner.as_ref().map_or(&[], |p| p.problems())
    }

    pub fn last_path(&self) -> &'static str {
        self.last_path
    }

    /// How long the last sync's transactions took (encoding and the
    /// kernel's work; planning and diffing not included).
    pub fn last_transaction(&self) -> Duration {
        self.last_transaction
    }

    /// The tables as last applied.
    pub fn applied(&self) -> Option<[&Table; 2]> {
        self.planner
            .as_ref()
            .filter(|_| self.in_kernel)
            .map(|p| p.plan().tables())
    }

    /// Plan everything and replace both tables.
    pub fn full_sync(&mut self, state: &ClusterState) -> Result<Sync> {
        let started = Instant::now();
        self.in_kernel = false;
        let planner = self.planner.insert(Incremental::new(state, &self.node));
        self.last_transaction = Duration::ZERO;
        for t in planner.plan().tables() {
            t.validate()?;
            let sent = Instant::now();
            self.last_path = replace(&mut self.netlink, t)?;
            self.last_transaction += sent.elapsed();
        }
        self.stats = planner.plan().stats;
        self.in_kernel = true;
        Ok(Sync::Full(started.elapsed()))
    }

    /// Bring the kernel from the state last planned to `new`, where
    /// `changes` says what differs: pods and namespaces through the
    /// incremental planner, anything else as [`PolicyApplier::update`].
    pub fn apply_changes(&mut self, new: &ClusterState, changes: &ChangeSet) -> Result<Sync> {
        let started = Instant::now();
        let Some(planner) = self.planner.as_mut().filter(|_| self.in_kernel) else {
            return self.full_sync(new);
        };
        let Some(txs) = planner.update(new, changes.changes.iter().map(|c| c.key())) else {
            if planner.spoilt() {
                return self.full_sync(new);
            }
            return self.update(new);
        };
        self.last_transaction = Duration::ZERO;
        let mut steps = 0;
        for tx in &txs {
            if tx.is_empty() {
                continue;
            }
            steps += tx.ops.len();
            let sent = Instant::now();
            let result = apply(&mut self.netlink, tx);
            self.last_transaction += sent.elapsed();
            match result {
                Ok(path) => self.last_path = path,
                Err(e) => {
                    tracing::warn!("policy change refused ({e}); replacing the tables");
                    if let Some(s) = self.netlink.as_mut() {
                        s.forget(tx.family, &tx.table);
                    }
                    return self.full_sync(new);
                }
            }
        }
        self.stats = planner.plan().stats;
        Ok(if steps == 0 {
            Sync::Unchanged
        } else {
            Sync::Partial(started.elapsed(), steps)
        })
    }

    /// Bring the kernel to what `state` asks, sending only the difference;
    /// a full sync when nothing is known to be applied or the difference
    /// is refused.
    pub fn update(&mut self, state: &ClusterState) -> Result<Sync> {
        let started = Instant::now();
        let Some(applied) = self.planner.take().filter(|_| self.in_kernel) else {
            return self.full_sync(state);
        };
        self.in_kernel = false;
        let planner = Incremental::new(state, &self.node);
        let mut steps = 0;
        self.last_transaction = Duration::ZERO;
        let mut txs = Vec::new();
        for (old, new) in applied
            .plan()
            .tables()
            .into_iter()
            .zip(planner.plan().tables())
        {
            new.validate()?;
            txs.push(strait_nft::diff::diff(old, new));
        }
        let stats = planner.plan().stats;
        self.planner = Some(planner);
        for tx in txs {
            if tx.is_empty() {
                continue;
            }
            steps += tx.ops.len();
            let sent = Instant::now();
            let result = apply(&mut self.netlink, &tx);
            self.last_transaction += sent.elapsed();
            match result {
                Ok(path) => self.last_path = path,
                Err(e) => {
                    tracing::warn!("policy update refused ({e}); replacing the tables");
                    if let Some(s) = self.netlink.as_mut() {
                        s.forget(tx.family, &tx.table);
                    }
                    return self.full_sync(state);
                }
            }
        }
        self.stats = stats;
        self.in_kernel = true;
        Ok(if steps == 0 {
            Sync::Unchanged
        } else {
            Sync::Partial(started.elapsed(), steps)
        })
    }

    /// Remove both tables (missing is fine): nothing is judged any more.
    pub fn cleanup(&mut self) -> Result<()> {
        for family in [Family::Ip, Family::Ip6] {
            let tx = Transaction {
                family,
                table: TABLE_NAME.to_owned(),
                ops: vec![Op::AddTable, Op::DeleteTable],
            };
            apply(&mut self.netlink, &tx)?;
        }
        self.in_kernel = false;
        Ok(())
    }
}

/// The socket, opened now if it is not yet (`None` when nf_tables netlink
/// cannot be had: everything then goes through `nft`).
fn open(socket: &mut Option<Socket>) -> Option<&mut Socket> {
    if socket.is_none() {
        match Socket::open() {
            Ok(s) => *socket = Some(s),
            Err(e) => tracing::debug!("no nf_tables netlink socket ({e}); using nft"),
        }
    }
    socket.as_mut()
}

fn replace(socket: &mut Option<Socket>, table: &Table) -> Result<&'static str> {
    if let Some(s) = open(socket) {
        match s.replace(table) {
            Ok(()) => return Ok("netlink"),
            Err(e) => tracing::warn!(
                "netlink refused the {} {} table ({e}); retrying through nft",
                text::family(table.family),
                table.name
            ),
        }
    }
    nft_apply(&text::table_script(table)).map_err(|e| Error::Other(e.to_string()))?;
    Ok("nft")
}

fn apply(socket: &mut Option<Socket>, tx: &Transaction) -> Result<&'static str> {
    if let Some(s) = open(socket) {
        match s.apply(tx) {
            Ok(()) => return Ok("netlink"),
            Err(e) => tracing::warn!("netlink batch refused ({e}); retrying through nft"),
        }
    }
    tx.validate()?;
    nft_apply(&text::transaction_script(tx)).map_err(|e| Error::Other(e.to_string()))?;
    Ok("nft")
}
