//! A packet tracer over typed rulesets: give it the node's tables, a small
//! picture of the node (its local addresses and routes) and a packet, and it
//! walks the netfilter hooks in the kernel's order, every base chain of
//! every table at a hook in priority order, and returns what happens to the
//! packet — for a random choice (`numgen random`), every possible outcome
//! with its probability.
//!
//! What it follows, as nf_tables and conntrack do:
//!
//! - Hooks: from an interface, prerouting, then the routing decision (a
//!   local address: input; else forward, postrouting); from this host,
//!   output, postrouting (and, for a local destination, back in through
//!   `lo`: prerouting, input).
//! - Base chains of a hook run by priority; tables with the same priority in
//!   the order they were given (the kernel's order of registration). NAT
//!   chains all run inside conntrack's NAT hook (priority -100 for
//!   prerouting and output, 100 for input and postrouting), ordered among
//!   themselves by their own priority, only for the first packet of a
//!   connection (`ct state new`), and only until one of them translates;
//!   later packets get the translation the connection has ([`Conntrack`]).
//! - `accept` (and a NAT statement, which accepts) ends the base chain only:
//!   the packet goes on to the next base chain and hook. `drop` and
//!   `reject` end everything.
//! - `jump` comes back, `goto` does not, `return` goes back (or to the base
//!   chain's policy); at most 16 levels, as the kernel refuses deeper ones.
//! - A field the packet does not have (no output interface yet, `ip saddr`
//!   of an IPv6 packet, ports of ICMP) ends the rule whatever the operator,
//!   as the kernel's expressions break.
//!
//! Nothing is learnt from text; errors (a loop, a missing chain, a NAT
//! statement where the kernel refuses one, too many random branches) are
//! returned, never panicked on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    addr_type, ct_state, ct_status, text, BaseChain, ChainType, CmpOp, ElementValue, Error, Expr,
    Family, Field, Hook, MapData, MarkOp, Policy, Reject, Result, Rule, Table, Value, Verdict, L3,
};

/// Deepest chain nesting (jumps and gotos from a base chain), as the
/// kernel's NFT_JUMP_STACK_SIZE.
pub const MAX_DEPTH: usize = 16;
/// Most distinct random paths one trace may follow.
pub const MAX_RUNS: usize = 10_000;
/// Most rule evaluations in one path.
pub const MAX_STEPS: usize = 100_000;
/// Largest `numgen random mod N` whose values are enumerated.
pub const MAX_MODULUS: u32 = 1 << 16;

/// Where a packet comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// In from the interface of this name (prerouting first).
    Interface(String),
    /// Sent by a process of this host (output first).
    Local,
}

/// What conntrack knows of the packet's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conntrack {
    /// `ct state` bits ([`ct_state`]): `NEW` for a connection's first packet.
    pub state: u32,
    /// `ct status` bits ([`ct_status`]) before this packet.
    pub status: u32,
    /// For a later packet, the destination its connection was translated to
    /// (NAT chains are not consulted again).
    pub dnat: Option<(IpAddr, Option<u16>)>,
    /// For a later packet, the source its connection was translated to (by
    /// a masquerade or an SNAT).
    pub snat: Option<IpAddr>,
}

impl Default for Conntrack {
    fn default() -> Conntrack {
        Conntrack {
            state: ct_state::NEW,
            status: 0,
            dnat: None,
            snat: None,
        }
    }
}

/// The packet to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub origin: Origin,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// IP protocol number ([`crate::protocol`]).
    pub protocol: u8,
    /// Transport ports; `None` for protocols without them (ICMP).
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub ct: Conntrack,
    pub mark: u32,
}

impl Packet {
    /// A first packet of `protocol` from `saddr:sport` to `daddr:dport`, in
    /// from interface `iif`.
    pub fn new(
        iif: &str,
        protocol: u8,
        saddr: IpAddr,
        sport: u16,
        daddr: IpAddr,
        dport: u16,
    ) -> Packet {
        Packet {
            origin: Origin::Interface(iif.to_owned()),
            saddr,
            daddr,
            protocol,
            sport: Some(sport),
            dport: Some(dport),
            ct: Conntrack::default(),
            mark: 0,
        }
    }

    /// The same packet, sent by this host instead.
    pub fn local(mut self) -> Packet {
        self.origin = Origin::Local;
        self
    }

    /// The same packet as a later one of its connection, translated to
    /// `dnat` when the first one was.
    pub fn established(mut self, dnat: Option<(IpAddr, Option<u16>)>) -> Packet {
        self.ct.state = ct_state::ESTABLISHED;
        if dnat.is_some() {
            self.ct.status |= ct_status::DNAT;
        }
        self.ct.dnat = dnat;
        self
    }
}

/// A route of the node: where packets to `to` leave, and the address a
/// masquerade there takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub to: IpNet,
    pub oif: String,
    pub src: Option<IpAddr>,
}

/// A set of a table: family, table name, set name.
pub type SetRef = (Family, String, String);

/// What the tracer needs to know of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// The node's own addresses (`fib … type local`, and the routing
    /// decision: local → input). Loopback addresses are always local.
    pub local: Vec<IpAddr>,
    /// Routes, longest prefix first wins: the output interface of forwarded
    /// and sent packets. With no routes at all every other address is
    /// reachable through an unnamed interface.
    pub routes: Vec<Route>,
    /// Elements already in dynamic sets (session affinity hits).
    pub sets: BTreeMap<SetRef, BTreeSet<Vec<Value>>>,
}

impl Node {
    /// Put `key` into the dynamic set `set` of table `family table`.
    pub fn seed(&mut self, family: Family, table: &str, set: &str, key: Vec<Value>) {
        self.sets
            .entry((family, table.to_owned(), set.to_owned()))
            .or_default()
            .insert(key);
    }

    fn is_local(&self, addr: IpAddr) -> bool {
        addr.is_loopback() || self.local.contains(&addr)
    }

    fn route(&self, addr: IpAddr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.to.contains(&addr))
            .max_by_key(|r| r.to.prefix_len())
    }

    fn addr_type(&self, addr: IpAddr) -> u8 {
        let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
        if self.is_local(addr) {
            addr_type::LOCAL
        } else if addr.is_multicast() {
            addr_type::MULTICAST
        } else if broadcast {
            addr_type::BROADCAST
        } else if !self.routes.is_empty() && self.route(addr).is_none() {
            // RTN_UNREACHABLE
            7
        } else {
            addr_type::UNICAST
        }
    }
}

/// How a packet's way ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fate {
    /// Delivered to a socket of this host (after input).
    Local,
    /// Forwarded out of [`Outcome::oif`] (after postrouting).
    Forwarded,
    /// Sent by this host out of [`Outcome::oif`] (after postrouting).
    Sent,
    Dropped,
    /// Dropped with an answer to the sender.
    Rejected(Reject),
    /// No route to the destination (the kernel answers host unreachable).
    NoRoute,
}

impl Fate {
    /// Whether the packet goes on (delivered, forwarded or sent).
    pub fn passes(&self) -> bool {
        matches!(self, Fate::Local | Fate::Forwarded | Fate::Sent)
    }
}

/// One rule (or a base chain's policy) the packet met.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub hook: Hook,
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// The rule's index in its chain; `None` for the base chain's policy.
    pub rule: Option<usize>,
    /// The rule as nft writes it (`policy accept` for a policy).
    pub text: String,
    /// Whether every match of the rule held (its statements ran).
    pub matched: bool,
}

/// One possible way of the packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The chance of this way (random choices); all outcomes sum to 1.
    pub probability: f64,
    pub fate: Fate,
    /// The destination after any DNAT.
    pub daddr: IpAddr,
    pub dport: Option<u16>,
    /// Whether a DNAT changed the destination.
    pub dnat: bool,
    pub masquerade: bool,
    /// The source a masquerade (the route's `src`, when known) or an SNAT
    /// gave the packet.
    pub snat: Option<IpAddr>,
    /// The packet mark at the end.
    pub mark: u32,
    /// The output interface, when one was chosen.
    pub oif: Option<String>,
    /// Keys `update @set` added: (set, key).
    pub updates: Vec<(SetRef, Vec<Value>)>,
    /// The rules evaluated, in order.
    pub path: Vec<Step>,
}

impl Outcome {
    /// Everything but the probability is the same.
    fn same_way(&self, other: &Outcome) -> bool {
        self.fate == other.fate
            && self.daddr == other.daddr
            && self.dport == other.dport
            && self.dnat == other.dnat
            && self.masquerade == other.masquerade
            && self.snat == other.snat
            && self.mark == other.mark
            && self.oif == other.oif
            && self.updates == other.updates
            && self.path == other.path
    }

    fn way_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &self.fate,
            self.daddr,
            self.dport,
            self.dnat,
            self.masquerade,
            self.snat,
            self.mark,
            &self.oif,
            &self.updates,
            &self.path,
        )
            .hash(&mut h);
        h.finish()
    }

    /// The rule that dropped or rejected the packet, if one did.
    pub fn stopped_by(&self) -> Option<&Step> {
        if self.fate.passes() {
            None
        } else {
            self.path.iter().rev().find(|s| s.matched)
        }
    }
}

/// Per destination (address, port) the packet reaches (delivered,
/// forwarded or sent), the summed probability, in address order.
pub fn destinations(outcomes: &[Outcome]) -> Vec<((IpAddr, Option<u16>), f64)> {
    let mut by: BTreeMap<(IpAddr, Option<u16>), f64> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.fate.passes()) {
        *by.entry((o.daddr, o.dport)).or_default() += o.probability;
    }
    by.into_iter().collect()
}

/// Per fate, the summed probability.
pub fn fates(outcomes: &[Outcome]) -> Vec<(Fate, f64)> {
    let mut by: BTreeMap<Fate, f64> = BTreeMap::new();
    for o in outcomes {
        *by.entry(o.fate.clone()).or_default() += o.probability;
    }
    by.into_iter().collect()
}

/// Trace `packet` through `tables` on `node`: every possible outcome with
/// its probability (identical ways merged).
pub fn trace(tables: &[&Table], node: &Node, packet: &Packet) -> Result<Vec<Outcome>> {
    for t in tables {
        t.validate()?;
    }
    for (i, a) in tables.iter().enumerate() {
        if tables[..i]
            .iter()
            .any(|b| b.family == a.family && b.name == a.name)
        {
            return Err(fail(
                format!("table {} {}", text::family(a.family), a.name),
                "given twice",
            ));
        }
    }
    if L3::of(packet.saddr) != L3::of(packet.daddr) {
        return Err(fail(
            "packet",
            "source and destination of different families",
        ));
    }
    let translated = packet
        .ct
        .dnat
        .map(|(to, _)| to)
        .into_iter()
        .chain(packet.ct.snat);
    if translated
        .into_iter()
        .any(|to| L3::of(to) != L3::of(packet.daddr))
    {
        return Err(fail("packet", "conntrack translation to another family"));
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    // Outcomes by a hash of their way, to merge identical ones quickly.
    let mut seen: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    let mut pending: Vec<Vec<usize>> = vec![Vec::new()];
    let mut runs = 0;
    while let Some(choices) = pending.pop() {
        runs += 1;
        if runs > MAX_RUNS {
            return Err(fail("trace", &format!("more than {MAX_RUNS} random paths")));
        }
        let mut run = Run::new(tables, node, packet, &choices);
        match run.walk() {
            Ok(fate) => {
                let o = run.outcome(fate);
                let bucket = seen.entry(o.way_hash()).or_default();
                match bucket.iter().find(|i| outcomes[**i].same_way(&o)) {
                    Some(i) => outcomes[*i].probability += o.probability,
                    None => {
                        bucket.push(outcomes.len());
                        outcomes.push(o);
                    }
                }
            }
            Err(Halt::Branch(n)) => {
                // Depth first, lowest choice first: a stable order.
                for i in (0..n).rev() {
                    let mut c = choices.clone();
                    c.push(i);
                    pending.push(c);
                }
            }
            Err(Halt::Fail(e)) => return Err(e),
        }
    }
    Ok(outcomes)
}

fn fail(at: impl Into<String>, why: &str) -> Error {
    Error::Trace {
        at: at.into(),
        why: why.to_owned(),
    }
}

/// Why a run stopped before its end.
enum Halt {
    /// A random choice among this many alternatives not yet made.
    Branch(usize),
    Fail(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Halt {
        Halt::Fail(e)
    }
}

type Walk<T> = std::result::Result<T, Halt>;

/// How a rule ends.
enum RuleEnd {
    /// A match failed: the next rule runs.
    NoMatch,
    /// Every step ran, no verdict: the next rule runs.
    Continue,
    Verdict(Verdict),
    Reject(Reject),
    /// A NAT statement: set up, and the base chain accepts.
    Nat,
}

/// How a base chain ends.
enum ChainEnd {
    Accept,
    Drop,
    Reject(Reject),
}

/// A base chain at a hook: index of the table, the chain's name.
struct Hooked<'a> {
    order: (i32, i32, usize, usize),
    table: &'a Table,
    name: &'a str,
    base: BaseChain,
}

/// One deterministic walk: random choices come from `choices`; the first
/// one beyond them halts the walk with [`Halt::Branch`].
struct Run<'a> {
    tables: &'a [&'a Table],
    node: &'a Node,
    choices: &'a [usize],
    used: usize,
    probability: f64,
    steps: usize,
    // The packet as it is now.
    l3: L3,
    saddr: IpAddr,
    daddr: IpAddr,
    dport: Option<u16>,
    original: (IpAddr, Option<u16>),
    mark: u32,
    ct_state: u32,
    ct_status: u32,
    iif: Option<String>,
    oif: Option<String>,
    packet: &'a Packet,
    dnat_done: bool,
    snat_done: bool,
    masquerade: bool,
    snat: Option<IpAddr>,
    updates: Vec<(SetRef, Vec<Value>)>,
    path: Vec<Step>,
    // The hook and chain being run, for steps and errors.
    hook: Hook,
}

impl<'a> Run<'a> {
    fn new(
        tables: &'a [&'a Table],
        node: &'a Node,
        packet: &'a Packet,
        choices: &'a [usize],
    ) -> Run<'a> {
        Run {
            tables,
            node,
            choices,
            used: 0,
            probability: 1.0,
            steps: 0,
            l3: L3::of(packet.daddr),
            saddr: packet.saddr,
            daddr: packet.daddr,
            dport: packet.dport,
            original: (packet.daddr, packet.dport),
            mark: packet.mark,
            ct_state: packet.ct.state,
            ct_status: packet.ct.status,
            iif: None,
            oif: None,
            packet,
            dnat_done: false,
            snat_done: false,
            masquerade: false,
            snat: None,
            updates: Vec::new(),
            path: Vec::new(),
            hook: Hook::Prerouting,
        }
    }

    fn outcome(self, fate: Fate) -> Outcome {
        Outcome {
            probability: self.probability,
            fate,
            daddr: self.daddr,
            dport: self.dport,
            dnat: (self.daddr, self.dport) != self.original,
            masquerade: self.masquerade,
            snat: self.snat,
            mark: self.mark,
            oif: self.oif,
            updates: self.updates,
            path: self.path,
        }
    }

    /// Take the next random choice among alternatives of these
    /// probabilities (zero ones are never taken).
    fn choose(&mut self, probabilities: &[f64]) -> Walk<usize> {
        let live: Vec<usize> = (0..probabilities.len())
            .filter(|i| probabilities[*i] > 0.0)
            .collect();
        if live.len() == 1 {
            return Ok(live[0]);
        }
        if self.used == self.choices.len() {
            return Err(Halt::Branch(live.len()));
        }
        let pick = live
            .get(self.choices[self.used])
            .copied()
            .ok_or_else(|| fail("trace", "internal: a choice out of range"))?;
        self.used += 1;
        self.probability *= probabilities[pick];
        Ok(pick)
    }

    /// The packet's way through the hooks.
    fn walk(&mut self) -> Walk<Fate> {
        match &self.packet.origin {
            Origin::Interface(iif) => {
                self.iif = Some(iif.clone());
                if let Some(end) = self.hook(Hook::Prerouting)? {
                    return Ok(end);
                }
                self.after_routing()
            }
            Origin::Local => {
                if self.node.is_local(self.daddr) {
                    self.oif = Some("lo".into());
                } else {
                    match self.node.route(self.daddr) {
                        Some(r) => self.oif = Some(r.oif.clone()),
                        None if self.node.routes.is_empty() => {}
                        None => return Ok(Fate::NoRoute),
                    }
                }
                let before = self.daddr;
                if let Some(end) = self.hook(Hook::Output)? {
                    return Ok(end);
                }
                if self.daddr != before {
                    // Rerouted after the output NAT.
                    if self.node.is_local(self.daddr) {
                        self.oif = Some("lo".into());
                    } else {
                        match self.node.route(self.daddr) {
                            Some(r) => self.oif = Some(r.oif.clone()),
                            None if self.node.routes.is_empty() => self.oif = None,
                            None => return Ok(Fate::NoRoute),
                        }
                    }
                }
                if let Some(end) = self.hook(Hook::Postrouting)? {
                    return Ok(end);
                }
                if self.node.is_local(self.daddr) {
                    // Back in through loopback; conntrack has the
                    // connection already, its NAT is set up.
                    self.iif = Some("lo".into());
                    self.oif = None;
                    if let Some(end) = self.hook(Hook::Prerouting)? {
                        return Ok(end);
                    }
                    if let Some(end) = self.hook(Hook::Input)? {
                        return Ok(end);
                    }
                    return Ok(Fate::Local);
                }
                Ok(Fate::Sent)
            }
        }
    }

    /// After prerouting: input for a local destination, else forward and
    /// postrouting.
    fn after_routing(&mut self) -> Walk<Fate> {
        if self.node.is_local(self.daddr) {
            if let Some(end) = self.hook(Hook::Input)? {
                return Ok(end);
            }
            return Ok(Fate::Local);
        }
        match self.node.route(self.daddr) {
            Some(r) => self.oif = Some(r.oif.clone()),
            None if self.node.routes.is_empty() => {}
            None => return Ok(Fate::NoRoute),
        }
        if let Some(end) = self.hook(Hook::Forward)? {
            return Ok(end);
        }
        if let Some(end) = self.hook(Hook::Postrouting)? {
            return Ok(end);
        }
        Ok(Fate::Forwarded)
    }

    fn family_fits(&self, f: Family) -> bool {
        matches!(
            (f, self.l3),
            (Family::Inet, _) | (Family::Ip, L3::V4) | (Family::Ip6, L3::V6)
        )
    }

    /// Run every base chain at `hook`; `Some(fate)` when the packet ends
    /// here.
    fn hook(&mut self, hook: Hook) -> Walk<Option<Fate>> {
        self.hook = hook;
        // NAT chains run inside conntrack's NAT hook at its fixed priority.
        let nat_priority = match hook {
            Hook::Prerouting | Hook::Output => -100,
            Hook::Input | Hook::Postrouting => 100,
            Hook::Forward => 0,
        };
        let mut hooked: Vec<Hooked<'a>> = Vec::new();
        let tables = self.tables;
        for (ti, t) in tables.iter().enumerate() {
            if !self.family_fits(t.family) {
                continue;
            }
            for (ci, (name, chain)) in t.chains.iter().enumerate() {
                let Some(base) = chain.base else { continue };
                if base.hook != hook {
                    continue;
                }
                if base.kind == ChainType::Nat && hook == Hook::Forward {
                    return Err(fail(
                        format!("table {} {} chain {name}", text::family(t.family), t.name),
                        "a NAT chain at forward (the kernel has no NAT there)",
                    )
                    .into());
                }
                let own = base.priority.value();
                let order = if base.kind == ChainType::Nat {
                    (nat_priority, own, ti, ci)
                } else {
                    (own, i32::MIN, ti, ci)
                };
                hooked.push(Hooked {
                    order,
                    table: t,
                    name,
                    base,
                });
            }
        }
        hooked.sort_by_key(|h| h.order);
        let dst_manip = matches!(hook, Hook::Prerouting | Hook::Output);
        let src_manip = matches!(hook, Hook::Input | Hook::Postrouting);
        let new = self.ct_state & ct_state::NEW != 0;
        // Where conntrack's NAT hook sits among the chains: for a later
        // packet the connection's translation happens there.
        let mut nat_point_passed = !(dst_manip || src_manip);
        for h in &hooked {
            if !nat_point_passed && h.order.0 >= nat_priority {
                self.nat_point(dst_manip, new);
                nat_point_passed = true;
            }
            if h.base.kind == ChainType::Nat {
                let done = if dst_manip {
                    self.dnat_done
                } else {
                    self.snat_done
                };
                if !new || done {
                    continue;
                }
            }
            match self.base_chain(h)? {
                ChainEnd::Accept => {}
                ChainEnd::Drop => return Ok(Some(Fate::Dropped)),
                ChainEnd::Reject(r) => return Ok(Some(Fate::Rejected(r))),
            }
        }
        if !nat_point_passed {
            self.nat_point(dst_manip, new);
        }
        // Conntrack sets up a null binding for a new connection that no
        // chain translated: NAT chains are not consulted again.
        if new && dst_manip {
            self.dnat_done = true;
        }
        if new && src_manip {
            self.snat_done = true;
        }
        Ok(None)
    }

    /// A later packet gets its connection's translation at the NAT hook.
    fn nat_point(&mut self, dst_manip: bool, new: bool) {
        if new {
            return;
        }
        if dst_manip && !self.dnat_done {
            if let Some((to, port)) = self.packet.ct.dnat {
                self.daddr = to;
                if port.is_some() {
                    self.dport = port;
                }
            }
            self.dnat_done = true;
        } else if !dst_manip && !self.snat_done {
            if let Some(to) = self.packet.ct.snat {
                self.snat = Some(to);
            }
            self.snat_done = true;
        }
    }

    fn at(&self, table: &Table, chain: &str, rule: Option<usize>) -> String {
        let mut s = format!(
            "table {} {} chain {chain}",
            text::family(table.family),
            table.name
        );
        if let Some(r) = rule {
            s.push_str(&format!(" rule {r}"));
        }
        s
    }

    /// Run one base chain with its jumps, gotos and returns.
    fn base_chain(&mut self, h: &Hooked<'a>) -> Walk<ChainEnd> {
        let table = h.table;
        // (chain, next rule, level) to come back to.
        let mut stack: Vec<(&'a str, usize, usize)> = Vec::new();
        let mut chain: &'a str = h.name;
        let mut index = 0usize;
        let mut level = 0usize;
        let policy = |run: &mut Run<'a>| {
            run.path.push(Step {
                hook: run.hook,
                family: table.family,
                table: table.name.clone(),
                chain: h.name.to_owned(),
                rule: None,
                text: match h.base.policy {
                    Policy::Accept => "policy accept".into(),
                    Policy::Drop => "policy drop".into(),
                },
                matched: true,
            });
            match h.base.policy {
                Policy::Accept => ChainEnd::Accept,
                Policy::Drop => ChainEnd::Drop,
            }
        };
        loop {
            let Some(c) = table.chains.get(chain) else {
                return Err(fail(self.at(table, chain, None), "no such chain in the table").into());
            };
            let Some(rule) = c.rules.get(index) else {
                // End of a chain: back to the caller, or the policy.
                match stack.pop() {
                    Some((ch, i, l)) => {
                        (chain, index, level) = (ch, i, l);
                        continue;
                    }
                    None => return Ok(policy(self)),
                }
            };
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(fail(
                    self.at(table, chain, Some(index)),
                    &format!("more than {MAX_STEPS} rules evaluated"),
                )
                .into());
            }
            let step_at = self.path.len();
            self.path.push(Step {
                hook: self.hook,
                family: table.family,
                table: table.name.clone(),
                chain: chain.to_owned(),
                rule: Some(index),
                text: text::rule(rule, table.family),
                matched: false,
            });
            let end = match self.rule(table, h.base, rule) {
                Ok(end) => end,
                Err(Halt::Fail(Error::Trace { at, why })) if at.is_empty() => {
                    return Err(fail(self.at(table, chain, Some(index)), &why).into())
                }
                Err(other) => return Err(other),
            };
            if !matches!(end, RuleEnd::NoMatch) {
                self.path[step_at].matched = true;
            }
            let verdict = match end {
                RuleEnd::NoMatch | RuleEnd::Continue => {
                    index += 1;
                    continue;
                }
                RuleEnd::Nat => return Ok(ChainEnd::Accept),
                RuleEnd::Reject(r) => return Ok(ChainEnd::Reject(r)),
                RuleEnd::Verdict(v) => v,
            };
            match verdict {
                Verdict::Accept => return Ok(ChainEnd::Accept),
                Verdict::Drop => return Ok(ChainEnd::Drop),
                Verdict::Return => match stack.pop() {
                    Some((ch, i, l)) => (chain, index, level) = (ch, i, l),
                    None => return Ok(policy(self)),
                },
                Verdict::Jump(ref to) | Verdict::Goto(ref to) => {
                    let jump = matches!(verdict, Verdict::Jump(_));
                    let Some((name, _)) = table.chains.get_key_value(to.as_str()) else {
                        return Err(fail(
                            self.at(table, chain, Some(index)),
                            &format!("jumps to chain {to:?}, which the table does not have"),
                        )
                        .into());
                    };
                    if table.chains[name.as_str()].base.is_some() {
                        return Err(fail(
                            self.at(table, chain, Some(index)),
                            &format!("jumps to base chain {to:?} (the kernel refuses it)"),
                        )
                        .into());
                    }
                    if level + 1 > MAX_DEPTH {
                        return Err(fail(
                            self.at(table, chain, Some(index)),
                            &format!("jumps deeper than {MAX_DEPTH} chains (a loop?)"),
                        )
                        .into());
                    }
                    if jump {
                        stack.push((chain, index + 1, level));
                    }
                    chain = name.as_str();
                    index = 0;
                    level += 1;
                }
            }
        }
    }

    /// The value of a field of the packet now; `None` when the packet has
    /// no such field (the kernel's expression breaks the rule).
    fn field(&self, f: Field) -> Option<Value> {
        let v4 = self.l3 == L3::V4;
        let ports = matches!(
            self.packet.protocol,
            crate::protocol::TCP | crate::protocol::UDP | crate::protocol::SCTP | 33 | 136
        );
        match f {
            Field::IpSaddr if v4 => Some(Value::Addr(self.saddr)),
            Field::IpDaddr if v4 => Some(Value::Addr(self.daddr)),
            Field::Ip6Saddr if !v4 => Some(Value::Addr(self.saddr)),
            Field::Ip6Daddr if !v4 => Some(Value::Addr(self.daddr)),
            Field::IpSaddr | Field::IpDaddr | Field::Ip6Saddr | Field::Ip6Daddr => None,
            Field::L4Proto => Some(Value::Proto(self.packet.protocol)),
            Field::NfProto => Some(Value::NfProto(self.l3)),
            Field::Mark => Some(Value::Mark(self.mark)),
            Field::Iifname => self.iif.clone().map(Value::Ifname),
            Field::Oifname => self.oif.clone().map(Value::Ifname),
            Field::ThSport if ports => self.packet.sport.map(Value::Port),
            Field::ThDport if ports => self.dport.map(Value::Port),
            Field::ThSport | Field::ThDport => None,
            Field::CtState => Some(Value::CtState(self.ct_state)),
            Field::CtStatus => Some(Value::CtStatus(self.ct_status)),
            Field::FibDaddrType => Some(Value::AddrType(self.node.addr_type(self.daddr))),
            Field::FibSaddrType => Some(Value::AddrType(self.node.addr_type(self.saddr))),
            // Drawn where it is used (see `random`).
            Field::NumgenRandom { .. } => None,
        }
    }

    /// A numeric view of a field, for masked compares.
    fn number(v: &Value) -> Option<u32> {
        match v {
            Value::Mark(m) | Value::CtState(m) | Value::CtStatus(m) | Value::Number(m) => Some(*m),
            Value::Proto(p) => Some(u32::from(*p)),
            Value::Port(p) => Some(u32::from(*p)),
            Value::AddrType(t) => Some(u32::from(*t)),
            _ => None,
        }
    }

    /// Draw `numgen random mod modulus` for a predicate: the values that
    /// make it hold against those that do not, by their share.
    fn random(&mut self, modulus: u32, holds: impl Fn(u32) -> bool, at: &str) -> Walk<bool> {
        if modulus == 0 || modulus > MAX_MODULUS {
            return Err(fail(
                at,
                &format!("numgen modulus {modulus} out of 1..={MAX_MODULUS}"),
            )
            .into());
        }
        let yes = (0..modulus).filter(|r| holds(*r)).count() as f64;
        let n = f64::from(modulus);
        Ok(self.choose(&[yes / n, (n - yes) / n])? == 0)
    }

    /// Run one rule.
    fn rule(&mut self, table: &'a Table, base: BaseChain, rule: &Rule) -> Walk<RuleEnd> {
        // Errors name the rule: filled in by the caller (formatting it
        // for every rule evaluated would cost more than the walk).
        let at = String::new();
        for e in &rule.exprs {
            match e {
                Expr::Cmp { field, op, value } => {
                    let ok = if let Field::NumgenRandom { modulus } = field {
                        let Value::Number(v) = value else {
                            return Err(fail(
                                &at,
                                "numgen compared with a value that is not a number",
                            )
                            .into());
                        };
                        let eq = *op == CmpOp::Eq;
                        self.random(*modulus, |r| (r == *v) == eq, &at)?
                    } else {
                        let Some(pv) = self.field(*field) else {
                            return Ok(RuleEnd::NoMatch);
                        };
                        let m = compare(&pv, value).map_err(|e| fail(&at, &e))?;
                        m == (*op == CmpOp::Eq)
                    };
                    if !ok {
                        return Ok(RuleEnd::NoMatch);
                    }
                }
                Expr::Masked {
                    field,
                    mask,
                    op,
                    value,
                } => {
                    let test = |x: u32| (x & mask == *value) == (*op == CmpOp::Eq);
                    let ok = if let Field::NumgenRandom { modulus } = field {
                        self.random(*modulus, test, &at)?
                    } else {
                        let Some(pv) = self.field(*field) else {
                            return Ok(RuleEnd::NoMatch);
                        };
                        let x = Self::number(&pv).ok_or_else(|| {
                            fail(
                                &at,
                                &format!("{} is not a number to mask", text::field(*field)),
                            )
                        })?;
                        test(x)
                    };
                    if !ok {
                        return Ok(RuleEnd::NoMatch);
                    }
                }
                Expr::OneOf { field, values } => {
                    let ok = if let Field::NumgenRandom { modulus } = field {
                        let mut numbers = Vec::with_capacity(values.len());
                        for v in values {
                            let Value::Number(n) = v else {
                                return Err(fail(
                                    &at,
                                    "numgen compared with a value that is not a number",
                                )
                                .into());
                            };
                            numbers.push(*n);
                        }
                        self.random(*modulus, |r| numbers.contains(&r), &at)?
                    } else {
                        let Some(pv) = self.field(*field) else {
                            return Ok(RuleEnd::NoMatch);
                        };
                        let mut any = false;
                        for v in values {
                            any |= compare(&pv, v).map_err(|e| fail(&at, &e))?;
                        }
                        any
                    };
                    if !ok {
                        return Ok(RuleEnd::NoMatch);
                    }
                }
                Expr::Lookup { key, set, negate } => {
                    let found = match self.lookup(table, set, key, &at)? {
                        Lookup::Absent => false,
                        Lookup::Found(_) => true,
                        Lookup::NoField => return Ok(RuleEnd::NoMatch),
                    };
                    if found == *negate {
                        return Ok(RuleEnd::NoMatch);
                    }
                }
                Expr::VerdictMap { key, map } => {
                    if !matches!(
                        table.sets.get(map).and_then(|s| s.data.as_ref()),
                        Some(MapData::Verdict)
                    ) {
                        return Err(fail(&at, &format!("@{map} is not a verdict map")).into());
                    }
                    match self.lookup(table, map, key, &at)? {
                        Lookup::Found(Some(ElementValue::Verdict(v))) => {
                            return Ok(RuleEnd::Verdict(v));
                        }
                        Lookup::Found(_) => {
                            return Err(fail(&at, &format!("@{map} holds no verdict")).into())
                        }
                        Lookup::Absent | Lookup::NoField => return Ok(RuleEnd::NoMatch),
                    }
                }
                Expr::Counter => {}
                Expr::SetMark(op) => {
                    self.mark = match op {
                        MarkOp::Set(m) => *m,
                        MarkOp::Or(m) => self.mark | m,
                        MarkOp::Xor(m) => self.mark ^ m,
                    };
                }
                Expr::Masquerade { .. } => {
                    self.nat_allowed(base, &[Hook::Postrouting], "masquerade", &at)?;
                    self.masquerade = true;
                    self.snat = self.oif.as_deref().and_then(|oif| {
                        self.node
                            .route(self.daddr)
                            .filter(|r| r.oif == oif)
                            .and_then(|r| r.src)
                    });
                    self.ct_status |= ct_status::SNAT;
                    self.snat_done = true;
                    return Ok(RuleEnd::Nat);
                }
                Expr::Snat { to } => {
                    self.nat_allowed(base, &[Hook::Postrouting, Hook::Input], "snat", &at)?;
                    if L3::of(*to) != self.l3 {
                        return Err(fail(&at, "snat to an address of the other family").into());
                    }
                    if *to != self.saddr {
                        self.ct_status |= ct_status::SNAT;
                    }
                    self.snat = Some(*to);
                    self.snat_done = true;
                    return Ok(RuleEnd::Nat);
                }
                Expr::Dnat { to, port } => {
                    self.nat_allowed(base, &[Hook::Prerouting, Hook::Output], "dnat", &at)?;
                    self.dnat_to(*to, *port, &at)?;
                    self.dnat_done = true;
                    return Ok(RuleEnd::Nat);
                }
                Expr::DnatMap { l3, key, map } => {
                    self.nat_allowed(base, &[Hook::Prerouting, Hook::Output], "dnat", &at)?;
                    if *l3 != self.l3 {
                        return Err(fail(&at, "dnat of the other family").into());
                    }
                    match self.lookup(table, map, key, &at)? {
                        Lookup::Found(Some(ElementValue::Data(d))) => {
                            let (to, port) = match d.as_slice() {
                                [Value::Addr(a)] => (*a, None),
                                [Value::Addr(a), Value::Port(p)] => (*a, Some(*p)),
                                _ => {
                                    return Err(fail(
                                        &at,
                                        &format!("@{map} holds no address (and port)"),
                                    )
                                    .into())
                                }
                            };
                            self.dnat_to(to, port, &at)?;
                            self.dnat_done = true;
                            return Ok(RuleEnd::Nat);
                        }
                        Lookup::Found(_) => {
                            return Err(fail(&at, &format!("@{map} is not an address map")).into())
                        }
                        Lookup::Absent | Lookup::NoField => return Ok(RuleEnd::NoMatch),
                    }
                }
                Expr::UpdateSet { set, key } => {
                    let mut k = Vec::with_capacity(key.len());
                    for f in key {
                        if matches!(f, Field::NumgenRandom { .. }) {
                            return Err(fail(&at, "a random number as a set key").into());
                        }
                        match self.field(*f) {
                            Some(v) => k.push(v),
                            None => return Ok(RuleEnd::NoMatch),
                        }
                    }
                    let s = table
                        .sets
                        .get(set)
                        .ok_or_else(|| fail(&at, &format!("no set @{set}")))?;
                    if s.is_map() {
                        return Err(fail(&at, &format!("update of map @{set}")).into());
                    }
                    let r: SetRef = (table.family, table.name.clone(), set.clone());
                    if !self.updates.iter().any(|(s, x)| *s == r && *x == k) {
                        self.updates.push((r, k));
                    }
                }
                Expr::Reject(r) => return Ok(RuleEnd::Reject(*r)),
                Expr::Verdict(v) => return Ok(RuleEnd::Verdict(v.clone())),
            }
        }
        Ok(RuleEnd::Continue)
    }

    fn nat_allowed(&self, base: BaseChain, hooks: &[Hook], what: &str, at: &str) -> Walk<()> {
        if base.kind != ChainType::Nat || !hooks.contains(&self.hook) {
            return Err(fail(
                at,
                &format!(
                    "{what} in a chain that is not a NAT chain at {:?} (the kernel refuses it)",
                    hooks
                ),
            )
            .into());
        }
        Ok(())
    }

    fn dnat_to(&mut self, to: IpAddr, port: Option<u16>, at: &str) -> Walk<()> {
        if L3::of(to) != self.l3 {
            return Err(fail(at, "dnat to an address of the other family").into());
        }
        let before = (self.daddr, self.dport);
        self.daddr = to;
        if port.is_some() && self.dport.is_some() {
            self.dport = port;
        }
        if (self.daddr, self.dport) != before {
            self.ct_status |= ct_status::DNAT;
        }
        Ok(())
    }

    /// Look `key` up in `set` of `table`; a `numgen` in the key is drawn
    /// here, branching over the distinct elements it can reach.
    fn lookup(&mut self, table: &'a Table, set: &str, key: &[Field], at: &str) -> Walk<Lookup> {
        let s = table
            .sets
            .get(set)
            .ok_or_else(|| fail(at, &format!("no set @{set}")))?;
        if key.len() != s.key.len() {
            return Err(fail(
                at,
                &format!(
                    "a key of {} fields for @{set} of {}",
                    key.len(),
                    s.key.len()
                ),
            )
            .into());
        }
        let mut values: Vec<Option<Value>> = Vec::with_capacity(key.len());
        let mut random: Option<(usize, u32)> = None;
        for (i, f) in key.iter().enumerate() {
            if let Field::NumgenRandom { modulus } = f {
                if random.is_some() {
                    return Err(fail(at, "two random numbers in one key").into());
                }
                if *modulus == 0 || *modulus > MAX_MODULUS {
                    return Err(fail(
                        at,
                        &format!("numgen modulus {modulus} out of 1..={MAX_MODULUS}"),
                    )
                    .into());
                }
                random = Some((i, *modulus));
                values.push(None);
            } else {
                match self.field(*f) {
                    Some(v) => values.push(Some(v)),
                    None => return Ok(Lookup::NoField),
                }
            }
        }
        let dynamic: Option<&BTreeSet<Vec<Value>>> =
            self.node
                .sets
                .get(&(table.family, table.name.clone(), set.to_owned()));
        let family = table.family;
        let table_name = table.name.as_str();
        let updates = &self.updates;
        let find = |k: &[Value]| -> std::result::Result<Lookup, String> {
            for (ek, el) in &s.elements {
                if element_matches(k, ek)? {
                    return Ok(Lookup::Found(el.value.clone()));
                }
            }
            let seeded = dynamic.is_some_and(|d| d.iter().any(|e| e.as_slice() == k));
            let added = updates
                .iter()
                .any(|((f, t, n), e)| *f == family && t == table_name && n == set && e == k);
            Ok(if seeded || added {
                Lookup::Found(None)
            } else {
                Lookup::Absent
            })
        };
        match random {
            None => {
                let k: Vec<Value> = values.into_iter().flatten().collect();
                Ok(find(&k).map_err(|e| fail(at, &e))?)
            }
            Some((i, modulus)) => {
                // Group the draws by what they find, then choose a group.
                let mut groups: Vec<(Lookup, u32)> = Vec::new();
                for r in 0..modulus {
                    let k: Vec<Value> = values
                        .iter()
                        .enumerate()
                        .map(|(j, v)| {
                            if j == i {
                                Value::Number(r)
                            } else {
                                v.clone().unwrap_or(Value::Number(0))
                            }
                        })
                        .collect();
                    let found = find(&k).map_err(|e| fail(at, &e))?;
                    match groups.iter_mut().find(|(g, _)| *g == found) {
                        Some((_, n)) => *n += 1,
                        None => groups.push((found, 1)),
                    }
                }
                let n = f64::from(modulus);
                let shares: Vec<f64> = groups.iter().map(|(_, c)| f64::from(*c) / n).collect();
                let pick = self.choose(&shares)?;
                Ok(groups.swap_remove(pick).0)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    /// A field of the key is missing from the packet.
    NoField,
    Absent,
    /// Found, with the element's value in a map.
    Found(Option<ElementValue>),
}

/// Whether packet values `k` fall in element `e` (networks and ranges
/// contain, other values equal).
fn element_matches(k: &[Value], e: &[Value]) -> std::result::Result<bool, String> {
    if k.len() != e.len() {
        return Ok(false);
    }
    for (a, b) in k.iter().zip(e) {
        if !compare(a, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the packet's value `pv` matches constant `c`: equal, within a
/// network or range, and for `ct state`/`ct status` any of its bits set.
fn compare(pv: &Value, c: &Value) -> std::result::Result<bool, String> {
    Ok(match (pv, c) {
        (Value::Addr(a), Value::Addr(b)) => a == b,
        (Value::Addr(a), Value::Net(n)) => n.contains(a),
        (Value::Port(p), Value::Port(q)) => p == q,
        (Value::Port(p), Value::PortRange(lo, hi)) => lo <= p && p <= hi,
        (Value::Proto(a), Value::Proto(b)) => a == b,
        (Value::Mark(a), Value::Mark(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => a == b,
        (Value::NfProto(a), Value::NfProto(b)) => a == b,
        (Value::AddrType(a), Value::AddrType(b)) => a == b,
        (Value::CtState(a), Value::CtState(b)) => a & b != 0,
        (Value::CtStatus(a), Value::CtStatus(b)) => a & b != 0,
        (Value::Ifname(a), Value::Ifname(b)) => match b.strip_suffix('*') {
            Some(prefix) => a.starts_with(prefix),
            None => a == b,
        },
        _ => {
            return Err(format!(
                "compares {} with {}, a value of another type",
                describe(pv),
                text::value(c)
            ))
        }
    })
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Addr(_) | Value::Net(_) => "an address",
        Value::Proto(_) => "a protocol",
        Value::Port(_) | Value::PortRange(..) => "a port",
        Value::Number(_) => "a number",
        Value::Mark(_) => "a mark",
        Value::CtState(_) => "a ct state",
        Value::CtStatus(_) => "a ct status",
        Value::AddrType(_) => "a route type",
        Value::NfProto(_) => "a family",
        Value::Ifname(_) => "an interface name",
    }
}

#[cfg(test)]
mod tests;
