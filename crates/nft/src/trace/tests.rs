//! Rootless, table-driven tests of the tracer over tables shaped like the
//! ones the proxy writes (`strait proxy --dry-run -f
//! tests/fixtures/proxy-features.yaml --node node-1`), built by hand.

use super::*;
use crate::{
    ct_state, protocol, Chain, DataType, Expr, MapData, Priority, Set, SetFlags, Value, Verdict,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> Value {
    Value::Net(s.parse().unwrap())
}

fn addr(s: &str) -> Value {
    Value::Addr(ip(s))
}

fn goto(chain: &str) -> Option<ElementValue> {
    Some(ElementValue::Verdict(Verdict::Goto(chain.into())))
}

fn endpoint(a: &str, port: u16) -> Option<ElementValue> {
    Some(ElementValue::Data(vec![addr(a), Value::Port(port)]))
}

const SVC_KEY: [Field; 3] = [Field::IpDaddr, Field::L4Proto, Field::ThDport];
const NP_KEY: [Field; 2] = [Field::L4Proto, Field::ThDport];

/// `ip strait` as the proxy writes it for: web 10.96.1.1:80 (3 endpoints),
/// empty 10.96.1.3:80 (reject), itp-local 10.96.1.7:80 (drop), NodePort
/// tcp/30080 (2 endpoints), an LB 203.0.113.5:80 with source range
/// 198.51.100.0/24, and sticky 10.96.1.2:80 (ClientIP affinity).
fn proxy() -> Table {
    use DataType::*;
    let mut t = Table::new(Family::Ip, "strait");
    t.set("cluster-cidrs", Set::new(&[Ipv4Addr]).interval())
        .insert(vec![net("10.244.0.0/16")], None);
    t.set("service-cidrs", Set::new(&[Ipv4Addr]).interval())
        .insert(vec![net("10.96.0.0/12")], None);
    t.set("nodeport-addresses", Set::new(&[Ipv4Addr]).interval())
        .insert(vec![net("192.168.1.10/32")], None);
    let ips = t.set("cluster-ips", Set::new(&[Ipv4Addr]));
    for a in ["10.96.1.1", "10.96.1.2", "10.96.1.3", "10.96.1.7"] {
        ips.insert(vec![addr(a)], None);
    }
    let svc = t.set(
        "service-ips",
        Set::map(&[Ipv4Addr, InetProto, InetService], MapData::Verdict),
    );
    svc.insert(
        vec![addr("10.96.1.1"), Value::TCP, Value::Port(80)],
        goto("cluster-dnat-3"),
    );
    svc.insert(
        vec![addr("10.96.1.2"), Value::TCP, Value::Port(80)],
        goto("svc-STICKY"),
    );
    svc.insert(
        vec![addr("203.0.113.5"), Value::TCP, Value::Port(80)],
        goto("external-dnat-2"),
    );
    t.set(
        "service-nodeports",
        Set::map(&[InetProto, InetService], MapData::Verdict),
    )
    .insert(
        vec![Value::TCP, Value::Port(30080)],
        goto("nodeport-dnat-2"),
    );
    let none = t.set(
        "no-endpoint-services",
        Set::map(&[Ipv4Addr, InetProto, InetService], MapData::Verdict),
    );
    none.insert(
        vec![addr("10.96.1.3"), Value::TCP, Value::Port(80)],
        goto("reject-chain"),
    );
    none.insert(
        vec![addr("10.96.1.7"), Value::TCP, Value::Port(80)],
        Some(ElementValue::Verdict(Verdict::Drop)),
    );
    t.set(
        "no-endpoint-nodeports",
        Set::map(&[InetProto, InetService], MapData::Verdict),
    );
    let hairpin = t.set("hairpin", Set::new(&[Ipv4Addr, Ipv4Addr]));
    for a in ["10.244.1.2", "10.244.1.3"] {
        hairpin.insert(vec![addr(a), addr(a)], None);
    }
    t.set(
        "firewall-ips",
        Set::new(&[Ipv4Addr, InetProto, InetService]),
    )
    .insert(vec![addr("203.0.113.5"), Value::TCP, Value::Port(80)], None);
    t.set(
        "firewall-allow",
        Set::new(&[Ipv4Addr, InetProto, InetService, Ipv4Addr]).interval(),
    )
    .insert(
        vec![
            addr("203.0.113.5"),
            Value::TCP,
            Value::Port(80),
            net("198.51.100.0/24"),
        ],
        None,
    );
    let eps = t.set(
        "service-endpoints",
        Set::map(
            &[Ipv4Addr, InetProto, InetService, Slot],
            MapData::Value(vec![Ipv4Addr, InetService]),
        ),
    );
    for (i, a) in ["10.244.1.2", "10.244.1.3", "10.244.2.2"]
        .iter()
        .enumerate()
    {
        eps.insert(
            vec![
                addr("10.96.1.1"),
                Value::TCP,
                Value::Port(80),
                Value::Number(i as u32),
            ],
            endpoint(a, 8080),
        );
    }
    for (i, a) in ["10.244.1.5", "10.244.2.5"].iter().enumerate() {
        eps.insert(
            vec![
                addr("203.0.113.5"),
                Value::TCP,
                Value::Port(80),
                Value::Number(i as u32),
            ],
            endpoint(a, 80),
        );
    }
    let np = t.set(
        "nodeport-endpoints",
        Set::map(
            &[InetProto, InetService, Slot],
            MapData::Value(vec![Ipv4Addr, InetService]),
        ),
    );
    for (i, a) in ["10.244.1.5", "10.244.2.5"].iter().enumerate() {
        np.insert(
            vec![Value::TCP, Value::Port(30080), Value::Number(i as u32)],
            endpoint(a, 80),
        );
    }
    for ep in ["10.244.1.4", "10.244.2.4"] {
        let mut s = Set::new(&[Ipv4Addr]);
        s.flags = SetFlags {
            dynamic: true,
            timeout: true,
            interval: false,
        };
        s.timeout = Some(10800);
        t.set(&format!("aff-STICKY-{ep}/80"), s);
    }

    t.chain(
        "nat-prerouting",
        Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
    )
    .rule(vec![Expr::jump("services")]);
    t.chain(
        "nat-output",
        Chain::base(ChainType::Nat, Hook::Output, Priority::Value(-100)),
    )
    .rule(vec![Expr::jump("services")]);
    t.chain(
        "nat-postrouting",
        Chain::base(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
    )
    .rule(vec![Expr::jump("masquerading")]);
    t.chain(
        "filter-prerouting",
        Chain::base(ChainType::Filter, Hook::Prerouting, Priority::Value(-110)),
    )
    .rule(vec![new(), Expr::jump("firewall-check")]);
    for (name, hook) in [
        ("filter-input", Hook::Input),
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Output),
    ] {
        t.chain(name, Chain::base(ChainType::Filter, hook, Priority::Filter))
            .rule(vec![new(), Expr::jump("endpoints-check")]);
    }
    t.chain(
        "filter-output-pre-dnat",
        Chain::base(ChainType::Filter, Hook::Output, Priority::Value(-110)),
    )
    .rule(vec![new(), Expr::jump("firewall-check")]);
    t.chain("firewall-check", Chain::regular()).rule(vec![
        Expr::lookup(&SVC_KEY, "firewall-ips"),
        Expr::not_in(
            &[
                Field::IpDaddr,
                Field::L4Proto,
                Field::ThDport,
                Field::IpSaddr,
            ],
            "firewall-allow",
        ),
        Expr::drop(),
    ]);
    let nodeport = || {
        vec![
            Expr::eq(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
            Expr::ne(Field::IpDaddr, net("127.0.0.0/8")),
            Expr::lookup(&[Field::IpDaddr], "nodeport-addresses"),
        ]
    };
    let check = t.chain("endpoints-check", Chain::regular());
    check.rule(vec![Expr::vmap(&SVC_KEY, "no-endpoint-services")]);
    check.rule(
        nodeport()
            .into_iter()
            .chain([Expr::vmap(&NP_KEY, "no-endpoint-nodeports")])
            .collect(),
    );
    check.rule(vec![
        Expr::lookup(&[Field::IpDaddr], "cluster-ips"),
        Expr::goto("reject-chain"),
    ]);
    check.rule(vec![
        Expr::lookup(&[Field::IpDaddr], "service-cidrs"),
        Expr::drop(),
    ]);
    let services = t.chain("services", Chain::regular());
    services.rule(vec![Expr::vmap(&SVC_KEY, "service-ips")]);
    services.rule(
        nodeport()
            .into_iter()
            .chain([Expr::vmap(&NP_KEY, "service-nodeports")])
            .collect(),
    );
    let masq = t.chain("masquerading", Chain::regular());
    masq.rule(vec![
        Expr::eq(Field::CtStatus, Value::CtStatus(ct_status::DNAT)),
        Expr::lookup(&[Field::IpSaddr, Field::IpDaddr], "hairpin"),
        Expr::Masquerade {
            fully_random: false,
        },
    ]);
    masq.rule(vec![
        Expr::Masked {
            field: Field::Mark,
            mask: 0x4000,
            op: CmpOp::Eq,
            value: 0,
        },
        Expr::ret(),
    ]);
    masq.rule(vec![Expr::SetMark(MarkOp::Xor(0x4000))]);
    masq.rule(vec![Expr::Masquerade { fully_random: true }]);
    t.chain("mark-for-masquerade", Chain::regular())
        .rule(vec![Expr::SetMark(MarkOp::Or(0x4000))]);
    let reject = t.chain("reject-chain", Chain::regular());
    reject.rule(vec![
        Expr::eq(Field::L4Proto, Value::TCP),
        Expr::Reject(Reject::TcpReset),
    ]);
    reject.rule(vec![Expr::Reject(Reject::Default)]);
    for n in [2, 3] {
        let c = t.chain(&format!("cluster-dnat-{n}"), Chain::regular());
        c.rule(vec![
            Expr::not_in(&[Field::IpSaddr], "cluster-cidrs"),
            Expr::jump("mark-for-masquerade"),
        ]);
        c.rule(vec![Expr::DnatMap {
            l3: L3::V4,
            key: vec![
                Field::IpDaddr,
                Field::L4Proto,
                Field::ThDport,
                Field::NumgenRandom { modulus: n },
            ],
            map: "service-endpoints".into(),
        }]);
    }
    let c = t.chain("external-dnat-2", Chain::regular());
    c.rule(vec![Expr::jump("mark-for-masquerade")]);
    c.rule(vec![Expr::DnatMap {
        l3: L3::V4,
        key: vec![
            Field::IpDaddr,
            Field::L4Proto,
            Field::ThDport,
            Field::NumgenRandom { modulus: 2 },
        ],
        map: "service-endpoints".into(),
    }]);
    let c = t.chain("nodeport-dnat-2", Chain::regular());
    c.rule(vec![Expr::jump("mark-for-masquerade")]);
    c.rule(vec![Expr::DnatMap {
        l3: L3::V4,
        key: vec![
            Field::L4Proto,
            Field::ThDport,
            Field::NumgenRandom { modulus: 2 },
        ],
        map: "nodeport-endpoints".into(),
    }]);
    for ep in ["10.244.1.4", "10.244.2.4"] {
        let c = t.chain(&format!("ep-STICKY-{ep}/80"), Chain::regular());
        c.rule(vec![Expr::UpdateSet {
            set: format!("aff-STICKY-{ep}/80"),
            key: vec![Field::IpSaddr],
        }]);
        c.rule(vec![
            Expr::eq(Field::L4Proto, Value::TCP),
            Expr::Dnat {
                to: ip(ep),
                port: Some(80),
            },
        ]);
    }
    let c = t.chain("svc-STICKY", Chain::regular());
    c.rule(vec![
        Expr::not_in(&[Field::IpSaddr], "cluster-cidrs"),
        Expr::jump("mark-for-masquerade"),
    ]);
    for ep in ["10.244.1.4", "10.244.2.4"] {
        c.rule(vec![
            Expr::lookup(&[Field::IpSaddr], &format!("aff-STICKY-{ep}/80")),
            Expr::goto(&format!("ep-STICKY-{ep}/80")),
        ]);
    }
    c.rule(vec![
        Expr::eq(Field::NumgenRandom { modulus: 2 }, Value::Number(0)),
        Expr::goto("ep-STICKY-10.244.1.4/80"),
    ]);
    c.rule(vec![Expr::goto("ep-STICKY-10.244.2.4/80")]);
    t
}

fn new() -> Expr {
    Expr::eq(Field::CtState, Value::CtState(ct_state::NEW))
}

/// node-1: 192.168.1.10 on eth0, 10.244.1.1 on cni0 (its pods), the other
/// node's pods behind flannel.1.
fn node() -> Node {
    let route = |to: &str, oif: &str, src: &str| Route {
        to: to.parse().unwrap(),
        oif: oif.into(),
        src: Some(ip(src)),
    };
    Node {
        local: vec![ip("192.168.1.10"), ip("10.244.1.1")],
        routes: vec![
            route("10.244.1.0/24", "cni0", "10.244.1.1"),
            route("10.244.0.0/16", "flannel.1", "10.244.1.0"),
            route("0.0.0.0/0", "eth0", "192.168.1.10"),
        ],
        sets: BTreeMap::new(),
    }
}

fn tcp(iif: &str, from: &str, to: &str, port: u16) -> Packet {
    Packet::new(iif, protocol::TCP, ip(from), 40000, ip(to), port)
}

fn run(tables: &[&Table], node: &Node, p: &Packet) -> Vec<Outcome> {
    let out = trace(tables, node, p).unwrap();
    let sum: f64 = out.iter().map(|o| o.probability).sum();
    assert!((sum - 1.0).abs() < 1e-9, "probabilities sum to {sum}");
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn dests(out: &[Outcome]) -> Vec<(String, f64)> {
    destinations(out)
        .into_iter()
        .map(|((a, p), pr)| (format!("{a}:{}", p.unwrap_or(0)), pr))
        .collect()
}

#[test]
fn cluster_ip_goes_to_each_endpoint_evenly() {
    let t = proxy();
    let out = run(&[&t], &node(), &tcp("veth9", "10.244.1.9", "10.96.1.1", 80));
    let d = dests(&out);
    assert_eq!(d.len(), 3, "{d:?}");
    for (want, (got, p)) in ["10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.2:8080"]
        .iter()
        .zip(&d)
    {
        assert_eq!(want, got);
        assert!(close(*p, 1.0 / 3.0), "{p}");
    }
    for o in &out {
        assert_eq!(o.fate, Fate::Forwarded);
        assert!(o.dnat && !o.masquerade, "pod to Service keeps its source");
        assert_eq!(o.mark, 0);
    }
    // The way out follows the route to the endpoint.
    let oifs: BTreeSet<_> = out.iter().map(|o| o.oif.clone().unwrap()).collect();
    assert_eq!(oifs, BTreeSet::from(["cni0".into(), "flannel.1".into()]));
    // The path names the rule that translated, in nft's words.
    let dnat = out[0]
        .path
        .iter()
        .find(|s| s.matched && s.text.starts_with("dnat"))
        .unwrap();
    assert_eq!(dnat.chain, "cluster-dnat-3");
    assert_eq!(dnat.rule, Some(1));
    assert_eq!(
        dnat.text,
        "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints"
    );
}

#[test]
fn traffic_from_outside_the_cluster_is_masqueraded() {
    let t = proxy();
    let out = run(
        &[&t],
        &node(),
        &tcp("eth0", "192.168.1.50", "10.96.1.1", 80),
    );
    assert_eq!(out.len(), 3);
    for o in &out {
        assert!(o.masquerade);
        // The mark was set for masquerading and cleared by it.
        assert_eq!(o.mark, 0);
        let src = if o.daddr.to_string().starts_with("10.244.1.") {
            "10.244.1.1"
        } else {
            "10.244.1.0"
        };
        assert_eq!(o.snat, Some(ip(src)));
        assert!(o
            .path
            .iter()
            .any(|s| s.matched && s.text == "meta mark set meta mark or 0x4000"));
    }
}

#[test]
fn node_port_answers_on_the_node_address_only() {
    let t = proxy();
    let n = node();
    let out = run(
        &[&t],
        &n,
        &tcp("eth0", "192.168.1.50", "192.168.1.10", 30080),
    );
    let d = dests(&out);
    assert_eq!(
        d.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        ["10.244.1.5:80", "10.244.2.5:80"]
    );
    assert!(d.iter().all(|(_, p)| close(*p, 0.5)));
    assert!(out
        .iter()
        .all(|o| o.masquerade && o.fate == Fate::Forwarded));
    // Another address of the node is not a NodePort address: delivered to
    // the node itself, untranslated.
    let out = run(&[&t], &n, &tcp("cni0", "10.244.1.9", "10.244.1.1", 30080));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fate, Fate::Local);
    assert!(!out[0].dnat);
    // Not a local address at all: forwarded as it is.
    let out = run(
        &[&t],
        &n,
        &tcp("eth0", "192.168.1.50", "192.168.1.11", 30080),
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].fate.clone(), out[0].dnat), (Fate::Forwarded, false));
    // Loopback never: the node's own connection to 127.0.0.1 stays local.
    let out = run(
        &[&t],
        &n,
        &tcp("lo", "127.0.0.1", "127.0.0.1", 30080).local(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fate, Fate::Local);
    assert!(!out[0].dnat);
}

#[test]
fn a_service_without_endpoints_rejects_and_a_local_only_one_drops() {
    let t = proxy();
    let n = node();
    let out = run(&[&t], &n, &tcp("veth9", "10.244.1.9", "10.96.1.3", 80));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fate, Fate::Rejected(Reject::TcpReset));
    let by = out[0].stopped_by().unwrap();
    assert_eq!((by.chain.as_str(), by.rule), ("reject-chain", Some(0)));
    assert_eq!(by.hook, Hook::Forward);
    // UDP to a ClusterIP on a port it does not serve: ICMP.
    let udp = Packet::new(
        "veth9",
        protocol::UDP,
        ip("10.244.1.9"),
        5353,
        ip("10.96.1.1"),
        53,
    );
    let out = run(&[&t], &n, &udp);
    assert_eq!(out[0].fate, Fate::Rejected(Reject::Default));
    assert_eq!(out[0].stopped_by().unwrap().rule, Some(1));
    // internalTrafficPolicy Local without local endpoints: dropped.
    let out = run(&[&t], &n, &tcp("veth9", "10.244.1.9", "10.96.1.7", 80));
    assert_eq!(out[0].fate, Fate::Dropped);
    assert_eq!(out[0].stopped_by().unwrap().chain, "endpoints-check");
    // An address of the service range no Service holds: dropped.
    let out = run(&[&t], &n, &tcp("veth9", "10.244.1.9", "10.100.0.1", 80));
    assert_eq!(out[0].fate, Fate::Dropped);
    assert_eq!(out[0].stopped_by().unwrap().rule, Some(3));
}

#[test]
fn a_pod_reaching_itself_through_its_service_is_masqueraded() {
    let t = proxy();
    let out = run(&[&t], &node(), &tcp("veth2", "10.244.1.2", "10.96.1.1", 80));
    for o in &out {
        let itself = o.daddr == ip("10.244.1.2");
        assert_eq!(o.masquerade, itself, "{:?}", o.daddr);
        if itself {
            let m = o.stopped_by();
            assert!(m.is_none());
            let hit = o.path.iter().rev().find(|s| s.matched).unwrap();
            assert_eq!((hit.chain.as_str(), hit.rule), ("masquerading", Some(0)));
        }
    }
}

#[test]
fn load_balancer_source_ranges_drop_before_nat() {
    let t = proxy();
    let n = node();
    let out = run(&[&t], &n, &tcp("eth0", "198.51.100.7", "203.0.113.5", 80));
    assert_eq!(dests(&out).len(), 2);
    assert!(out
        .iter()
        .all(|o| o.fate == Fate::Forwarded && o.masquerade));
    let out = run(&[&t], &n, &tcp("eth0", "192.0.2.99", "203.0.113.5", 80));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fate, Fate::Dropped);
    let by = out[0].stopped_by().unwrap();
    assert_eq!(
        (by.hook, by.chain.as_str()),
        (Hook::Prerouting, "firewall-check")
    );
    // NAT never ran: the filter chain at -110 comes before it.
    assert!(!out[0].path.iter().any(|s| s.chain == "nat-prerouting"));
    // The firewall is for that address and port only.
    let out = run(&[&t], &n, &tcp("eth0", "192.0.2.99", "10.96.1.1", 80));
    assert!(out.iter().all(|o| o.fate == Fate::Forwarded));
}

#[test]
fn established_packets_skip_nat_and_keep_their_translation() {
    let t = proxy();
    let p = tcp("veth9", "10.244.1.9", "10.96.1.1", 80)
        .established(Some((ip("10.244.1.3"), Some(8080))));
    let out = run(&[&t], &node(), &p);
    assert_eq!(out.len(), 1);
    assert!(close(out[0].probability, 1.0));
    assert_eq!((out[0].daddr, out[0].dport), (ip("10.244.1.3"), Some(8080)));
    assert!(out[0].path.iter().all(|s| !s.chain.starts_with("nat-")));
    // `ct state new` rules do not match.
    assert!(out[0].path.iter().all(|s| !s.matched || s.rule.is_none()));
    // Even an established packet to a Service without endpoints passes:
    // the reject is for new connections.
    let p = tcp("veth9", "10.244.1.9", "10.96.1.3", 80).established(None);
    assert_eq!(run(&[&t], &node(), &p)[0].fate, Fate::Forwarded);
}

#[test]
fn session_affinity_sticks_and_records_the_client() {
    let t = proxy();
    let mut n = node();
    let p = tcp("veth9", "10.244.1.9", "10.96.1.2", 80);
    let out = run(&[&t], &n, &p);
    assert_eq!(out.len(), 2);
    for o in &out {
        assert!(close(o.probability, 0.5));
        let set = format!("aff-STICKY-{}/80", o.daddr);
        assert_eq!(
            o.updates,
            vec![((Family::Ip, "strait".into(), set), vec![addr("10.244.1.9")])]
        );
    }
    n.seed(
        Family::Ip,
        "strait",
        "aff-STICKY-10.244.2.4/80",
        vec![addr("10.244.1.9")],
    );
    let out = run(&[&t], &n, &p);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].daddr, ip("10.244.2.4"));
    // Another client is not affected by that entry.
    let out = run(&[&t], &n, &tcp("veth8", "10.244.1.8", "10.96.1.2", 80));
    assert_eq!(out.len(), 2);
}

#[test]
fn the_node_s_own_connections_go_through_output() {
    let t = proxy();
    let p = tcp("unused", "192.168.1.10", "10.96.1.1", 80).local();
    let out = run(&[&t], &node(), &p);
    assert_eq!(out.len(), 3);
    for o in &out {
        assert_eq!(o.fate, Fate::Sent);
        // The node is outside the cluster CIDR: masqueraded.
        assert!(o.masquerade);
        let hooks: Vec<Hook> = o.path.iter().map(|s| s.hook).collect();
        assert_eq!(hooks.first(), Some(&Hook::Output));
        assert_eq!(hooks.last(), Some(&Hook::Postrouting));
    }
}

/// A table with one base chain of `kind` at `hook`, `priority`, `rules`,
/// plus regular chains.
fn table(
    family: Family,
    name: &str,
    base: (ChainType, Hook, Priority, Vec<Vec<Expr>>),
    regular: Vec<(&str, Vec<Vec<Expr>>)>,
) -> Table {
    let mut t = Table::new(family, name);
    let c = t.chain("base", Chain::base(base.0, base.1, base.2));
    for r in base.3 {
        c.rule(r);
    }
    for (n, rules) in regular {
        let c = t.chain(n, Chain::regular());
        for r in rules {
            c.rule(r);
        }
    }
    t
}

fn set_mark(m: u32) -> Expr {
    Expr::SetMark(MarkOp::Set(m))
}

fn forward(tables: &[&Table]) -> Vec<Outcome> {
    let p = Packet::new(
        "eth0",
        protocol::UDP,
        ip("192.0.2.1"),
        1000,
        ip("10.0.0.1"),
        53,
    );
    run(tables, &Node::default(), &p)
}

#[test]
fn jump_comes_back_goto_does_not_return_goes_back() {
    let fwd = |rules| (ChainType::Filter, Hook::Forward, Priority::Filter, rules);
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::jump("a")], vec![set_mark(2)]]),
        vec![(
            "a",
            vec![vec![set_mark(1)], vec![Expr::ret()], vec![Expr::drop()]],
        )],
    );
    let out = forward(&[&t]);
    assert_eq!((out[0].fate.clone(), out[0].mark), (Fate::Forwarded, 2));
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::goto("b")], vec![set_mark(9)]]),
        vec![("b", vec![vec![set_mark(3)]])],
    );
    let out = forward(&[&t]);
    assert_eq!(out[0].mark, 3, "goto does not come back");
    assert_eq!(out[0].path.last().unwrap().text, "policy accept");
    // A return in the base chain ends it with its policy.
    let mut t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::ret()], vec![set_mark(9)]]),
        vec![],
    );
    t.chains["base"].base.as_mut().unwrap().policy = Policy::Drop;
    let out = forward(&[&t]);
    assert_eq!((out[0].fate.clone(), out[0].mark), (Fate::Dropped, 0));
    // Accept deep in a jump ends the base chain at once.
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::jump("a")], vec![set_mark(9)]]),
        vec![
            ("a", vec![vec![Expr::jump("b")]]),
            ("b", vec![vec![Expr::accept()]]),
        ],
    );
    assert_eq!(forward(&[&t])[0].mark, 0);
}

#[test]
fn base_chains_run_by_priority_across_tables() {
    let mark_is = |m| Expr::eq(Field::Mark, Value::Mark(m));
    // Table `late` (priority 10) sees the mark `early` (-10) set although
    // it is given first.
    let late = table(
        Family::Ip,
        "late",
        (
            ChainType::Filter,
            Hook::Forward,
            Priority::Value(10),
            vec![vec![mark_is(2), set_mark(3)]],
        ),
        vec![],
    );
    let early = table(
        Family::Inet,
        "early",
        (
            ChainType::Filter,
            Hook::Forward,
            Priority::Value(-10),
            vec![vec![set_mark(2)]],
        ),
        vec![],
    );
    let out = forward(&[&late, &early]);
    assert_eq!(out[0].mark, 3);
    let tables: Vec<&str> = out[0].path.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(tables, ["early", "early", "late", "late"]);
    // A NAT chain declared at -200 still runs inside conntrack's NAT hook at
    // -100: after a filter chain at -150, before one at -110 sees nothing.
    let nat = table(
        Family::Ip,
        "nat",
        (
            ChainType::Nat,
            Hook::Prerouting,
            Priority::Value(-200),
            vec![vec![Expr::Dnat {
                to: ip("10.0.0.2"),
                port: None,
            }]],
        ),
        vec![],
    );
    let seen = |name: &str, prio: i32| {
        table(
            Family::Ip,
            name,
            (
                ChainType::Filter,
                Hook::Prerouting,
                Priority::Value(prio),
                vec![vec![
                    Expr::eq(Field::IpDaddr, addr("10.0.0.2")),
                    Expr::SetMark(MarkOp::Or(if prio < -100 { 1 } else { 2 })),
                ]],
            ),
            vec![],
        )
    };
    let (a, b) = (seen("a", -150), seen("b", -90));
    let out = forward(&[&nat, &a, &b]);
    assert_eq!(out[0].daddr, ip("10.0.0.2"));
    assert_eq!(
        out[0].mark, 2,
        "only the chain after NAT saw the new address"
    );
    let order: Vec<&str> = out[0].path.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(order, ["a", "a", "nat", "b", "b"]);
}

#[test]
fn a_drop_in_one_table_ends_the_packet_whatever_another_accepts() {
    let accept = table(
        Family::Ip,
        "accepts",
        (
            ChainType::Filter,
            Hook::Forward,
            Priority::Filter,
            vec![vec![Expr::accept()]],
        ),
        vec![],
    );
    let drop = table(
        Family::Inet,
        "drops",
        (
            ChainType::Filter,
            Hook::Forward,
            Priority::Value(5),
            vec![vec![Expr::eq(Field::L4Proto, Value::UDP), Expr::drop()]],
        ),
        vec![],
    );
    let out = forward(&[&accept, &drop]);
    assert_eq!(out[0].fate, Fate::Dropped);
    assert_eq!(out[0].stopped_by().unwrap().table, "drops");
    // Given in the other order, priority still decides: the accept runs
    // first and does not save the packet.
    let out = forward(&[&drop, &accept]);
    assert_eq!(out[0].fate, Fate::Dropped);
    let order: Vec<&str> = out[0].path.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(order, ["accepts", "drops"]);
    // A drop at prerouting: no later hook runs at all.
    let early = table(
        Family::Ip,
        "early",
        (
            ChainType::Filter,
            Hook::Prerouting,
            Priority::Raw,
            vec![vec![Expr::drop()]],
        ),
        vec![],
    );
    let out = forward(&[&accept, &early]);
    assert_eq!(out[0].fate, Fate::Dropped);
    assert_eq!(out[0].path.len(), 1);
    // An accept policy chain in postrouting still runs after forward's accept.
    assert_eq!(forward(&[&accept])[0].fate, Fate::Forwarded);
}

#[test]
fn random_cascades_are_even() {
    let eps = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"];
    let mut rules = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        let left = (eps.len() - i) as u32;
        let mut r = Vec::new();
        if left > 1 {
            r.push(Expr::eq(
                Field::NumgenRandom { modulus: left },
                Value::Number(0),
            ));
        }
        r.push(Expr::Dnat {
            to: ip(e),
            port: Some(8080),
        });
        rules.push(r);
    }
    let t = table(
        Family::Ip,
        "t",
        (ChainType::Nat, Hook::Prerouting, Priority::Dstnat, rules),
        vec![],
    );
    let out = forward(&[&t]);
    let d = dests(&out);
    assert_eq!(d.len(), 4);
    assert!(d.iter().all(|(_, p)| close(*p, 0.25)), "{d:?}");
    // A vmap on a random number with OneOf: {0, 1} of 4 is a half.
    let t = table(
        Family::Ip,
        "t",
        (
            ChainType::Nat,
            Hook::Prerouting,
            Priority::Dstnat,
            vec![
                vec![
                    Expr::OneOf {
                        field: Field::NumgenRandom { modulus: 4 },
                        values: vec![Value::Number(0), Value::Number(1)],
                    },
                    Expr::Dnat {
                        to: ip("10.1.0.1"),
                        port: None,
                    },
                ],
                vec![Expr::Dnat {
                    to: ip("10.1.0.2"),
                    port: None,
                }],
            ],
        ),
        vec![],
    );
    let d = dests(&forward(&[&t]));
    assert!(d.iter().all(|(_, p)| close(*p, 0.5)), "{d:?}");
}

#[test]
fn masks_bits_ranges_and_interfaces_match_as_nft_does() {
    let rule = |e: Expr| {
        table(
            Family::Inet,
            "t",
            (
                ChainType::Filter,
                Hook::Forward,
                Priority::Filter,
                vec![vec![e, set_mark(1)]],
            ),
            vec![],
        )
    };
    let hit = |e: Expr, p: &Packet, n: &Node| {
        let t = rule(e);
        run(&[&t], n, p)[0].mark == 1
    };
    let n = Node {
        routes: vec![Route {
            to: "0.0.0.0/0".parse().unwrap(),
            oif: "eth1".into(),
            src: None,
        }],
        ..Node::default()
    };
    let mut p = Packet::new(
        "veth0abc",
        protocol::UDP,
        ip("192.0.2.1"),
        1000,
        ip("10.0.0.1"),
        8443,
    );
    p.mark = 0x4001;
    p.ct.status = ct_status::DNAT | 0x8;
    let masked = |mask, op, value| Expr::Masked {
        field: Field::Mark,
        mask,
        op,
        value,
    };
    assert!(hit(masked(0x4000, CmpOp::Ne, 0), &p, &n));
    assert!(!hit(masked(0x4000, CmpOp::Eq, 0), &p, &n));
    assert!(hit(masked(0xff, CmpOp::Eq, 1), &p, &n));
    let status = |op, v| Expr::Cmp {
        field: Field::CtStatus,
        op,
        value: Value::CtStatus(v),
    };
    assert!(hit(status(CmpOp::Eq, ct_status::DNAT), &p, &n));
    assert!(!hit(status(CmpOp::Eq, ct_status::SNAT), &p, &n));
    assert!(hit(status(CmpOp::Ne, ct_status::SNAT), &p, &n));
    assert!(hit(
        Expr::eq(Field::ThDport, Value::PortRange(8000, 9000)),
        &p,
        &n
    ));
    assert!(!hit(
        Expr::eq(Field::ThDport, Value::PortRange(80, 443)),
        &p,
        &n
    ));
    assert!(hit(Expr::eq(Field::IpSaddr, net("192.0.2.0/24")), &p, &n));
    assert!(hit(
        Expr::ne(Field::IpSaddr, net("198.51.100.0/24")),
        &p,
        &n
    ));
    assert!(hit(
        Expr::eq(Field::Iifname, Value::Ifname("veth*".into())),
        &p,
        &n
    ));
    assert!(!hit(
        Expr::eq(Field::Iifname, Value::Ifname("veth0".into())),
        &p,
        &n
    ));
    assert!(hit(
        Expr::eq(Field::Oifname, Value::Ifname("eth1".into())),
        &p,
        &n
    ));
    assert!(hit(
        Expr::OneOf {
            field: Field::ThDport,
            values: vec![Value::Port(80), Value::Port(8443)],
        },
        &p,
        &n
    ));
    assert!(hit(
        Expr::eq(Field::NfProto, Value::NfProto(L3::V4)),
        &p,
        &n
    ));
    // An IPv6 packet has no `ip saddr`: the rule breaks whatever the
    // operator, as the kernel's payload expression does.
    let p6 = Packet::new(
        "eth0",
        protocol::UDP,
        ip("2001:db8::1"),
        1,
        ip("2001:db8::2"),
        2,
    );
    assert!(!hit(
        Expr::ne(Field::IpSaddr, net("10.0.0.0/8")),
        &p6,
        &Node::default()
    ));
    assert!(hit(
        Expr::ne(Field::Ip6Saddr, net("fd00::/8")),
        &p6,
        &Node::default()
    ));
    // No output interface at prerouting: `oifname` never matches there.
    let t = table(
        Family::Ip,
        "t",
        (
            ChainType::Filter,
            Hook::Prerouting,
            Priority::Filter,
            vec![vec![
                Expr::ne(Field::Oifname, Value::Ifname("x".into())),
                set_mark(1),
            ]],
        ),
        vec![],
    );
    assert_eq!(run(&[&t], &n, &p)[0].mark, 0x4001);
    // ICMP has no ports.
    let mut icmp = p.clone();
    icmp.protocol = protocol::ICMP;
    icmp.sport = None;
    icmp.dport = None;
    assert!(!hit(Expr::ne(Field::ThDport, Value::Port(1)), &icmp, &n));
}

#[test]
fn loops_missing_chains_and_misplaced_nat_are_errors() {
    let fwd = |rules| (ChainType::Filter, Hook::Forward, Priority::Filter, rules);
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::jump("a")]]),
        vec![
            ("a", vec![vec![Expr::jump("b")]]),
            ("b", vec![vec![Expr::goto("a")]]),
        ],
    );
    let p = Packet::new(
        "eth0",
        protocol::UDP,
        ip("192.0.2.1"),
        1000,
        ip("10.0.0.1"),
        53,
    );
    let e = trace(&[&t], &Node::default(), &p).unwrap_err();
    assert!(e.to_string().contains("deeper than 16"), "{e}");
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::jump("nowhere")]]),
        vec![],
    );
    assert!(matches!(
        trace(&[&t], &Node::default(), &p),
        Err(Error::Missing { .. })
    ));
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::Dnat {
            to: ip("10.0.0.2"),
            port: None,
        }]]),
        vec![],
    );
    let e = trace(&[&t], &Node::default(), &p).unwrap_err();
    assert!(
        e.to_string().contains("table ip t chain base rule 0"),
        "{e}"
    );
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![
            Expr::eq(Field::NumgenRandom { modulus: 0 }, Value::Number(0)),
            Expr::drop(),
        ]]),
        vec![],
    );
    assert!(trace(&[&t], &Node::default(), &p).is_err());
    // A deep but finite chain of jumps beyond the kernel's stack.
    let mut t = table(Family::Ip, "t", fwd(vec![vec![Expr::jump("c0")]]), vec![]);
    for i in 0..20 {
        let next = format!("c{}", i + 1);
        let c = t.chain(&format!("c{i}"), Chain::regular());
        if i < 19 {
            c.rule(vec![Expr::jump(&next)]);
        }
    }
    t.chain("c20", Chain::regular());
    assert!(trace(&[&t], &Node::default(), &p).is_err());
    // The same table twice is refused.
    let t = table(Family::Ip, "t", fwd(vec![]), vec![]);
    assert!(trace(&[&t, &t], &Node::default(), &p).is_err());
    // Comparing an address with a port is an error naming the rule.
    let t = table(
        Family::Ip,
        "t",
        fwd(vec![vec![Expr::eq(Field::IpDaddr, Value::Port(80))]]),
        vec![],
    );
    let e = trace(&[&t], &Node::default(), &p).unwrap_err();
    assert!(e.to_string().contains("chain base rule 0"), "{e}");
}

#[test]
fn random_paths_are_bounded() {
    // 20 independent coin flips that each change the mark differently:
    // 2^20 ways, more than the tracer follows.
    let rules: Vec<Vec<Expr>> = (0..20)
        .map(|i| {
            vec![
                Expr::eq(Field::NumgenRandom { modulus: 2 }, Value::Number(0)),
                Expr::SetMark(MarkOp::Xor(1 << i)),
            ]
        })
        .collect();
    let t = table(
        Family::Ip,
        "t",
        (ChainType::Filter, Hook::Forward, Priority::Filter, rules),
        vec![],
    );
    let p = Packet::new(
        "eth0",
        protocol::UDP,
        ip("192.0.2.1"),
        1000,
        ip("10.0.0.1"),
        53,
    );
    let e = trace(&[&t], &Node::default(), &p).unwrap_err();
    assert!(e.to_string().contains("random paths"), "{e}");
}

#[test]
fn the_first_nat_chain_that_translates_wins() {
    let dnat = |name: &str, prio: i32, to: &str| {
        table(
            Family::Ip,
            name,
            (
                ChainType::Nat,
                Hook::Prerouting,
                Priority::Value(prio),
                vec![vec![
                    Expr::eq(Field::L4Proto, Value::UDP),
                    Expr::Dnat {
                        to: ip(to),
                        port: None,
                    },
                ]],
            ),
            vec![],
        )
    };
    let (a, b) = (dnat("a", -100, "10.0.0.2"), dnat("b", -50, "10.0.0.3"));
    let out = forward(&[&b, &a]);
    assert_eq!(out[0].daddr, ip("10.0.0.2"));
    assert!(
        out[0].path.iter().all(|s| s.table == "a"),
        "b not consulted"
    );
    // A chain that does not translate lets the next one try.
    let none = table(
        Family::Ip,
        "none",
        (
            ChainType::Nat,
            Hook::Prerouting,
            Priority::Value(-200),
            vec![vec![Expr::eq(Field::L4Proto, Value::TCP), Expr::accept()]],
        ),
        vec![],
    );
    let out = forward(&[&none, &b]);
    assert_eq!(out[0].daddr, ip("10.0.0.3"));
    // No NAT at forward.
    let bad = table(
        Family::Ip,
        "bad",
        (ChainType::Nat, Hook::Forward, Priority::Filter, vec![]),
        vec![],
    );
    let p = Packet::new(
        "eth0",
        protocol::UDP,
        ip("192.0.2.1"),
        1000,
        ip("10.0.0.1"),
        53,
    );
    assert!(trace(&[&bad], &Node::default(), &p).is_err());
}

#[test]
fn the_node_reaching_itself_goes_round_through_loopback() {
    // The node's own connection to its NodePort: DNAT at output to a local
    // pod address would leave; to its own address it comes back in through
    // `lo`, where NAT is not consulted again and filter chains see it.
    let mut t = table(
        Family::Ip,
        "t",
        (
            ChainType::Nat,
            Hook::Output,
            Priority::Value(-100),
            vec![vec![
                Expr::eq(Field::ThDport, Value::Port(30080)),
                Expr::Dnat {
                    to: ip("192.168.1.10"),
                    port: Some(8080),
                },
            ]],
        ),
        vec![],
    );
    t.chain(
        "nat-pre",
        Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
    )
    .rule(vec![
        set_mark(7),
        Expr::Dnat {
            to: ip("10.9.9.9"),
            port: None,
        },
    ]);
    t.chain(
        "in",
        Chain::base(ChainType::Filter, Hook::Input, Priority::Filter),
    )
    .rule(vec![
        Expr::eq(Field::Iifname, Value::Ifname("lo".into())),
        new(),
        set_mark(1),
    ]);
    let p = tcp("x", "192.168.1.10", "192.168.1.10", 30080).local();
    let out = run(&[&t], &node(), &p);
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(o.fate, Fate::Local);
    assert_eq!((o.daddr, o.dport), (ip("192.168.1.10"), Some(8080)));
    assert_eq!(o.mark, 1, "input saw it come in on lo, still new");
    assert!(o.path.iter().all(|s| s.chain != "nat-pre"));
}
