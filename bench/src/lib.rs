//! What several benchmarks share: network namespaces they make and remove,
//! and two pods routed through a node.

use std::process::Command;

use strait_linux::NetNs;

/// A network namespace of this benchmark, removed when dropped.
pub struct Ns(pub String, pub NetNs);

impl Ns {
    pub fn new(role: &str) -> Ns {
        let name = format!("strait-bench-{}-{role}", std::process::id());
        let _ = NetNs::delete(&name);
        Ns(
            name.clone(),
            NetNs::create(&name).unwrap_or_else(|e| panic!("{name}: {e}")),
        )
    }

    /// Run a command inside the namespace; it must succeed.
    pub fn sh(&self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = self
            .1
            .run(move || Command::new(&args[0]).args(&args[1..]).output().unwrap())
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.0);
    }
}

/// The client pod's address in [`routed_pods`].
pub const CLIENT_IP: &str = "10.244.0.2";
/// The server pod's address in [`routed_pods`].
pub const SERVER_IP: &str = "10.244.0.6";

/// A node and two pods, client and server, each on a veth of its own and
/// routed through the node (so their traffic meets its forward hook).
/// Namespaces are named `strait-bench-PID-{tag}-node|client|server`.
pub fn routed_pods(tag: &str) -> (Ns, Ns, Ns) {
    let node = Ns::new(&format!("{tag}-node"));
    let client = Ns::new(&format!("{tag}-client"));
    let server = Ns::new(&format!("{tag}-server"));
    node.sh(&[
        "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", &client.0,
    ]);
    node.sh(&[
        "ip", "link", "add", "s0", "type", "veth", "peer", "name", "eth0", "netns", &server.0,
    ]);
    node.sh(&["ip", "addr", "add", "10.244.0.1/30", "dev", "c0"]);
    node.sh(&["ip", "addr", "add", "10.244.0.5/30", "dev", "s0"]);
    for dev in ["c0", "s0"] {
        node.sh(&["ip", "link", "set", dev, "up"]);
    }
    node.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    client.sh(&[
        "ip",
        "addr",
        "add",
        &format!("{CLIENT_IP}/30"),
        "dev",
        "eth0",
    ]);
    server.sh(&[
        "ip",
        "addr",
        "add",
        &format!("{SERVER_IP}/30"),
        "dev",
        "eth0",
    ]);
    for (ns, gw) in [(&client, "10.244.0.1"), (&server, "10.244.0.5")] {
        ns.sh(&["ip", "link", "set", "eth0", "up"]);
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns.sh(&["ip", "route", "add", "default", "via", gw]);
    }
    (node, client, server)
}
