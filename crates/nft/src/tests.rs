use super::*;

/// A small table in the shape the proxy writes, to check the text forms.
fn sample() -> Table {
    let mut t = Table::new(Family::Ip, "strait");
    t.set("cluster-cidrs", Set::new(&[DataType::Ipv4Addr]).interval())
        .insert(vec![Value::Net("10.244.0.0/16".parse().unwrap())], None);
    t.set(
        "service-ips",
        Set::map(
            &[
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
            MapData::Verdict,
        ),
    )
    .insert(
        vec![
            Value::Addr("10.96.0.10".parse().unwrap()),
            Value::UDP,
            Value::Port(53),
        ],
        Some(ElementValue::Verdict(Verdict::Goto("svc-X".into()))),
    );
    t.set(
        "service-endpoints",
        Set::map(
            &[
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
                DataType::Slot,
            ],
            MapData::Value(vec![DataType::Ipv4Addr, DataType::InetService]),
        ),
    );
    let mut aff = Set::new(&[DataType::Ipv4Addr]);
    aff.flags.dynamic = true;
    aff.flags.timeout = true;
    aff.timeout = Some(10800);
    t.set("aff-X", aff);
    t.chain(
        "nat-prerouting",
        Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
    )
    .rule(vec![Expr::jump("services")]);
    t.chain("services", Chain::regular()).rule(vec![Expr::vmap(
        &[Field::IpDaddr, Field::L4Proto, Field::ThDport],
        "service-ips",
    )]);
    let svc = t.chain(
        "svc-X",
        Chain::regular().with_note("kube-system/kube-dns:dns/udp"),
    );
    svc.rule(vec![
        Expr::not_in(&[Field::IpSaddr], "cluster-cidrs"),
        Expr::jump("services"),
    ]);
    svc.rule(vec![
        Expr::eq(Field::NumgenRandom { modulus: 2 }, Value::Number(0)),
        Expr::eq(Field::L4Proto, Value::UDP),
        Expr::Dnat {
            to: "10.244.1.2".parse().unwrap(),
            port: Some(53),
        },
    ]);
    svc.rule(vec![Expr::DnatMap {
        l3: L3::V4,
        key: vec![
            Field::IpDaddr,
            Field::L4Proto,
            Field::ThDport,
            Field::NumgenRandom { modulus: 3 },
        ],
        map: "service-endpoints".into(),
    }]);
    svc.rule(vec![Expr::UpdateSet {
        set: "aff-X".into(),
        key: vec![Field::IpSaddr],
    }]);
    svc.rule(vec![
        Expr::Masked {
            field: Field::Mark,
            mask: 0x4000,
            op: CmpOp::Eq,
            value: 0,
        },
        Expr::ret(),
    ]);
    svc.rule(vec![Expr::SetMark(MarkOp::Xor(0x4000))]);
    svc.rule(vec![
        Expr::eq(Field::CtState, Value::CtState(ct_state::NEW)),
        Expr::eq(Field::CtStatus, Value::CtStatus(ct_status::DNAT)),
        Expr::eq(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
        Expr::ne(Field::IpDaddr, Value::Net("127.0.0.0/8".parse().unwrap())),
        Expr::Masquerade { fully_random: true },
    ]);
    t
}

#[test]
fn a_table_is_written_as_nft_reads_it() {
    let t = sample();
    t.validate().unwrap();
    let text = text::table_script(&t);
    let expected = "\
add table ip strait
delete table ip strait
table ip strait {
\tset cluster-cidrs { type ipv4_addr; flags interval; }
\tmap service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
\tmap service-endpoints { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }
\tset aff-X { type ipv4_addr; flags dynamic,timeout; timeout 10800s; }
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}
\tchain services {
\t\tip daddr . meta l4proto . th dport vmap @service-ips
\t}
\tchain svc-X {
\t\t# kube-system/kube-dns:dns/udp
\t\tip saddr != @cluster-cidrs jump services
\t\tnumgen random mod 2 == 0 meta l4proto udp dnat to 10.244.1.2:53
\t\tdnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints
\t\tupdate @aff-X { ip saddr }
\t\tmeta mark & 0x4000 == 0 return
\t\tmeta mark set meta mark xor 0x4000
\t\tct state new ct status dnat fib daddr type local ip daddr != 127.0.0.0/8 masquerade fully-random
\t}
}
add element ip strait cluster-cidrs { 10.244.0.0/16 }
add element ip strait service-ips { 10.96.0.10 . udp . 53 : goto svc-X }
";
    assert_eq!(text, expected);
}

#[test]
fn names_that_could_open_the_grammar_are_refused() {
    for bad in [
        "",
        "a b",
        "a;b",
        "a\"b",
        "9lives",
        "a\nb",
        "a{",
        &"x".repeat(256),
    ] {
        assert!(check_name("chain", bad).is_err(), "{bad:?}");
    }
    for good in ["svc-ABC", "ep-X-10.0.0.1/80", "_x", "ep-X-fd00..1/80"] {
        check_name("chain", good).unwrap();
    }
    let mut t = sample();
    t.chain("bad name", Chain::regular());
    assert!(matches!(t.validate(), Err(Error::Name { .. })));
}

#[test]
fn references_to_missing_chains_and_sets_are_refused() {
    let mut t = sample();
    t.chain("x", Chain::regular())
        .rule(vec![Expr::goto("nowhere")]);
    assert_eq!(
        t.validate(),
        Err(Error::Missing {
            chain: "x".into(),
            what: "chain",
            name: "nowhere".into()
        })
    );
    let mut t = sample();
    t.chain("y", Chain::regular()).rule(vec![
        Expr::lookup(&[Field::IpSaddr], "no-set"),
        Expr::drop(),
    ]);
    assert!(matches!(
        t.validate(),
        Err(Error::Missing { what: "set", .. })
    ));
}

#[test]
fn elements_must_have_their_sets_shape() {
    let mut t = sample();
    // A network in a set without the interval flag.
    t.set("plain", Set::new(&[DataType::Ipv4Addr]))
        .insert(vec![Value::Net("10.0.0.0/8".parse().unwrap())], None);
    assert!(matches!(t.validate(), Err(Error::Element { .. })));
    let mut t = sample();
    // An IPv6 address in an IPv4 set.
    t.sets["cluster-cidrs"].insert(vec![Value::Addr("fd00::1".parse().unwrap())], None);
    assert!(t.validate().is_err());
    let mut t = sample();
    // A map element without a value.
    t.sets["service-ips"].insert(
        vec![
            Value::Addr("10.96.0.1".parse().unwrap()),
            Value::TCP,
            Value::Port(443),
        ],
        None,
    );
    assert!(t.validate().is_err());
}

#[test]
fn interface_names_are_checked_and_quoted() {
    assert_eq!(text::value(&Value::ifname("eth0").unwrap()), "\"eth0\"");
    for bad in ["", "a\"b", "a b", "a/b", "0123456789abcdef", "..", "a\\b"] {
        assert!(Value::ifname(bad).is_err(), "{bad:?}");
    }
    let mut t = Table::new(Family::Inet, "t");
    t.chain("c", Chain::regular()).rule(vec![
        Expr::eq(Field::Oifname, Value::Ifname("x\" drop".into())),
        Expr::accept(),
    ]);
    assert!(matches!(t.validate(), Err(Error::Ifname(_))));
}

#[test]
fn notes_and_comments_cannot_leave_their_line() {
    let mut t = Table::new(Family::Ip, "t");
    t.chain("c", Chain::regular().with_note("a\n}\nflush ruleset"));
    let text = text::table_script(&t);
    assert!(text.contains("\t\t# a___flush_ruleset\n"), "{text}");
    let e = Element {
        value: None,
        comment: Some("x\" : drop".into()),
    };
    assert_eq!(
        text::element(&[Value::Port(80)], &e),
        "80 comment \"x__:_drop\""
    );
}

#[test]
fn nat_in_inet_tables_names_the_family() {
    let to = "10.0.0.1".parse().unwrap();
    let dnat = Expr::Dnat { to, port: Some(80) };
    assert_eq!(text::expr(&dnat, Family::Ip), "dnat to 10.0.0.1:80");
    assert_eq!(text::expr(&dnat, Family::Inet), "dnat ip to 10.0.0.1:80");
    let v6 = Expr::Dnat {
        to: "fd00::1".parse().unwrap(),
        port: Some(80),
    };
    assert_eq!(text::expr(&v6, Family::Ip6), "dnat to [fd00::1]:80");
    assert_eq!(
        text::expr(&Expr::Snat { to }, Family::Inet),
        "snat ip to 10.0.0.1"
    );
}

#[test]
fn transactions_are_written_step_by_step() {
    let mut tx = Transaction::new(Family::Ip6, "strait");
    tx.ops.push(Op::AddChain {
        name: "svc-Y".into(),
        base: None,
    });
    tx.ops.push(Op::AddRule {
        chain: "svc-Y".into(),
        rule: Rule::new(vec![Expr::Reject(Reject::Icmpv6PortUnreachable)]),
    });
    tx.ops.push(Op::DeleteElements {
        set: "cluster-ips".into(),
        keys: vec![vec![Value::Addr("fd00::a".parse().unwrap())]],
    });
    tx.ops.push(Op::FlushChain("svc-Y".into()));
    tx.ops.push(Op::DeleteChain("svc-Y".into()));
    assert_eq!(
        text::transaction_script(&tx),
        "add chain ip6 strait svc-Y\n\
         add rule ip6 strait svc-Y reject with icmpv6 port-unreachable\n\
         delete element ip6 strait cluster-ips { fd00::a }\n\
         flush chain ip6 strait svc-Y\n\
         delete chain ip6 strait svc-Y\n"
    );
}

#[test]
fn a_transaction_with_a_name_or_interface_nft_would_misread_is_refused() {
    let mut tx = Transaction::new(Family::Inet, "t");
    tx.ops.push(Op::AddElements {
        set: "masq4".into(),
        elements: vec![(
            vec![Value::Addr("10.0.0.1".parse().unwrap())],
            Element {
                value: Some(ElementValue::Verdict(Verdict::Jump(
                    "x }; flush ruleset".into(),
                ))),
                comment: None,
            },
        )],
    });
    assert!(matches!(tx.validate(), Err(Error::Name { .. })));
    let mut tx = Transaction::new(Family::Inet, "t");
    tx.ops.push(Op::AddRule {
        chain: "c".into(),
        rule: Rule::new(vec![Expr::OneOf {
            field: Field::Iifname,
            values: vec![Value::Ifname("a\" drop".into())],
        }]),
    });
    assert!(matches!(tx.validate(), Err(Error::Ifname(_))));
    let mut tx = Transaction::new(Family::Ip, "strait");
    tx.ops.push(Op::FlushChain("svc-ABC".into()));
    tx.validate().unwrap();
}

#[test]
fn an_element_jumping_to_a_chain_the_table_lacks_is_refused() {
    let mut t = sample();
    t.sets["service-ips"].insert(
        vec![
            Value::Addr("10.96.0.2".parse().unwrap()),
            Value::TCP,
            Value::Port(80),
        ],
        Some(ElementValue::Verdict(Verdict::Goto("nowhere".into()))),
    );
    assert!(matches!(
        t.validate(),
        Err(Error::Missing { what: "chain", .. })
    ));
}
