//! The overlay part in real network namespaces: three "nodes" on one
//! underlay bridge, each with a pod; nodes a and b run strait's overlay
//! part, node c is programmed by hand as flannel programs a node and its
//! Node carries the annotations flannel writes. Pods reach each other
//! across all three; a Node removed takes its routes and entries along;
//! a restarted part adopts what it finds and changes nothing. Needs root;
//! everything lives in namespaces this test creates and removes.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use strait_agent::overlay::{self, Backend, OverlayConfig, OverlayPart};
use strait_agent::Part;
use strait_linux::{NetNs, Netlink, Vxlan};
use strait_model::ClusterState;

/// Every namespace of the test, removed on drop (also when it fails).
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(&mut self, name: String) -> NetNs {
        let _ = NetNs::delete(&name);
        let ns = NetNs::create(&name).expect("create a namespace");
        self.names.push(name);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = NetNs::delete(name);
        }
    }
}

/// Run `f` with a netlink connection inside `ns`, on a thread there.
fn netlink_in<T, F, Fut>(ns: &NetNs, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move { f(Netlink::connect().unwrap()).await })
    })
    .expect("run in the namespace")
}

struct Node {
    ns: NetNs,
    pod: NetNs,
    ip: Ipv4Addr,
    cidr: Ipv4Net,
}

impl Node {
    fn pod_ip(&self) -> Ipv4Addr {
        let o = self.cidr.network().octets();
        Ipv4Addr::new(o[0], o[1], o[2], 2)
    }
}

/// The underlay bridge and node `i` on it, with one pod.
fn build(nss: &mut Namespaces, tag: &str, underlay: &NetNs, i: u8) -> Node {
    let ns = nss.create(format!("{tag}-n{i}"));
    let pod = nss.create(format!("{tag}-p{i}"));
    let ip = Ipv4Addr::new(172, 31, 0, 10 + i);
    let cidr: Ipv4Net = format!("10.244.{i}.0/24").parse().unwrap();
    let node_fd = ns.fd();
    netlink_in(underlay, move |nl| async move {
        let br = nl.ensure_bridge("br0", None).await.unwrap().index;
        let uplink = format!("u{i}");
        nl.add_veth(&uplink, "eth0", node_fd, None).await.unwrap();
        let index = nl.link_by_name(&uplink).await.unwrap().unwrap().index;
        nl.set_up_in(index, Some(br)).await.unwrap();
    });
    let pod_fd = pod.fd();
    netlink_in(&ns, move |nl| async move {
        let lo = nl.link_by_name("lo").await.unwrap().unwrap().index;
        nl.set_up(lo).await.unwrap();
        let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
        nl.add_address_without_broadcast(eth0, Ipv4Net::new(ip, 24).unwrap().into())
            .await
            .unwrap();
        nl.set_up(eth0).await.unwrap();
        // A node forwards its pods' traffic: set here, never inherited.
        nl.write_sysctl("net.ipv4.ip_forward", "1").unwrap();
        nl.write_sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
        nl.add_veth("pod", "eth0", pod_fd, None).await.unwrap();
        let veth = nl.link_by_name("pod").await.unwrap().unwrap().index;
        let gw = Ipv4Addr::from(u32::from(cidr.network()) + 1);
        nl.add_address_without_broadcast(veth, Ipv4Net::new(gw, 24).unwrap().into())
            .await
            .unwrap();
        nl.set_up(veth).await.unwrap();
    });
    netlink_in(&pod, move |nl| async move {
        let lo = nl.link_by_name("lo").await.unwrap().unwrap().index;
        nl.set_up(lo).await.unwrap();
        let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
        let me = Ipv4Addr::from(u32::from(cidr.network()) + 2);
        nl.add_address_without_broadcast(eth0, Ipv4Net::new(me, 24).unwrap().into())
            .await
            .unwrap();
        nl.set_up(eth0).await.unwrap();
        let gw = Ipv4Addr::from(u32::from(cidr.network()) + 1);
        nl.add_route_v4("0.0.0.0/0".parse().unwrap(), gw, eth0, false)
            .await
            .unwrap();
    });
    Node { ns, pod, ip, cidr }
}

/// Node c's VTEP, as flanneld would have chosen it (random, kept in the device).
const FLANNEL_MAC: [u8; 6] = [0xd6, 0x0f, 0x7b, 0x3c, 0x91, 0x5e];

fn node_yaml(name: &str, node: &Node, annotations: &BTreeMap<String, String>) -> String {
    let annotations = serde_json::to_string(annotations).unwrap();
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations: {annotations}\nspec: {{podCIDR: {c}, podCIDRs: [{c}]}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\n",
        c = node.cidr,
        ip = node.ip
    )
}

fn state(yaml: &str) -> Arc<ClusterState> {
    let loaded = strait_model::parse_str("nodes.yaml", yaml, strait_model::Format::Yaml).unwrap();
    Arc::new(
        ClusterState::from_objects(
            loaded
                .objects
                .into_iter()
                .map(|(o, origin)| (o, Some(origin))),
        )
        .unwrap(),
    )
}

/// Sync `part` inside `ns` (the agent's thread is in the node's namespace).
fn sync(ns: &NetNs, part: OverlayPart, state: &Arc<ClusterState>) -> (OverlayPart, usize) {
    let state = state.clone();
    ns.run(move || {
        let mut part = part;
        part.sync_all(&state).expect("overlay sync");
        let changes = part.last_applied().map_or(0, |a| a.changes);
        (part, changes)
    })
    .unwrap()
}

/// A TCP round trip from a pod to another pod's address: what a user sees.
fn connects(from: &Node, to: &Node) -> Result<(), String> {
    let ip = to.pod_ip();
    let source = from.pod_ip();
    let listener = to
        .pod
        .run(move || TcpListener::bind((ip, 0)))
        .unwrap()
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).ok()?;
        s.write_all(&buf).ok()?;
        Some(peer)
    });
    let result = from
        .pod
        .run(move || -> std::io::Result<[u8; 4]> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf)?;
            Ok(buf)
        })
        .unwrap();
    match result {
        Ok(buf) if &buf == b"ping" => {
            // The server saw the pod's own address: no NAT on the way.
            let peer = server.join().unwrap().ok_or("server got nothing")?;
            if peer.ip() != std::net::IpAddr::V4(source) {
                return Err(format!("the server saw {peer}, not the pod {source}"));
            }
            Ok(())
        }
        Ok(_) => Err("wrong answer".into()),
        Err(e) => {
            // Unblock the listener so that its thread ends.
            let _ = to.pod.run(move || TcpStream::connect(addr));
            let _ = server.join();
            Err(e.to_string())
        }
    }
}

/// Program node c as flanneld (vxlan backend) would: its device with its
/// own MAC and VTEP address, and per other node a route, an ARP entry and
/// an FDB entry from that Node's annotations.
fn flannel_node(c: &Node, others: Vec<(Ipv4Net, BTreeMap<String, String>)>) {
    let local = c.ip;
    let own = Ipv4Net::new(c.cidr.network(), 32).unwrap();
    netlink_in(&c.ns, move |nl| async move {
        let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
        let index = nl
            .add_vxlan(&Vxlan {
                name: "flannel.1".into(),
                vni: 1,
                dstport: 8472,
                dev: eth0,
                local,
                learning: false,
                mac: FLANNEL_MAC,
                mtu: 1450,
            })
            .await
            .unwrap();
        nl.add_address_without_broadcast(index, own.into())
            .await
            .unwrap();
        for (cidr, annotations) in others {
            assert_eq!(annotations[overlay::BACKEND_TYPE], "vxlan");
            let data: serde_json::Value =
                serde_json::from_str(&annotations[overlay::BACKEND_DATA]).unwrap();
            assert_eq!(data["VNI"], 1);
            let mac = strait_linux::parse_mac(data["VtepMAC"].as_str().unwrap()).unwrap();
            let public: Ipv4Addr = annotations[overlay::PUBLIC_IP].parse().unwrap();
            nl.replace_neighbour(index, cidr.network(), mac)
                .await
                .unwrap();
            nl.append_fdb(index, mac, public).await.unwrap();
            nl.add_route_v4(cidr, cidr.network(), index, true)
                .await
                .unwrap();
        }
    });
}

fn published(part: &OverlayPart) -> BTreeMap<String, String> {
    part.published()
        .lock()
        .unwrap()
        .clone()
        .expect("annotations to publish")
}

#[test]
fn pods_reach_each_other_across_strait_and_flannel_nodes() {
    if !strait_linux::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let tag = format!("strait-ovl{}", std::process::id() % 100_000);
    let mut nss = Namespaces { names: Vec::new() };
    let underlay = nss.create(format!("{tag}-u"));
    netlink_in(&underlay, |nl| async move {
        nl.ensure_bridge("br0", None).await.unwrap();
    });
    let a = build(&mut nss, &tag, &underlay, 1);
    let b = build(&mut nss, &tag, &underlay, 2);
    let c = build(&mut nss, &tag, &underlay, 3);

    let flannel_annotations: BTreeMap<String, String> = BTreeMap::from([
        (
            overlay::BACKEND_DATA.into(),
            r#"{"VNI":1,"VtepMAC":"d6:0f:7b:3c:91:5e"}"#.into(),
        ),
        (overlay::BACKEND_TYPE.into(), "vxlan".into()),
        (overlay::KUBE_SUBNET_MANAGER.into(), "true".into()),
        (overlay::PUBLIC_IP.into(), c.ip.to_string()),
    ]);
    let none = BTreeMap::new();
    let config = OverlayConfig::new(Backend::Vxlan);
    let part = |name: &str| OverlayPart::new(config.clone(), name.into(), None).unwrap();

    // First sync: a and b have published nothing yet; both reach c.
    let s0 = state(
        &(node_yaml("a", &a, &none)
            + &node_yaml("b", &b, &none)
            + &node_yaml("c", &c, &flannel_annotations)),
    );
    let (pa, _) = sync(&a.ns, part("a"), &s0);
    let (pb, _) = sync(&b.ns, part("b"), &s0);
    let (ann_a, ann_b) = (published(&pa), published(&pb));
    assert_eq!(ann_a[overlay::PUBLIC_IP], a.ip.to_string());
    assert_eq!(
        ann_a[overlay::BACKEND_DATA],
        format!(
            "{{\"VNI\":1,\"VtepMAC\":\"{}\"}}",
            strait_linux::mac_string(&overlay::vtep_mac_for(a.ip))
        )
    );
    // The published annotations, as the API would then hold them.
    let s1 = state(
        &(node_yaml("a", &a, &ann_a)
            + &node_yaml("b", &b, &ann_b)
            + &node_yaml("c", &c, &flannel_annotations)),
    );
    let (pa, _) = sync(&a.ns, pa, &s1);
    let (_pb, _) = sync(&b.ns, pb, &s1);
    // flanneld on c reads a's and b's annotations.
    flannel_node(&c, vec![(a.cidr, ann_a.clone()), (b.cidr, ann_b.clone())]);

    connects(&a, &b).expect("pod a -> pod b over strait's VXLAN");
    connects(&b, &a).expect("pod b -> pod a");
    connects(&a, &c).expect("pod a (strait) -> pod c (flannel)");
    connects(&c, &b).expect("pod c (flannel) -> pod b (strait)");

    // A restarted agent (a new part) adopts what it finds: no change at all.
    let (_, changes) = sync(&a.ns, part("a"), &s1);
    assert_eq!(changes, 0, "a restart changed the kernel");
    let (pa, changes) = sync(&a.ns, pa, &s1);
    assert_eq!(changes, 0);

    // Node b leaves: a removes its route, ARP and FDB entries; c stays.
    let s2 = state(&(node_yaml("a", &a, &ann_a) + &node_yaml("c", &c, &flannel_annotations)));
    let (_pa, changes) = sync(&a.ns, pa, &s2);
    assert_eq!(changes, 3, "route, neighbour and fdb entry of b");
    let b_cidr = b.cidr;
    let b_mac = overlay::vtep_mac_for(b.ip);
    let (routes, fdb) = netlink_in(&a.ns, move |nl| async move {
        let vtep = nl.link_by_name("flannel.1").await.unwrap().unwrap().index;
        (
            nl.routes_v4_main().await.unwrap(),
            nl.fdb_of(vtep).await.unwrap(),
        )
    });
    assert!(
        !routes.iter().any(|r| r.destination == b_cidr),
        "{routes:?}"
    );
    assert!(routes.iter().any(|r| r.destination == c.cidr), "{routes:?}");
    assert!(!fdb.iter().any(|(m, _)| *m == b_mac), "{fdb:?}");
    assert!(
        fdb.iter()
            .any(|(m, d)| *m == FLANNEL_MAC && *d == Some(c.ip)),
        "{fdb:?}"
    );
    assert!(connects(&a, &b).is_err(), "b is gone, yet reachable");
    connects(&a, &c).expect("c still reachable");

    // `strait agent --cleanup`: strait's routes and the device go.
    let cfg = config.clone();
    let removed = a.ns.run(move || overlay::cleanup(&cfg)).unwrap().unwrap();
    assert_eq!(removed, 2, "the route to c, then the device");
    let (routes, vtep) = netlink_in(&a.ns, |nl| async move {
        (
            nl.routes_v4_main().await.unwrap(),
            nl.link_by_name("flannel.1").await.unwrap(),
        )
    });
    assert!(vtep.is_none());
    assert!(
        !routes.iter().any(|r| r.destination == c.cidr),
        "{routes:?}"
    );
    assert!(connects(&a, &c).is_err(), "cleaned up, yet reachable");
}

#[test]
fn host_gw_routes_via_the_nodes_and_only_its_own() {
    if !strait_linux::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let tag = format!("strait-ohg{}", std::process::id() % 100_000);
    let mut nss = Namespaces { names: Vec::new() };
    let underlay = nss.create(format!("{tag}-u"));
    netlink_in(&underlay, |nl| async move {
        nl.ensure_bridge("br0", None).await.unwrap();
    });
    let a = build(&mut nss, &tag, &underlay, 1);
    let b = build(&mut nss, &tag, &underlay, 2);
    let config = OverlayConfig::new(Backend::HostGw);
    let part = |name: &str| OverlayPart::new(config.clone(), name.into(), None).unwrap();
    let none = BTreeMap::new();
    let s0 = state(&(node_yaml("a", &a, &none) + &node_yaml("b", &b, &none)));
    let (pa, _) = sync(&a.ns, part("a"), &s0);
    let (pb, _) = sync(&b.ns, part("b"), &s0);
    let (ann_a, ann_b) = (published(&pa), published(&pb));
    assert_eq!(ann_a[overlay::BACKEND_DATA], "null");
    let s1 = state(&(node_yaml("a", &a, &ann_a) + &node_yaml("b", &b, &ann_b)));
    let (pa, changes) = sync(&a.ns, pa, &s1);
    assert_eq!(changes, 1);
    let (_pb, _) = sync(&b.ns, pb, &s1);
    connects(&a, &b).expect("pod a -> pod b via host-gw");
    // A user's route in the node is not the overlay's to remove.
    netlink_in(&a.ns, |nl| async move {
        let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
        nl.add_route_v4(
            "10.50.0.0/16".parse().unwrap(),
            Ipv4Addr::new(172, 31, 0, 1),
            eth0,
            false,
        )
        .await
        .unwrap();
    });
    let s2 = state(&node_yaml("a", &a, &ann_a));
    let (_pa, changes) = sync(&a.ns, pa, &s2);
    assert_eq!(changes, 1, "only b's route goes");
    let routes = netlink_in(
        &a.ns,
        |nl| async move { nl.routes_v4_main().await.unwrap() },
    );
    assert!(routes
        .iter()
        .any(|r| r.destination == "10.50.0.0/16".parse::<Ipv4Net>().unwrap()));
    assert!(!routes.iter().any(|r| r.destination == b.cidr));

    // --cleanup on b: its route to a goes, nothing else.
    let routes_of =
        |ns: &NetNs| netlink_in(ns, |nl| async move { nl.routes_v4_main().await.unwrap() });
    let before = routes_of(&b.ns);
    let removed =
        b.ns.run(move || overlay::cleanup(&config))
            .unwrap()
            .unwrap();
    assert_eq!(removed, 1);
    let after = routes_of(&b.ns);
    assert_eq!(after.len() + 1, before.len());
    assert!(!after.iter().any(|r| r.destination == a.cidr));
}
