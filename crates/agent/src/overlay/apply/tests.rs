use super::*;

const VTEP: u32 = 7;
const ETH0: u32 = 2;

fn remote(node: &str, cidr: &str, ip: &str, mac: u8) -> Remote {
    Remote {
        node: node.into(),
        pod_cidr: cidr.parse().unwrap(),
        public_ip: ip.parse().unwrap(),
        vtep_mac: Some([0x0a, 0x58, 0, 0, 0, mac]),
    }
}

fn route(dest: &str, gw: &str, out: u32, protocol: u8, onlink: bool) -> RouteEntry {
    RouteEntry {
        destination: dest.parse().unwrap(),
        gateway: Some(gw.parse().unwrap()),
        output: Some(out),
        protocol,
        onlink,
    }
}

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(ToString::to_string).collect()
}

#[test]
fn an_empty_node_gets_entries_before_routes() {
    let remotes = [remote("b", "10.244.1.0/24", "172.18.0.3", 3)];
    let s = steps(
        Backend::Vxlan,
        &remotes,
        Some(VTEP),
        ETH0,
        &Observed::default(),
    );
    assert_eq!(
        lines(&s),
        [
            "set neighbour 10.244.1.0 lladdr 0a:58:00:00:00:03",
            "add fdb 0a:58:00:00:00:03 dst 172.18.0.3",
            "set route 10.244.1.0/24 via 10.244.1.0 onlink",
        ]
    );
    assert!(s.iter().all(|st| st.node() == Some("b")));
}

#[test]
fn what_is_right_is_adopted_and_nothing_is_done() {
    let remotes = [remote("b", "10.244.1.0/24", "172.18.0.3", 3)];
    // As flannel (proto boot) or an earlier run left it.
    let observed = Observed {
        routes: vec![
            route("10.244.1.0/24", "10.244.1.0", VTEP, 3, true),
            route("0.0.0.0/0", "172.18.0.1", ETH0, 3, false),
        ],
        neighbours: vec![NeighbourEntry {
            ip: "10.244.1.0".parse().unwrap(),
            mac: Some([0x0a, 0x58, 0, 0, 0, 3]),
            permanent: true,
        }],
        fdb: vec![(
            [0x0a, 0x58, 0, 0, 0, 3],
            Some("172.18.0.3".parse().unwrap()),
        )],
    };
    assert_eq!(
        steps(Backend::Vxlan, &remotes, Some(VTEP), ETH0, &observed),
        vec![]
    );
}

#[test]
fn a_removed_node_loses_its_route_first_and_a_moved_one_is_replaced() {
    // c went away; b moved to another underlay address with a new MAC.
    let remotes = [remote("b", "10.244.1.0/24", "172.18.0.9", 9)];
    let observed = Observed {
        routes: vec![
            route("10.244.1.0/24", "10.244.1.0", VTEP, 3, true),
            route("10.244.2.0/24", "10.244.2.0", VTEP, 3, true),
            // Not ours: another device, another protocol.
            route("10.99.0.0/16", "172.18.0.1", ETH0, 3, false),
        ],
        neighbours: vec![
            NeighbourEntry {
                ip: "10.244.1.0".parse().unwrap(),
                mac: Some([0x0a, 0x58, 0, 0, 0, 3]),
                permanent: true,
            },
            NeighbourEntry {
                ip: "10.244.2.0".parse().unwrap(),
                mac: Some([0x0a, 0x58, 0, 0, 0, 4]),
                permanent: true,
            },
        ],
        fdb: vec![
            (
                [0x0a, 0x58, 0, 0, 0, 3],
                Some("172.18.0.3".parse().unwrap()),
            ),
            (
                [0x0a, 0x58, 0, 0, 0, 4],
                Some("172.18.0.4".parse().unwrap()),
            ),
        ],
    };
    let s = steps(Backend::Vxlan, &remotes, Some(VTEP), ETH0, &observed);
    assert_eq!(
        lines(&s),
        [
            "remove route 10.244.2.0/24",
            "remove neighbour 10.244.2.0",
            "remove fdb 0a:58:00:00:00:03 dst 172.18.0.3",
            "remove fdb 0a:58:00:00:00:04 dst 172.18.0.4",
            "set neighbour 10.244.1.0 lladdr 0a:58:00:00:00:09",
            "add fdb 0a:58:00:00:00:09 dst 172.18.0.9",
        ]
    );
    // The route itself was right (same range, same gateway): kept.
}

#[test]
fn host_gw_owns_only_its_marked_routes() {
    let remotes = [Remote {
        node: "b".into(),
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
        public_ip: "172.18.0.3".parse().unwrap(),
        vtep_mac: None,
    }];
    let observed = Observed {
        routes: vec![
            // A stale route of ours, and a user's route we must not touch.
            route("10.244.2.0/24", "172.18.0.4", ETH0, ROUTE_PROTOCOL, false),
            route("10.50.0.0/16", "172.18.0.1", ETH0, 4, false),
            // b's route, left by flannel via an old address: replaced.
            route("10.244.1.0/24", "172.18.0.8", ETH0, 3, false),
        ],
        ..Observed::default()
    };
    let s = steps(Backend::HostGw, &remotes, None, ETH0, &observed);
    assert_eq!(
        lines(&s),
        [
            "remove route 10.244.2.0/24",
            "set route 10.244.1.0/24 via 172.18.0.3"
        ]
    );
}

#[test]
fn the_device_is_adopted_fixed_or_replaced() {
    let want = Vxlan {
        name: "flannel.1".into(),
        vni: 1,
        dstport: 8472,
        dev: ETH0,
        local: "172.18.0.2".parse().unwrap(),
        learning: false,
        mac: [0x0a, 0x58, 172, 18, 0, 2],
        mtu: 1450,
    };
    assert_eq!(device_action(None, &want), DeviceAction::Create);
    assert_eq!(device_action(Some(None), &want), DeviceAction::Recreate);
    // flannel's own device, with its random MAC: kept as it is.
    let mut flannels = want.clone();
    flannels.mac = [0xd6, 0x0f, 0x7b, 0x3c, 0x91, 0x5e];
    assert_eq!(
        device_action(Some(Some((&flannels, true))), &want),
        DeviceAction::Keep
    );
    let mut low = flannels.clone();
    low.mtu = 1400;
    assert_eq!(
        device_action(Some(Some((&low, false))), &want),
        DeviceAction::Fix {
            mtu: true,
            up: true
        }
    );
    for change in [
        |v: &mut Vxlan| v.vni = 2,
        |v: &mut Vxlan| v.dstport = 4789,
        |v: &mut Vxlan| v.dev = 9,
        |v: &mut Vxlan| v.local = "172.18.0.9".parse().unwrap(),
        |v: &mut Vxlan| v.learning = true,
    ] {
        let mut other = want.clone();
        change(&mut other);
        assert_eq!(
            device_action(Some(Some((&other, true))), &want),
            DeviceAction::Recreate
        );
    }
}
