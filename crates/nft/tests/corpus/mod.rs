//! Tables for the kernel tests: hand-written ones that use every kind of
//! expression, set and element, and generated ones (a seeded generator:
//! the same seed gives the same table, so a failure can be replayed).
//!
//! Generated tables keep to what the kernel and nft take: NAT statements
//! only in chains reached from NAT base chains, rejects only from filter
//! chains, intervals that do not overlap, no jump loops.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_nft::*;
#[allow(unused)]
type Result<T, E> = std::result::Result<T, E>;

/// How many generated cases (STRAIT_NFT_CASES, default 150).
pub fn cases() -> u64 {
    std::env::var("STRAIT_NFT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// splitmix64: small, seeded, good enough to pick test shapes.
pub struct Rng(u64);

impl Rng {
    pub fn new(parts: &[u64]) -> Rng {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for p in parts {
            r.0 ^= p.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            r.next();
        }
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(a: u16, b: u16, c: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, a, b, 0, 0, 0, 0, c))
}

/// An address of cell `i` (distinct cells never overlap).
fn addr(l3: L3, i: u64, r: &mut Rng) -> IpAddr {
    match l3 {
        L3::V4 => v4(
            10,
            (i % 200) as u8 + 1,
            r.below(256) as u8,
            r.below(255) as u8 + 1,
        ),
        L3::V6 => v6(
            i as u16 + 1,
            r.below(65536) as u16,
            r.below(65535) as u16 + 1,
        ),
    }
}

/// A network or address of cell `i`.
fn net(l3: L3, i: u64, r: &mut Rng) -> Value {
    let a = addr(l3, i, r);
    let prefix = match (l3, r.below(4)) {
        (_, 0) => return Value::Addr(a),
        (L3::V4, 1) => 16,
        (L3::V4, 2) => 20,
        (L3::V4, _) => 27,
        (L3::V6, 1) => 32,
        (L3::V6, 2) => 44,
        (L3::V6, _) => 64,
    };
    Value::Net(ipnet::IpNet::new(a, prefix).unwrap().trunc())
}

/// A port or port range of cell `i` (cells 0..60).
fn ports(i: u64, r: &mut Rng) -> Value {
    let base = 1000 * (i as u16 + 1);
    match r.below(3) {
        0 => Value::Port(base),
        _ => Value::PortRange(base, base + r.below(900) as u16 + 1),
    }
}

fn l3s(family: Family) -> Vec<L3> {
    match family {
        Family::Ip => vec![L3::V4],
        Family::Ip6 => vec![L3::V6],
        Family::Inet => vec![L3::V4, L3::V6],
    }
}

const PROTOS: [Value; 3] = [Value::TCP, Value::UDP, Value::SCTP];

/// What one generated table is made of, drawn from `seed`; `variant` 0 is
/// table A, another number a table B that shares most of A.
struct Gen {
    seed: u64,
    variant: u64,
    family: Family,
}

impl Gen {
    /// The random stream of one part: the same as in A unless the variant
    /// changes this part.
    fn rng(&self, part: &str) -> Rng {
        let mut decide = Rng::new(&[self.seed, hash(part), self.variant, 1]);
        let changed = self.variant != 0 && decide.chance(25);
        Rng::new(&[
            self.seed,
            hash(part),
            if changed { self.variant } else { 0 },
        ])
    }

    fn present(&self, part: &str, percent: u64) -> bool {
        self.rng(&format!("present:{part}")).chance(percent)
    }
}

const SETS: [&str; 10] = [
    "cidrs", "ports", "svc-ips", "eps", "aff", "marks", "ifs", "allow", "mi", "hp",
];

fn set_decl(name: &str, l3: L3, r: &mut Rng) -> Set {
    let a = DataType::addr(l3);
    match name {
        "cidrs" => Set::new(&[a]).interval(),
        "ports" => Set::new(&[DataType::InetService]).interval(),
        "svc-ips" => Set::map(
            &[a, DataType::InetProto, DataType::InetService],
            MapData::Verdict,
        ),
        "eps" => Set::map(
            &[
                a,
                DataType::InetProto,
                DataType::InetService,
                DataType::Slot,
            ],
            MapData::Value(vec![a, DataType::InetService]),
        ),
        "aff" => {
            let mut s = Set::new(&[a]);
            s.flags.dynamic = true;
            s.flags.timeout = true;
            s.timeout = Some(*r.pick(&[60, 10800, 3600]));
            s
        }
        "marks" => Set::new(&[DataType::Mark]),
        "ifs" => Set::new(&[DataType::Ifname]),
        "allow" => Set::new(&[a, DataType::InetProto, DataType::InetService, a]).interval(),
        "mi" => Set::new(&[DataType::Mark, DataType::Ifname, DataType::InetProto]).interval(),
        _ => Set::new(&[a, a]),
    }
}

fn set_key(name: &str, l3: L3) -> Vec<Field> {
    let (s, d) = (Field::saddr(l3), Field::daddr(l3));
    match name {
        "cidrs" | "aff" => vec![s],
        "ports" => vec![Field::ThDport],
        "svc-ips" => vec![d, Field::L4Proto, Field::ThDport],
        "eps" => vec![
            d,
            Field::L4Proto,
            Field::ThDport,
            Field::NumgenRandom { modulus: 3 },
        ],
        "marks" => vec![Field::Mark],
        "ifs" => vec![Field::Iifname],
        "allow" => vec![d, Field::L4Proto, Field::ThDport, s],
        "mi" => vec![Field::Mark, Field::Iifname, Field::L4Proto],
        _ => vec![s, d],
    }
}

fn element(
    name: &str,
    l3: L3,
    cell: u64,
    r: &mut Rng,
    svcs: &[String],
) -> Option<(Vec<Value>, Element)> {
    let plain = |key: Vec<Value>| {
        Some((
            key,
            Element {
                value: None,
                comment: None,
            },
        ))
    };
    let ifname = |i: u64| Value::ifname(&format!("veth{i}")).unwrap();
    match name {
        "cidrs" => plain(vec![net(l3, cell, r)]),
        "ports" => plain(vec![ports(cell, r)]),
        "svc-ips" => {
            if svcs.is_empty() {
                return None;
            }
            let chain = r.pick(svcs).clone();
            let v = if r.chance(50) {
                Verdict::Goto(chain)
            } else {
                Verdict::Jump(chain)
            };
            Some((
                vec![
                    Value::Addr(addr(l3, cell, r)),
                    r.pick(&PROTOS).clone(),
                    Value::Port(r.below(65535) as u16 + 1),
                ],
                Element {
                    value: Some(ElementValue::Verdict(v)),
                    comment: None,
                },
            ))
        }
        "eps" => Some((
            vec![
                Value::Addr(addr(l3, cell, r)),
                r.pick(&PROTOS).clone(),
                Value::Port(80),
                Value::Number(r.below(3) as u32),
            ],
            Element {
                value: Some(ElementValue::Data(vec![
                    Value::Addr(addr(l3, cell + 50, r)),
                    Value::Port(r.below(65535) as u16 + 1),
                ])),
                comment: None,
            },
        )),
        "aff" => None,
        "marks" => plain(vec![Value::Mark(
            cell as u32 * 0x100 + r.below(0x100) as u32,
        )]),
        "ifs" => plain(vec![ifname(cell)]),
        "allow" => {
            let port = if r.chance(50) {
                Value::Port(443)
            } else {
                Value::PortRange(30000, 32767)
            };
            plain(vec![
                Value::Addr(addr(l3, cell, r)),
                r.pick(&PROTOS).clone(),
                port,
                net(l3, cell + 100, r),
            ])
        }
        "mi" => plain(vec![
            Value::Mark(cell as u32 + 1),
            ifname(cell),
            r.pick(&PROTOS).clone(),
        ]),
        _ => plain(vec![
            Value::Addr(addr(l3, cell, r)),
            Value::Addr(addr(l3, cell + 100, r)),
        ]),
    }
    .map(|(k, mut e)| {
        if r.chance(20) {
            e.comment = Some(format!("ns{cell}/pod {}", r.below(100)));
        }
        (k, e)
    })
}

/// A table from `seed` (family by seed), A when `variant` is 0.
pub fn generate_variant(seed: u64, variant: u64) -> Table {
    let family = [Family::Ip, Family::Ip6, Family::Inet][(seed % 3) as usize];
    let g = Gen {
        seed,
        variant,
        family,
    };
    let mut t = Table::new(family, "strait");
    let svc_chains: Vec<String> = (0..6)
        .map(|i| format!("svc-{i}"))
        .filter(|c| g.present(c, 70))
        .collect();
    let fw_chains: Vec<String> = (0..4)
        .map(|i| format!("fw-{i}"))
        .filter(|c| g.present(c, 60))
        .collect();
    // Sets, each of one IP version (inet tables mix them).
    let mut sets: Vec<(String, L3)> = Vec::new();
    for name in SETS {
        if !g.present(name, 75) {
            continue;
        }
        let mut r = g.rng(&format!("set:{name}"));
        let l3 = *r.pick(&l3s(family));
        let mut set = set_decl(name, l3, &mut r);
        let mut er = g.rng(&format!("elements:{name}"));
        let count = er.below(8);
        for cell in 0..40u64 {
            let mut cr = g.rng(&format!("element:{name}:{cell}"));
            let want = if cell < 20 {
                cell < count
            } else {
                cr.chance(if variant == 0 { 0 } else { 10 })
            };
            if !want {
                continue;
            }
            if let Some((k, e)) = element(name, l3, cell, &mut cr, &svc_chains) {
                set.elements.insert(k, e);
            }
        }
        t.set(name, set);
        sets.push((name.to_owned(), l3));
    }
    let has = |n: &str| sets.iter().find(|(s, _)| s == n).map(|(_, l3)| *l3);

    // Base chains.
    let mut r = g.rng("base");
    if g.present("nat-pre", 85) {
        let prio = *r.pick(&[Priority::Dstnat, Priority::Value(-99), Priority::Dstnat]);
        let c = t.chain(
            "nat-pre",
            Chain::base(ChainType::Nat, Hook::Prerouting, prio),
        );
        let mut rr = g.rng("rules:nat-pre");
        if let Some(l3) = has("svc-ips") {
            c.rule(vec![Expr::vmap(&set_key("svc-ips", l3), "svc-ips")]);
        }
        for svc in &svc_chains {
            if rr.chance(50) {
                let l3 = *rr.pick(&l3s(family));
                c.rule(vec![
                    Expr::eq(
                        Field::daddr(l3),
                        Value::Addr(addr(l3, rr.below(100), &mut rr)),
                    ),
                    Expr::eq(Field::L4Proto, rr.pick(&PROTOS).clone()),
                    Expr::eq(Field::ThDport, Value::Port(rr.below(65535) as u16 + 1)),
                    Expr::goto(svc),
                ]);
            }
        }
    }
    if g.present("nat-post", 70) {
        let mut rr = g.rng("rules:nat-post");
        let c = t.chain(
            "nat-post",
            Chain::base(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
        );
        c.rule(vec![
            Expr::Masked {
                field: Field::Mark,
                mask: 0x4000,
                op: CmpOp::Eq,
                value: 0,
            },
            Expr::ret(),
        ]);
        c.rule(vec![Expr::SetMark(MarkOp::Xor(0x4000))]);
        if rr.chance(50) {
            c.rule(vec![
                Expr::eq(Field::CtStatus, Value::CtStatus(ct_status::DNAT)),
                Expr::Masquerade {
                    fully_random: rr.chance(50),
                },
            ]);
        }
        let l3 = *rr.pick(&l3s(family));
        c.rule(vec![
            Expr::eq(Field::saddr(l3), net(l3, rr.below(100), &mut rr)),
            Expr::Snat {
                to: addr(l3, 7, &mut rr),
            },
        ]);
    }
    if g.present("filter-in", 85) {
        let policy = if r.chance(30) {
            Policy::Drop
        } else {
            Policy::Accept
        };
        let mut c = Chain::base(ChainType::Filter, Hook::Input, Priority::Filter);
        c.base.as_mut().unwrap().policy = policy;
        let c = t.chain("filter-in", c);
        let mut rr = g.rng("rules:filter-in");
        for fw in &fw_chains {
            if rr.chance(70) {
                let mut exprs = matches(&mut rr, family, &sets, 2);
                exprs.push(Expr::jump(fw));
                c.rule(exprs);
            }
        }
        for _ in 0..rr.below(6) {
            c.rule(filter_rule(&mut rr, family, &sets));
        }
    }
    for fw in &fw_chains {
        let mut rr = g.rng(&format!("rules:{fw}"));
        let c = t.chain(fw, Chain::regular().with_note(format!("firewall {fw}")));
        for _ in 0..rr.below(5) {
            c.rule(filter_rule(&mut rr, family, &sets));
        }
    }
    for svc in &svc_chains {
        let mut rr = g.rng(&format!("rules:{svc}"));
        let c = t.chain(svc, Chain::regular());
        for _ in 0..rr.below(5) + 1 {
            c.rule(svc_rule(&mut rr, family, &sets));
        }
    }
    t
}

pub fn generate(seed: u64) -> Table {
    generate_variant(seed, 0)
}

/// A table B that shares most of `generate(seed)`.
pub fn variant(seed: u64, variant: u64) -> Table {
    generate_variant(seed, variant.max(1))
}

/// Up to `n` matches.
fn matches(r: &mut Rng, family: Family, sets: &[(String, L3)], n: u64) -> Vec<Expr> {
    let mut out = Vec::new();
    // One IP version per rule (nft refuses a rule about both); now and then
    // both, to see both refuse it.
    let rule_l3 = *r.pick(&l3s(family));
    let mixed = r.chance(3);
    for _ in 0..r.below(n + 1) {
        let l3 = if mixed {
            *r.pick(&l3s(family))
        } else {
            rule_l3
        };
        let e = match r.below(16) {
            0 => Expr::eq(Field::saddr(l3), Value::Addr(addr(l3, r.below(100), r))),
            1 => Expr::ne(Field::daddr(l3), net(l3, r.below(100), r)),
            2 => Expr::eq(Field::L4Proto, r.pick(&PROTOS).clone()),
            3 => Expr::eq(Field::ThDport, ports(r.below(60), r)),
            4 => Expr::ne(Field::ThSport, ports(r.below(60), r)),
            5 => Expr::eq(
                Field::CtState,
                Value::CtState(*r.pick(&[
                    ct_state::NEW,
                    ct_state::ESTABLISHED | ct_state::RELATED,
                    ct_state::INVALID,
                ])),
            ),
            6 => Expr::ne(Field::CtState, Value::CtState(ct_state::INVALID)),
            7 => Expr::Masked {
                field: Field::Mark,
                mask: 0xff00,
                op: CmpOp::Ne,
                value: 0x100,
            },
            8 => Expr::eq(Field::Mark, Value::Mark(r.below(0x10000) as u32)),
            9 => Expr::eq(
                Field::Iifname,
                Value::ifname(&format!("eth{}", r.below(4))).unwrap(),
            ),
            10 => Expr::ne(Field::Oifname, Value::ifname("lo").unwrap()),
            11 => Expr::eq(
                Field::FibDaddrType,
                Value::AddrType(*r.pick(&[addr_type::LOCAL, addr_type::UNICAST])),
            ),
            12 => Expr::OneOf {
                field: Field::ThDport,
                values: vec![Value::Port(53), Value::Port(80 + r.below(10) as u16)],
            },
            13 => Expr::OneOf {
                field: Field::saddr(l3),
                values: vec![net(l3, 1, r), net(l3, 2, r), Value::Addr(addr(l3, 3, r))],
            },
            14 if family == Family::Inet => Expr::eq(Field::NfProto, Value::NfProto(l3)),
            _ => {
                let usable: Vec<&(String, L3)> = sets
                    .iter()
                    .filter(|(s, l)| {
                        !matches!(s.as_str(), "svc-ips" | "eps") && (mixed || *l == rule_l3)
                    })
                    .collect();
                if usable.is_empty() {
                    Expr::Counter
                } else {
                    let (s, l3) = *r.pick(&usable);
                    Expr::Lookup {
                        key: set_key(s, *l3),
                        set: s.clone(),
                        negate: r.chance(30),
                    }
                }
            }
        };
        out.push(e);
    }
    out
}

fn filter_rule(r: &mut Rng, family: Family, sets: &[(String, L3)]) -> Vec<Expr> {
    let mut exprs = matches(r, family, sets, 3);
    if r.chance(30) {
        exprs.push(Expr::Counter);
    }
    let has_udp = exprs.iter().any(
        |e| matches!(e, Expr::Cmp { field: Field::L4Proto, value, .. } if *value != Value::TCP),
    );
    let l3_only = |l3: L3| {
        // A reject of one IP version after a match of the other is refused
        // by nft; keep to the version the rule already names.
        !exprs.iter().any(|e| match e {
            Expr::Cmp { field, .. } | Expr::OneOf { field, .. } => {
                matches!(
                    (field, l3),
                    (Field::IpSaddr | Field::IpDaddr, L3::V6)
                        | (Field::Ip6Saddr | Field::Ip6Daddr, L3::V4)
                ) || matches!((field, l3), (Field::NfProto, _))
            }
            Expr::Lookup { .. } => true,
            _ => false,
        })
    };
    let last = match r.below(9) {
        0 => Expr::accept(),
        1 => Expr::drop(),
        2 => Expr::ret(),
        3 if !has_udp => Expr::Reject(Reject::TcpReset),
        4 if family != Family::Ip6 && l3_only(L3::V4) => Expr::Reject(Reject::IcmpPortUnreachable),
        5 if family != Family::Ip && l3_only(L3::V6) => Expr::Reject(Reject::Icmpv6PortUnreachable),
        6 if l3_only(L3::V4) && l3_only(L3::V6) => Expr::Reject(Reject::Default),
        7 => Expr::SetMark(*r.pick(&[MarkOp::Set(0x10), MarkOp::Or(0x4000), MarkOp::Xor(1)])),
        _ => Expr::eq(
            Field::NumgenRandom { modulus: 4 },
            Value::Number(r.below(4) as u32),
        ),
    };
    exprs.push(last);
    exprs
}

fn svc_rule(r: &mut Rng, family: Family, sets: &[(String, L3)]) -> Vec<Expr> {
    let l3 = *r.pick(&l3s(family));
    let has = |n: &str| sets.iter().find(|(s, _)| s == n).map(|(_, l)| *l);
    match r.below(7) {
        0 => {
            let mut e = Vec::new();
            if let Some(l) = has("cidrs") {
                e.push(Expr::not_in(&set_key("cidrs", l), "cidrs"));
            }
            e.push(Expr::SetMark(MarkOp::Or(0x4000)));
            e
        }
        1 => vec![
            Expr::eq(
                Field::NumgenRandom { modulus: 3 },
                Value::Number(r.below(3) as u32),
            ),
            Expr::eq(Field::L4Proto, r.pick(&PROTOS).clone()),
            Expr::Dnat {
                to: addr(l3, r.below(100), r),
                port: Some(r.below(65535) as u16 + 1),
            },
        ],
        2 => vec![Expr::Dnat {
            to: addr(l3, r.below(100), r),
            port: None,
        }],
        3 if has("eps").is_some() => {
            let l = has("eps").unwrap();
            vec![Expr::DnatMap {
                l3: l,
                key: set_key("eps", l),
                map: "eps".into(),
            }]
        }
        4 if has("aff").is_some() => {
            let l = has("aff").unwrap();
            vec![
                Expr::UpdateSet {
                    set: "aff".into(),
                    key: set_key("aff", l),
                },
                Expr::Counter,
            ]
        }
        5 => vec![Expr::Counter, Expr::ret()],
        _ => vec![
            Expr::eq(Field::CtState, Value::CtState(ct_state::NEW)),
            Expr::eq(Field::FibSaddrType, Value::AddrType(addr_type::LOCAL)),
            Expr::drop(),
        ],
    }
}

/// Tables written by hand: every expression, set kind and element kind,
/// in each family.
pub fn hand_written() -> Vec<(String, Table)> {
    let mut out = Vec::new();
    for family in [Family::Ip, Family::Ip6, Family::Inet] {
        for l3 in l3s(family) {
            let mut r = Rng::new(&[family as u64, l3 as u64]);
            let mut t = Table::new(family, "hand");
            let svcs = vec!["svc-a".to_owned(), "svc-b".to_owned()];
            for name in SETS {
                let mut set = set_decl(name, l3, &mut r);
                for cell in 0..6 {
                    if let Some((k, e)) = element(name, l3, cell, &mut r, &svcs) {
                        set.elements.insert(k, e);
                    }
                }
                t.set(name, set);
            }
            // Open-ended intervals, and a whole address space.
            t.sets["ports"].insert(vec![Value::PortRange(65000, 65535)], None);
            let mut all = Set::new(&[DataType::addr(l3)]).interval();
            all.insert(
                vec![Value::Net(
                    ipnet::IpNet::new(
                        match l3 {
                            L3::V4 => v4(0, 0, 0, 0),
                            L3::V6 => "::".parse().unwrap(),
                        },
                        0,
                    )
                    .unwrap(),
                )],
                None,
            );
            t.set("everything", all);
            let mut slots = Set::map(&[DataType::Slot], MapData::Value(vec![DataType::addr(l3)]));
            slots.insert(
                vec![Value::Number(0)],
                Some(ElementValue::Data(vec![Value::Addr(addr(l3, 1, &mut r))])),
            );
            t.set("slots", slots);
            // A comment longer than nft takes, with characters it must not see.
            t.sets["ports"].elements.insert(
                vec![Value::Port(64000)],
                Element {
                    value: None,
                    comment: Some(format!("a \"quoted\" }} ; {}", "long ".repeat(60))),
                },
            );
            // Maps to one value, an interval verdict map, a port-keyed map.
            let mut nat = Set::map(
                &[DataType::addr(l3)],
                MapData::Value(vec![DataType::addr(l3)]),
            );
            nat.insert(
                vec![Value::Addr(addr(l3, 1, &mut r))],
                Some(ElementValue::Data(vec![Value::Addr(addr(l3, 2, &mut r))])),
            );
            t.set("nat-one", nat);
            let mut nets = Set::map(&[DataType::addr(l3)], MapData::Verdict).interval();
            nets.insert(
                vec![net(l3, 3, &mut r)],
                Some(ElementValue::Verdict(Verdict::Drop)),
            );
            nets.insert(
                vec![Value::Addr(addr(l3, 4, &mut r))],
                Some(ElementValue::Verdict(Verdict::Jump("fw".into()))),
            );
            t.set("nets-vmap", nets);
            let mut by_port = Set::map(&[DataType::InetService], MapData::Verdict);
            by_port.insert(
                vec![Value::Port(22)],
                Some(ElementValue::Verdict(Verdict::Accept)),
            );
            by_port.insert(
                vec![Value::Port(23)],
                Some(ElementValue::Verdict(Verdict::Return)),
            );
            t.set("by-port", by_port);
            let mut marks_map = Set::map(&[DataType::Mark], MapData::Value(vec![DataType::Mark]));
            marks_map.insert(
                vec![Value::Mark(1)],
                Some(ElementValue::Data(vec![Value::Mark(2)])),
            );
            t.set("mark-map", marks_map);
            let sets: Vec<(String, L3)> = SETS.iter().map(|s| (s.to_string(), l3)).collect();

            let pre = t.chain(
                "nat-pre",
                Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
            );
            pre.rule(vec![Expr::vmap(&set_key("svc-ips", l3), "svc-ips")]);
            pre.rule(vec![Expr::jump("svc-a")]);
            let out_chain = t.chain(
                "nat-out",
                Chain::base(ChainType::Nat, Hook::Output, Priority::Value(-110)),
            );
            out_chain.rule(vec![
                Expr::eq(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
                Expr::goto("svc-b"),
            ]);
            let post = t.chain(
                "nat-post",
                Chain::base(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
            );
            post.rule(vec![
                Expr::Masked {
                    field: Field::Mark,
                    mask: 0x4000,
                    op: CmpOp::Eq,
                    value: 0,
                },
                Expr::ret(),
            ]);
            post.rule(vec![Expr::SetMark(MarkOp::Xor(0x4000))]);
            post.rule(vec![Expr::Masquerade { fully_random: true }]);
            post.rule(vec![
                Expr::eq(Field::CtStatus, Value::CtStatus(ct_status::SNAT)),
                Expr::Masquerade {
                    fully_random: false,
                },
            ]);
            post.rule(vec![
                Expr::ne(Field::CtStatus, Value::CtStatus(ct_status::DNAT)),
                Expr::Snat {
                    to: addr(l3, 9, &mut r),
                },
            ]);
            let mut fin = Chain::base(ChainType::Filter, Hook::Input, Priority::Filter);
            fin.base.as_mut().unwrap().policy = Policy::Drop;
            let fin = t.chain("filter-in", fin);
            fin.rule(vec![
                Expr::eq(
                    Field::CtState,
                    Value::CtState(ct_state::ESTABLISHED | ct_state::RELATED),
                ),
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::ne(Field::CtState, Value::CtState(ct_state::INVALID)),
                Expr::Counter,
                Expr::jump("fw"),
            ]);
            fin.rule(vec![
                Expr::ne(
                    Field::CtState,
                    Value::CtState(ct_state::NEW | ct_state::UNTRACKED),
                ),
                Expr::drop(),
            ]);
            for (s, l) in &sets {
                if !matches!(s.as_str(), "svc-ips" | "eps") {
                    fin.rule(vec![Expr::lookup(&set_key(s, *l), s), Expr::accept()]);
                    fin.rule(vec![Expr::not_in(&set_key(s, *l), s), Expr::Counter]);
                }
            }
            fin.rule(vec![
                Expr::lookup(&[Field::daddr(l3)], "everything"),
                Expr::accept(),
            ]);
            fin.rule(vec![Expr::vmap(&[Field::saddr(l3)], "nets-vmap")]);
            fin.rule(vec![
                Expr::eq(Field::L4Proto, Value::TCP),
                Expr::vmap(&[Field::ThDport], "by-port"),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::ThDport,
                    values: vec![
                        Value::Port(53),
                        Value::PortRange(8000, 8080),
                        Value::PortRange(60000, 65535),
                    ],
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::L4Proto,
                    values: vec![Value::TCP, Value::UDP],
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::Mark,
                    values: vec![Value::Mark(1), Value::Mark(0x4000)],
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::Iifname,
                    values: vec![
                        Value::ifname("eth0").unwrap(),
                        Value::ifname("cni0").unwrap(),
                    ],
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::CtState,
                    values: vec![
                        Value::CtState(ct_state::NEW),
                        Value::CtState(ct_state::RELATED),
                    ],
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::FibDaddrType,
                    values: vec![
                        Value::AddrType(addr_type::LOCAL),
                        Value::AddrType(addr_type::BROADCAST),
                    ],
                },
                Expr::drop(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::NumgenRandom { modulus: 5 },
                    values: vec![Value::Number(0), Value::Number(3)],
                },
                Expr::drop(),
            ]);
            fin.rule(vec![
                Expr::OneOf {
                    field: Field::saddr(l3),
                    values: vec![net(l3, 1, &mut r), Value::Addr(addr(l3, 2, &mut r))],
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::eq(Field::saddr(l3), net(l3, 4, &mut r)),
                Expr::ne(Field::daddr(l3), Value::Addr(addr(l3, 5, &mut r))),
                Expr::accept(),
            ]);
            for prefix in [0u8, 8, 12, 16, 31] {
                let a = match l3 {
                    L3::V4 => v4(10, 20, 30, 40),
                    L3::V6 => "fd12:3456::1".parse().unwrap(),
                };
                let p = if l3 == L3::V6 { prefix * 4 } else { prefix };
                fin.rule(vec![
                    Expr::eq(
                        Field::daddr(l3),
                        Value::Net(ipnet::IpNet::new(a, p).unwrap().trunc()),
                    ),
                    Expr::Counter,
                ]);
                fin.rule(vec![
                    Expr::ne(
                        Field::saddr(l3),
                        Value::Net(ipnet::IpNet::new(a, p).unwrap().trunc()),
                    ),
                    Expr::Counter,
                ]);
            }
            fin.rule(vec![
                Expr::eq(Field::ThDport, Value::PortRange(80, 90)),
                Expr::ne(Field::ThSport, Value::PortRange(1, 1023)),
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::ne(Field::ThDport, Value::Port(22)),
                Expr::eq(Field::ThSport, Value::Port(1234)),
                Expr::drop(),
            ]);
            fin.rule(vec![
                Expr::eq(Field::Iifname, Value::ifname("eth0").unwrap()),
                Expr::ne(Field::Oifname, Value::ifname("lo").unwrap()),
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::eq(Field::Mark, Value::Mark(0x10)),
                Expr::Masked {
                    field: Field::Mark,
                    mask: 0xff,
                    op: CmpOp::Ne,
                    value: 3,
                },
                Expr::ret(),
            ]);
            fin.rule(vec![
                Expr::Masked {
                    field: Field::CtState,
                    mask: ct_state::NEW,
                    op: CmpOp::Eq,
                    value: ct_state::NEW,
                },
                Expr::accept(),
            ]);
            fin.rule(vec![
                Expr::eq(Field::FibSaddrType, Value::AddrType(addr_type::MULTICAST)),
                Expr::ne(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
                Expr::drop(),
            ]);
            fin.rule(vec![
                Expr::eq(Field::L4Proto, Value::TCP),
                Expr::Reject(Reject::TcpReset),
            ]);
            fin.rule(vec![Expr::Reject(Reject::TcpReset)]);
            fin.rule(vec![
                Expr::SetMark(MarkOp::Set(0x20)),
                Expr::SetMark(MarkOp::Or(0x4000)),
                Expr::Counter,
            ]);
            if family == Family::Inet {
                fin.rule(vec![
                    Expr::eq(Field::NfProto, Value::NfProto(l3)),
                    Expr::accept(),
                ]);
                fin.rule(vec![Expr::Reject(Reject::IcmpPortUnreachable)]);
                fin.rule(vec![Expr::Reject(Reject::Icmpv6PortUnreachable)]);
            }
            match l3 {
                L3::V4 if family == Family::Ip => {
                    fin.rule(vec![Expr::Reject(Reject::IcmpPortUnreachable)])
                }
                L3::V6 if family == Family::Ip6 => {
                    fin.rule(vec![Expr::Reject(Reject::Icmpv6PortUnreachable)])
                }
                _ => fin,
            };
            fin.rule(vec![Expr::Reject(Reject::Default)]);
            let fw = t.chain("fw", Chain::regular().with_note("a firewall chain"));
            fw.rule(vec![
                Expr::eq(Field::NumgenRandom { modulus: 2 }, Value::Number(1)),
                Expr::ret(),
            ]);
            fw.rule(vec![Expr::drop()]);
            let a = t.chain("svc-a", Chain::regular().with_note("default/web:http"));
            a.rule(vec![
                Expr::not_in(&[Field::saddr(l3)], "cidrs"),
                Expr::SetMark(MarkOp::Or(0x4000)),
            ]);
            a.rule(vec![Expr::UpdateSet {
                set: "aff".into(),
                key: vec![Field::saddr(l3)],
            }]);
            a.rule(vec![
                Expr::eq(Field::NumgenRandom { modulus: 2 }, Value::Number(0)),
                Expr::eq(Field::L4Proto, Value::UDP),
                Expr::Dnat {
                    to: addr(l3, 3, &mut r),
                    port: Some(53),
                },
            ]);
            a.rule(vec![Expr::DnatMap {
                l3,
                key: set_key("eps", l3),
                map: "eps".into(),
            }]);
            a.rule(vec![Expr::Dnat {
                to: addr(l3, 4, &mut r),
                port: None,
            }]);
            a.rule(vec![Expr::DnatMap {
                l3,
                key: vec![Field::NumgenRandom { modulus: 1 }],
                map: "slots".into(),
            }]);
            a.rule(vec![Expr::DnatMap {
                l3,
                key: vec![Field::daddr(l3)],
                map: "nat-one".into(),
            }]);
            let b = t.chain("svc-b", Chain::regular());
            b.rule(vec![
                Expr::eq(Field::L4Proto, Value::TCP),
                Expr::Dnat {
                    to: addr(l3, 6, &mut r),
                    port: Some(8080),
                },
            ]);
            b.rule(vec![Expr::Counter, Expr::ret()]);
            out.push((format!("{family:?}/{l3:?}"), t));
        }
    }
    out
}
