//! Typed nftables. A ruleset is a value — [`Table`] with its [`Chain`]s of
//! [`Rule`]s made of [`Expr`]s, and its [`Set`]s and maps with their
//! elements — and every other form comes from that one value: the nft text
//! that `--dry-run` prints and the `nft -f` fallback loads ([`text`]), the
//! netlink batch of the fast path, the diff between two rulesets, and the
//! packet tracer that walks it as the kernel would.
//!
//! Nothing here parses text back, and no input reaches the text as text:
//! names are checked by [`Table::validate`], interface names by
//! [`Value::ifname`], comments are cleaned when written. A part (the
//! Service proxy, the CNI plugin, the lab, later policy and LB) owns one
//! table and never touches another program's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use indexmap::IndexMap;
use ipnet::IpNet;

pub mod diff;
pub mod netlink;
pub mod text;
pub mod trace;

/// What can be wrong with a ruleset before it reaches the kernel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{what} name {name:?} is not an nftables name (a letter or '_', then letters, digits, '_', '-', '.', '/'; at most {NAME_MAX} bytes)")]
    Name { what: &'static str, name: String },
    #[error("interface name {0:?} is not a Linux interface name (1-15 bytes, no '/', ':', whitespace or quotes)")]
    Ifname(String),
    #[error("chain {chain:?} refers to {what} {name:?}, which the table does not have")]
    Missing {
        chain: String,
        what: &'static str,
        name: String,
    },
    #[error("the kernel refused the transaction: {0}")]
    Netlink(String),
    #[error("trace: {at}: {why}")]
    Trace { at: String, why: String },
    #[error("set {set:?}: element {element} does not fit the set's type ({why})")]
    Element {
        set: String,
        element: String,
        why: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The longest table, chain or set name the kernel takes (NFT_NAME_MAXLEN
/// is 256 with the terminating NUL).
pub const NAME_MAX: usize = 255;

/// A table's address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    #[default]
    Ip,
    Ip6,
    /// Both: rules say which protocol a field is of (`ip daddr`, `ip6 daddr`).
    Inet,
}

/// An IP version, where a statement must say it (NAT in `inet` tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L3 {
    V4,
    V6,
}

impl L3 {
    pub fn of(ip: IpAddr) -> L3 {
        match ip {
            IpAddr::V4(_) => L3::V4,
            IpAddr::V6(_) => L3::V6,
        }
    }
}

/// One table: what a part of strait owns in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    /// Sets and maps, in the order they are declared in text.
    pub sets: IndexMap<String, Set>,
    /// Chains, in the order they are written in text (people read a table
    /// top-down: base chains first). Order has no meaning to the kernel.
    pub chains: IndexMap<String, Chain>,
}

impl Table {
    pub fn new(family: Family, name: &str) -> Table {
        Table {
            family,
            name: name.to_owned(),
            sets: IndexMap::new(),
            chains: IndexMap::new(),
        }
    }

    /// Add (or replace) a chain; returns it for its rules.
    pub fn chain(&mut self, name: &str, chain: Chain) -> &mut Chain {
        let (i, _) = self.chains.insert_full(name.to_owned(), chain);
        &mut self.chains[i]
    }

    /// Add (or replace) a set or map.
    pub fn set(&mut self, name: &str, set: Set) -> &mut Set {
        let (i, _) = self.sets.insert_full(name.to_owned(), set);
        &mut self.sets[i]
    }

    /// Whether the table can be written and sent as it is: every name is an
    /// nftables name, every chain and set a rule names exists, every element
    /// has its set's shape. Renderers check this before anything is applied.
    pub fn validate(&self) -> Result<()> {
        check_name("table", &self.name)?;
        for (name, set) in &self.sets {
            check_name("set", name)?;
            set.validate(name)?;
        }
        for (name, chain) in &self.chains {
            check_name("chain", name)?;
            for rule in &chain.rules {
                for expr in &rule.exprs {
                    for (what, target) in expr.references() {
                        let found = match what {
                            "chain" => self.chains.contains_key(target),
                            _ => self.sets.contains_key(target),
                        };
                        if !found {
                            return Err(Error::Missing {
                                chain: name.clone(),
                                what,
                                name: target.to_owned(),
                            });
                        }
                    }
                    expr.validate_values()?;
                }
            }
        }
        for (name, set) in &self.sets {
            for element in set.elements.values() {
                if let Some(ElementValue::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) =
                    &element.value
                {
                    if !self.chains.contains_key(c) {
                        return Err(Error::Missing {
                            chain: name.clone(),
                            what: "chain",
                            name: c.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Table, chain and set names: what nft's grammar takes as an identifier,
/// so that a name can never end a statement or open another.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
    if first_ok && rest_ok && name.len() <= NAME_MAX {
        Ok(())
    } else {
        Err(Error::Name {
            what,
            name: name.to_owned(),
        })
    }
}

/// A chain. Base chains are hooked into the kernel's packet path; the others
/// run only when a rule jumps or goes to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub base: Option<BaseChain>,
    /// A `# …` line in text, for people (which Service this is for). Not
    /// sent to the kernel; cleaned when written.
    pub note: Option<String>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn regular() -> Chain {
        Chain::default()
    }

    pub fn base(kind: ChainType, hook: Hook, priority: Priority) -> Chain {
        Chain {
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy: Policy::Accept,
            }),
            ..Chain::default()
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Chain {
        self.note = Some(note.into());
        self
    }

    /// Append a rule.
    pub fn rule(&mut self, exprs: Vec<Expr>) -> &mut Chain {
        self.rules.push(Rule::new(exprs));
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: Priority,
    pub policy: Policy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

/// The netfilter hooks, in the order a packet meets them (for a packet to
/// this host: prerouting, input; through it: prerouting, forward,
/// postrouting; from it: output, postrouting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// A base chain's priority: lower runs first at the same hook. The named
/// ones are written by name where nft 1.0.6 takes the name (see [`text`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// -300: before conntrack.
    Raw,
    /// -150.
    Mangle,
    /// -100: destination NAT.
    Dstnat,
    /// 0.
    Filter,
    /// 100: source NAT.
    Srcnat,
    /// Any other number, written as a number.
    Value(i32),
}

impl Priority {
    pub fn value(self) -> i32 {
        match self {
            Priority::Raw => -300,
            Priority::Mangle => -150,
            Priority::Dstnat => -100,
            Priority::Filter => 0,
            Priority::Srcnat => 100,
            Priority::Value(v) => v,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    Accept,
    Drop,
}

/// A rule: its expressions in order; the first that does not match ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub exprs: Vec<Expr>,
}

impl Rule {
    pub fn new(exprs: Vec<Expr>) -> Rule {
        Rule { exprs }
    }
}

/// What a packet carries that a rule can look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    IpSaddr,
    IpDaddr,
    Ip6Saddr,
    Ip6Daddr,
    /// The transport protocol (`meta l4proto`): tcp, udp, sctp, icmp…
    L4Proto,
    /// The packet's family in an inet table (`meta nfproto`).
    NfProto,
    /// The packet mark (`meta mark`).
    Mark,
    /// Input and output interface names (`iifname`, `oifname`).
    Iifname,
    Oifname,
    /// Transport ports, whatever the protocol (`th sport`, `th dport`).
    ThSport,
    ThDport,
    /// Connection tracking state bits (`ct state`): new, established…
    CtState,
    /// Connection tracking status bits (`ct status`): dnat, snat…
    CtStatus,
    /// The route type of an address (`fib daddr type`): local, unicast…
    FibDaddrType,
    FibSaddrType,
    /// A random number in 0..modulus (`numgen random mod N`).
    NumgenRandom {
        modulus: u32,
    },
}

impl Field {
    pub fn saddr(l3: L3) -> Field {
        match l3 {
            L3::V4 => Field::IpSaddr,
            L3::V6 => Field::Ip6Saddr,
        }
    }

    pub fn daddr(l3: L3) -> Field {
        match l3 {
            L3::V4 => Field::IpDaddr,
            L3::V6 => Field::Ip6Daddr,
        }
    }
}

/// A constant a field is compared with or a set element holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Addr(IpAddr),
    /// A network: a prefix match, or an interval element.
    Net(IpNet),
    /// An IP protocol number: 6 tcp, 17 udp, 132 sctp, 1 icmp, 58 icmpv6.
    Proto(u8),
    Port(u16),
    /// An inclusive port range (`80-90`); interval sets and matches only.
    PortRange(u16, u16),
    /// A plain number: a numgen result, a slot.
    Number(u32),
    /// A packet mark (written in hex).
    Mark(u32),
    /// `ct state` bits (see [`ct_state`]).
    CtState(u32),
    /// `ct status` bits (see [`ct_status`]).
    CtStatus(u32),
    /// A route type (see [`addr_type`]).
    AddrType(u8),
    /// `ipv4` or `ipv6` (`meta nfproto`).
    NfProto(L3),
    /// An interface name; build it with [`Value::ifname`].
    Ifname(String),
}

impl Value {
    pub const TCP: Value = Value::Proto(protocol::TCP);
    pub const UDP: Value = Value::Proto(protocol::UDP);
    pub const SCTP: Value = Value::Proto(protocol::SCTP);

    /// An interface name, checked as the kernel checks one (dev_valid_name).
    pub fn ifname(name: &str) -> Result<Value> {
        let v = Value::Ifname(name.to_owned());
        v.validate()?;
        Ok(v)
    }

    fn validate(&self) -> Result<()> {
        if let Value::Ifname(name) = self {
            let ok = !name.is_empty()
                && name.len() <= 15
                && name != "."
                && name != ".."
                && !name.chars().any(|c| {
                    c == '/'
                        || c == ':'
                        || c == '"'
                        || c == '\\'
                        || c.is_whitespace()
                        || c.is_control()
                });
            if !ok {
                return Err(Error::Ifname(name.clone()));
            }
        }
        Ok(())
    }
}

/// IP protocol numbers.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// `ct state` bits, as the kernel numbers them.
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
    pub const UNTRACKED: u32 = 64;
}

/// `ct status` bits.
pub mod ct_status {
    pub const SNAT: u32 = 1 << 4;
    pub const DNAT: u32 = 1 << 5;
}

/// Route types (`fib … type`), as rtnetlink numbers them.
pub mod addr_type {
    pub const UNICAST: u8 = 1;
    pub const LOCAL: u8 = 2;
    pub const BROADCAST: u8 = 3;
    pub const MULTICAST: u8 = 5;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    Eq,
    Ne,
}

/// How a rule changes the packet mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkOp {
    Set(u32),
    Or(u32),
    Xor(u32),
}

/// What a reject sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// nft's default: ICMP port unreachable for IPv4; for IPv6 nft picks
    /// "no route", which clients read differently — say which.
    Default,
    TcpReset,
    IcmpPortUnreachable,
    Icmpv6PortUnreachable,
}

/// Where a rule sends the packet when it matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    /// Back to the calling chain (or the base chain's policy).
    Return,
    /// Into a chain, coming back here when it returns.
    Jump(String),
    /// Into a chain, not coming back.
    Goto(String),
}

/// One step of a rule: a match (the rule ends here for a packet that does
/// not match) or a statement (it acts and the rule goes on, or a verdict
/// ends it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `field == value` / `field != value`. For the bit fields (`ct state`,
    /// `ct status`) `==` means any of the value's bits is set, as nft reads
    /// `ct state new`. A [`Value::Net`] against an address is a prefix
    /// match; a [`Value::PortRange`] a range match.
    Cmp {
        field: Field,
        op: CmpOp,
        value: Value,
    },
    /// `field & mask == value` (`meta mark & 0x4000 == 0`).
    Masked {
        field: Field,
        mask: u32,
        op: CmpOp,
        value: u32,
    },
    /// The concatenation of `key` is (or, when `negate`, is not) in the
    /// named set: `ip saddr . ip daddr @hairpin`.
    Lookup {
        key: Vec<Field>,
        set: String,
        negate: bool,
    },
    /// `field { v1, v2 }`: the field is one of the values.
    OneOf {
        field: Field,
        values: Vec<Value>,
    },
    /// `key vmap @map`: the verdict the map holds for the key. When the key
    /// is absent the rule ends without a verdict and the next rule runs.
    VerdictMap {
        key: Vec<Field>,
        map: String,
    },
    Counter,
    /// `meta mark set meta mark or 0x4000` and the like.
    SetMark(MarkOp),
    Masquerade {
        fully_random: bool,
    },
    Snat {
        to: IpAddr,
    },
    /// `dnat to ADDR[:PORT]`.
    Dnat {
        to: IpAddr,
        port: Option<u16>,
    },
    /// `dnat ip to KEY map @map`: the address and port the map holds for the
    /// key (its value is `addr . port`). When the key is absent nothing is
    /// translated, the rule ends and the next rule runs.
    DnatMap {
        l3: L3,
        key: Vec<Field>,
        map: String,
    },
    /// `update @set { key }`: add the key to a dynamic set (or refresh its
    /// timeout).
    UpdateSet {
        set: String,
        key: Vec<Field>,
    },
    Reject(Reject),
    Verdict(Verdict),
}

impl Expr {
    /// `field == value`.
    pub fn eq(field: Field, value: Value) -> Expr {
        Expr::Cmp {
            field,
            op: CmpOp::Eq,
            value,
        }
    }

    /// `field != value`.
    pub fn ne(field: Field, value: Value) -> Expr {
        Expr::Cmp {
            field,
            op: CmpOp::Ne,
            value,
        }
    }

    pub fn lookup(key: &[Field], set: &str) -> Expr {
        Expr::Lookup {
            key: key.to_vec(),
            set: set.to_owned(),
            negate: false,
        }
    }

    pub fn not_in(key: &[Field], set: &str) -> Expr {
        Expr::Lookup {
            key: key.to_vec(),
            set: set.to_owned(),
            negate: true,
        }
    }

    pub fn vmap(key: &[Field], map: &str) -> Expr {
        Expr::VerdictMap {
            key: key.to_vec(),
            map: map.to_owned(),
        }
    }

    pub fn jump(chain: &str) -> Expr {
        Expr::Verdict(Verdict::Jump(chain.to_owned()))
    }

    pub fn goto(chain: &str) -> Expr {
        Expr::Verdict(Verdict::Goto(chain.to_owned()))
    }

    pub fn accept() -> Expr {
        Expr::Verdict(Verdict::Accept)
    }

    pub fn drop() -> Expr {
        Expr::Verdict(Verdict::Drop)
    }

    pub fn ret() -> Expr {
        Expr::Verdict(Verdict::Return)
    }

    /// Whether the constants of this step can be written (interface names).
    fn validate_values(&self) -> Result<()> {
        match self {
            Expr::Cmp { value, .. } => value.validate(),
            Expr::OneOf { values, .. } => values.iter().try_for_each(Value::validate),
            _ => Ok(()),
        }
    }

    /// The chains (`"chain"`) and sets (`"set"`) this step names.
    pub fn references(&self) -> Vec<(&'static str, &str)> {
        match self {
            Expr::Lookup { set, .. } | Expr::UpdateSet { set, .. } => vec![("set", set.as_str())],
            Expr::VerdictMap { map, .. } | Expr::DnatMap { map, .. } => {
                vec![("set", map.as_str())]
            }
            Expr::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) => vec![("chain", c.as_str())],
            _ => Vec::new(),
        }
    }
}

/// The type of one part of a set's key or a map's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    /// A protocol number (`inet_proto`).
    InetProto,
    /// A port (`inet_service`).
    InetService,
    Mark,
    Ifname,
    /// A number from `numgen` (nft has no type name for it: a set using it
    /// is declared with `typeof`).
    Slot,
}

impl DataType {
    pub fn addr(l3: L3) -> DataType {
        match l3 {
            L3::V4 => DataType::Ipv4Addr,
            L3::V6 => DataType::Ipv6Addr,
        }
    }
}

/// What a map's elements hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MapData {
    Verdict,
    /// A value of these types (`ipv4_addr . inet_service` for DNAT maps).
    Value(Vec<DataType>),
}

/// A named set, or a map when it has `data`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Set {
    /// The key's types; several are a concatenation.
    pub key: Vec<DataType>,
    pub data: Option<MapData>,
    pub flags: SetFlags,
    /// Seconds an element lives (sets with the timeout flag).
    pub timeout: Option<u32>,
    pub elements: BTreeMap<Vec<Value>, Element>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SetFlags {
    /// Elements may be networks and ranges.
    pub interval: bool,
    /// Rules add elements (`update @set`).
    pub dynamic: bool,
    pub timeout: bool,
}

impl Set {
    pub fn new(key: &[DataType]) -> Set {
        Set {
            key: key.to_vec(),
            ..Set::default()
        }
    }

    pub fn map(key: &[DataType], data: MapData) -> Set {
        Set {
            key: key.to_vec(),
            data: Some(data),
            ..Set::default()
        }
    }

    pub fn interval(mut self) -> Set {
        self.flags.interval = true;
        self
    }

    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }

    /// Add (or replace) an element.
    pub fn insert(&mut self, key: Vec<Value>, value: Option<ElementValue>) {
        self.elements.insert(
            key,
            Element {
                value,
                comment: None,
            },
        );
    }

    /// Whether each element has the set's shape: a value per key type, of
    /// that type (networks and ranges only in interval sets), a value when
    /// and only when this is a map.
    fn validate(&self, name: &str) -> Result<()> {
        for (key, element) in &self.elements {
            let bad = |why: &str| Error::Element {
                set: name.to_owned(),
                element: text::values(key),
                why: why.to_owned(),
            };
            if key.len() != self.key.len() {
                return Err(bad("wrong number of fields"));
            }
            for (v, ty) in key.iter().zip(&self.key) {
                v.validate()?;
                if !fits(v, *ty, self.flags.interval) {
                    return Err(bad(&format!("{v:?} is not a {ty:?}")));
                }
            }
            match (&self.data, &element.value) {
                (None, None) | (Some(MapData::Verdict), Some(ElementValue::Verdict(_))) => {}
                (Some(MapData::Value(types)), Some(ElementValue::Data(values))) => {
                    if types.len() != values.len()
                        || !values.iter().zip(types).all(|(v, t)| fits(v, *t, false))
                    {
                        return Err(bad("the value does not fit the map's type"));
                    }
                }
                _ => {
                    return Err(bad(
                        "a value where there is none, or none where there is one",
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Whether `v` is a value of type `ty`.
pub fn fits(v: &Value, ty: DataType, interval: bool) -> bool {
    match (v, ty) {
        (Value::Addr(IpAddr::V4(_)), DataType::Ipv4Addr)
        | (Value::Addr(IpAddr::V6(_)), DataType::Ipv6Addr)
        | (Value::Proto(_), DataType::InetProto)
        | (Value::Port(_), DataType::InetService)
        | (Value::Mark(_), DataType::Mark)
        | (Value::Ifname(_), DataType::Ifname)
        | (Value::Number(_), DataType::Slot) => true,
        (Value::Net(IpNet::V4(_)), DataType::Ipv4Addr)
        | (Value::Net(IpNet::V6(_)), DataType::Ipv6Addr)
        | (Value::PortRange(..), DataType::InetService) => interval,
        _ => false,
    }
}

/// One element of a set or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The value, in maps.
    pub value: Option<ElementValue>,
    /// For people (`nft list` shows it); cleaned when written.
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementValue {
    Verdict(Verdict),
    Data(Vec<Value>),
}

/// One step of a transaction on one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create the table if it is not there (a no-op if it is).
    AddTable,
    DeleteTable,
    /// Declare a set or map (its elements are not part of this step).
    AddSet {
        name: String,
        set: Set,
    },
    DeleteSet(String),
    AddChain {
        name: String,
        base: Option<BaseChain>,
    },
    /// Remove every rule of a chain.
    FlushChain(String),
    DeleteChain(String),
    /// Append a rule to a chain.
    AddRule {
        chain: String,
        rule: Rule,
    },
    AddElements {
        set: String,
        elements: Vec<(Vec<Value>, Element)>,
    },
    DeleteElements {
        set: String,
        keys: Vec<Vec<Value>>,
    },
}

/// Steps on one table that the kernel applies all together or not at all
/// (one netlink batch, or one `nft -f` script).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub family: Family,
    pub table: String,
    pub ops: Vec<Op>,
}

impl Transaction {
    pub fn new(family: Family, table: &str) -> Transaction {
        Transaction {
            family,
            table: table.to_owned(),
            ops: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether every name and constant of the steps can be written as nft
    /// text: the check the `nft -f` fallback makes before it writes, as the
    /// netlink encoder does before it encodes (whether the chains and sets
    /// named exist is the kernel's to say, atomically).
    pub fn validate(&self) -> Result<()> {
        check_name("table", &self.table)?;
        let verdict = |v: &Verdict| match v {
            Verdict::Jump(c) | Verdict::Goto(c) => check_name("chain", c),
            _ => Ok(()),
        };
        for op in &self.ops {
            match op {
                Op::AddTable | Op::DeleteTable => {}
                Op::AddSet { name, .. } | Op::DeleteSet(name) => check_name("set", name)?,
                Op::AddChain { name, .. } | Op::FlushChain(name) | Op::DeleteChain(name) => {
                    check_name("chain", name)?
                }
                Op::AddRule { chain, rule } => {
                    check_name("chain", chain)?;
                    for expr in &rule.exprs {
                        for (what, target) in expr.references() {
                            check_name(what, target)?;
                        }
                        expr.validate_values()?;
                    }
                }
                Op::AddElements { set, elements } => {
                    check_name("set", set)?;
                    for (key, element) in elements {
                        key.iter().try_for_each(Value::validate)?;
                        match &element.value {
                            Some(ElementValue::Verdict(v)) => verdict(v)?,
                            Some(ElementValue::Data(values)) => {
                                values.iter().try_for_each(Value::validate)?
                            }
                            None => {}
                        }
                    }
                }
                Op::DeleteElements { set, keys } => {
                    check_name("set", set)?;
                    for key in keys {
                        key.iter().try_for_each(Value::validate)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
