//! The CNI plugin end to end, called through the CNI protocol as a container
//! runtime calls it, in namespaces the tests build (a node, pods, a client).

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use serde_json::{json, Value};

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");
const REFERENCE_BRIDGE: &str = "/usr/lib/cni/bridge";

fn conf(version: &str, subnet: &str, data_dir: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "testnet",
        "type": "strait",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": data_dir}
    })
}

fn ip_of(result: &Value) -> IpAddr {
    let address = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    address.split('/').next().unwrap().parse().unwrap()
}

fn reservations(data_dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("{data_dir}/testnet"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn two_pods_on_one_bridge_reach_each_other_and_the_gateway() {
    if !root_or_skip("two_pods_on_one_bridge_reach_each_other_and_the_gateway") {
        return;
    }
    let node = TestNs::new("node");
    let (p1, p2) = (TestNs::new("p1"), TestNs::new("p2"));
    let data = TempDir::new("ipam");
    let conf = conf("1.0.0", "10.77.0.0/24", data.path()).to_string();

    let (rc, r1) = cni(STRAIT, &node, "ADD", "ctr-1", &p1.path(), &conf, &[]);
    assert_eq!(rc, 0, "{r1}");
    let (rc, r2) = cni(STRAIT, &node, "ADD", "ctr-2", &p2.path(), &conf, &[]);
    assert_eq!(rc, 0, "{r2}");
    let (ip1, ip2) = (ip_of(&r1), ip_of(&r2));
    assert_ne!(ip1, ip2);
    assert_eq!(r1["ips"][0]["gateway"], "10.77.0.1");

    // Pod to pod over TCP, with the client's own address seen by the server.
    let server = serve(&p1, SocketAddr::new(ip1, 8080), "hello from p1", 1);
    let reply = fetch(&p2, SocketAddr::new(ip1, 8080)).expect("p2 reaches p1");
    assert_eq!(
        reply.trim(),
        format!(
            "hello from p1 {ip2}:{}",
            reply.trim().rsplit(':').next().unwrap()
        )
    );
    server.join().unwrap();
    // Pod to the gateway (the bridge's address on the node).
    let gw: IpAddr = "10.77.0.1".parse().unwrap();
    let server = serve(&node, SocketAddr::new(gw, 9090), "node", 1);
    assert!(fetch(&p1, SocketAddr::new(gw, 9090))
        .expect("p1 reaches the gateway")
        .starts_with("node"));
    server.join().unwrap();

    // DEL removes the veth and the reservation; a second DEL succeeds.
    let veth = r1["interfaces"][1]["name"].as_str().unwrap().to_owned();
    assert!(links(&node).contains(&veth));
    assert_eq!(reservations(data.path()).len(), 2);
    let (rc, out) = cni(STRAIT, &node, "DEL", "ctr-1", &p1.path(), &conf, &[]);
    assert_eq!((rc, out), (0, Value::Null));
    assert!(!links(&node).contains(&veth), "host veth removed");
    assert!(
        !links(&p1).contains(&"eth0".to_owned()),
        "pod interface removed"
    );
    assert_eq!(reservations(data.path()), [ip2.to_string()]);
    assert_eq!(
        cni(STRAIT, &node, "DEL", "ctr-1", &p1.path(), &conf, &[]).0,
        0,
        "second DEL"
    );
    // DEL when the namespace is gone already still frees everything.
    let p2_path = p2.path();
    drop(p2);
    assert_eq!(
        cni(STRAIT, &node, "DEL", "ctr-2", &p2_path, &conf, &[]).0,
        0
    );
    assert!(reservations(data.path()).is_empty());
    assert_eq!(
        links(&node)
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        0,
        "no veth left: {:?}",
        links(&node)
    );
}

#[test]
fn check_reports_what_is_missing_and_add_refuses_an_existing_interface() {
    if !root_or_skip("check_reports_what_is_missing_and_add_refuses_an_existing_interface") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    let base = conf("1.1.0", "10.78.0.0/24", data.path());
    let (rc, result) = cni(
        STRAIT,
        &node,
        "ADD",
        "ctr",
        &pod.path(),
        &base.to_string(),
        &[],
    );
    assert_eq!(rc, 0, "{result}");
    let mut with_prev = base.clone();
    with_prev["prevResult"] = result.clone();
    assert_eq!(
        cni(
            STRAIT,
            &node,
            "CHECK",
            "ctr",
            &pod.path(),
            &with_prev.to_string(),
            &[]
        )
        .0,
        0
    );

    // A second ADD of the same interface fails and changes nothing.
    let (rc, err) = cni(
        STRAIT,
        &node,
        "ADD",
        "ctr-other",
        &pod.path(),
        &base.to_string(),
        &[],
    );
    assert_eq!(rc, 1);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("interface eth0 already exists"),
        "{err}"
    );
    assert_eq!(reservations(data.path()).len(), 1, "no address leaked");

    let address = result["ips"][0]["address"].as_str().unwrap().to_owned();
    let out = pod.command("ip", &["addr", "del", &address, "dev", "eth0"]);
    assert!(out.status.success());
    let (rc, err) = cni(
        STRAIT,
        &node,
        "CHECK",
        "ctr",
        &pod.path(),
        &with_prev.to_string(),
        &[],
    );
    assert_eq!(rc, 1);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("address {address} is missing on eth0")),
        "{err}"
    );
    assert_eq!(
        cni(
            STRAIT,
            &node,
            "DEL",
            "ctr",
            &pod.path(),
            &base.to_string(),
            &[]
        )
        .0,
        0
    );
}

#[test]
fn a_hundred_concurrent_adds_get_distinct_addresses_and_gc_frees_the_invalid_half() {
    if !root_or_skip(
        "a_hundred_concurrent_adds_get_distinct_addresses_and_gc_frees_the_invalid_half",
    ) {
        return;
    }
    let node = std::sync::Arc::new(TestNs::new("node"));
    let pods: Vec<TestNs> = (0..100).map(|i| TestNs::new(&format!("c{i}"))).collect();
    let data = TempDir::new("ipam");
    let conf = conf("1.1.0", "10.79.0.0/22", data.path()).to_string();
    let handles: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let (node, conf, path) = (node.clone(), conf.clone(), pod.path());
            std::thread::spawn(move || {
                cni(STRAIT, &node, "ADD", &format!("ctr-{i}"), &path, &conf, &[])
            })
        })
        .collect();
    let mut ips = Vec::new();
    for h in handles {
        let (rc, result) = h.join().unwrap();
        assert_eq!(rc, 0, "{result}");
        ips.push(ip_of(&result));
    }
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 100, "every ADD got its own address");
    assert_eq!(reservations(data.path()).len(), 100);

    // GC with the even half valid frees the odd half, and only it.
    let valid: Vec<Value> = (0..100)
        .step_by(2)
        .map(|i| json!({"containerID": format!("ctr-{i}"), "ifname": "eth0"}))
        .collect();
    let mut gc_conf: Value = serde_json::from_str(&conf).unwrap();
    gc_conf["cni.dev/valid-attachments"] = Value::Array(valid);
    let (rc, out) = cni(STRAIT, &node, "GC", "", "", &gc_conf.to_string(), &[]);
    assert_eq!(rc, 0, "{out}");
    let left = reservations(data.path());
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..100).step_by(2).map(|i| ips[i].to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(left, expected);
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(
            cni(
                STRAIT,
                &node,
                "DEL",
                &format!("ctr-{i}"),
                &pod.path(),
                &conf,
                &[]
            )
            .0,
            0
        );
    }
    assert!(reservations(data.path()).is_empty());
}

#[test]
fn a_reference_bridge_conflist_works_with_type_changed_and_shares_the_data_dir() {
    if !root_or_skip("a_reference_bridge_conflist_works_with_type_changed_and_shares_the_data_dir")
    {
        return;
    }
    if !std::path::Path::new(REFERENCE_BRIDGE).exists() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED reference comparison: apt-get install containernetworking-plugins\n",
        );
        return;
    }
    let node = TestNs::new("node");
    let (a, b) = (TestNs::new("ref"), TestNs::new("strait"));
    let data = TempDir::new("ipam");
    let mut reference = conf("1.0.0", "10.80.0.0/24", data.path());
    reference["type"] = json!("bridge");
    let strait = conf("1.0.0", "10.80.0.0/24", data.path());

    let (rc, ra) = cni(
        REFERENCE_BRIDGE,
        &node,
        "ADD",
        "ref-ctr",
        &a.path(),
        &reference.to_string(),
        &[],
    );
    assert_eq!(rc, 0, "reference ADD: {ra}");
    let (rc, rb) = cni(
        STRAIT,
        &node,
        "ADD",
        "strait-ctr",
        &b.path(),
        &strait.to_string(),
        &[],
    );
    assert_eq!(rc, 0, "strait ADD: {rb}");
    let (ipa, ipb) = (ip_of(&ra), ip_of(&rb));
    assert_ne!(
        ipa, ipb,
        "strait respects the reference plugin's reservation"
    );
    // strait's reservation is in host-local's format: the reference reads it.
    let (rc, rc2) = cni(
        REFERENCE_BRIDGE,
        &node,
        "ADD",
        "ref-ctr-2",
        &TestNs::new("ref2").path(),
        &reference.to_string(),
        &[],
    );
    // (the namespace above is already gone when the plugin runs: an error is fine,
    // what matters is that no address was handed out twice)
    if rc == 0 {
        assert!(![ipa, ipb].contains(&ip_of(&rc2)));
    }
    let server = serve(&a, SocketAddr::new(ipa, 7000), "ref pod", 1);
    assert!(fetch(&b, SocketAddr::new(ipa, 7000))
        .expect("strait pod reaches reference pod")
        .starts_with("ref pod"));
    server.join().unwrap();
    assert_eq!(
        cni(
            STRAIT,
            &node,
            "DEL",
            "strait-ctr",
            &b.path(),
            &strait.to_string(),
            &[]
        )
        .0,
        0
    );
    assert_eq!(
        cni(
            REFERENCE_BRIDGE,
            &node,
            "DEL",
            "ref-ctr",
            &a.path(),
            &reference.to_string(),
            &[]
        )
        .0,
        0
    );
    let _ = cni(
        REFERENCE_BRIDGE,
        &node,
        "DEL",
        "ref-ctr-2",
        "",
        &reference.to_string(),
        &[],
    );
    assert!(
        reservations(data.path()).is_empty(),
        "{:?}",
        reservations(data.path())
    );
}

#[test]
fn a_host_port_is_reachable_through_the_node_address() {
    if !root_or_skip("a_host_port_is_reachable_through_the_node_address") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let client = TestNs::new("client");
    let data = TempDir::new("ipam");
    // The client reaches the node over a veth pair: node 172.31.250.1, client .2.
    let node_name = node.name.clone();
    let out = client.command(
        "ip",
        &[
            "link", "add", "up0", "type", "veth", "peer", "name", "down0", "netns", &node_name,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (ns, dev, addr) in [
        (&client, "up0", "172.31.250.2/30"),
        (&node, "down0", "172.31.250.1/30"),
    ] {
        assert!(ns
            .command("ip", &["addr", "add", addr, "dev", dev])
            .status
            .success());
        assert!(ns
            .command("ip", &["link", "set", dev, "up"])
            .status
            .success());
    }
    let mut conf = conf("1.0.0", "10.81.0.0/24", data.path());
    conf["isDefaultGateway"] = json!(true);
    conf["capabilities"] = json!({"portMappings": true});
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]});
    let (rc, result) = cni(
        STRAIT,
        &node,
        "ADD",
        "web",
        &pod.path(),
        &conf.to_string(),
        &[],
    );
    assert_eq!(rc, 0, "{result}");
    // The pod answers on its containerPort; the client only knows the node.
    let pod_ip = ip_of(&result);
    let server = serve(&pod, SocketAddr::new(pod_ip, 80), "pod", 1);
    let node_ip: IpAddr = "172.31.250.1".parse().unwrap();
    let reply = fetch(&client, SocketAddr::new(node_ip, 8081))
        .expect("hostPort reachable via the node address");
    assert!(
        reply.starts_with("pod 172.31.250.2:"),
        "the pod sees the client's address: {reply}"
    );
    server.join().unwrap();

    // A second pod cannot take the same hostPort; the first keeps it.
    let other = TestNs::new("other");
    let (rc, err) = cni(
        STRAIT,
        &node,
        "ADD",
        "web-2",
        &other.path(),
        &conf.to_string(),
        &[],
    );
    assert_eq!(rc, 1);
    assert!(
        err["msg"].as_str().unwrap().contains("hostPort 8081/tcp"),
        "{err}"
    );
    assert_eq!(
        reservations(data.path()).len(),
        1,
        "the failed ADD released its address"
    );

    // DEL removes the mapping.
    assert_eq!(
        cni(
            STRAIT,
            &node,
            "DEL",
            "web",
            &pod.path(),
            &conf.to_string(),
            &[]
        )
        .0,
        0
    );
    let rules = node.command("nft", &["list", "map", "inet", "strait-cni", "hostports4"]);
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("8081"),
        "mapping removed"
    );
}

#[test]
fn results_have_the_shape_of_the_requested_version() {
    if !root_or_skip("results_have_the_shape_of_the_requested_version") {
        return;
    }
    let node = TestNs::new("node");
    let data = TempDir::new("ipam");
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = TestNs::new("pod");
        let conf = conf(version, "10.82.0.0/24", data.path()).to_string();
        let (rc, r) = cni(STRAIT, &node, "ADD", "ctr", &pod.path(), &conf, &[]);
        assert_eq!(rc, 0, "{r}");
        assert_eq!(r["cniVersion"], version);
        let ip = &r["ips"][0];
        if version.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{version}: {r}");
        } else {
            assert!(ip.get("version").is_none(), "{version}: {r}");
        }
        assert_eq!(ip["interface"], 2);
        assert_eq!(r["interfaces"][2]["name"], "eth0");
        assert_eq!(r["interfaces"][2]["sandbox"], pod.path());
        assert_eq!(r["interfaces"][0]["name"], "cni0");
        assert_eq!(
            cni(STRAIT, &node, "DEL", "ctr", &pod.path(), &conf, &[]).0,
            0
        );
    }
}

#[test]
fn bad_configuration_gets_the_spec_codes_and_creates_nothing() {
    if !root_or_skip("bad_configuration_gets_the_spec_codes_and_creates_nothing") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    let add =
        |conf: &str, env: &[(&str, &str)]| cni(STRAIT, &node, "ADD", "ctr", &pod.path(), conf, env);
    let (rc, err) = add("{\"cniVersion\": \"1.0.0\", ", &[]);
    assert_eq!(
        (rc, err["code"].as_u64()),
        (1, Some(6)),
        "malformed JSON: {err}"
    );

    let mut wrong = conf("1.0.0", "10.83.0.0/24", data.path());
    wrong["mtu"] = json!("big");
    let (rc, err) = add(&wrong.to_string(), &[]);
    assert_eq!((rc, err["code"].as_u64()), (1, Some(7)), "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("mtu"),
        "names the field: {err}"
    );

    let mut bad_subnet = conf("1.0.0", "10.83.0.0/33", data.path());
    bad_subnet["name"] = json!("testnet");
    let (rc, err) = add(&bad_subnet.to_string(), &[]);
    assert_eq!((rc, err["code"].as_u64()), (1, Some(7)), "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("ipam.ranges[0][0].subnet"),
        "{err}"
    );

    let (rc, err) = add(&conf("0.2.0", "10.83.0.0/24", data.path()).to_string(), &[]);
    assert_eq!((rc, err["code"].as_u64()), (1, Some(1)), "{err}");

    let (rc, err) = add(
        &conf("1.0.0", "10.83.0.0/24", data.path()).to_string(),
        &[("CNI_CONTAINERID", "")],
    );
    assert_eq!((rc, err["code"].as_u64()), (1, Some(4)), "{err}");

    // Nothing was created: no bridge, no veth, no reservation.
    assert_eq!(links(&node), ["lo"]);
    assert_eq!(links(&pod), ["lo"]);
    assert!(reservations(data.path()).is_empty());

    let (rc, v) = cni(
        STRAIT,
        &node,
        "VERSION",
        "",
        "",
        "{\"cniVersion\":\"1.1.0\"}",
        &[],
    );
    assert_eq!(rc, 0);
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn status_reports_an_exhausted_range() {
    if !root_or_skip("status_reports_an_exhausted_range") {
        return;
    }
    let node = TestNs::new("node");
    let data = TempDir::new("ipam");
    let conf = conf("1.1.0", "10.84.0.0/30", data.path()).to_string();
    assert_eq!(cni(STRAIT, &node, "STATUS", "", "", &conf, &[]).0, 0);
    // A /30 has .1 (gateway) and .2: one pod fills it.
    let pod = TestNs::new("pod");
    assert_eq!(
        cni(STRAIT, &node, "ADD", "ctr", &pod.path(), &conf, &[]).0,
        0
    );
    let (rc, err) = cni(STRAIT, &node, "STATUS", "", "", &conf, &[]);
    assert_eq!((rc, err["code"].as_u64()), (1, Some(50)), "{err}");
    let other = TestNs::new("other");
    let (rc, err) = cni(STRAIT, &node, "ADD", "ctr-2", &other.path(), &conf, &[]);
    assert_eq!(rc, 1);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{err}"
    );
    assert_eq!(
        links(&other),
        ["lo"],
        "nothing left behind by the failed ADD"
    );
    assert_eq!(
        cni(STRAIT, &node, "DEL", "ctr", &pod.path(), &conf, &[]).0,
        0
    );
}

/// Names of the files under `<data_dir>/.strait/testnet` (strait's state).
fn state_files(data_dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("{data_dir}/.strait/testnet"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn nft_text(ns: &TestNs, args: &[&str]) -> (bool, String) {
    let out = ns.command("nft", args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn veths(ns: &TestNs) -> Vec<String> {
    links(ns)
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

#[test]
fn container_ids_and_interface_names_that_are_not_identifiers_are_refused_and_change_nothing() {
    if !root_or_skip(
        "container_ids_and_interface_names_that_are_not_identifiers_are_refused_and_change_nothing",
    ) {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    // Something of the node's own that a pasted `flush ruleset` would remove.
    let (ok, _) = nft_text(&node, &["add", "table", "inet", "sentinel"]);
    assert!(ok);
    let (ok, _) = nft_text(&node, &["add", "chain", "inet", "sentinel", "keep"]);
    assert!(ok);
    let mut conf = conf("1.0.0", "10.85.0.0/24", data.path());
    conf["capabilities"] = json!({"portMappings": true});
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}]});
    let conf = conf.to_string();
    let escape = format!("{}/escaped", data.path());
    for (id, ifname) in [
        ("x\" ; flush ruleset ; \"", "eth0"),
        (
            "x\" }\nflush ruleset\nadd element inet strait-cni masq4 { 10.85.0.99 comment \"y",
            "eth0",
        ),
        ("../escaped", "eth0"),
        ("-leading-dash", "eth0"),
        ("ctr", "../../x"),
        ("ctr", "eth0\" ; flush ruleset ; \""),
        ("ctr", "a-name-of-16-byt"),
        ("ctr", ".."),
    ] {
        for command in ["ADD", "DEL", "CHECK"] {
            let call = strait_cni::Call {
                command,
                container_id: id,
                netns: &pod.path(),
                ifname,
                conf: &conf,
                env: &[],
            };
            let reply = strait_cni::invoke(std::path::Path::new(STRAIT), &node.ns, &call)
                .expect("run the plugin");
            assert_eq!(reply.code, 1, "{command} {id:?} {ifname:?}: {}", reply.json);
            assert_eq!(
                reply.json["code"].as_u64(),
                Some(4),
                "{command} {id:?} {ifname:?}: {}",
                reply.json
            );
            let msg = reply.json["msg"].as_str().unwrap();
            let variable = if ifname == "eth0" {
                "CNI_CONTAINERID"
            } else {
                "CNI_IFNAME"
            };
            assert!(msg.contains(variable), "names {variable}: {msg}");
        }
    }
    let (ok, sentinel) = nft_text(&node, &["list", "table", "inet", "sentinel"]);
    assert!(ok && sentinel.contains("chain keep"), "{sentinel}");
    let (exists, _) = nft_text(&node, &["list", "table", "inet", "strait-cni"]);
    assert!(!exists, "no strait-cni table was made");
    assert_eq!(links(&node), ["lo"]);
    assert_eq!(links(&pod), ["lo"]);
    assert!(reservations(data.path()).is_empty());
    assert!(!std::path::Path::new(&escape).exists());
    assert!(!std::path::Path::new(&format!("{}/.strait", data.path())).exists());
}

#[test]
fn no_container_id_reaches_the_ruleset_or_a_file_name() {
    if !root_or_skip("no_container_id_reaches_the_ruleset_or_a_file_name") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    let mut conf = conf("1.0.0", "10.86.0.0/24", data.path());
    conf["capabilities"] = json!({"portMappings": true});
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8086, "containerPort": 80, "protocol": "tcp"}]});
    let conf = conf.to_string();
    // Valid, but odd: dots, dashes, underscores, mixed case.
    let id = "Odd.ID_with--chars..9";
    let (rc, result) = cni(STRAIT, &node, "ADD", id, &pod.path(), &conf, &[]);
    assert_eq!(rc, 0, "{result}");
    let (ok, table) = nft_text(&node, &["list", "table", "inet", "strait-cni"]);
    assert!(ok, "{table}");
    assert!(table.contains("8086"), "the mapping is there: {table}");
    for input in [id, "Odd", "testnet", "eth0"] {
        assert!(!table.contains(input), "{input:?} in the ruleset:\n{table}");
    }
    let files = state_files(data.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!files[0].contains("Odd"), "{files:?}");
    assert_eq!(cni(STRAIT, &node, "DEL", id, &pod.path(), &conf, &[]).0, 0);
    let (_, hostports) = nft_text(&node, &["list", "map", "inet", "strait-cni", "hostports4"]);
    assert!(!hostports.contains("8086"), "{hostports}");
    assert!(state_files(data.path()).is_empty());
}

#[test]
fn a_300_character_container_id_adds_and_deletes() {
    if !root_or_skip("a_300_character_container_id_adds_and_deletes") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    let conf = conf("1.0.0", "10.87.0.0/24", data.path()).to_string();
    let id = format!("c{}", "0123456789".repeat(30));
    assert_eq!(id.len(), 301);
    let (rc, result) = cni(STRAIT, &node, "ADD", &id, &pod.path(), &conf, &[]);
    assert_eq!(rc, 0, "{result}");
    assert_eq!(reservations(data.path()).len(), 1);
    assert_eq!(veths(&node).len(), 1);
    let files = state_files(data.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].len() < 64, "a short file name: {files:?}");
    // The reservation keeps host-local's format: the whole ID, then ifname.
    let ip = ip_of(&result);
    assert_eq!(
        std::fs::read_to_string(format!("{}/testnet/{ip}", data.path())).unwrap(),
        format!("{id}\r\neth0")
    );
    let (rc, out) = cni(STRAIT, &node, "DEL", &id, &pod.path(), &conf, &[]);
    assert_eq!((rc, out), (0, Value::Null));
    assert!(reservations(data.path()).is_empty());
    assert!(veths(&node).is_empty());
    assert!(state_files(data.path()).is_empty());
}

#[test]
fn an_add_whose_state_cannot_be_saved_undoes_everything_and_del_succeeds() {
    if !root_or_skip("an_add_whose_state_cannot_be_saved_undoes_everything_and_del_succeeds") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    let mut conf = conf("1.0.0", "10.88.0.0/24", data.path());
    conf["capabilities"] = json!({"portMappings": true});
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8088, "containerPort": 80, "protocol": "tcp"}]});
    let conf = conf.to_string();
    // The state directory cannot be made: a plain file is in its way (root
    // ignores permissions, so a read-only directory would not stop it).
    let blocker = format!("{}/.strait", data.path());
    std::fs::write(&blocker, "in the way").unwrap();
    let (rc, err) = cni(STRAIT, &node, "ADD", "ctr", &pod.path(), &conf, &[]);
    assert_eq!(rc, 1, "{err}");
    assert_eq!(err["code"].as_u64(), Some(5), "an I/O failure: {err}");
    assert!(
        err["msg"].as_str().unwrap().contains(".strait"),
        "names the path: {err}"
    );
    assert!(reservations(data.path()).is_empty(), "the address is free");
    assert!(veths(&node).is_empty(), "no veth left: {:?}", links(&node));
    assert_eq!(links(&pod), ["lo"]);
    for map in ["masq4", "hostports4"] {
        let (_, elements) = nft_text(&node, &["list", "map", "inet", "strait-cni", map]);
        assert!(
            !elements.contains("10.88.0.") && !elements.contains("8088"),
            "{map}: {elements}"
        );
    }
    // DEL succeeds while the file is still in the way, and again after.
    let (rc, out) = cni(STRAIT, &node, "DEL", "ctr", &pod.path(), &conf, &[]);
    assert_eq!((rc, &out), (0, &Value::Null), "{out}");
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(
        cni(STRAIT, &node, "DEL", "ctr", &pod.path(), &conf, &[]).0,
        0
    );
    // And the same attachment can be made now.
    let (rc, result) = cni(STRAIT, &node, "ADD", "ctr", &pod.path(), &conf, &[]);
    assert_eq!(rc, 0, "{result}");
    assert_eq!(
        cni(STRAIT, &node, "DEL", "ctr", &pod.path(), &conf, &[]).0,
        0
    );
    assert!(reservations(data.path()).is_empty());
}

#[test]
fn a_netns_that_is_not_a_network_namespace_gets_a_spec_code() {
    if !root_or_skip("a_netns_that_is_not_a_network_namespace_gets_a_spec_code") {
        return;
    }
    let node = TestNs::new("node");
    let data = TempDir::new("ipam");
    let conf = conf("1.0.0", "10.89.0.0/24", data.path());
    let scratch = TempDir::new("netns");
    let file = format!("{}/plain-file", scratch.path());
    std::fs::write(&file, "").unwrap();
    let dir = format!("{}/a-directory", scratch.path());
    std::fs::create_dir(&dir).unwrap();
    let missing = format!("/run/netns/{}-never-made", node.name);
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [], "interfaces": []});
    // A namespace, but not a network one: the plugin's own mount namespace.
    for (netns, expected) in [
        (file.as_str(), 4),
        (dir.as_str(), 4),
        ("/proc/self/ns/mnt", 4),
        (missing.as_str(), 3),
    ] {
        for (command, conf) in [("ADD", &conf), ("CHECK", &with_prev)] {
            let (rc, err) = cni(STRAIT, &node, command, "ctr", netns, &conf.to_string(), &[]);
            assert_eq!(rc, 1, "{command} {netns}: {err}");
            assert_eq!(
                err["code"].as_u64(),
                Some(expected),
                "{command} {netns}: {err}"
            );
            assert!(
                err["msg"].as_str().unwrap().contains("CNI_NETNS"),
                "names the variable: {err}"
            );
        }
        // DEL does what it can (nothing here) and succeeds.
        let (rc, out) = cni(STRAIT, &node, "DEL", "ctr", netns, &conf.to_string(), &[]);
        assert_eq!((rc, &out), (0, &Value::Null), "DEL {netns}: {out}");
    }
    assert_eq!(links(&node), ["lo"], "nothing made");
    assert!(reservations(data.path()).is_empty());
}

/// The MTU of link `name` in `ns`.
fn mtu(ns: &TestNs, name: &str) -> u32 {
    let out = ns.command("ip", &["-o", "link", "show", "dev", name]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mtu for {name}: {text}"))
}

#[test]
fn the_configured_mtu_is_on_the_bridge_and_both_veth_ends() {
    if !root_or_skip("the_configured_mtu_is_on_the_bridge_and_both_veth_ends") {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let data = TempDir::new("ipam");
    let mut conf = conf("1.0.0", "10.90.0.0/24", data.path());
    // What flannel gives pods on a VXLAN overlay over a 1500-byte underlay.
    conf["mtu"] = json!(1450);
    let conf = conf.to_string();
    let (rc, result) = cni(STRAIT, &node, "ADD", "ctr", &pod.path(), &conf, &[]);
    assert_eq!(rc, 0, "{result}");
    let veth = result["interfaces"][1]["name"].as_str().unwrap().to_owned();
    assert_eq!(mtu(&node, "cni0"), 1450);
    assert_eq!(mtu(&node, &veth), 1450);
    assert_eq!(mtu(&pod, "eth0"), 1450);
    assert_eq!(
        cni(STRAIT, &node, "DEL", "ctr", &pod.path(), &conf, &[]).0,
        0
    );
}
