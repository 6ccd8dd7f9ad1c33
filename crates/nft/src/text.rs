//! The nft text of a ruleset: what `--dry-run` prints, what logs show and
//! what the `nft -f` fallback loads. Written from the typed value only;
//! names were checked by [`Table::validate`], interface names by
//! [`Value::ifname`], and notes and comments are cleaned here, so no text
//! that came from outside can change the grammar.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use crate::{
    addr_type, ct_state, ct_status, protocol, BaseChain, ChainType, CmpOp, DataType, Element,
    ElementValue, Expr, Family, Field, Hook, MapData, MarkOp, Op, Priority, Reject, Rule, Set,
    Table, Transaction, Value, Verdict, L3,
};

pub fn family(f: Family) -> &'static str {
    match f {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
        Family::Inet => "inet",
    }
}

/// A note or comment as it may appear in text: letters, digits and
/// `._:/-` kept, anything else `_`, at most 128 characters (nft's limit
/// for a comment; a longer one ends in `...`).
pub fn clean(text: &str) -> String {
    let long = text.chars().count() > 128;
    let mut out: String = text
        .chars()
        .take(if long { 125 } else { 128 })
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if long {
        out.push_str("...");
    }
    out
}

pub fn field(f: Field) -> String {
    match f {
        Field::IpSaddr => "ip saddr".into(),
        Field::IpDaddr => "ip daddr".into(),
        Field::Ip6Saddr => "ip6 saddr".into(),
        Field::Ip6Daddr => "ip6 daddr".into(),
        Field::L4Proto => "meta l4proto".into(),
        Field::NfProto => "meta nfproto".into(),
        Field::Mark => "meta mark".into(),
        Field::Iifname => "iifname".into(),
        Field::Oifname => "oifname".into(),
        Field::ThSport => "th sport".into(),
        Field::ThDport => "th dport".into(),
        Field::CtState => "ct state".into(),
        Field::CtStatus => "ct status".into(),
        Field::FibDaddrType => "fib daddr type".into(),
        Field::FibSaddrType => "fib saddr type".into(),
        Field::NumgenRandom { modulus } => format!("numgen random mod {modulus}"),
    }
}

/// Fields joined as a concatenation: `ip daddr . th dport`.
pub fn key(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| field(*f))
        .collect::<Vec<_>>()
        .join(" . ")
}

fn bits(value: u32, names: &[(u32, &str)]) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect();
    let known: u32 = names.iter().map(|(b, _)| b).fold(0, |a, b| a | b);
    if value & !known != 0 || parts.is_empty() {
        parts.push(format!("{:#x}", value & !known));
    }
    parts.join(",")
}

pub fn value(v: &Value) -> String {
    match v {
        Value::Addr(ip) => ip.to_string(),
        Value::Net(net) => net.to_string(),
        Value::Proto(p) => match *p {
            protocol::TCP => "tcp".into(),
            protocol::UDP => "udp".into(),
            protocol::SCTP => "sctp".into(),
            protocol::ICMP => "icmp".into(),
            protocol::ICMPV6 => "icmpv6".into(),
            other => other.to_string(),
        },
        Value::Port(p) => p.to_string(),
        Value::PortRange(a, b) => format!("{a}-{b}"),
        Value::Number(n) => n.to_string(),
        Value::Mark(m) => {
            if *m == 0 {
                "0".into()
            } else {
                format!("{m:#x}")
            }
        }
        Value::CtState(s) => bits(
            *s,
            &[
                (ct_state::INVALID, "invalid"),
                (ct_state::ESTABLISHED, "established"),
                (ct_state::RELATED, "related"),
                (ct_state::NEW, "new"),
                (ct_state::UNTRACKED, "untracked"),
            ],
        ),
        Value::CtStatus(s) => bits(*s, &[(ct_status::SNAT, "snat"), (ct_status::DNAT, "dnat")]),
        Value::AddrType(t) => match *t {
            addr_type::UNICAST => "unicast".into(),
            addr_type::LOCAL => "local".into(),
            addr_type::BROADCAST => "broadcast".into(),
            addr_type::MULTICAST => "multicast".into(),
            other => other.to_string(),
        },
        Value::NfProto(L3::V4) => "ipv4".into(),
        Value::NfProto(L3::V6) => "ipv6".into(),
        // Checked by Value::ifname / Table::validate: no quote or backslash.
        Value::Ifname(name) => format!("\"{name}\""),
    }
}

/// Values joined as a concatenation: `10.96.0.10 . tcp . 53`.
pub fn values(vs: &[Value]) -> String {
    vs.iter().map(value).collect::<Vec<_>>().join(" . ")
}

pub fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
    }
}

fn l3(l: L3) -> &'static str {
    match l {
        L3::V4 => "ip",
        L3::V6 => "ip6",
    }
}

/// `to ADDR[:PORT]` of a NAT statement; `inet` tables name the family.
fn nat_target(table: Family, to: IpAddr, port: Option<u16>) -> String {
    let family = match table {
        Family::Inet => format!("{} ", l3(L3::of(to))),
        _ => String::new(),
    };
    match port {
        Some(p) => format!("{family}to {}", SocketAddr::new(to, p)),
        None => format!("{family}to {to}"),
    }
}

/// One step of a rule in a table of family `table`.
pub fn expr(e: &Expr, table: Family) -> String {
    match e {
        Expr::Cmp {
            field: f,
            op,
            value: v,
        } => match (op, f) {
            // nft reads `numgen random mod 3 0` otherwise; say it.
            (CmpOp::Eq, Field::NumgenRandom { .. }) => format!("{} == {}", field(*f), value(v)),
            (CmpOp::Eq, _) => format!("{} {}", field(*f), value(v)),
            (CmpOp::Ne, _) => format!("{} != {}", field(*f), value(v)),
        },
        Expr::Masked {
            field: f,
            mask,
            op,
            value: v,
        } => {
            let op = match op {
                CmpOp::Eq => "==",
                CmpOp::Ne => "!=",
            };
            let v = if *v == 0 {
                "0".to_owned()
            } else {
                format!("{v:#x}")
            };
            format!("{} & {mask:#x} {op} {v}", field(*f))
        }
        Expr::Lookup {
            key: k,
            set,
            negate,
        } => {
            let not = if *negate { "!= " } else { "" };
            format!("{} {not}@{set}", key(k))
        }
        Expr::OneOf { field: f, values } => {
            let list: Vec<String> = values.iter().map(value).collect();
            format!("{} {{ {} }}", field(*f), list.join(", "))
        }
        Expr::VerdictMap { key: k, map } => format!("{} vmap @{map}", key(k)),
        Expr::Counter => "counter".into(),
        Expr::SetMark(op) => match op {
            MarkOp::Set(m) => format!("meta mark set {m:#x}"),
            MarkOp::Or(m) => format!("meta mark set meta mark or {m:#x}"),
            MarkOp::Xor(m) => format!("meta mark set meta mark xor {m:#x}"),
        },
        Expr::Masquerade { fully_random } => {
            if *fully_random {
                "masquerade fully-random".into()
            } else {
                "masquerade".into()
            }
        }
        Expr::Snat { to } => format!("snat {}", nat_target(table, *to, None)),
        Expr::Dnat { to, port } => format!("dnat {}", nat_target(table, *to, *port)),
        Expr::DnatMap { l3: l, key: k, map } => {
            format!("dnat {} to {} map @{map}", l3(*l), key(k))
        }
        Expr::UpdateSet { set, key: k } => format!("update @{set} {{ {} }}", key(k)),
        Expr::Reject(r) => match r {
            Reject::Default => "reject".into(),
            Reject::TcpReset => "reject with tcp reset".into(),
            Reject::IcmpPortUnreachable => "reject with icmp port-unreachable".into(),
            Reject::Icmpv6PortUnreachable => "reject with icmpv6 port-unreachable".into(),
        },
        Expr::Verdict(v) => verdict(v),
    }
}

pub fn rule(r: &Rule, table: Family) -> String {
    r.exprs
        .iter()
        .map(|e| expr(e, table))
        .collect::<Vec<_>>()
        .join(" ")
}

fn chain_type(t: ChainType) -> &'static str {
    match t {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
        ChainType::Route => "route",
    }
}

fn hook(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

fn priority(p: Priority) -> String {
    match p {
        Priority::Raw => "raw".into(),
        Priority::Mangle => "mangle".into(),
        Priority::Dstnat => "dstnat".into(),
        Priority::Filter => "filter".into(),
        Priority::Srcnat => "srcnat".into(),
        Priority::Value(v) => v.to_string(),
    }
}

/// `type nat hook prerouting priority dstnat; policy accept;`
pub fn base_chain(b: &BaseChain) -> String {
    let policy = match b.policy {
        crate::Policy::Accept => "accept",
        crate::Policy::Drop => "drop",
    };
    format!(
        "type {} hook {} priority {}; policy {policy};",
        chain_type(b.kind),
        hook(b.hook),
        priority(b.priority)
    )
}

fn type_name(t: DataType) -> &'static str {
    match t {
        DataType::Ipv4Addr => "ipv4_addr",
        DataType::Ipv6Addr => "ipv6_addr",
        DataType::InetProto => "inet_proto",
        DataType::InetService => "inet_service",
        DataType::Mark => "mark",
        DataType::Ifname => "ifname",
        DataType::Slot => "integer",
    }
}

/// The expression a `typeof` declaration names a type by.
fn type_expr(t: DataType) -> &'static str {
    match t {
        DataType::Ipv4Addr => "ip daddr",
        DataType::Ipv6Addr => "ip6 daddr",
        DataType::InetProto => "meta l4proto",
        DataType::InetService => "th dport",
        DataType::Mark => "meta mark",
        DataType::Ifname => "iifname",
        DataType::Slot => "numgen random mod 1",
    }
}

/// What goes between a set's braces: `type ipv4_addr; flags interval;`.
/// A key or value with a [`DataType::Slot`] has no type name in nft, so the
/// whole declaration is written with `typeof`.
pub fn set_declaration(s: &Set) -> String {
    let data: Vec<DataType> = match &s.data {
        Some(MapData::Value(types)) => types.clone(),
        _ => Vec::new(),
    };
    let by_typeof = s.key.iter().chain(&data).any(|t| *t == DataType::Slot);
    let join = |types: &[DataType]| {
        types
            .iter()
            .map(|t| {
                if by_typeof {
                    type_expr(*t)
                } else {
                    type_name(*t)
                }
            })
            .collect::<Vec<_>>()
            .join(" . ")
    };
    let mut out = format!(
        "{} {}",
        if by_typeof { "typeof" } else { "type" },
        join(&s.key)
    );
    match &s.data {
        None => {}
        Some(MapData::Verdict) => out.push_str(" : verdict"),
        Some(MapData::Value(types)) => {
            let _ = write!(out, " : {}", join(types));
        }
    }
    out.push(';');
    let flags: Vec<&str> = [
        (s.flags.dynamic, "dynamic"),
        (s.flags.interval, "interval"),
        (s.flags.timeout, "timeout"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    if !flags.is_empty() {
        let _ = write!(out, " flags {};", flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = write!(out, " timeout {t}s;");
    }
    out
}

/// `set` or `map`.
pub fn set_kind(s: &Set) -> &'static str {
    if s.is_map() {
        "map"
    } else {
        "set"
    }
}

/// One element: `KEY [comment "…"] [: VALUE]`.
pub fn element(k: &[Value], e: &Element) -> String {
    let mut out = values(k);
    if let Some(c) = &e.comment {
        let _ = write!(out, " comment \"{}\"", clean(c));
    }
    match &e.value {
        None => {}
        Some(ElementValue::Verdict(v)) => {
            let _ = write!(out, " : {}", verdict(v));
        }
        Some(ElementValue::Data(vs)) => {
            let _ = write!(out, " : {}", values(vs));
        }
    }
    out
}

/// The whole table as one transaction that replaces whatever table of that
/// name is there: declarations in a block, then the elements, set by set in
/// name order.
pub fn table_script(t: &Table) -> String {
    let mut out = String::new();
    let name = format!("{} {}", family(t.family), t.name);
    let _ = writeln!(out, "add table {name}");
    let _ = writeln!(out, "delete table {name}");
    let _ = writeln!(out, "table {name} {{");
    for (set_name, s) in &t.sets {
        let _ = writeln!(
            out,
            "\t{} {set_name} {{ {} }}",
            set_kind(s),
            set_declaration(s)
        );
    }
    for (chain_name, c) in &t.chains {
        let _ = writeln!(out, "\tchain {chain_name} {{");
        if let Some(note) = &c.note {
            let _ = writeln!(out, "\t\t# {}", clean(note));
        }
        if let Some(b) = &c.base {
            let _ = writeln!(out, "\t\t{}", base_chain(b));
        }
        for r in &c.rules {
            let _ = writeln!(out, "\t\t{}", rule(r, t.family));
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    let mut sets: Vec<(&String, &Set)> = t.sets.iter().collect();
    sets.sort_by_key(|(n, _)| *n);
    for (set_name, s) in sets {
        if s.elements.is_empty() {
            continue;
        }
        let list: Vec<String> = s.elements.iter().map(|(k, e)| element(k, e)).collect();
        let _ = writeln!(
            out,
            "add element {name} {set_name} {{ {} }}",
            list.join(", ")
        );
    }
    out
}

/// A transaction as an nft script: the `nft -f` fallback, and what a
/// person reads in a log.
pub fn transaction_script(tx: &Transaction) -> String {
    let mut out = String::new();
    let t = format!("{} {}", family(tx.family), tx.table);
    for op in &tx.ops {
        let _ = match op {
            Op::AddTable => writeln!(out, "add table {t}"),
            Op::DeleteTable => writeln!(out, "delete table {t}"),
            Op::AddSet { name, set } => writeln!(
                out,
                "add {} {t} {name} {{ {} }}",
                set_kind(set),
                set_declaration(set)
            ),
            Op::DeleteSet(name) => writeln!(out, "delete set {t} {name}"),
            Op::AddChain { name, base: None } => writeln!(out, "add chain {t} {name}"),
            Op::AddChain {
                name,
                base: Some(b),
            } => writeln!(out, "add chain {t} {name} {{ {} }}", base_chain(b)),
            Op::FlushChain(name) => writeln!(out, "flush chain {t} {name}"),
            Op::DeleteChain(name) => writeln!(out, "delete chain {t} {name}"),
            Op::AddRule { chain, rule: r } => {
                writeln!(out, "add rule {t} {chain} {}", rule(r, tx.family))
            }
            Op::AddElements { set, elements } => {
                let list: Vec<String> = elements.iter().map(|(k, e)| element(k, e)).collect();
                writeln!(out, "add element {t} {set} {{ {} }}", list.join(", "))
            }
            Op::DeleteElements { set, keys } => {
                let list: Vec<String> = keys.iter().map(|k| values(k)).collect();
                writeln!(out, "delete element {t} {set} {{ {} }}", list.join(", "))
            }
        };
    }
    out
}
