//! ADD, DEL and CHECK against the fake kernel: which links, addresses and
//! routes are made in which namespace, and that a failure at any step of
//! ADD leaves nothing behind. Rootless: no namespace is entered, the IPAM
//! store lives in a temporary directory.

use std::path::PathBuf;

use serde_json::{json, Value};
use strait_linux::fake::{FakeKernel, HOST};

use super::*;

struct Rig {
    kernel: FakeKernel,
    dir: PathBuf,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir =
            std::env::temp_dir().join(format!("strait-cni-fake-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Rig {
            kernel: FakeKernel::new(),
            dir,
        }
    }

    fn data_dir(&self) -> String {
        self.dir.display().to_string()
    }

    /// What the lab gives its nodes: a gateway bridge with hairpin, the
    /// overlay's MTU, a route of the IPAM section besides the default.
    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "testnet",
            "type": "strait",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.22.0.0/24"}]],
                "routes": [{"dst": "192.168.0.0/16"}],
                "dataDir": self.data_dir(),
            }
        })
    }

    fn run(&self, command: &str, id: &str, netns: &str, conf: &Value) -> Result<String> {
        let env = Env {
            command: command.into(),
            container_id: id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            ..Env::default()
        };
        let stdin = conf.to_string();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(dispatch(&self.kernel, &env, stdin.as_bytes()))
    }

    fn add(&self, id: &str, netns: &str) -> Result<Value> {
        self.run("ADD", id, netns, &self.conf())
            .map(|out| serde_json::from_str(&out).unwrap())
    }

    fn held_by(&self, id: &str) -> Vec<IpAddr> {
        Store::open(&self.data_dir(), "testnet")
            .unwrap()
            .held_by(id, "eth0")
            .unwrap()
    }

    /// The calls that change something, as `netns: op`.
    fn changes(&self) -> Vec<String> {
        self.kernel
            .take_calls()
            .iter()
            .filter(|c| {
                !["link_by_", "links", "addresses", "routes"]
                    .iter()
                    .any(|q| c.op.starts_with(q))
            })
            .map(ToString::to_string)
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn add_makes_the_bridge_the_veth_the_address_and_the_routes_where_they_belong() {
    let rig = Rig::new("add");
    rig.kernel.add_netns("/run/netns/pod1");
    let result = rig.add("ctr1", "/run/netns/pod1").unwrap();
    let veth = host_veth_name("ctr1", "eth0");
    assert_eq!(
        rig.changes(),
        [
            "host: ensure_bridge cni0 mtu Some(1450)".to_owned(),
            "host: add_address cni0 10.22.0.1/24".into(),
            "host: write_sysctl net.ipv4.ip_forward = 1".into(),
            format!("host: add_veth {veth} eth0 mtu Some(1450)"),
            format!("host: set_controller {veth} cni0"),
            format!("host: set_hairpin {veth} true"),
            format!("host: set_up {veth}"),
            "/run/netns/pod1: set_up lo".into(),
            "/run/netns/pod1: add_address eth0 10.22.0.2/24".into(),
            "/run/netns/pod1: set_up eth0".into(),
            "/run/netns/pod1: add_route 0.0.0.0/0 via 10.22.0.1 dev eth0".into(),
            "/run/netns/pod1: add_route 192.168.0.0/16 via 10.22.0.1 dev eth0".into(),
        ]
    );
    assert_eq!(
        rig.kernel.describe(HOST),
        [
            "addr cni0 10.22.0.1/24".to_owned(),
            "link cni0 bridge mtu 1450 up".into(),
            "link lo loopback mtu 65536".into(),
            format!("link {veth} veth mtu 1450 up master cni0 hairpin peer in /run/netns/pod1"),
            "sysctl net.ipv4.ip_forward = 1".into(),
        ]
    );
    assert_eq!(
        rig.kernel.describe("/run/netns/pod1"),
        [
            "addr eth0 10.22.0.2/24",
            "link eth0 veth mtu 1450 up peer in host",
            "link lo loopback mtu 65536 up",
            "route 0.0.0.0/0 via 10.22.0.1 dev eth0",
            "route 192.168.0.0/16 via 10.22.0.1 dev eth0",
        ]
    );
    // The result names the three interfaces, the pod's in its sandbox,
    // and the address with its gateway.
    let pod = rig.kernel.netns_state("/run/netns/pod1");
    let inner = pod.link("eth0").unwrap();
    assert_eq!(result["interfaces"][2]["name"], "eth0");
    assert_eq!(result["interfaces"][2]["sandbox"], "/run/netns/pod1");
    assert_eq!(result["interfaces"][2]["mac"], mac_of(inner.mac));
    assert_eq!(result["interfaces"][1]["name"], veth.as_str());
    assert_eq!(result["ips"][0]["address"], "10.22.0.2/24");
    assert_eq!(result["ips"][0]["gateway"], "10.22.0.1");
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(
        rig.held_by("ctr1"),
        ["10.22.0.2".parse::<IpAddr>().unwrap()]
    );
}

fn mac_of(mac: [u8; 6]) -> String {
    strait_linux::mac_string(&mac)
}

#[test]
fn a_second_pod_shares_the_bridge_and_changes_only_what_is_its_own() {
    let rig = Rig::new("second");
    rig.kernel.add_netns("/run/netns/pod1");
    rig.kernel.add_netns("/run/netns/pod2");
    rig.add("ctr1", "/run/netns/pod1").unwrap();
    rig.kernel.take_calls();
    let pod1 = rig.kernel.netns_state("/run/netns/pod1");
    rig.add("ctr2", "/run/netns/pod2").unwrap();
    let changes = rig.changes();
    // The bridge is found, not made again; its address is there already.
    assert_eq!(changes[0], "host: ensure_bridge cni0 mtu Some(1450)");
    assert!(
        !changes.iter().any(|c| c.contains("add_address cni0")),
        "{changes:?}"
    );
    assert!(
        !changes.iter().any(|c| c.starts_with("/run/netns/pod1")),
        "{changes:?}"
    );
    assert_eq!(rig.kernel.netns_state("/run/netns/pod1"), pod1);
    assert!(rig
        .kernel
        .describe("/run/netns/pod2")
        .contains(&"addr eth0 10.22.0.3/24".to_owned()));
}

#[test]
fn del_undoes_add_and_can_be_repeated() {
    let rig = Rig::new("del");
    rig.kernel.add_netns("/run/netns/pod1");
    rig.kernel.add_netns("/run/netns/pod2");
    rig.add("ctr1", "/run/netns/pod1").unwrap();
    rig.add("ctr2", "/run/netns/pod2").unwrap();
    rig.kernel.take_calls();
    // DEL leaves the pod's loopback up (the namespace goes with the pod):
    // apart from that, all is as before ADD.
    let mut start = rig.kernel.state();
    let pod2 = start.get_mut("/run/netns/pod2").unwrap();
    pod2.links.retain(|_, l| l.name == "lo");
    pod2.addresses.clear();
    pod2.routes.clear();
    let host = start.get_mut(HOST).unwrap();
    host.links.retain(|_, l| {
        l.peer
            .as_ref()
            .is_none_or(|(ns, _)| ns != "/run/netns/pod2")
    });

    rig.run("DEL", "ctr2", "/run/netns/pod2", &rig.conf())
        .unwrap();
    // The pod's end goes, and the host's with it (a veth pair dies whole).
    assert_eq!(rig.changes(), ["/run/netns/pod2: del_link eth0"]);
    assert_eq!(rig.kernel.state(), start);
    assert!(rig.held_by("ctr2").is_empty());

    // Again, and once more with the namespace gone: nothing to do, success.
    rig.run("DEL", "ctr2", "/run/netns/pod2", &rig.conf())
        .unwrap();
    rig.kernel.remove_netns("/run/netns/pod2");
    rig.run("DEL", "ctr2", "/run/netns/pod2", &rig.conf())
        .unwrap();
    assert_eq!(rig.changes(), Vec::<String>::new());
    rig.run("DEL", "never-added", "/run/netns/nowhere", &rig.conf())
        .unwrap();
    assert_eq!(rig.kernel.state().get(HOST), start.get(HOST));
    assert_eq!(
        rig.held_by("ctr1").len(),
        1,
        "the other pod keeps its address"
    );
}

#[test]
fn del_after_the_namespace_went_removes_the_host_end_left_behind() {
    let rig = Rig::new("del-gone");
    rig.kernel.add_netns("/run/netns/pod1");
    rig.kernel.add_netns("/run/netns/pod2");
    rig.add("ctr1", "/run/netns/pod1").unwrap();
    let host = rig.kernel.netns_state(HOST);
    rig.add("ctr2", "/run/netns/pod2").unwrap();
    // The namespace's path is gone but the host end is still there (the
    // runtime unmounted it while something still held the namespace).
    let veth = host_veth_name("ctr2", "eth0");
    for path in [HOST, "/run/netns/pod2"] {
        rig.kernel.edit(path, |s| {
            for l in s.links.values_mut() {
                l.peer = None;
            }
        });
    }
    rig.kernel.remove_netns("/run/netns/pod2");
    assert!(rig.kernel.netns_state(HOST).link(&veth).is_some());
    rig.kernel.take_calls();
    rig.run("DEL", "ctr2", "/run/netns/pod2", &rig.conf())
        .unwrap();
    assert_eq!(rig.changes(), [format!("host: del_link {veth}")]);
    let mut left = rig.kernel.netns_state(HOST);
    for l in left.links.values_mut() {
        l.peer = host.links.get(&l.index).and_then(|h| h.peer.clone());
    }
    assert_eq!(left, host);
    assert!(rig.held_by("ctr2").is_empty());
}

#[test]
fn check_passes_after_add_and_names_what_went_missing() {
    let rig = Rig::new("check");
    rig.kernel.add_netns("/run/netns/pod1");
    let result = rig.add("ctr1", "/run/netns/pod1").unwrap();
    rig.kernel.take_calls();
    let mut conf = rig.conf();
    conf["prevResult"] = result;
    rig.run("CHECK", "ctr1", "/run/netns/pod1", &conf).unwrap();
    // CHECK only looks.
    assert_eq!(rig.changes(), Vec::<String>::new());

    let broken = |edit: &dyn Fn(&mut strait_linux::fake::NetnsState), path: &str, want: &str| {
        let before = rig.kernel.netns_state(path);
        rig.kernel.edit(path, edit);
        let err = rig
            .run("CHECK", "ctr1", "/run/netns/pod1", &conf)
            .unwrap_err();
        assert!(err.msg.contains(want), "{} does not say {want}", err.msg);
        rig.kernel.edit(path, |s| *s = before);
    };
    broken(
        &|s| s.routes.retain(|r| r.destination.prefix_len() != 16),
        "/run/netns/pod1",
        "route to 192.168.0.0/16 is missing",
    );
    broken(
        &|s| s.addresses.clear(),
        "/run/netns/pod1",
        "address 10.22.0.2/24 is missing on eth0",
    );
    broken(
        &|s| {
            for l in s.links.values_mut() {
                if l.name == "eth0" {
                    l.up = false;
                }
            }
        },
        "/run/netns/pod1",
        "interface eth0 is down",
    );
    broken(
        &|s| {
            for l in s.links.values_mut() {
                l.controller = None;
            }
        },
        HOST,
        "is not attached to bridge cni0",
    );
    rig.run("CHECK", "ctr1", "/run/netns/pod1", &conf).unwrap();
    let err = rig
        .run("CHECK", "ctr1", "/run/netns/gone", &conf)
        .unwrap_err();
    assert_eq!(err.code, code::UNKNOWN_CONTAINER, "{}", err.msg);
}

#[test]
fn a_netns_path_that_is_no_network_namespace_is_refused_before_any_change() {
    let rig = Rig::new("notns");
    rig.kernel.add_other_file("/tmp/plain-file");
    let before = rig.kernel.state();
    let err = rig.add("ctr1", "/tmp/plain-file").unwrap_err();
    assert_eq!(err.code, code::INVALID_ENVIRONMENT, "{}", err.msg);
    assert!(err.msg.contains("CNI_NETNS"), "{}", err.msg);
    assert_eq!(rig.kernel.state(), before);
    assert!(rig.kernel.take_calls().is_empty());
    assert!(rig.held_by("ctr1").is_empty());
}

/// Each call ADD makes is made to fail in turn: every time ADD reports the
/// error and the kernel is as it was before, the address is free again.
fn add_fails_cleanly_at_every_call(rig: &Rig, netns: &str) -> usize {
    for n in 0.. {
        let before = rig.kernel.state();
        rig.kernel.take_calls();
        rig.kernel.fail_call(n);
        let outcome = rig.add("ctr2", netns);
        let calls = rig.kernel.take_calls();
        let Some(failed) = calls.iter().find(|c| c.failed) else {
            // The chosen call was past the last one ADD makes.
            outcome.expect("ADD with no failure");
            assert!(n > 10, "ADD made only {n} calls");
            return n;
        };
        let err = outcome.expect_err(&format!("ADD went on after {failed}"));
        assert!(err.msg.contains("injected"), "{failed}: {}", err.msg);
        assert_eq!(
            rig.kernel.state(),
            before,
            "state after ADD failed at {failed}"
        );
        assert!(
            rig.held_by("ctr2").is_empty(),
            "address kept after {failed}"
        );
    }
    unreachable!()
}

#[test]
fn add_failing_at_any_call_leaves_the_node_as_it_was() {
    let rig = Rig::new("rollback");
    rig.kernel.add_netns("/run/netns/pod1");
    rig.kernel.add_netns("/run/netns/pod2");
    rig.add("ctr1", "/run/netns/pod1").unwrap();
    let steps = add_fails_cleanly_at_every_call(&rig, "/run/netns/pod2");
    assert!(steps > 10, "{steps}");
}

/// On a node without the bridge yet, a failed ADD may leave the bridge (it
/// is the node's, shared by every pod, as the reference plugin leaves it)
/// but nothing of the pod: no veth, nothing in its namespace, no address.
#[test]
fn add_failing_on_a_fresh_node_leaves_nothing_of_the_pod() {
    let rig = Rig::new("rollback-fresh");
    rig.kernel.add_netns("/run/netns/pod1");
    let pod_before = rig.kernel.netns_state("/run/netns/pod1");
    let mut n = 0;
    loop {
        rig.kernel.take_calls();
        rig.kernel.fail_call(n);
        let outcome = rig.add("ctr1", "/run/netns/pod1");
        if !rig.kernel.take_calls().iter().any(|c| c.failed) {
            outcome.unwrap();
            break;
        }
        assert!(outcome.is_err());
        assert_eq!(
            rig.kernel.netns_state("/run/netns/pod1"),
            pod_before,
            "call {n}"
        );
        let host = rig.kernel.netns_state(HOST);
        assert!(
            host.links
                .values()
                .all(|l| l.kind.as_deref() != Some("veth")),
            "call {n}: {:?}",
            host.describe()
        );
        assert!(rig.held_by("ctr1").is_empty(), "call {n}");
        n += 1;
    }
    assert!(n > 10, "{n}");
}

/// Identifiers that would reach link names, files or nft elements are
/// refused before the kernel is asked anything.
#[test]
fn bad_identifiers_are_refused_before_any_call() {
    let rig = Rig::new("idents");
    rig.kernel.add_netns("/run/netns/pod1");
    let before = rig.kernel.state();
    for (id, ifname) in [
        ("ok", "../eth0"),
        ("ok", "a-name-longer-than-15"),
        ("bad/id", "eth0"),
        ("", "eth0"),
    ] {
        let env = Env {
            command: "ADD".into(),
            container_id: id.into(),
            netns: "/run/netns/pod1".into(),
            ifname: ifname.into(),
            ..Env::default()
        };
        let stdin = rig.conf().to_string();
        let err = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(dispatch(&rig.kernel, &env, stdin.as_bytes()))
            .unwrap_err();
        assert!(
            err.code == code::INVALID_ENVIRONMENT || err.code == code::INVALID_CONFIG,
            "{id:?} {ifname:?}: {} {}",
            err.code,
            err.msg
        );
    }
    assert!(rig.kernel.take_calls().is_empty());
    assert_eq!(rig.kernel.state(), before);
}

/// What is in the way is named, and ADD changes nothing it did not make.
#[test]
fn add_refuses_what_is_in_the_way_and_leaves_it_alone() {
    let rig = Rig::new("in-the-way");
    rig.kernel.add_netns("/run/netns/pod1");
    // A link called cni0 that is no bridge.
    rig.kernel.edit(HOST, |s| {
        let dummy = strait_linux::fake::FakeLink {
            index: 7,
            name: "cni0".into(),
            kind: Some("dummy".into()),
            mac: [2, 0, 0, 0, 0, 7],
            mtu: 1500,
            up: true,
            controller: None,
            peer: None,
            hairpin: false,
            promiscuous: false,
            vxlan: None,
        };
        s.links.insert(7, dummy);
    });
    let before = rig.kernel.state();
    let err = rig.add("ctr1", "/run/netns/pod1").unwrap_err();
    assert!(
        err.msg.contains("cni0") && err.msg.contains("not a bridge"),
        "{}",
        err.msg
    );
    assert_eq!(rig.kernel.state(), before);
    assert!(rig.held_by("ctr1").is_empty());

    // The pod already has the interface: refused before anything is made.
    let rig = Rig::new("in-the-way-2");
    let pod2 = rig.kernel.add_netns("/run/netns/pod2");
    let other = rig.kernel.add_netns("/run/netns/other");
    let nl = rig.kernel.netlink(&other);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(nl.add_veth("x", "eth0", pod2.fd(), None))
        .unwrap();
    let before = rig.kernel.state();
    let err = rig.add("ctr2", "/run/netns/pod2").unwrap_err();
    assert!(
        err.msg.contains("interface eth0 already exists"),
        "{}",
        err.msg
    );
    assert_eq!(rig.kernel.state(), before);
}
