//! Transactions over nf_tables netlink: one [`Transaction`] or one whole
//! [`Table`] = one batch = one atomic kernel transaction, on a socket kept
//! open (the `nft` program reloads its cache on every run and waits for an
//! RCU grace period when its socket closes).
//!
//! Encoded from the typed values directly; nothing is parsed back.

use crate::{Error, Result, Table, Transaction};

/// A netlink socket to nf_tables in the network namespace of the thread
/// that opened it.
pub struct Socket {
    _private: (),
}

impl Socket {
    pub fn open() -> Result<Socket> {
        Err(Error::Netlink("not built yet".into()))
    }

    /// Apply `tx` as one batch: all of it or none of it.
    pub fn apply(&mut self, tx: &Transaction) -> Result<()> {
        let _ = tx;
        Err(Error::Netlink("not built yet".into()))
    }

    /// Replace the table of `table`'s family and name by `table`, as one
    /// batch (created if missing, its old contents gone).
    pub fn replace(&mut self, table: &Table) -> Result<()> {
        let _ = table;
        Err(Error::Netlink("not built yet".into()))
    }
}
