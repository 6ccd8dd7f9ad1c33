//! Transactions over nf_tables netlink: one [`Transaction`] or one whole
//! [`Table`] = one batch = one atomic kernel transaction, on a socket kept
//! open (the `nft` program reloads its cache on every run and waits for an
//! RCU grace period when its socket closes).
//!
//! Encoded from the typed values directly; nothing is parsed back. The
//! encoding follows what nft 1.0.6 sends for the same text (expressions,
//! implicit dependencies, set flags and the set userdata `nft list` reads
//! back), so that a table loaded either way lists the same. What this
//! module cannot encode exactly is refused with an [`Error`] before anything
//! is sent, and the caller falls back to `nft -f` of [`crate::text`].
//! Constants are the kernel's (include/uapi/linux/netfilter/nf_tables.h)
//! and libnftnl's (udata.h).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;

use crate::{
    check_name, fits, BaseChain, ChainType, CmpOp, DataType, Element, ElementValue, Expr, Family,
    Field, Hook, MapData, MarkOp, Op, Policy, Reject, Rule, Set, Table, Transaction, Value,
    Verdict, L3,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETSET: u16 = 10;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const DELSETELEM: u16 = 14;
}

/// Registers: 0 holds the verdict; 1–4 are the 16-byte data registers,
/// 8–23 the same space in 4-byte steps (concatenations use those).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_00: u32 = 8;

/// Set flags (NFT_SET_*).
const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_INTERVAL: u32 = 0x4;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const SET_CONCAT: u32 = 0x80;

/// nft's datatype numbers, as NFTA_SET_KEY_TYPE carries them (concatenated
/// types: 6 bits each, first type highest).
mod dtype {
    pub const VERDICT_MAP: u32 = 0xffff_ff00;
    pub const NFPROTO: u32 = 2;
    pub const INTEGER: u32 = 4;
    pub const IPADDR: u32 = 7;
    pub const IP6ADDR: u32 = 8;
    pub const INET_PROTOCOL: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    pub const MARK: u32 = 19;
    pub const CT_STATE: u32 = 26;
    pub const CT_STATUS: u32 = 28;
    pub const FIB_ADDR: u32 = 38;
    pub const IFNAME: u32 = 41;
}

/// nft's byte order numbers in set userdata.
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;

/// nft's expression type numbers in `typeof` userdata.
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CT: u32 = 12;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;
const EXPR_FIB: u32 = 26;

/// nft's protocol description numbers (`typeof` userdata of payloads).
const PROTO_TH: u32 = 11;
const PROTO_IP: u32 = 12;
const PROTO_IP6: u32 = 13;

fn err(what: impl Into<String>) -> Error {
    Error::Netlink(what.into())
}

use crate::{Error, Result};

/// Netlink attributes, written into one buffer.
#[derive(Default)]
struct Buf {
    b: Vec<u8>,
    /// A nested attribute grew past what its 16-bit length can say.
    overflow: bool,
}

impl Buf {
    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        if len > u16::MAX as usize {
            self.overflow = true;
        }
        self.b.extend_from_slice(&(len as u16).to_ne_bytes());
        self.b.extend_from_slice(&kind.to_ne_bytes());
        self.b.extend_from_slice(payload);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.b.len().is_multiple_of(4) {
            self.b.push(0);
        }
    }

    fn str(&mut self, kind: u16, s: &str) {
        let len = 4 + s.len() + 1;
        if len > u16::MAX as usize {
            self.overflow = true;
        }
        self.b.extend_from_slice(&(len as u16).to_ne_bytes());
        self.b.extend_from_slice(&kind.to_ne_bytes());
        self.b.extend_from_slice(s.as_bytes());
        self.b.push(0);
        self.pad();
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn u64(&mut self, kind: u16, v: u64) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn begin(&mut self, kind: u16) -> (usize, u16) {
        let start = self.b.len();
        self.b.extend_from_slice(&[0, 0, 0, 0]);
        (start, kind)
    }

    fn end(&mut self, (start, kind): (usize, u16)) {
        let len = self.b.len() - start;
        if len > u16::MAX as usize {
            self.overflow = true;
        }
        self.b[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.b[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    /// NFTA_DATA_VALUE in a nest of `kind`.
    fn data(&mut self, kind: u16, value: &[u8]) {
        let n = self.begin(kind);
        self.attr(1, value);
        self.end(n);
    }

    /// NFTA_DATA_VERDICT in a nest of `kind`.
    fn verdict(&mut self, kind: u16, v: &Verdict) {
        let n = self.begin(kind);
        let m = self.begin(2);
        let (code, chain): (i32, Option<&str>) = match v {
            Verdict::Accept => (1, None),
            Verdict::Drop => (0, None),
            Verdict::Return => (-5, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
        };
        self.attr(1, &code.to_be_bytes());
        if let Some(c) = chain {
            self.str(2, c);
        }
        self.end(m);
        self.end(n);
    }

    /// One expression: NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA {…} }.
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Buf)) {
        let e = self.begin(1);
        self.str(1, name);
        let d = self.begin(2);
        body(self);
        self.end(d);
        self.end(e);
    }
}

/// nftnl userdata: type, length, value (u32s in host order).
#[derive(Default)]
struct Udata(Vec<u8>);

impl Udata {
    fn put(&mut self, kind: u8, value: &[u8]) {
        self.0.push(kind);
        self.0.push(value.len() as u8);
        self.0.extend_from_slice(value);
    }

    fn u32(&mut self, kind: u8, v: u32) {
        self.put(kind, &v.to_ne_bytes());
    }

    fn nested(&mut self, kind: u8, inner: Udata) {
        self.put(kind, &inner.0);
    }
}

/// How a field is loaded and what nft calls its type.
struct FieldInfo {
    len: usize,
    dtype: u32,
    byteorder: u32,
    /// The network protocol an inet table must check first.
    l3: Option<L3>,
}

fn field_info(f: Field) -> FieldInfo {
    let (len, dtype, byteorder, l3) = match f {
        Field::IpSaddr | Field::IpDaddr => (4, dtype::IPADDR, BYTEORDER_BIG, Some(L3::V4)),
        Field::Ip6Saddr | Field::Ip6Daddr => (16, dtype::IP6ADDR, BYTEORDER_BIG, Some(L3::V6)),
        Field::L4Proto => (1, dtype::INET_PROTOCOL, BYTEORDER_HOST, None),
        Field::NfProto => (1, dtype::NFPROTO, BYTEORDER_INVALID, None),
        Field::Mark => (4, dtype::MARK, BYTEORDER_HOST, None),
        Field::Iifname | Field::Oifname => (16, dtype::IFNAME, BYTEORDER_HOST, None),
        Field::ThSport | Field::ThDport => (2, dtype::INET_SERVICE, BYTEORDER_BIG, None),
        Field::CtState => (4, dtype::CT_STATE, BYTEORDER_HOST, None),
        Field::CtStatus => (4, dtype::CT_STATUS, BYTEORDER_HOST, None),
        Field::FibDaddrType | Field::FibSaddrType => (4, dtype::FIB_ADDR, BYTEORDER_HOST, None),
        Field::NumgenRandom { .. } => (4, dtype::INTEGER, BYTEORDER_HOST, None),
    };
    FieldInfo {
        len,
        dtype,
        byteorder,
        l3,
    }
}

/// The `typeof` userdata nft writes for the expression of a field:
/// (expression type, its data).
fn field_typeof(f: Field) -> (u32, Udata) {
    let mut d = Udata::default();
    let payload = |d: &mut Udata, desc: u32, ty: u32| {
        d.u32(0, desc);
        d.u32(1, ty);
        EXPR_PAYLOAD
    };
    let kind = match f {
        Field::IpSaddr => payload(&mut d, PROTO_IP, 11),
        Field::IpDaddr => payload(&mut d, PROTO_IP, 12),
        Field::Ip6Saddr => payload(&mut d, PROTO_IP6, 8),
        Field::Ip6Daddr => payload(&mut d, PROTO_IP6, 9),
        Field::ThSport => payload(&mut d, PROTO_TH, 1),
        Field::ThDport => payload(&mut d, PROTO_TH, 2),
        Field::L4Proto => {
            d.u32(0, 16);
            EXPR_META
        }
        Field::NfProto => {
            d.u32(0, 15);
            EXPR_META
        }
        Field::Mark => {
            d.u32(0, 3);
            EXPR_META
        }
        Field::Iifname => {
            d.u32(0, 6);
            EXPR_META
        }
        Field::Oifname => {
            d.u32(0, 7);
            EXPR_META
        }
        Field::CtState | Field::CtStatus => {
            d.u32(0, if f == Field::CtState { 0 } else { 2 });
            d.u32(1, u32::MAX);
            EXPR_CT
        }
        Field::FibDaddrType | Field::FibSaddrType => {
            d.u32(0, 3);
            d.u32(1, if f == Field::FibDaddrType { 2 } else { 1 });
            EXPR_FIB
        }
        Field::NumgenRandom { modulus } => {
            d.u32(0, 1);
            d.u32(1, modulus);
            d.u32(2, 0);
            EXPR_NUMGEN
        }
    };
    (kind, d)
}

/// The field nft's `typeof` declarations name a set type by (as
/// [`crate::text`] writes them).
fn type_field(t: DataType) -> Field {
    match t {
        DataType::Ipv4Addr => Field::IpDaddr,
        DataType::Ipv6Addr => Field::Ip6Daddr,
        DataType::InetProto => Field::L4Proto,
        DataType::InetService => Field::ThDport,
        DataType::Mark => Field::Mark,
        DataType::Ifname => Field::Iifname,
        DataType::Slot => Field::NumgenRandom { modulus: 1 },
    }
}

fn type_info(t: DataType) -> FieldInfo {
    let mut info = field_info(type_field(t));
    if t == DataType::Slot {
        info.dtype = dtype::INTEGER;
    }
    info
}

fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// What the encoder must know of a set to write its elements and the
/// lookups into it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shape {
    key: Vec<DataType>,
    data: Option<MapData>,
    interval: bool,
}

impl Shape {
    fn of(s: &Set) -> Shape {
        Shape {
            key: s.key.clone(),
            data: s.data.clone(),
            interval: s.flags.interval,
        }
    }

    fn concat(&self) -> bool {
        self.key.len() > 1
    }
}

/// A type whose bytes are in host order, converted to network order in
/// concatenated interval sets (nft's `byteorder` step before the lookup).
fn host_order(t: DataType) -> bool {
    matches!(t, DataType::Mark | DataType::Slot | DataType::InetProto)
}

/// The bytes of a single value in a register.
fn value_bytes(v: &Value) -> Result<Vec<u8>> {
    Ok(match v {
        Value::Addr(IpAddr::V4(a)) => a.octets().to_vec(),
        Value::Addr(IpAddr::V6(a)) => a.octets().to_vec(),
        Value::Proto(p) => vec![*p],
        Value::Port(p) => p.to_be_bytes().to_vec(),
        Value::Number(n) | Value::Mark(n) | Value::CtState(n) | Value::CtStatus(n) => {
            n.to_ne_bytes().to_vec()
        }
        Value::AddrType(t) => u32::from(*t).to_ne_bytes().to_vec(),
        Value::NfProto(L3::V4) => vec![2],
        Value::NfProto(L3::V6) => vec![10],
        Value::Ifname(name) => {
            v.validate()?;
            if name.contains('*') {
                return Err(err(format!(
                    "interface name {name:?}: wildcards are not encoded over netlink"
                )));
            }
            let mut b = name.as_bytes().to_vec();
            b.resize(16, 0);
            b
        }
        Value::Net(_) | Value::PortRange(..) => {
            return Err(err(format!("{v:?} is a range, not a single value")))
        }
    })
}

/// The inclusive bounds of a value in network order: a network or a port
/// range, or a single value.
fn bounds(v: &Value) -> Result<(Vec<u8>, Vec<u8>)> {
    match v {
        Value::Net(net) => Ok(match net {
            IpNet::V4(n) => (
                n.network().octets().to_vec(),
                n.broadcast().octets().to_vec(),
            ),
            IpNet::V6(n) => (
                n.network().octets().to_vec(),
                n.broadcast().octets().to_vec(),
            ),
        }),
        Value::PortRange(a, b) => {
            if a > b {
                return Err(err(format!("port range {a}-{b} ends before it starts")));
            }
            Ok((a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec()))
        }
        Value::Mark(n) | Value::Number(n) => {
            let b = n.to_be_bytes().to_vec();
            Ok((b.clone(), b))
        }
        other => {
            let b = value_bytes(other)?;
            Ok((b.clone(), b))
        }
    }
}

/// `bytes + 1` as a big-endian number; None when it overflows.
fn successor(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    for b in out.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(out);
        }
    }
    None
}

fn nfproto(l3: L3) -> u8 {
    match l3 {
        L3::V4 => 2,
        L3::V6 => 10,
    }
}

fn family_number(f: Family) -> u8 {
    match f {
        Family::Ip => 2,
        Family::Ip6 => 10,
        Family::Inet => 1,
    }
}

/// The register nft names for a 4-byte slot: a 16-byte register when the
/// slot starts one.
fn reg_at(slot: usize) -> u32 {
    if slot.is_multiple_of(4) {
        REG_1 + (slot / 4) as u32
    } else {
        REG32_00 + slot as u32
    }
}

/// One message of a batch, and what to call it in an error.
struct Batch {
    family: Family,
    table: String,
    buf: Buf,
    whats: Vec<String>,
    first_seq: u32,
    next_id: u32,
    /// Sets known to the kernel before this batch, by name.
    known: HashMap<String, Shape>,
    /// Sets created in this batch: their id and shape (replacing `known`).
    created: HashMap<String, (u32, Shape)>,
    deleted: Vec<String>,
    /// Where the last command starts (it asks for the acknowledgement).
    last: Option<usize>,
    /// The IP version the rule being written has matched so far (nft adds
    /// its `meta nfproto` check in inet tables once per rule).
    rule_l3: std::cell::Cell<Option<L3>>,
}

const MSG_CHUNK: usize = 60_000;

/// A batch ready to send: its bytes, what each command does (for errors),
/// and the set declarations the table has once it is applied.
struct Encoded {
    batch: Vec<u8>,
    whats: Vec<String>,
    shapes: HashMap<String, Shape>,
}

impl Batch {
    fn new(family: Family, table: &str, known: HashMap<String, Shape>, first_seq: u32) -> Batch {
        let mut b = Batch {
            family,
            table: table.to_owned(),
            buf: Buf::default(),
            whats: Vec::new(),
            first_seq,
            next_id: 1,
            known,
            created: HashMap::new(),
            deleted: Vec::new(),
            last: None,
            rule_l3: std::cell::Cell::new(None),
        };
        b.header(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        b
    }

    fn header(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        let out = &mut self.buf.b;
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(family);
        out.push(0); // NFNETLINK_V0
        out.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Start a command; returns where its length goes.
    fn begin(&mut self, kind: u16, flags: u16, what: String) -> usize {
        let start = self.buf.b.len();
        self.last = Some(start);
        let seq = self.first_seq.wrapping_add(1 + self.whats.len() as u32);
        self.whats.push(what);
        self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | flags,
            seq,
            family_number(self.family),
            0,
        );
        start
    }

    fn finish_msg(&mut self, start: usize) {
        let len = (self.buf.b.len() - start) as u32;
        self.buf.b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// The whole batch, with an acknowledgement asked for its last command
    /// (errors are reported for every command anyway).
    fn finish(mut self) -> Result<Encoded> {
        if self.buf.overflow {
            return Err(err(
                "an attribute is longer than netlink can say (64 KiB); use nft -f",
            ));
        }
        let end = self.first_seq.wrapping_add(1 + self.whats.len() as u32);
        if let Some(last) = self.last {
            let flags_at = last + 6;
            let f =
                u16::from_ne_bytes([self.buf.b[flags_at], self.buf.b[flags_at + 1]]) | NLM_F_ACK;
            self.buf.b[flags_at..flags_at + 2].copy_from_slice(&f.to_ne_bytes());
        }
        let start = self.buf.b.len();
        self.header(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.finish_msg(start);
        // The batch-begin header's length.
        self.buf.b[0..4].copy_from_slice(&20u32.to_ne_bytes());
        let mut shapes = self.known;
        for d in self.deleted {
            shapes.remove(&d);
        }
        for (name, (_, shape)) in self.created {
            shapes.insert(name, shape);
        }
        Ok(Encoded {
            batch: self.buf.b,
            whats: self.whats,
            shapes,
        })
    }

    fn shape(&self, set: &str) -> Result<Shape> {
        if let Some((_, s)) = self.created.get(set) {
            return Ok(s.clone());
        }
        if self.deleted.iter().any(|d| d == set) {
            return Err(err(format!(
                "set {set:?} was deleted earlier in this transaction"
            )));
        }
        self.known.get(set).cloned().ok_or_else(|| {
            err(format!(
                "set {set:?}: its declaration is not known to this socket (replace the table first)"
            ))
        })
    }

    fn set_id(&self, set: &str) -> Option<u32> {
        self.created.get(set).map(|(id, _)| *id)
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn add_table(&mut self) {
        let m = self.begin(
            msg::NEWTABLE,
            NLM_F_CREATE,
            format!("add table {}", self.table),
        );
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.buf.u32(2, 0);
        self.finish_msg(m);
    }

    fn delete_table(&mut self) {
        let m = self.begin(msg::DELTABLE, 0, format!("delete table {}", self.table));
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.finish_msg(m);
        let names: Vec<String> = self.known.keys().cloned().collect();
        self.deleted.extend(names);
        let created: Vec<String> = self.created.keys().cloned().collect();
        self.deleted.extend(created);
        self.created.clear();
    }

    fn add_chain(&mut self, name: &str, base: Option<&BaseChain>) -> Result<()> {
        check_name("chain", name)?;
        let m = self.begin(msg::NEWCHAIN, NLM_F_CREATE, format!("add chain {name}"));
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.buf.str(3, name);
        if let Some(b) = base {
            let h = self.buf.begin(4);
            let hook = match b.hook {
                Hook::Prerouting => 0,
                Hook::Input => 1,
                Hook::Forward => 2,
                Hook::Output => 3,
                Hook::Postrouting => 4,
            };
            self.buf.u32(1, hook);
            self.buf.attr(2, &b.priority.value().to_be_bytes());
            self.buf.end(h);
            self.buf.u32(
                5,
                match b.policy {
                    Policy::Accept => 1,
                    Policy::Drop => 0,
                },
            );
            self.buf.str(
                7,
                match b.kind {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                    ChainType::Route => "route",
                },
            );
        }
        self.finish_msg(m);
        Ok(())
    }

    fn chain_cmd(&mut self, kind: u16, verb: &str, name: &str) -> Result<()> {
        check_name("chain", name)?;
        let m = self.begin(kind, 0, format!("{verb} chain {name}"));
        let t = self.table.clone();
        self.buf.str(1, &t);
        // DELRULE names the chain with NFTA_RULE_CHAIN (2), DELCHAIN with
        // NFTA_CHAIN_NAME (3).
        self.buf.str(if kind == msg::DELRULE { 2 } else { 3 }, name);
        self.finish_msg(m);
        Ok(())
    }

    fn delete_set(&mut self, name: &str) -> Result<()> {
        check_name("set", name)?;
        let m = self.begin(msg::DELSET, 0, format!("delete set {name}"));
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.buf.str(2, name);
        self.finish_msg(m);
        self.created.remove(name);
        self.deleted.push(name.to_owned());
        Ok(())
    }

    fn add_set(&mut self, name: &str, set: &Set) -> Result<()> {
        check_name("set", name)?;
        set.validate(name)?;
        if set.key.is_empty() {
            return Err(err(format!("set {name:?} has no key type")));
        }
        let shape = Shape::of(set);
        let concat = shape.concat();
        if set.flags.interval && !concat {
            let t = set.key[0];
            if host_order(t) || t == DataType::Ifname {
                return Err(err(format!(
                    "set {name:?}: an interval set of {t:?} is not encoded over netlink"
                )));
            }
        }
        let data_types: Vec<DataType> = match &set.data {
            Some(MapData::Value(t)) => t.clone(),
            _ => Vec::new(),
        };
        if matches!(set.data, Some(MapData::Value(ref t)) if t.is_empty()) {
            return Err(err(format!("set {name:?} maps to an empty type")));
        }
        let by_typeof = set
            .key
            .iter()
            .chain(&data_types)
            .any(|t| *t == DataType::Slot);
        let key_len = if concat {
            set.key.iter().map(|t| round4(type_info(*t).len)).sum()
        } else {
            type_info(set.key[0]).len
        };
        let key_type = set
            .key
            .iter()
            .fold(0u32, |acc, t| (acc << 6) | type_info(*t).dtype);
        let mut flags = 0;
        if set.flags.interval {
            flags |= SET_INTERVAL;
            if concat {
                flags |= SET_CONCAT;
            }
        }
        if set.data.is_some() {
            flags |= SET_MAP;
        }
        if set.flags.timeout {
            flags |= SET_TIMEOUT;
        }
        if set.flags.dynamic {
            flags |= SET_EVAL;
        }
        let id = self.new_id();
        let m = self.begin(msg::NEWSET, NLM_F_CREATE, format!("add set {name}"));
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.buf.str(2, name);
        self.buf.u32(3, flags);
        self.buf.u32(4, key_type);
        self.buf.u32(5, key_len as u32);
        match &set.data {
            None => {}
            Some(MapData::Verdict) => {
                self.buf.u32(6, dtype::VERDICT_MAP);
                self.buf.u32(7, 0);
            }
            Some(MapData::Value(types)) => {
                let ty = types
                    .iter()
                    .fold(0u32, |acc, t| (acc << 6) | type_info(*t).dtype);
                let len: usize = if types.len() > 1 {
                    types.iter().map(|t| round4(type_info(*t).len)).sum()
                } else {
                    type_info(types[0]).len
                };
                self.buf.u32(6, ty);
                self.buf.u32(7, len as u32);
            }
        }
        if set.flags.interval && concat {
            let d = self.buf.begin(9);
            let c = self.buf.begin(2);
            for t in &set.key {
                let e = self.buf.begin(1);
                self.buf.u32(1, type_info(*t).len as u32);
                self.buf.end(e);
            }
            self.buf.end(c);
            self.buf.end(d);
        }
        self.buf.u32(10, id);
        if let Some(timeout) = set.timeout {
            self.buf.u64(11, u64::from(timeout) * 1000);
        }
        let udata = set_udata(set, &data_types, by_typeof);
        self.buf.attr(13, &udata.0);
        self.finish_msg(m);
        self.deleted.retain(|d| d != name);
        self.created.insert(name.to_owned(), (id, shape));
        Ok(())
    }

    /// Elements in messages of at most [`MSG_CHUNK`] bytes each (a nest's
    /// length is 16 bits).
    fn elements(
        &mut self,
        set: &str,
        delete: bool,
        items: &[(Vec<Value>, Option<&Element>)],
    ) -> Result<()> {
        check_name("set", set)?;
        let shape = self.shape(set)?;
        let mut entries = Vec::new();
        for (key, element) in items {
            element_entries(set, &shape, key, *element, delete, &mut entries)?;
        }
        let id = self.set_id(set);
        let (kind, flags, verb) = if delete {
            (msg::DELSETELEM, 0, "delete")
        } else {
            (msg::NEWSETELEM, NLM_F_CREATE, "add")
        };
        let mut i = 0;
        while i < entries.len() {
            let m = self.begin(kind, flags, format!("{verb} elements of set {set}"));
            let t = self.table.clone();
            self.buf.str(1, &t);
            self.buf.str(2, set);
            if let Some(id) = id {
                self.buf.u32(4, id);
            }
            let list = self.buf.begin(3);
            let list_start = self.buf.b.len();
            while i < entries.len() && self.buf.b.len() - list_start < MSG_CHUNK {
                entries[i].write(&mut self.buf);
                i += 1;
            }
            self.buf.end(list);
            self.finish_msg(m);
        }
        Ok(())
    }

    fn add_rule(&mut self, chain: &str, rule: &Rule) -> Result<()> {
        check_name("chain", chain)?;
        // Anonymous sets of `{ a, b }` matches go first, in the same batch.
        let mut anon = Vec::new();
        for e in &rule.exprs {
            if let Expr::OneOf { field, values } = e {
                anon.push(self.anonymous_set(*field, values)?);
            }
        }
        let mut body = Buf::default();
        self.rule_l3.set(None);
        // nft puts what a reject needs (the protocol it answers in) at the
        // head of the rule.
        for e in &rule.exprs {
            if let Expr::Reject(r) = e {
                self.reject_dependency(&mut body, *r, &rule.exprs)?;
            }
        }
        let mut anon = anon.into_iter();
        for e in &rule.exprs {
            self.rule_expr(&mut body, e, &mut anon)?;
        }
        let m = self.begin(
            msg::NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add rule to chain {chain}"),
        );
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.buf.str(2, chain);
        let l = self.buf.begin(4);
        self.buf.b.extend_from_slice(&body.b);
        self.buf.overflow |= body.overflow;
        self.buf.end(l);
        self.finish_msg(m);
        Ok(())
    }

    /// An anonymous constant set for `field { values }`; returns its id.
    fn anonymous_set(&mut self, field: Field, values: &[Value]) -> Result<u32> {
        if values.is_empty() {
            return Err(err("an empty `{ }` match"));
        }
        let info = field_info(field);
        let interval = values
            .iter()
            .any(|v| matches!(v, Value::Net(_) | Value::PortRange(..)));
        if interval && info.byteorder != BYTEORDER_BIG {
            return Err(err(format!(
                "{field:?}: ranges are not encoded over netlink"
            )));
        }
        let mut entries = Vec::new();
        if interval {
            // nft merges the intervals of an anonymous set: overlapping or
            // adjacent ones become one.
            let mut spans: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for v in values {
                let (lo, hi) = bounds(v)?;
                if lo.len() != info.len {
                    return Err(err(format!("{v:?} does not fit {field:?}")));
                }
                spans.push((lo, hi));
            }
            spans.sort();
            let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for (lo, hi) in spans {
                if let Some(last) = merged.last_mut() {
                    let touches = successor(&last.1).is_none_or(|next| lo <= next);
                    if touches {
                        if hi > last.1 {
                            last.1 = hi;
                        }
                        continue;
                    }
                }
                merged.push((lo, hi));
            }
            for (lo, hi) in merged {
                entries.push(Entry::key(lo));
                match successor(&hi) {
                    Some(end) => {
                        let mut e = Entry::key(end);
                        e.flags = 1;
                        entries.push(e);
                    }
                    None => {
                        let mut u = Udata::default();
                        u.u32(1, 1);
                        let last = entries.len() - 1;
                        entries[last].udata = u.0;
                    }
                }
            }
        } else {
            for v in values {
                let b = value_bytes(v)?;
                if b.len() != info.len {
                    return Err(err(format!("{v:?} does not fit {field:?}")));
                }
                if !entries.iter().any(|e: &Entry| e.key == b) {
                    entries.push(Entry::key(b));
                }
            }
        }
        let id = self.new_id();
        let m = self.begin(msg::NEWSET, NLM_F_CREATE, "add anonymous set".into());
        let t = self.table.clone();
        self.buf.str(1, &t);
        self.buf.str(2, "__set%d");
        let mut flags = SET_ANONYMOUS | SET_CONSTANT;
        if interval {
            flags |= SET_INTERVAL;
        }
        self.buf.u32(3, flags);
        self.buf.u32(4, info.dtype);
        self.buf.u32(5, info.len as u32);
        self.buf.u32(10, id);
        let d = self.buf.begin(9);
        self.buf.u32(1, entries.len() as u32);
        self.buf.end(d);
        let mut u = Udata::default();
        u.u32(0, info.byteorder);
        if interval {
            u.u32(2, 1);
        }
        let (kind, data) = field_typeof(field);
        let mut ty = Udata::default();
        ty.u32(0, kind);
        ty.nested(1, data);
        u.nested(3, ty);
        self.buf.attr(13, &u.0);
        self.finish_msg(m);

        let m = self.begin(
            msg::NEWSETELEM,
            NLM_F_CREATE,
            "add anonymous set elements".into(),
        );
        self.buf.str(1, &t);
        self.buf.str(2, "__set%d");
        self.buf.u32(4, id);
        let l = self.buf.begin(3);
        for e in &entries {
            e.write(&mut self.buf);
        }
        self.buf.end(l);
        self.finish_msg(m);
        Ok(id)
    }

    /// The implicit `meta nfproto` check nft puts before a network header
    /// field in an inet table.
    fn dependency(&self, b: &mut Buf, fields: &[Field]) -> Result<()> {
        let mut seen = Vec::new();
        for f in fields {
            if let Some(l3) = field_info(*f).l3 {
                if self.family == Family::Inet && !seen.contains(&l3) {
                    seen.push(l3);
                    match self.rule_l3.get() {
                        Some(known) if known == l3 => {}
                        Some(_) => {
                            return Err(err(format!("{f:?} in a rule about the other IP version")))
                        }
                        None => {
                            meta_load(b, 15, REG_1);
                            cmp(b, REG_1, 0, &[nfproto(l3)]);
                            self.rule_l3.set(Some(l3));
                        }
                    }
                }
                if (self.family == Family::Ip && l3 == L3::V6)
                    || (self.family == Family::Ip6 && l3 == L3::V4)
                {
                    return Err(err(format!("{f:?} in an {:?} table", self.family)));
                }
            }
            if *f == Field::NfProto && self.family != Family::Inet {
                return Err(err("meta nfproto outside an inet table"));
            }
            if let Field::NumgenRandom { modulus: 0 } = f {
                return Err(err("numgen random mod 0"));
            }
        }
        Ok(())
    }

    /// Load a concatenation of fields from register 1 on; returns the
    /// 4-byte slots after it.
    fn load_key(&self, b: &mut Buf, key: &[Field], shape: Option<&Shape>) -> Result<usize> {
        if key.is_empty() {
            return Err(err("an empty key"));
        }
        self.dependency(b, key)?;
        let convert = shape.is_some_and(|s| s.interval && s.concat());
        let mut slot = 0;
        for (i, f) in key.iter().enumerate() {
            let reg = reg_at(slot);
            load(b, *f, reg);
            let info = field_info(*f);
            if convert {
                let host = shape
                    .and_then(|s| s.key.get(i))
                    .is_some_and(|t| host_order(*t));
                if host {
                    // What nft sends: 1-byte values as size 2, length 1.
                    let (size, len) = if info.len == 1 { (2, 1) } else { (4, info.len) };
                    b.expr("byteorder", |b| {
                        b.u32(1, reg);
                        b.u32(2, reg);
                        b.u32(3, 1); // NFT_BYTEORDER_HTON
                        b.u32(4, len as u32);
                        b.u32(5, size);
                    });
                }
            }
            slot += round4(info.len) / 4;
        }
        Ok(slot)
    }

    /// Check that a key's fields have the set's types.
    fn check_key(&self, set: &str, key: &[Field], shape: &Shape) -> Result<()> {
        let ok = key.len() == shape.key.len()
            && key.iter().zip(&shape.key).all(|(f, t)| {
                let (fi, ti) = (field_info(*f), type_info(*t));
                fi.len == ti.len && fi.dtype == ti.dtype
            });
        if ok {
            Ok(())
        } else {
            Err(err(format!(
                "key {key:?} does not have the type of set {set:?} ({:?})",
                shape.key
            )))
        }
    }

    fn rule_expr(&self, b: &mut Buf, e: &Expr, anon: &mut impl Iterator<Item = u32>) -> Result<()> {
        match e {
            Expr::Cmp { field, op, value } => self.cmp_expr(b, *field, *op, value),
            Expr::Masked {
                field,
                mask,
                op,
                value,
            } => {
                if !matches!(field, Field::Mark | Field::CtState | Field::CtStatus) {
                    return Err(err(format!("a masked match on {field:?}")));
                }
                self.dependency(b, &[*field])?;
                load(b, *field, REG_1);
                bitwise(b, REG_1, 4, &mask.to_ne_bytes(), &[0; 4]);
                cmp(b, REG_1, cmp_op(*op), &value.to_ne_bytes());
                Ok(())
            }
            Expr::Lookup { key, set, negate } => {
                let shape = self.shape(set)?;
                if shape.data.is_some() {
                    return Err(err(format!("a set match on map {set:?}")));
                }
                self.check_key(set, key, &shape)?;
                self.load_key(b, key, Some(&shape))?;
                let id = self.set_id(set);
                b.expr("lookup", |b| {
                    b.u32(2, REG_1);
                    b.str(1, set);
                    if let Some(id) = id {
                        b.u32(4, id);
                    }
                    if *negate {
                        b.u32(5, 1); // NFT_LOOKUP_F_INV
                    }
                });
                Ok(())
            }
            Expr::OneOf { field, .. } => {
                let id = anon.next().ok_or_else(|| err("anonymous set"))?;
                self.dependency(b, &[*field])?;
                load(b, *field, REG_1);
                b.expr("lookup", |b| {
                    b.u32(2, REG_1);
                    b.str(1, "__set%d");
                    b.u32(4, id);
                });
                Ok(())
            }
            Expr::VerdictMap { key, map } => {
                let shape = self.shape(map)?;
                if shape.data != Some(MapData::Verdict) {
                    return Err(err(format!("{map:?} is not a verdict map")));
                }
                self.check_key(map, key, &shape)?;
                self.load_key(b, key, Some(&shape))?;
                let id = self.set_id(map);
                b.expr("lookup", |b| {
                    b.u32(2, REG_1);
                    b.str(1, map);
                    b.u32(3, REG_VERDICT);
                    if let Some(id) = id {
                        b.u32(4, id);
                    }
                });
                Ok(())
            }
            Expr::Counter => {
                b.expr("counter", |b| {
                    b.u64(1, 0);
                    b.u64(2, 0);
                });
                Ok(())
            }
            Expr::SetMark(op) => {
                match op {
                    MarkOp::Set(m) => immediate(b, REG_1, &m.to_ne_bytes()),
                    MarkOp::Or(m) => {
                        meta_load(b, 3, REG_1);
                        bitwise(b, REG_1, 4, &(!m).to_ne_bytes(), &m.to_ne_bytes());
                    }
                    MarkOp::Xor(m) => {
                        meta_load(b, 3, REG_1);
                        bitwise(b, REG_1, 4, &u32::MAX.to_ne_bytes(), &m.to_ne_bytes());
                    }
                }
                b.expr("meta", |b| {
                    b.u32(2, 3); // NFT_META_MARK
                    b.u32(3, REG_1);
                });
                Ok(())
            }
            Expr::Masquerade { fully_random } => {
                b.expr("masq", |b| {
                    if *fully_random {
                        b.u32(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
                    }
                });
                Ok(())
            }
            Expr::Snat { to } => {
                let l3 = self.nat_family(*to)?;
                immediate(b, REG_1, &value_bytes(&Value::Addr(*to))?);
                nat(b, 0, l3, REG_1, None, false);
                Ok(())
            }
            Expr::Dnat { to, port } => {
                let l3 = self.nat_family(*to)?;
                immediate(b, REG_1, &value_bytes(&Value::Addr(*to))?);
                if let Some(p) = port {
                    immediate(b, REG_2, &p.to_be_bytes());
                }
                nat(b, 1, l3, REG_1, port.map(|_| REG_2), port.is_some());
                Ok(())
            }
            Expr::DnatMap { l3, key, map } => {
                if (self.family == Family::Ip && *l3 == L3::V6)
                    || (self.family == Family::Ip6 && *l3 == L3::V4)
                {
                    return Err(err(format!("dnat {l3:?} in an {:?} table", self.family)));
                }
                let shape = self.shape(map)?;
                let addr = DataType::addr(*l3);
                let with_port = match &shape.data {
                    Some(MapData::Value(t)) if t.as_slice() == [addr] => false,
                    Some(MapData::Value(t)) if t.as_slice() == [addr, DataType::InetService] => {
                        true
                    }
                    _ => {
                        return Err(err(format!(
                            "map {map:?} does not map to an {l3:?} address (and port)"
                        )))
                    }
                };
                self.check_key(map, key, &shape)?;
                self.load_key(b, key, Some(&shape))?;
                let id = self.set_id(map);
                b.expr("lookup", |b| {
                    b.u32(2, REG_1);
                    b.str(1, map);
                    b.u32(3, REG_1);
                    if let Some(id) = id {
                        b.u32(4, id);
                    }
                });
                let port_reg = match l3 {
                    L3::V4 => REG32_00 + 1,
                    L3::V6 => REG_2,
                };
                nat(b, 1, *l3, REG_1, with_port.then_some(port_reg), false);
                Ok(())
            }
            Expr::UpdateSet { set, key } => {
                let shape = self.shape(set)?;
                if shape.data.is_some() {
                    return Err(err(format!("update of map {set:?}")));
                }
                self.check_key(set, key, &shape)?;
                self.load_key(b, key, Some(&shape))?;
                let id = self.set_id(set);
                b.expr("dynset", |b| {
                    b.u32(4, REG_1);
                    b.u32(3, 1); // NFT_DYNSET_OP_UPDATE
                    b.str(1, set);
                    if let Some(id) = id {
                        b.u32(2, id);
                    }
                });
                Ok(())
            }
            Expr::Reject(r) => self.reject(b, *r),
            Expr::Verdict(v) => {
                if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                    check_name("chain", c)?;
                }
                b.expr("immediate", |b| {
                    b.u32(1, REG_VERDICT);
                    b.verdict(2, v);
                });
                Ok(())
            }
        }
    }

    fn nat_family(&self, to: IpAddr) -> Result<L3> {
        let l3 = L3::of(to);
        match (self.family, l3) {
            (Family::Ip, L3::V6) | (Family::Ip6, L3::V4) => {
                Err(err(format!("NAT to {to} in an {:?} table", self.family)))
            }
            _ => Ok(l3),
        }
    }

    /// The match nft adds for a reject when the rule does not say the
    /// protocol already: `meta l4proto tcp` for a TCP reset, `meta nfproto`
    /// for an ICMP type in an inet table. A rule that says another protocol
    /// is refused (so is its text by nft).
    fn reject_dependency(&self, b: &mut Buf, r: Reject, rule: &[Expr]) -> Result<()> {
        let mut l4 = None;
        let mut l3 = None;
        for e in rule {
            match e {
                Expr::Cmp {
                    field: Field::L4Proto,
                    op: CmpOp::Eq,
                    value: Value::Proto(p),
                } => l4 = l4.or(Some(*p)),
                Expr::Cmp {
                    field: Field::NfProto,
                    op: CmpOp::Eq,
                    value: Value::NfProto(v),
                } => l3 = l3.or(Some(*v)),
                _ => {}
            }
            let fields: Vec<Field> = match e {
                Expr::Cmp { field, .. }
                | Expr::Masked { field, .. }
                | Expr::OneOf { field, .. } => {
                    vec![*field]
                }
                Expr::Lookup { key, .. }
                | Expr::VerdictMap { key, .. }
                | Expr::DnatMap { key, .. }
                | Expr::UpdateSet { key, .. } => key.clone(),
                _ => Vec::new(),
            };
            for f in fields {
                if let Some(v) = field_info(f).l3 {
                    l3 = l3.or(Some(v));
                }
            }
        }
        let conflict = || err(format!("{r:?} in a rule about another protocol"));
        match (r, self.family) {
            (Reject::TcpReset, _) => match l4 {
                Some(crate::protocol::TCP) => {}
                Some(_) => return Err(conflict()),
                None => {
                    meta_load(b, 16, REG_1);
                    cmp(b, REG_1, 0, &[crate::protocol::TCP]);
                }
            },
            (Reject::IcmpPortUnreachable, Family::Inet) => match l3 {
                Some(L3::V4) => {}
                Some(L3::V6) => return Err(conflict()),
                None => {
                    meta_load(b, 15, REG_1);
                    cmp(b, REG_1, 0, &[nfproto(L3::V4)]);
                }
            },
            (Reject::Icmpv6PortUnreachable, Family::Inet) => match l3 {
                Some(L3::V6) => {}
                Some(L3::V4) => return Err(conflict()),
                None => {
                    meta_load(b, 15, REG_1);
                    cmp(b, REG_1, 0, &[nfproto(L3::V6)]);
                }
            },
            _ => {}
        }
        Ok(())
    }

    fn reject(&self, b: &mut Buf, r: Reject) -> Result<()> {
        let (kind, code): (u32, u8) = match (r, self.family) {
            (Reject::TcpReset, _) => (1, 0),
            (Reject::Default, Family::Ip) => (0, 3),
            (Reject::Default, Family::Ip6) => (0, 4),
            (Reject::Default, Family::Inet) => (2, 1),
            (Reject::IcmpPortUnreachable, Family::Ip | Family::Inet) => (0, 3),
            (Reject::Icmpv6PortUnreachable, Family::Ip6 | Family::Inet) => (0, 4),
            (r, f) => return Err(err(format!("{r:?} in an {f:?} table"))),
        };
        b.expr("reject", |b| {
            b.u32(1, kind);
            b.attr(2, &[code]);
        });
        Ok(())
    }

    fn cmp_expr(&self, b: &mut Buf, field: Field, op: CmpOp, value: &Value) -> Result<()> {
        value.validate()?;
        let info = field_info(field);
        let mismatch = || err(format!("{value:?} cannot be compared with {field:?}"));
        self.dependency(b, &[field])?;
        if let (Field::NfProto, CmpOp::Eq, Value::NfProto(l3)) = (field, op, value) {
            match self.rule_l3.get() {
                Some(known) if known != *l3 => {
                    return Err(err("meta nfproto in a rule about the other IP version"))
                }
                _ => self.rule_l3.set(Some(*l3)),
            }
        }
        match (field, value) {
            (Field::CtState, Value::CtState(bits)) | (Field::CtStatus, Value::CtStatus(bits)) => {
                if *bits == 0 {
                    return Err(err(format!("{field:?} with no bits")));
                }
                load(b, field, REG_1);
                if op == CmpOp::Eq {
                    // Any of the bits: `ct state new,established`.
                    bitwise(b, REG_1, 4, &bits.to_ne_bytes(), &[0; 4]);
                    cmp(b, REG_1, 1, &[0; 4]);
                } else {
                    cmp(b, REG_1, 1, &bits.to_ne_bytes());
                }
                Ok(())
            }
            (_, Value::Net(net)) => {
                let full = info.len * 8;
                let addr = match (net, info.l3) {
                    (IpNet::V4(n), Some(L3::V4)) => n.network().octets().to_vec(),
                    (IpNet::V6(n), Some(L3::V6)) => n.network().octets().to_vec(),
                    _ => return Err(mismatch()),
                };
                let prefix = usize::from(net.prefix_len());
                if prefix == full || (prefix % 8 == 0 && prefix > 0) {
                    let n = prefix / 8;
                    load_bytes(b, field, REG_1, n);
                    cmp(b, REG_1, cmp_op(op), &addr[..n]);
                } else {
                    load(b, field, REG_1);
                    let mut mask = vec![0u8; info.len];
                    for (i, m) in mask.iter_mut().enumerate() {
                        let bits = prefix.saturating_sub(i * 8).min(8);
                        *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
                    }
                    bitwise(b, REG_1, info.len, &mask, &vec![0; info.len]);
                    cmp(b, REG_1, cmp_op(op), &addr);
                }
                Ok(())
            }
            (Field::ThSport | Field::ThDport, Value::PortRange(lo, hi)) => {
                if lo > hi {
                    return Err(err(format!("port range {lo}-{hi} ends before it starts")));
                }
                load(b, field, REG_1);
                match op {
                    CmpOp::Eq => {
                        cmp(b, REG_1, 5, &lo.to_be_bytes()); // NFT_CMP_GTE
                        cmp(b, REG_1, 3, &hi.to_be_bytes()); // NFT_CMP_LTE
                    }
                    CmpOp::Ne => b.expr("range", |b| {
                        b.u32(1, REG_1);
                        b.u32(2, 1); // NFT_RANGE_NEQ
                        b.data(3, &lo.to_be_bytes());
                        b.data(4, &hi.to_be_bytes());
                    }),
                }
                Ok(())
            }
            _ => {
                let ok = match value {
                    Value::Addr(ip) => info.l3 == Some(L3::of(*ip)),
                    Value::Proto(_) => field == Field::L4Proto,
                    Value::Port(_) => matches!(field, Field::ThSport | Field::ThDport),
                    Value::Number(_) => matches!(field, Field::NumgenRandom { .. }),
                    Value::Mark(_) => field == Field::Mark,
                    Value::AddrType(_) => {
                        matches!(field, Field::FibDaddrType | Field::FibSaddrType)
                    }
                    Value::NfProto(_) => field == Field::NfProto,
                    Value::Ifname(_) => matches!(field, Field::Iifname | Field::Oifname),
                    _ => false,
                };
                if !ok {
                    return Err(mismatch());
                }
                let bytes = value_bytes(value)?;
                load(b, field, REG_1);
                cmp(b, REG_1, cmp_op(op), &bytes);
                Ok(())
            }
        }
    }
}

/// The userdata nft 1.0.6 writes for a named set: byte orders, `typeof`
/// expressions (or an empty concatenation for `type a . b`), whether a map's
/// data is an interval.
fn set_udata(set: &Set, data_types: &[DataType], by_typeof: bool) -> Udata {
    let mut u = Udata::default();
    let concat = set.key.len() > 1;
    u.u32(
        0,
        if concat {
            BYTEORDER_INVALID
        } else {
            type_info(set.key[0]).byteorder
        },
    );
    let is_map = set.data.is_some();
    if is_map {
        u.u32(
            1,
            if data_types.len() == 1 {
                type_info(data_types[0]).byteorder
            } else {
                BYTEORDER_INVALID
            },
        );
    }
    let typeof_of = |types: &[DataType]| -> Option<Udata> {
        let mut t = Udata::default();
        if types.len() > 1 {
            t.u32(0, EXPR_CONCAT);
            let mut inner = Udata::default();
            if by_typeof {
                for (i, ty) in types.iter().enumerate() {
                    let (kind, data) = field_typeof(type_field(*ty));
                    let mut one = Udata::default();
                    one.u32(0, kind);
                    one.nested(1, data);
                    inner.nested(i as u8, one);
                }
            }
            t.nested(1, inner);
            Some(t)
        } else if by_typeof {
            let (kind, data) = field_typeof(type_field(types[0]));
            t.u32(0, kind);
            t.nested(1, data);
            Some(t)
        } else {
            None
        }
    };
    if let Some(t) = typeof_of(&set.key) {
        u.nested(3, t);
    }
    if !data_types.is_empty() {
        if let Some(t) = typeof_of(data_types) {
            u.nested(4, t);
        }
    }
    if is_map {
        u.u32(6, 0);
    }
    u
}

/// One kernel set element.
struct Entry {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    flags: u32,
    data: Option<EntryData>,
    udata: Vec<u8>,
}

enum EntryData {
    Value(Vec<u8>),
    Verdict(Verdict),
}

impl Entry {
    fn key(key: Vec<u8>) -> Entry {
        Entry {
            key,
            key_end: None,
            flags: 0,
            data: None,
            udata: Vec::new(),
        }
    }

    fn write(&self, b: &mut Buf) {
        let e = b.begin(1);
        if self.flags != 0 {
            b.u32(3, self.flags);
        }
        b.data(1, &self.key);
        if let Some(end) = &self.key_end {
            b.data(10, end);
        }
        match &self.data {
            None => {}
            Some(EntryData::Value(v)) => b.data(2, v),
            Some(EntryData::Verdict(v)) => b.verdict(2, v),
        }
        if !self.udata.is_empty() {
            b.attr(6, &self.udata);
        }
        b.end(e);
    }
}

/// The kernel elements of one element of a set of `shape`: one, or two for
/// an interval (start, and end with the interval-end flag) unless the set
/// concatenates (then the end is the element's key end).
fn element_entries(
    set: &str,
    shape: &Shape,
    key: &[Value],
    element: Option<&Element>,
    delete: bool,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let bad = |why: String| Error::Element {
        set: set.to_owned(),
        element: crate::text::values(key),
        why,
    };
    if key.len() != shape.key.len() {
        return Err(bad("wrong number of fields".into()));
    }
    for (v, t) in key.iter().zip(&shape.key) {
        v.validate()?;
        if !fits(v, *t, shape.interval) {
            return Err(bad(format!("{v:?} is not a {t:?}")));
        }
    }
    let mut data = None;
    let mut udata = Udata::default();
    if !delete {
        let element = element.ok_or_else(|| bad("no element".into()))?;
        data = match (&shape.data, &element.value) {
            (None, None) => None,
            (Some(MapData::Verdict), Some(ElementValue::Verdict(v))) => {
                if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                    check_name("chain", c)?;
                }
                Some(EntryData::Verdict(v.clone()))
            }
            (Some(MapData::Value(types)), Some(ElementValue::Data(vs)))
                if types.len() == vs.len()
                    && vs.iter().zip(types).all(|(v, t)| fits(v, *t, false)) =>
            {
                let mut bytes = Vec::new();
                for v in vs {
                    let mut b = value_bytes(v)?;
                    if types.len() > 1 {
                        b.resize(round4(b.len()), 0);
                    }
                    bytes.extend(b);
                }
                Some(EntryData::Value(bytes))
            }
            _ => return Err(bad("the value does not fit the set's type".into())),
        };
        if let Some(c) = &element.comment {
            let c = crate::text::clean(c);
            let mut bytes = c.into_bytes();
            bytes.push(0);
            if bytes.len() > 129 {
                return Err(bad("comment longer than 128 bytes".into()));
            }
            udata.put(0, &bytes);
        }
    }
    if shape.concat() {
        let mut lo = Vec::new();
        let mut hi = Vec::new();
        for (v, t) in key.iter().zip(&shape.key) {
            let (mut a, mut z) = if shape.interval {
                bounds(v)?
            } else {
                let b = value_bytes(v)?;
                (b.clone(), b)
            };
            if !shape.interval && host_order(*t) {
                // value_bytes already gave host order.
            }
            a.resize(round4(a.len()), 0);
            z.resize(round4(z.len()), 0);
            lo.extend(a);
            hi.extend(z);
        }
        let mut e = Entry::key(lo);
        if shape.interval {
            e.key_end = Some(hi);
        }
        e.data = data;
        e.udata = udata.0;
        out.push(e);
        return Ok(());
    }
    let v = &key[0];
    if !shape.interval {
        let mut e = Entry::key(value_bytes(v)?);
        e.data = data;
        e.udata = udata.0;
        out.push(e);
        return Ok(());
    }
    let (lo, hi) = bounds(v)?;
    let end = successor(&hi);
    if end.is_none() {
        // Open to the end of the type: no end element, a flag instead.
        udata.u32(1, 1);
    }
    let mut e = Entry::key(lo);
    e.data = data;
    e.udata = udata.0;
    out.push(e);
    if let Some(end) = end {
        let mut e = Entry::key(end);
        e.flags = 1; // NFT_SET_ELEM_INTERVAL_END
        out.push(e);
    }
    Ok(())
}

fn cmp_op(op: CmpOp) -> u32 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Ne => 1,
    }
}

fn cmp(b: &mut Buf, sreg: u32, op: u32, data: &[u8]) {
    b.expr("cmp", |b| {
        b.u32(1, sreg);
        b.u32(2, op);
        b.data(3, data);
    });
}

fn bitwise(b: &mut Buf, reg: u32, len: usize, mask: &[u8], xor: &[u8]) {
    b.expr("bitwise", |b| {
        b.u32(1, reg);
        b.u32(2, reg);
        b.u32(3, len as u32);
        b.data(4, mask);
        b.data(5, xor);
    });
}

fn immediate(b: &mut Buf, reg: u32, data: &[u8]) {
    b.expr("immediate", |b| {
        b.u32(1, reg);
        b.data(2, data);
    });
}

fn meta_load(b: &mut Buf, key: u32, dreg: u32) {
    b.expr("meta", |b| {
        b.u32(2, key);
        b.u32(1, dreg);
    });
}

fn payload(b: &mut Buf, base: u32, offset: u32, len: usize, dreg: u32) {
    b.expr("payload", |b| {
        b.u32(1, dreg);
        b.u32(2, base);
        b.u32(3, offset);
        b.u32(4, len as u32);
    });
}

fn nat(b: &mut Buf, kind: u32, l3: L3, addr: u32, proto: Option<u32>, flags: bool) {
    b.expr("nat", |b| {
        b.u32(1, kind);
        b.u32(2, u32::from(nfproto(l3)));
        b.u32(3, addr);
        if let Some(p) = proto {
            b.u32(5, p);
        }
        if flags {
            b.u32(7, 2); // NF_NAT_RANGE_PROTO_SPECIFIED
        }
    });
}

/// Load a field into `dreg`.
fn load(b: &mut Buf, f: Field, dreg: u32) {
    load_bytes(b, f, dreg, field_info(f).len);
}

/// Load a field, or the first `len` bytes of an address (prefix matches).
fn load_bytes(b: &mut Buf, f: Field, dreg: u32, len: usize) {
    match f {
        Field::IpSaddr => payload(b, 1, 12, len, dreg),
        Field::IpDaddr => payload(b, 1, 16, len, dreg),
        Field::Ip6Saddr => payload(b, 1, 8, len, dreg),
        Field::Ip6Daddr => payload(b, 1, 24, len, dreg),
        Field::ThSport => payload(b, 2, 0, len, dreg),
        Field::ThDport => payload(b, 2, 2, len, dreg),
        Field::L4Proto => meta_load(b, 16, dreg),
        Field::NfProto => meta_load(b, 15, dreg),
        Field::Mark => meta_load(b, 3, dreg),
        Field::Iifname => meta_load(b, 6, dreg),
        Field::Oifname => meta_load(b, 7, dreg),
        Field::CtState | Field::CtStatus => b.expr("ct", |b| {
            b.u32(1, dreg);
            b.u32(2, if f == Field::CtState { 0 } else { 2 });
        }),
        Field::FibDaddrType | Field::FibSaddrType => b.expr("fib", |b| {
            b.u32(1, dreg);
            b.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
            b.u32(3, if f == Field::FibDaddrType { 2 } else { 1 });
        }),
        Field::NumgenRandom { modulus } => b.expr("numgen", |b| {
            b.u32(1, dreg);
            b.u32(2, modulus);
            b.u32(3, 1); // NFT_NG_RANDOM
            b.u32(4, 0);
        }),
    }
}

/// The batch for a transaction, with the set shapes it leaves behind.
fn encode_transaction(
    tx: &Transaction,
    known: HashMap<String, Shape>,
    seq: u32,
) -> Result<Encoded> {
    check_name("table", &tx.table)?;
    let mut b = Batch::new(tx.family, &tx.table, known, seq);
    for op in &tx.ops {
        match op {
            Op::AddTable => b.add_table(),
            Op::DeleteTable => b.delete_table(),
            Op::AddSet { name, set } => {
                let mut decl = set.clone();
                decl.elements.clear();
                b.add_set(name, &decl)?;
            }
            Op::DeleteSet(name) => b.delete_set(name)?,
            Op::AddChain { name, base } => b.add_chain(name, base.as_ref())?,
            Op::FlushChain(name) => b.chain_cmd(msg::DELRULE, "flush", name)?,
            Op::DeleteChain(name) => b.chain_cmd(msg::DELCHAIN, "delete", name)?,
            Op::AddRule { chain, rule } => b.add_rule(chain, rule)?,
            Op::AddElements { set, elements } => {
                let items: Vec<(Vec<Value>, Option<&Element>)> =
                    elements.iter().map(|(k, e)| (k.clone(), Some(e))).collect();
                b.elements(set, false, &items)?;
            }
            Op::DeleteElements { set, keys } => {
                let items: Vec<(Vec<Value>, Option<&Element>)> =
                    keys.iter().map(|k| (k.clone(), None)).collect();
                b.elements(set, true, &items)?;
            }
        }
    }
    b.finish()
}

/// The batch that replaces a whole table: create it if missing, delete it,
/// create it again with its sets, chains, rules and elements.
fn encode_table(t: &Table, seq: u32) -> Result<Encoded> {
    t.validate()?;
    let mut b = Batch::new(t.family, &t.name, HashMap::new(), seq);
    b.add_table();
    b.delete_table();
    b.add_table();
    for (name, set) in &t.sets {
        b.add_set(name, set)?;
    }
    for (name, chain) in &t.chains {
        b.add_chain(name, chain.base.as_ref())?;
    }
    for (name, chain) in &t.chains {
        for rule in &chain.rules {
            b.add_rule(name, rule)?;
        }
    }
    // Elements after the rules: binding a rule to a map walks the map's
    // elements (the kernel checks each value), so an empty map binds fast.
    for (name, set) in &t.sets {
        if set.elements.is_empty() {
            continue;
        }
        let items: Vec<(Vec<Value>, Option<&Element>)> = set
            .elements
            .iter()
            .map(|(k, e)| (k.clone(), Some(e)))
            .collect();
        b.elements(name, false, &items)?;
    }
    b.finish()
}

/// A netlink socket to nf_tables in the network namespace of the thread
/// that opened it.
pub struct Socket {
    socket: netlink_sys::Socket,
    seq: u32,
    sndbuf: usize,
    /// What this socket knows of the sets of the tables it wrote, to
    /// encode elements and lookups of later transactions.
    shapes: HashMap<(Family, String), HashMap<String, Shape>>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| err(format!("{what}: {e}"))
}

impl Socket {
    pub fn open() -> Result<Socket> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .map_err(io("open an nf_tables netlink socket"))?;
        socket.bind_auto().map_err(io("bind the netlink socket"))?;
        // Errors without the request echoed, with the kernel's message.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Socket {
            socket,
            seq: std::process::id().wrapping_mul(7919),
            sndbuf: 0,
            shapes: HashMap::new(),
        })
    }

    /// Apply `tx` as one batch: all of it or none of it. Elements and
    /// lookups of sets are encoded with the declarations this socket wrote
    /// (by [`Socket::replace`] or an earlier transaction) or, for a set it
    /// did not write, the declaration the kernel reports; a set neither
    /// knows is an error (use `nft -f`). The error of a refused batch names
    /// each command the kernel refused.
    pub fn apply(&mut self, tx: &Transaction) -> Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        let key = (tx.family, tx.table.clone());
        let mut known = self.shapes.get(&key).cloned().unwrap_or_default();
        // Sets this socket did not write (another process, or a restart):
        // ask the kernel for their declarations.
        let mut declared = Vec::new();
        for op in &tx.ops {
            let used: Vec<&str> = match op {
                Op::AddSet { name, .. } => {
                    declared.push(name.as_str());
                    Vec::new()
                }
                Op::AddElements { set, .. } | Op::DeleteElements { set, .. } => vec![set.as_str()],
                Op::AddRule { rule, .. } => rule
                    .exprs
                    .iter()
                    .flat_map(Expr::references)
                    .filter(|(what, _)| *what == "set")
                    .map(|(_, name)| name)
                    .collect(),
                _ => Vec::new(),
            };
            for name in used {
                if !known.contains_key(name) && !declared.contains(&name) {
                    if let Some(shape) = self.kernel_shape(tx.family, &tx.table, name)? {
                        known.insert(name.to_owned(), shape);
                    }
                }
            }
        }
        let e = encode_transaction(tx, known, self.seq)?;
        self.send(&e.batch, &e.whats)?;
        self.shapes.insert(key, e.shapes);
        Ok(())
    }

    /// Replace the table of `table`'s family and name by `table`, as one
    /// batch (created if missing, its old contents gone).
    pub fn replace(&mut self, table: &Table) -> Result<()> {
        let e = encode_table(table, self.seq)?;
        self.send(&e.batch, &e.whats)?;
        self.shapes
            .insert((table.family, table.name.clone()), e.shapes);
        Ok(())
    }

    /// Forget what this socket knows of a table's sets (after someone else
    /// changed it).
    pub fn forget(&mut self, family: Family, table: &str) {
        self.shapes.remove(&(family, table.to_owned()));
    }

    /// The declaration of a set as the kernel has it; None when there is
    /// no such set (or it has a type this module does not write).
    fn kernel_shape(&mut self, family: Family, table: &str, set: &str) -> Result<Option<Shape>> {
        check_name("table", table)?;
        check_name("set", set)?;
        self.drain();
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut b = Batch::new(family, table, HashMap::new(), seq);
        // A plain request, not a batch: drop the batch-begin header.
        b.buf.b.clear();
        b.whats.clear();
        b.first_seq = seq.wrapping_sub(1);
        let m = b.begin(msg::GETSET, NLM_F_ACK, format!("get set {set}"));
        b.buf.str(1, table);
        b.buf.str(2, set);
        b.finish_msg(m);
        self.socket
            .send(&b.buf.b, 0)
            .map_err(io("ask the kernel for a set"))?;
        let mut shape = None;
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            buf.clear();
            let n = self
                .socket
                .recv(&mut buf, 0)
                .map_err(io("read the kernel's answer"))?;
            let mut at = 0;
            while at + 16 <= n {
                let len =
                    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq =
                    u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
                if len < 16 || at + len > n {
                    break;
                }
                if mseq == seq {
                    if kind == NLMSG_ERROR {
                        return Ok(shape);
                    }
                    if kind == (NFNL_SUBSYS_NFTABLES << 8) | msg::NEWSET && len >= 20 {
                        shape = parse_set(&buf[at + 20..at + len]);
                    }
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Drop answers left from an earlier batch (after an error that was
    /// not read to the end).
    fn drain(&mut self) {
        if self.socket.set_non_blocking(true).is_err() {
            return;
        }
        let mut buf = Vec::with_capacity(1 << 16);
        while self.socket.recv(&mut buf, 0).is_ok() {
            buf.clear();
        }
        let _ = self.socket.set_non_blocking(false);
    }

    fn send(&mut self, batch: &[u8], whats: &[String]) -> Result<()> {
        let first = self.seq;
        let last = first.wrapping_add(whats.len() as u32);
        self.seq = last.wrapping_add(2);
        if batch.len() + 1024 > self.sndbuf {
            // A batch is one message; the socket must take it whole.
            let want = (batch.len() + 4096).max(1 << 20);
            force_sndbuf(&self.socket, want)
                .map_err(|e| err(format!("set the netlink send buffer: {e}")))?;
            self.sndbuf = want;
        }
        self.drain();
        let sent = self
            .socket
            .send(batch, 0)
            .map_err(io("send the nf_tables batch"))?;
        if sent != batch.len() {
            return Err(err("the nf_tables batch was sent in part"));
        }
        // The kernel handles the batch within send(): every answer is
        // queued by now. Read until the acknowledgement of the last command
        // (or an error about the batch as a whole).
        let mut errors = Vec::new();
        let mut buf = Vec::with_capacity(1 << 16);
        'read: loop {
            buf.clear();
            let n = match self.socket.recv(&mut buf, 0) {
                Ok(n) => n,
                // Only errors and one acknowledgement are queued: more than
                // the buffer holds means many commands failed, and a batch
                // with a failed command is not applied.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.drain();
                    return Err(err(format!(
                        "the kernel refused the batch with more errors than fit the socket buffer{}",
                        if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
                    )));
                }
                Err(e) => return Err(io("read the kernel's answer")(e)),
            };
            let mut at = 0;
            while at + 16 <= n {
                let word =
                    |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let len = word(at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let seq = word(at + 8);
                if len < 16 || at + len > n {
                    break;
                }
                let index = seq.wrapping_sub(first).wrapping_sub(1) as usize;
                let ours = seq.wrapping_sub(first) <= last.wrapping_sub(first);
                if kind == NLMSG_ERROR && len >= 20 && ours {
                    let code = word(at + 16) as i32;
                    if code != 0 {
                        let what = whats
                            .get(index)
                            .cloned()
                            .unwrap_or_else(|| "the batch".into());
                        let mut text = std::io::Error::from_raw_os_error(-code).to_string();
                        if let Some(m) = ext_ack_message(&buf[at + 20..at + len]) {
                            text = format!("{text} ({m})");
                        }
                        errors.push(format!("{what}: {text}"));
                    }
                    if seq == last || seq == first {
                        break 'read;
                    }
                }
                at += (len + 3) & !3;
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Netlink(errors.join("; ")))
        }
    }
}

/// The types of a (concatenated) nft type number, 6 bits each.
fn types_of(mut id: u32) -> Option<Vec<DataType>> {
    let mut out = Vec::new();
    while id != 0 {
        out.push(match id & 0x3f {
            dtype::IPADDR => DataType::Ipv4Addr,
            dtype::IP6ADDR => DataType::Ipv6Addr,
            dtype::INET_PROTOCOL => DataType::InetProto,
            dtype::INET_SERVICE => DataType::InetService,
            dtype::MARK => DataType::Mark,
            dtype::IFNAME => DataType::Ifname,
            dtype::INTEGER => DataType::Slot,
            _ => return None,
        });
        id >>= 6;
    }
    out.reverse();
    (!out.is_empty()).then_some(out)
}

/// A set's shape from the attributes of the kernel's NEWSET message.
fn parse_set(attrs: &[u8]) -> Option<Shape> {
    let (mut flags, mut key, mut data) = (0u32, None, None);
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let len = u16::from_ne_bytes([attrs[at], attrs[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]) & 0x3fff;
        if len < 4 || at + len > attrs.len() {
            break;
        }
        let value = &attrs[at + 4..at + len];
        let be = || {
            value
                .get(..4)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        };
        match kind {
            3 => flags = be()?,
            4 => key = be(),
            6 => data = be(),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    let key = types_of(key?)?;
    let data = match data {
        None => None,
        Some(dtype::VERDICT_MAP) => Some(MapData::Verdict),
        Some(id) => Some(MapData::Value(types_of(id)?)),
    };
    Some(Shape {
        key,
        data,
        interval: flags & SET_INTERVAL != 0,
    })
}

/// SO_SNDBUFFORCE (CAP_NET_ADMIN): the kernel takes a netlink message only
/// whole, and a whole-table batch is one message of megabytes.
#[allow(unsafe_code)]
fn force_sndbuf(socket: &netlink_sys::Socket, size: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(size)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EMSGSIZE))?;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to
    // a live c_int on our stack, on a descriptor the socket owns and keeps
    // open for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The message string of an extended acknowledgement: after the echoed
/// header (16 bytes; no payload with NETLINK_CAP_ACK), NLMSGERR_ATTR_MSG.
fn ext_ack_message(rest: &[u8]) -> Option<String> {
    let mut at = 16;
    while at + 4 <= rest.len() {
        let len = u16::from_ne_bytes([rest[at], rest[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([rest[at + 2], rest[at + 3]]);
        if len < 4 || at + len > rest.len() {
            return None;
        }
        if kind == 1 {
            let s = &rest[at + 4..at + len];
            let s = s.split(|c| *c == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        at += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_element_lists_are_split_into_messages() {
        let mut t = Table::new(Family::Ip, "t");
        let s = t.set("s", Set::new(&[DataType::Ipv4Addr]));
        for i in 0..20_000u32 {
            s.insert(vec![Value::Addr(IpAddr::V4(i.into()))], None);
        }
        let Encoded { batch, whats, .. } = encode_table(&t, 1).unwrap();
        let adds = whats
            .iter()
            .filter(|w| w.starts_with("add elements"))
            .count();
        assert!(adds > 1, "{whats:?}");
        assert!(batch.len() > 20_000 * 12);
    }

    #[test]
    fn what_cannot_be_encoded_is_refused() {
        let mut t = Table::new(Family::Ip, "t");
        t.chain("c", crate::Chain::regular())
            .rule(vec![Expr::eq(Field::NfProto, Value::NfProto(L3::V4))]);
        assert!(encode_table(&t, 1).is_err());
        let mut t = Table::new(Family::Ip6, "t");
        t.chain("c", crate::Chain::regular())
            .rule(vec![Expr::Reject(Reject::IcmpPortUnreachable)]);
        assert!(encode_table(&t, 1).is_err());
        let mut t = Table::new(Family::Ip, "t");
        t.chain("c", crate::Chain::regular())
            .rule(vec![Expr::eq(Field::IpDaddr, Value::Port(80))]);
        assert!(encode_table(&t, 1).is_err());
        // An element of a set the socket never saw.
        let mut tx = Transaction::new(Family::Ip, "t");
        tx.ops.push(Op::DeleteElements {
            set: "unknown".into(),
            keys: vec![vec![Value::Port(1)]],
        });
        assert!(encode_transaction(&tx, HashMap::new(), 1).is_err());
    }

    #[test]
    fn rules_nft_would_refuse_are_refused() {
        // Both IP versions in one rule of an inet table.
        let mut t = Table::new(Family::Inet, "t");
        t.chain("c", crate::Chain::regular()).rule(vec![
            Expr::eq(Field::IpSaddr, Value::Addr("10.0.0.1".parse().unwrap())),
            Expr::eq(Field::Ip6Daddr, Value::Addr("fd00::1".parse().unwrap())),
        ]);
        assert!(encode_table(&t, 1).is_err());
        // A TCP reset in a rule about UDP.
        let mut t = Table::new(Family::Ip, "t");
        t.chain("c", crate::Chain::regular()).rule(vec![
            Expr::eq(Field::L4Proto, Value::UDP),
            Expr::Reject(Reject::TcpReset),
        ]);
        assert!(encode_table(&t, 1).is_err());
        // A lookup whose key is not of the set's type.
        let mut t = Table::new(Family::Ip, "t");
        t.set("s", Set::new(&[DataType::Slot]));
        t.chain("c", crate::Chain::regular())
            .rule(vec![Expr::lookup(&[Field::Mark], "s")]);
        assert!(encode_table(&t, 1).is_err());
    }

    #[test]
    fn anonymous_intervals_are_merged_as_nft_does() {
        let mut t = Table::new(Family::Ip, "t");
        t.chain("c", crate::Chain::regular())
            .rule(vec![Expr::OneOf {
                field: Field::ThDport,
                values: vec![
                    Value::PortRange(91, 100),
                    Value::PortRange(80, 90),
                    Value::Port(95),
                ],
            }]);
        let mut b = Batch::new(Family::Ip, "t", HashMap::new(), 1);
        b.add_rule("c", &t.chains["c"].rules[0]).unwrap();
        // set, one start and one end element, rule.
        assert_eq!(b.whats.len(), 3);
        let bytes = &b.buf.b;
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[6, 0, 1, 0, 0, 80]), "start 80");
        assert!(has(&[6, 0, 1, 0, 0, 101]), "end 101");
        assert!(!has(&[6, 0, 1, 0, 0, 91]), "no element at 91");
    }

    #[test]
    fn long_comments_are_cut_to_what_nft_takes() {
        let long = "x".repeat(300);
        let c = crate::text::clean(&long);
        assert_eq!(c.len(), 128);
        assert!(c.ends_with("..."));
        let shape = Shape {
            key: vec![DataType::InetService],
            data: None,
            interval: false,
        };
        let e = Element {
            value: None,
            comment: Some(long),
        };
        let mut out = Vec::new();
        element_entries("s", &shape, &[Value::Port(1)], Some(&e), false, &mut out).unwrap();
        assert_eq!(out[0].udata.len(), 2 + 129);
    }

    #[test]
    fn intervals_have_end_elements_or_an_open_flag() {
        let shape = Shape {
            key: vec![DataType::InetService],
            data: None,
            interval: true,
        };
        let mut out = Vec::new();
        let e = Element {
            value: None,
            comment: None,
        };
        element_entries(
            "s",
            &shape,
            &[Value::PortRange(80, 90)],
            Some(&e),
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].key, 91u16.to_be_bytes());
        assert_eq!(out[1].flags, 1);
        out.clear();
        element_entries(
            "s",
            &shape,
            &[Value::PortRange(1, 65535)],
            Some(&e),
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].udata, [1, 4, 1, 0, 0, 0]);
    }
}
