//! nf_tables over netlink, for the hot path: small changes (a chain
//! rewritten, a few map elements) sent as one batch = one atomic transaction
//! on a socket kept open. The `nft` program reloads its whole cache on every
//! run (tens of milliseconds with 10k chains) and closing its socket waits
//! for an RCU grace period; a long-lived socket pays neither.
//!
//! Only what strait's rulesets use is encoded here; everything else goes
//! through `nft` (see [`crate::nft_apply`]). Constants are the kernel's
//! (include/uapi/linux/netfilter/nf_tables.h).

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use crate::{Error, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

mod msg {
    pub const NEWCHAIN: u16 = 3;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const DELSETELEM: u16 = 14;
}

/// Registers: 0 is the verdict, 1.. hold data.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;
/// The 4-byte registers: concatenated keys take one per 4 bytes of each
/// field, from `REG32_00` (the first four bytes of `REG_1`) on.
pub const REG32_00: u32 = 8;

/// A verdict as the kernel encodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NlVerdict {
    Drop,
    Jump(String),
    Goto(String),
}

/// A value for a register or a map element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(NlVerdict),
}

/// The expressions strait's rules are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes at `offset` of the network header into `dreg`.
    NetworkPayload {
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Load `len` bytes at `offset` of the transport header into `dreg`.
    TransportPayload {
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        equal: bool,
        data: Vec<u8>,
    },
    Lookup {
        set: String,
        sreg: u32,
        inverted: bool,
    },
    /// The value for the key in `sreg` from map `set`, into `dreg`.
    MapLookup {
        set: String,
        sreg: u32,
        dreg: u32,
    },
    /// `meta l4proto` into `dreg`.
    MetaL4Proto {
        dreg: u32,
    },
    Immediate {
        dreg: u32,
        data: Data,
    },
    /// `numgen random mod modulus` into `dreg`.
    NumgenRandom {
        dreg: u32,
        modulus: u32,
    },
    /// DNAT to the address in `addr` (IPv4, or IPv6 when `ipv6`) and the
    /// port in `port`.
    Dnat {
        ipv6: bool,
        addr: u32,
        port: u32,
    },
    /// `update @set { key }`.
    DynsetUpdate {
        set: String,
        sreg_key: u32,
    },
    /// `fib saddr type` into `dreg`.
    FibSaddrType {
        dreg: u32,
    },
}

struct Builder(Vec<u8>);

impl Builder {
    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes);
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn nested(&mut self, kind: u16, f: impl FnOnce(&mut Builder)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0, 0, 0]);
        f(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self.pad();
    }
}

fn data(b: &mut Builder, kind: u16, d: &Data) {
    b.nested(kind, |b| match d {
        Data::Value(v) => b.attr(1, v), // NFTA_DATA_VALUE
        Data::Verdict(v) => b.nested(2, |b| {
            // NFTA_DATA_VERDICT: NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN
            let (code, chain): (i32, Option<&str>) = match v {
                NlVerdict::Drop => (0, None),
                NlVerdict::Jump(c) => (-3, Some(c)),
                NlVerdict::Goto(c) => (-4, Some(c)),
            };
            b.attr(1, &code.to_be_bytes());
            if let Some(c) = chain {
                b.str(2, c);
            }
        }),
    });
}

fn expr(b: &mut Builder, e: &Expr) {
    // NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { … } }
    b.nested(1, |b| {
        let name = match e {
            Expr::NetworkPayload { .. } | Expr::TransportPayload { .. } => "payload",
            Expr::MapLookup { .. } => "lookup",
            Expr::Cmp { .. } => "cmp",
            Expr::Lookup { .. } => "lookup",
            Expr::MetaL4Proto { .. } => "meta",
            Expr::Immediate { .. } => "immediate",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Dnat { .. } => "nat",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::FibSaddrType { .. } => "fib",
        };
        b.str(1, name);
        b.nested(2, |b| match e {
            Expr::NetworkPayload { offset, len, dreg } => {
                b.u32(1, *dreg);
                b.u32(2, 1); // NFT_PAYLOAD_NETWORK_HEADER
                b.u32(3, *offset);
                b.u32(4, *len);
            }
            Expr::TransportPayload { offset, len, dreg } => {
                b.u32(1, *dreg);
                b.u32(2, 2); // NFT_PAYLOAD_TRANSPORT_HEADER
                b.u32(3, *offset);
                b.u32(4, *len);
            }
            Expr::MapLookup { set, sreg, dreg } => {
                b.str(1, set);
                b.u32(2, *sreg);
                b.u32(3, *dreg);
            }
            Expr::Cmp {
                sreg,
                equal,
                data: value,
            } => {
                b.u32(1, *sreg);
                b.u32(2, if *equal { 0 } else { 1 });
                data(b, 3, &Data::Value(value.clone()));
            }
            Expr::Lookup {
                set,
                sreg,
                inverted,
            } => {
                b.str(1, set);
                b.u32(2, *sreg);
                if *inverted {
                    b.u32(5, 1); // NFT_LOOKUP_F_INV
                }
            }
            Expr::MetaL4Proto { dreg } => {
                b.u32(1, *dreg);
                b.u32(2, 16); // NFT_META_L4PROTO
            }
            Expr::Immediate { dreg, data: d } => {
                b.u32(1, *dreg);
                data(b, 2, d);
            }
            Expr::NumgenRandom { dreg, modulus } => {
                b.u32(1, *dreg);
                b.u32(2, *modulus);
                b.u32(3, 1); // NFT_NG_RANDOM
                b.u32(4, 0);
            }
            Expr::Dnat { ipv6, addr, port } => {
                b.u32(1, 1); // NFT_NAT_DNAT
                b.u32(
                    2,
                    u32::from(if *ipv6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }),
                );
                b.u32(3, *addr);
                b.u32(5, *port);
                b.u32(7, 1 | 2); // NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
            }
            Expr::DynsetUpdate { set, sreg_key } => {
                b.str(1, set);
                b.u32(3, 1); // NFT_DYNSET_OP_UPDATE
                b.u32(4, *sreg_key);
            }
            Expr::FibSaddrType { dreg } => {
                b.u32(1, *dreg);
                b.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
                b.u32(3, 1); // NFTA_FIB_F_SADDR
            }
        });
    });
}

/// One transaction: commands in order, applied all or none.
#[derive(Default)]
pub struct Batch {
    messages: Vec<(u16, u16, Vec<u8>, String)>,
    table: String,
    ipv6: bool,
}

impl Batch {
    /// A batch for table `ip <table>`.
    pub fn new(table: &str) -> Batch {
        Batch {
            messages: Vec::new(),
            table: table.to_owned(),
            ipv6: false,
        }
    }

    /// A batch for table `ip6 <table>`.
    pub fn new_ipv6(table: &str) -> Batch {
        Batch {
            ipv6: true,
            ..Batch::new(table)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    fn push(&mut self, kind: u16, flags: u16, what: String, f: impl FnOnce(&mut Builder)) {
        let mut b = Builder(Vec::new());
        f(&mut b);
        self.messages.push((kind, flags, b.0, what));
    }

    pub fn add_chain(&mut self, chain: &str) {
        let t = self.table.clone();
        self.push(
            msg::NEWCHAIN,
            NLM_F_CREATE,
            format!("add chain {chain}"),
            |b| {
                b.str(1, &t);
                b.str(3, chain);
            },
        );
    }

    pub fn delete_chain(&mut self, chain: &str) {
        let t = self.table.clone();
        self.push(msg::DELCHAIN, 0, format!("delete chain {chain}"), |b| {
            b.str(1, &t);
            b.str(3, chain);
        });
    }

    /// Delete every rule of `chain`.
    pub fn flush_chain(&mut self, chain: &str) {
        let t = self.table.clone();
        self.push(msg::DELRULE, 0, format!("flush chain {chain}"), |b| {
            b.str(1, &t);
            b.str(2, chain);
        });
    }

    pub fn add_rule(&mut self, chain: &str, exprs: &[Expr]) {
        let t = self.table.clone();
        self.push(
            msg::NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add rule {chain}"),
            |b| {
                b.str(1, &t);
                b.str(2, chain);
                b.nested(4, |b| {
                    for e in exprs {
                        expr(b, e);
                    }
                });
            },
        );
    }

    /// A set of addresses filled from rules (`update @set`), whose
    /// elements expire after `timeout_secs`: session affinity.
    pub fn add_timeout_set(&mut self, set: &str, timeout_secs: u32, id: u32) {
        let t = self.table.clone();
        // nft's type ids: ipv4_addr 7, ipv6_addr 8.
        let (key_type, key_len) = if self.ipv6 { (8, 16) } else { (7, 4) };
        self.push(msg::NEWSET, NLM_F_CREATE, format!("add set {set}"), |b| {
            b.str(1, &t);
            b.str(2, set);
            b.u32(3, 0x10 | 0x20); // NFT_SET_TIMEOUT | NFT_SET_EVAL
            b.u32(4, key_type);
            b.u32(5, key_len);
            b.u32(10, id); // NFTA_SET_ID
            b.attr(11, &(u64::from(timeout_secs) * 1000).to_be_bytes()); // NFTA_SET_TIMEOUT, ms
        });
    }

    pub fn delete_set(&mut self, set: &str) {
        let t = self.table.clone();
        self.push(msg::DELSET, 0, format!("delete set {set}"), |b| {
            b.str(1, &t);
            b.str(2, set);
        });
    }

    /// Add elements (key, value for maps) to `set`.
    pub fn add_elements(&mut self, set: &str, elements: &[(Vec<u8>, Option<Data>)]) {
        self.elements(msg::NEWSETELEM, NLM_F_CREATE, set, elements);
    }

    pub fn delete_elements(&mut self, set: &str, keys: &[Vec<u8>]) {
        let elements: Vec<(Vec<u8>, Option<Data>)> =
            keys.iter().map(|k| (k.clone(), None)).collect();
        self.elements(msg::DELSETELEM, 0, set, &elements);
    }

    fn elements(&mut self, kind: u16, flags: u16, set: &str, elements: &[(Vec<u8>, Option<Data>)]) {
        if elements.is_empty() {
            return;
        }
        let t = self.table.clone();
        let verb = if kind == msg::NEWSETELEM {
            "add"
        } else {
            "delete"
        };
        self.push(
            kind,
            flags,
            format!("{verb} {} element(s) of {set}", elements.len()),
            |b| {
                b.str(1, &t);
                b.str(2, set);
                b.nested(3, |b| {
                    for (key, value) in elements {
                        b.nested(1, |b| {
                            data(b, 1, &Data::Value(key.clone()));
                            if let Some(v) = value {
                                data(b, 2, v); // NFTA_SET_ELEM_DATA
                            }
                        });
                    }
                });
            },
        );
    }
}

/// A netlink socket to nf_tables in the calling thread's network namespace.
pub struct NfNetlink {
    socket: Socket,
    seq: u32,
}

fn header(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    payload: &[u8],
) {
    let len = 16 + 4 + payload.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(payload);
}

impl NfNetlink {
    pub fn open() -> Result<NfNetlink> {
        let err = |e: std::io::Error| Error::Netlink {
            what: "open an nf_tables netlink socket".into(),
            message: e.to_string(),
            errno: e.raw_os_error(),
        };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(err)?;
        socket.bind_auto().map_err(err)?;
        Ok(NfNetlink {
            socket,
            seq: std::process::id().wrapping_mul(7919),
        })
    }

    /// Send `batch` as one transaction and wait for the kernel's answer.
    /// On error nothing of it was applied; the message names the command.
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        let first = self.seq;
        header(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        for (i, (kind, flags, payload, _)) in batch.messages.iter().enumerate() {
            let seq = first.wrapping_add(1 + i as u32);
            header(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
                if batch.ipv6 {
                    NFPROTO_IPV6
                } else {
                    NFPROTO_IPV4
                },
                0,
                payload,
            );
        }
        let end = first.wrapping_add(1 + batch.messages.len() as u32);
        header(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.seq = end.wrapping_add(1);
        let io = |e: std::io::Error| Error::Netlink {
            what: "nf_tables batch".into(),
            message: e.to_string(),
            errno: e.raw_os_error(),
        };
        self.socket.send(&out, 0).map_err(io)?;

        // One acknowledgement per command; the first error aborts the batch.
        let mut acked = 0;
        let mut buf = Vec::with_capacity(1 << 16);
        while acked < batch.messages.len() {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0).map_err(io)?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
                if len < 16 || at + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && len >= 20 {
                    let code =
                        i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                    if code != 0 {
                        let index = seq.wrapping_sub(first).wrapping_sub(1) as usize;
                        let what = batch
                            .messages
                            .get(index)
                            .map(|m| m.3.clone())
                            .unwrap_or_else(|| "the batch".into());
                        // Drain what is left of this batch's answers.
                        let _ = self.socket.set_non_blocking(true);
                        let mut rest = Vec::with_capacity(1 << 16);
                        while self.socket.recv(&mut rest, 0).is_ok() {
                            rest.clear();
                        }
                        let _ = self.socket.set_non_blocking(false);
                        return Err(Error::Netlink {
                            what,
                            message: std::io::Error::from_raw_os_error(-code).to_string(),
                            errno: Some(-code),
                        });
                    }
                    acked += 1;
                }
                at += (len + 3) & !3;
            }
        }
        Ok(())
    }
}
