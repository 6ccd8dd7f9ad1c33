//! The lab end to end, each test in a lab of its own, all taken down:
//! the seeds' scenarios as a user runs them with `strait lab`.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");
static COUNTER: AtomicUsize = AtomicUsize::new(0);

use common::repo;

/// A lab for one test; `lab down` when dropped, whatever happened.
struct Lab {
    name: String,
}

impl Lab {
    fn up(extra: &[&str], files: &[&str]) -> Lab {
        Lab::up_with_env(extra, files, &[])
    }

    /// `up`, with `env` added to the environment of `lab up` (and so of the
    /// controller it starts).
    fn up_with_env(extra: &[&str], files: &[&str], env: &[(&str, String)]) -> Lab {
        let name = format!(
            "t{}p{}",
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::process::id() % 100_000
        );
        let lab = Lab { name };
        let mut args = vec!["lab", "up", "--name", &lab.name, "--timeout", "60"];
        args.extend_from_slice(extra);
        for f in files {
            args.extend(["-f", f]);
        }
        let out = Command::new(STRAIT)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab up: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            lab.log()
        );
        lab
    }

    fn strait(&self, args: &[&str]) -> Output {
        Command::new(STRAIT)
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(format!("/run/strait/{}/controller.log", self.name))
            .unwrap_or_default()
    }

    /// The controller's log, then each node's Ingress controller's.
    fn log_with_ingress(&self) -> String {
        let ingress_log = |n: usize| {
            std::fs::read_to_string(format!("/run/strait/{}/ingress-node{n}.log", self.name))
                .unwrap_or_default()
        };
        format!(
            "{}\n--- ingress node-1:\n{}\n--- ingress node-2:\n{}",
            self.log(),
            ingress_log(1),
            ingress_log(2)
        )
    }

    /// `lab exec POD -- sh -c SCRIPT`: stdout, and whether it succeeded.
    fn sh(&self, pod: &str, ns: &str, script: &str) -> (bool, String) {
        let out = self.strait(&[
            "lab", "exec", "--name", &self.name, pod, "-n", ns, "--", "sh", "-c", script,
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    }

    fn get_json(&self, kinds: &str) -> serde_json::Value {
        let out = self.strait(&[
            "lab", "get", "--name", &self.name, kinds, "-A", "-o", "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn pod_ip(&self, ns: &str, name: &str) -> String {
        let pods = self.get_json("pods");
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == name && p["metadata"]["namespace"] == ns)
            .map(|p| p["status"]["podIP"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    fn pods_named(&self, prefix: &str) -> Vec<String> {
        let pods = self.get_json("pods");
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    fn apply(&self, yaml: &str) {
        let dir = common::TempDir::new("lab-apply");
        let file = dir.0.join("m.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = self.strait(&[
            "lab",
            "apply",
            "--name",
            &self.name,
            "-f",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.strait(&["lab", "down", "--name", &self.name]);
    }
}

/// Who answered `url` from `pod`, up to `n` requests, as a set.
fn answers(lab: &Lab, pod: &str, url: &str, n: usize, want: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let (ok, out) = lab.sh(pod, "default", &format!("python3 -c \"import urllib.request as u; print(u.urlopen('{url}', timeout=3).read().decode().strip())\""));
        if ok {
            seen.insert(out);
        }
        if seen.len() >= want {
            break;
        }
    }
    seen
}

const CLIENT_ON_NODE_2: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: client-2}\nspec:\n  nodeName: node-2\n  containers: [{name: c, image: alpine, command: [sleep, '36000']}]\n";

#[test]
fn seed_000_clients_on_both_nodes_reach_both_servers_by_name() {
    if !common::root_or_skip("seed_000_clients_on_both_nodes_reach_both_servers_by_name") {
        return;
    }
    let lab = Lab::up(&[], &["examples/service-demo.yaml"]);
    lab.apply(CLIENT_ON_NODE_2);
    assert!(common::wait_for(Duration::from_secs(20), || !lab
        .pod_ip("default", "client-2")
        .is_empty()));
    for client in ["service-demo-client", "client-2"] {
        let seen = answers(&lab, client, "http://service-demo", 50, 2);
        assert_eq!(seen.len(), 2, "{client} saw {seen:?}\n{}", lab.log());
        assert!(seen
            .iter()
            .all(|s| s.starts_with("<p>Hi from service-demo-")));
    }
    // The pod's view: its hostname and the cluster's resolv.conf.
    let (_, out) = lab.sh(
        "service-demo-client",
        "default",
        "hostname; cat /etc/resolv.conf",
    );
    assert!(out.starts_with("service-demo-client\nsearch default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10"), "{out}");
    // The exit code of the command is passed through.
    let out = lab.strait(&[
        "lab",
        "exec",
        "--name",
        &lab.name,
        "service-demo-client",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
}

const ECHO_SOURCE: &str = "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('', 9000))\ns.listen()\nwhile True:\n    c, a = s.accept()\n    c.send(a[0].encode())\n    c.close()\n";

fn source_ip_across_nodes(backend: &str) {
    let dir = common::TempDir::new("lab-echo");
    let file = dir.0.join("echo.yaml");
    let pods = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: echo}}\nspec:\n  nodeName: node-1\n  containers: [{{name: c, image: python, command: [python3, -c, {:?}]}}, {{name: u, image: python, command: [python3, -c, {:?}]}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: caller}}\nspec:\n  nodeName: node-2\n  containers: [{{name: c, image: alpine, command: [sleep, '36000']}}]\n",
        ECHO_SOURCE, UDP_ECHO_SOURCE
    );
    std::fs::write(&file, pods).unwrap();
    let lab = Lab::up(&["--backend", backend], &[file.to_str().unwrap()]);
    let (echo_ip, caller_ip) = (
        lab.pod_ip("default", "echo"),
        lab.pod_ip("default", "caller"),
    );
    assert!(
        echo_ip.starts_with("10.244.0.") && caller_ip.starts_with("10.244.1."),
        "{echo_ip} {caller_ip}"
    );
    let script = format!("python3 -c \"import socket; print(socket.create_connection(('{echo_ip}', 9000), 3).recv(64).decode())\"");
    let mut got = String::new();
    let ok = common::wait_for(Duration::from_secs(10), || {
        let (ok, out) = lab.sh("caller", "default", &script);
        got = out;
        ok
    });
    assert!(
        ok,
        "{backend}: caller cannot reach echo: {got}\n{}",
        lab.log()
    );
    assert_eq!(
        got, caller_ip,
        "{backend}: the server sees the client's pod IP (no SNAT between pods)"
    );
    // The pod MTU is the overlay's (flannel: underlay - 50 for VXLAN), and a
    // datagram of the largest size it allows, with DF set, crosses nodes.
    let want_mtu = if backend == "vxlan" { 1450 } else { 1500 };
    // (/sys shows the host's interfaces: sysfs belongs to who mounted it.)
    let (_, link) = lab.sh("caller", "default", "ip -o link show dev eth0");
    assert!(
        link.contains(&format!(" mtu {want_mtu} ")),
        "{backend}: pod eth0 MTU is not {want_mtu}: {link}"
    );
    let script = format!(
        "python3 -c \"{}\"",
        DF_PROBE
            .replace("ECHO_IP", &echo_ip)
            .replace("SIZE", &(want_mtu - 28).to_string())
    );
    let ok = common::wait_for(Duration::from_secs(10), || {
        let (ok, out) = lab.sh("caller", "default", &script);
        got = out;
        ok
    });
    assert!(
        ok && got == format!("{} {}", want_mtu - 28, want_mtu - 28),
        "{backend}: a DF datagram of {} bytes does not cross nodes: {got}",
        want_mtu - 28
    );
}

/// A UDP echo on port 9001.
const UDP_ECHO_SOURCE: &str = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('', 9001))\nwhile True:\n    d, a = s.recvfrom(65535)\n    s.sendto(d, a)\n";

/// Send a datagram of SIZE bytes (the largest the pod MTU allows) with DF
/// set (IP_MTU_DISCOVER = 10, IP_PMTUDISC_DO = 2) to the UDP echo; print
/// the size sent and the size echoed, or fail.
const DF_PROBE: &str = "import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.IPPROTO_IP,10,2); s.settimeout(1); n=SIZE; s.sendto(b'x'*n,('ECHO_IP',9001)); print(n,len(s.recv(65535)))";

#[test]
fn pods_on_different_nodes_talk_by_ip_over_vxlan_keeping_their_source() {
    if common::root_or_skip("pods_on_different_nodes_talk_by_ip_over_vxlan_keeping_their_source") {
        source_ip_across_nodes("vxlan");
    }
}

#[test]
fn pods_on_different_nodes_talk_by_ip_over_host_gw_keeping_their_source() {
    if common::root_or_skip("pods_on_different_nodes_talk_by_ip_over_host_gw_keeping_their_source")
    {
        source_ip_across_nodes("host-gw");
    }
}

#[test]
fn seed_003_and_002_names_and_node_ports() {
    if !common::root_or_skip("seed_003_and_002_names_and_node_ports") {
        return;
    }
    let lab = Lab::up(
        &[],
        &[
            "examples/maker.yaml",
            "examples/my-exter.yaml",
            "examples/my-service.yaml",
        ],
    );
    // Seed 003: a pod's hostname under the headless Service, from another pod.
    let py_kube2 = lab.pod_ip("default", "py-kube2");
    let (ok, out) = lab.sh(
        "py-kube1",
        "default",
        "getent hosts trouble2.maker.default.svc.cluster.local",
    );
    assert!(
        ok && out.starts_with(&py_kube2),
        "{out} (py-kube2 is {py_kube2})\n{}",
        lab.log()
    );
    // Seed 002: ExternalName in dev is a CNAME to my-service.
    let (ok, out) = lab.sh("test-pod5", "dev", "python3 -c \"import socket; print(socket.gethostbyname_ex('my-exter.dev.svc.cluster.local'))\"");
    assert!(
        ok && out.contains("my-service.default.svc.cluster.local"),
        "{out}"
    );
    // Seed 002: NodePort 30078 answers on every node's address, from the underlay.
    let underlay = format!("/run/netns/strait-{}-underlay", lab.name);
    for node_ip in ["172.18.0.2", "172.18.0.3"] {
        let ok = common::wait_for(Duration::from_secs(10), || {
            let out = Command::new("nsenter")
                .args([format!("--net={underlay}"), "--".into(), "python3".into(), "-c".into(), format!("import urllib.request as u; print(u.urlopen('http://{node_ip}:30078', timeout=3).read().decode())")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).starts_with("app1 app1-")
        });
        assert!(ok, "NodePort on {node_ip}\n{}", lab.log());
    }
}

#[test]
fn scaling_and_deleting_move_the_traffic() {
    if !common::root_or_skip("scaling_and_deleting_move_the_traffic") {
        return;
    }
    let lab = Lab::up(&[], &["examples/service-demo.yaml"]);
    let deployment = std::fs::read_to_string(repo().join("examples/service-demo.yaml")).unwrap();
    lab.apply(&deployment.replace("replicas: 2", "replicas: 3"));
    assert!(common::wait_for(Duration::from_secs(20), || lab
        .pods_named("service-demo-")
        .iter()
        .filter(|n| *n != "service-demo-client")
        .count()
        == 3));
    let seen = answers(&lab, "service-demo-client", "http://service-demo", 80, 3);
    assert_eq!(seen.len(), 3, "three replicas answer: {seen:?}");

    lab.apply(&deployment.replace("replicas: 2", "replicas: 1"));
    assert!(common::wait_for(Duration::from_secs(40), || lab
        .pods_named("service-demo-")
        .iter()
        .filter(|n| *n != "service-demo-client")
        .count()
        == 1));
    let left = lab
        .pods_named("service-demo-")
        .into_iter()
        .find(|n| n != "service-demo-client")
        .unwrap();
    let seen = answers(&lab, "service-demo-client", "http://service-demo", 20, 2);
    assert_eq!(
        seen,
        BTreeSet::from([format!("<p>Hi from {left}</p>")]),
        "no connection reaches a removed pod"
    );

    let out = lab.strait(&[
        "lab",
        "delete",
        "--name",
        &lab.name,
        "pod/service-demo-client",
    ]);
    assert!(out.status.success());
    assert!(common::wait_for(Duration::from_secs(40), || lab
        .pod_ip("default", "service-demo-client")
        .is_empty()));
}

#[test]
fn lab_down_leaves_nothing_behind() {
    if !common::root_or_skip("lab_down_leaves_nothing_behind") {
        return;
    }
    let lab = Lab::up(&[], &["examples/service-demo.yaml"]);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/strait/{}/state.json", lab.name)).unwrap(),
    )
    .unwrap();
    let pids: Vec<i64> = state["pods"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p["pid"].as_i64())
        .collect();
    // controller.pid: "PID START" (start time, so a reused PID is not ours).
    let controller: i32 =
        std::fs::read_to_string(format!("/run/strait/{}/controller.pid", lab.name))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
    assert!(!pids.is_empty());
    let out = lab.strait(&["lab", "down", "--name", &lab.name]);
    assert!(out.status.success());
    let prefix = format!("strait-{}-", lab.name);
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!std::path::Path::new(&format!("/run/strait/{}", lab.name)).exists());
    for pid in pids.iter().map(|p| *p as i32).chain([controller]) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "process {pid} still runs"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&prefix), "a mount is left");
    assert!(
        lab.strait(&["lab", "down", "--name", &lab.name])
            .status
            .success(),
        "down twice is fine"
    );
}

#[test]
fn readiness_probes_decide_who_gets_traffic() {
    if !common::root_or_skip("readiness_probes_decide_who_gets_traffic") {
        return;
    }
    let lab = Lab::up(&[], &["examples/service-demo.yaml"]);
    // A pod whose probe never succeeds stays 0/1 and out of the Service.
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: never-ready, labels: {app: service_demo_pod}}\nspec:\n  containers:\n  - name: c\n    image: python\n    command: [python3, -m, http.server, '8080']\n    ports: [{name: http, containerPort: 8080}]\n    readinessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 1}\n",
    );
    assert!(common::wait_for(Duration::from_secs(20), || !lab
        .pod_ip("default", "never-ready")
        .is_empty()));
    std::thread::sleep(Duration::from_secs(3));
    let slices = lab.get_json("endpointslices");
    let endpoint = slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["targetRef"]["name"] == "never-ready")
        .expect("the pod is an endpoint");
    assert_eq!(endpoint["conditions"]["ready"], false, "{endpoint}");
    let seen = answers(&lab, "service-demo-client", "http://service-demo", 30, 3);
    // Only the two ready servers answer (the unready one would list its directory).
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|s| s.starts_with("<p>Hi from service-demo-")),
        "{seen:?}"
    );
}

#[test]
fn a_pod_that_cannot_start_is_reported_at_once() {
    if !common::root_or_skip("a_pod_that_cannot_start_is_reported_at_once") {
        return;
    }
    let dir = common::TempDir::new("lab-bad");
    let file = dir.0.join("bad.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: {name: nginx}\nspec:\n  containers: [{name: web, image: nginx}]\n").unwrap();
    let name = format!("bad{}", std::process::id() % 100_000);
    let lab = Lab { name: name.clone() };
    let started = std::time::Instant::now();
    let out = lab.strait(&[
        "lab",
        "up",
        "--name",
        &name,
        "--timeout",
        "30",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "default/nginx: container web: images are not run in the lab; give a command"
        ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "reported at once, not after the timeout"
    );
}

#[test]
fn host_ports_answer_on_the_node_address() {
    if !common::root_or_skip("host_ports_answer_on_the_node_address") {
        return;
    }
    let dir = common::TempDir::new("lab-hostport");
    let file = dir.0.join("hp.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  nodeName: node-2\n  containers:\n  - name: c\n    image: python\n    command: [sh, -c, 'echo hostport-ok > index.html; exec python3 -m http.server 8080']\n    ports: [{containerPort: 8080, hostPort: 8888}]\n",
    )
    .unwrap();
    let lab = Lab::up(&[], &[file.to_str().unwrap()]);
    let underlay = format!("--net=/run/netns/strait-{}-underlay", lab.name);
    let ok = common::wait_for(Duration::from_secs(10), || {
        let out = Command::new("nsenter")
            .args([underlay.as_str(), "--", "python3", "-c", "import urllib.request as u; print(u.urlopen('http://172.18.0.3:8888', timeout=3).read().decode())"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "hostport-ok"
    });
    assert!(ok, "hostPort 8888 on node-2's address\n{}", lab.log());
}

/// Processes with a thread in one of the network namespaces (by inode).
fn processes_in(inodes: &BTreeSet<u64>) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        let inside = tasks.flatten().any(|t| {
            std::fs::read_link(t.path().join("ns/net"))
                .ok()
                .and_then(|l| {
                    l.to_string_lossy()
                        .trim_start_matches("net:[")
                        .trim_end_matches(']')
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|i| inodes.contains(&i))
        });
        if inside {
            let cmd = std::fs::read_to_string(p.path().join("cmdline")).unwrap_or_default();
            found.push(format!("{name}: {}", cmd.replace('\0', " ")));
        }
    }
    found
}

fn lab_netns(lab: &str) -> Vec<String> {
    let prefix = format!("strait-{lab}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nothing_of_a_lab_survives_down_even_after_a_restart() {
    if !common::root_or_skip("nothing_of_a_lab_survives_down_even_after_a_restart") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    // A container that fails once and is restarted, then runs a process in
    // its group and one that left it (setsid); the manifests hold a
    // Namespace, as those that made the DNS pod restart.
    let dir = common::TempDir::new("lab-restart");
    let file = dir.0.join("restart.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: flaky, namespace: dev}\nspec:\n  containers:\n  - name: c\n    image: alpine\n    command: [sh, -c, 'if [ -e once ]; then setsid sleep 36001 & exec sleep 36000; fi; touch once; exit 1']\n",
    )
    .unwrap();
    let lab = Lab::up(&[], &[file.to_str().unwrap()]);
    let state = || -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(format!("/run/strait/{}/state.json", lab.name)).unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    let restarted = common::wait_for(Duration::from_secs(20), || {
        let s = state();
        s["pods"]["dev/flaky"]["restarts"].as_u64() >= Some(1)
            && s["pods"]["dev/flaky"]["ready"] == true
    });
    assert!(
        restarted,
        "the container restarts: {}\n{}",
        state(),
        lab.log()
    );
    let s = state();
    let dns = s["pods"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("kube-system/strait-dns-"))
        .map(|(_, p)| p["restarts"].as_u64())
        .unwrap();
    assert_eq!(dns, Some(0), "the DNS pod never restarts\n{}", lab.log());
    let names = lab_netns(&lab.name);
    let inodes: BTreeSet<u64> = names
        .iter()
        .filter_map(|n| std::fs::metadata(format!("/run/netns/{n}")).ok())
        .map(|m| m.ino())
        .collect();
    assert!(inodes.len() >= 5, "underlay, 2 nodes, 2 pods: {names:?}");
    // Both sleeps run before `down`, so their absence after it means something.
    let ok = common::wait_for(Duration::from_secs(10), || {
        let found = processes_in(&inodes);
        ["sleep 36000", "sleep 36001"]
            .iter()
            .all(|p| found.iter().any(|f| f.ends_with(&format!("{p} "))))
    });
    assert!(ok, "{:?}", processes_in(&inodes));

    let out = lab.strait(&["lab", "down", "--name", &lab.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = processes_in(&inodes);
    assert!(left.is_empty(), "processes of the lab survive: {left:?}");
    assert!(lab_netns(&lab.name).is_empty());
    assert!(!std::path::Path::new(&format!("/run/strait/{}", lab.name)).exists());
}

#[test]
fn pods_use_the_dns_service_of_their_service_cidr() {
    if !common::root_or_skip("pods_use_the_dns_service_of_their_service_cidr") {
        return;
    }
    let lab = Lab::up(
        &["--service-cidr", "10.100.0.0/16"],
        &["examples/service-demo.yaml"],
    );
    let (_, resolv) = lab.sh("service-demo-client", "default", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.100.0.10\n"), "{resolv}");
    let (ok, out) = lab.sh(
        "service-demo-client",
        "default",
        "getent hosts service-demo.default.svc.cluster.local",
    );
    assert!(ok && out.starts_with("10.100."), "{out}\n{}", lab.log());
}

/// `lab` with a name that could leave /run/strait, in every subcommand.
#[test]
fn lab_names_that_could_leave_run_strait_are_refused() {
    if !common::root_or_skip("lab_names_that_could_leave_run_strait_are_refused") {
        return;
    }
    // Something outside /run/strait that `../NAME` would name.
    let outside = format!("strait-sentinel-{}", std::process::id());
    let sentinel = std::path::PathBuf::from("/run").join(&outside);
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("lab.json"), "{}").unwrap();
    let evil = format!("../{outside}");
    for args in [
        vec!["lab", "down", "--name", &evil],
        vec!["lab", "up", "--name", &evil],
        vec!["lab", "get", "--name", &evil],
        vec![
            "lab",
            "apply",
            "--name",
            &evil,
            "-f",
            "examples/service-demo.yaml",
        ],
        vec!["lab", "delete", "--name", &evil, "pod/x"],
        vec!["lab", "logs", "--name", &evil, "x"],
        vec!["lab", "exec", "--name", &evil, "x", "--", "true"],
        vec!["lab", "down", "--name", "a.b"],
        vec!["lab", "down", "--name", "Upper"],
    ] {
        let out = Command::new(STRAIT)
            .args(&args)
            .current_dir(repo())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--name") && stderr.contains("DNS label"),
            "{args:?}: {stderr}"
        );
    }
    let survived = sentinel.join("lab.json").exists();
    let _ = std::fs::remove_dir_all(&sentinel);
    assert!(survived, "lab down removed {}", sentinel.display());
}

/// `lab down --name x` removes lab x's namespaces, not lab x-b's.
#[test]
fn lab_down_removes_only_its_own_namespaces() {
    if !common::root_or_skip("lab_down_removes_only_its_own_namespaces") {
        return;
    }
    let lab = format!("x{}", std::process::id() % 100_000);
    let ours = format!("strait-{lab}-node1");
    let other = format!("strait-{lab}-b-node1");
    for ns in [&ours, &other] {
        assert!(Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap()
            .success());
    }
    let out = Command::new(STRAIT)
        .args(["lab", "down", "--name", &lab])
        .output()
        .unwrap();
    let other_left = std::path::Path::new(&format!("/run/netns/{other}")).exists();
    let ours_left = std::path::Path::new(&format!("/run/netns/{ours}")).exists();
    for ns in [&ours, &other] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(other_left, "lab {lab}-b's namespace {other} was removed");
    assert!(!ours_left, "lab {lab}'s own {ours} stays");
}

/// The lab's network is programmed over netlink: `lab up` runs no `ip` or
/// `bridge` process, for either backend. An `ip` and a `bridge` first on
/// PATH record every call (and then do the real thing, so that a lab still
/// built with them comes up and the record is what fails the test).
#[test]
fn lab_up_runs_no_ip_or_bridge_process() {
    if !common::root_or_skip("lab_up_runs_no_ip_or_bridge_process") {
        return;
    }
    let dir = common::TempDir::new("lab-path");
    let record = dir.0.join("calls");
    for (tool, real) in [("ip", "/usr/sbin/ip"), ("bridge", "/usr/sbin/bridge")] {
        let script = dir.0.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexec {real} \"$@\"\n",
                record.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.path(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    for backend in ["vxlan", "host-gw"] {
        let lab = Lab::up_with_env(&["--backend", backend], &[], &[("PATH", path.clone())]);
        let calls = std::fs::read_to_string(&record).unwrap_or_default();
        assert!(
            calls.is_empty(),
            "lab up --backend {backend} ran:\n{calls}\n{}",
            lab.log()
        );
    }
}

/// `lab apply` as `kubectl apply -f`: the good objects are applied, each
/// refused one is printed with its error and changes nothing (an update
/// keeps the version applied before), and the command fails.
#[test]
fn lab_apply_applies_the_good_objects_and_fails_naming_the_refused_ones() {
    if !common::root_or_skip("lab_apply_applies_the_good_objects_and_fails_naming_the_refused_ones")
    {
        return;
    }
    let lab = Lab::up(&[], &[]);
    let service = |name: &str, port: u32| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
    };
    let dir = common::TempDir::new("lab-apply-bad");
    let file = dir.0.join("m.yaml");
    let apply = |yaml: &str| {
        std::fs::write(&file, yaml).unwrap();
        lab.strait(&[
            "lab",
            "apply",
            "--name",
            &lab.name,
            "-f",
            file.to_str().unwrap(),
        ])
    };
    let ports_in = |services: serde_json::Value| -> Vec<(String, u64)> {
        let mut ports: Vec<(String, u64)> = services["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["metadata"]["namespace"] == "default")
            .map(|s| {
                (
                    s["metadata"]["name"].as_str().unwrap().to_owned(),
                    s["spec"]["ports"][0]["port"].as_u64().unwrap(),
                )
            })
            .filter(|(name, _)| name.starts_with("svc-"))
            .collect();
        ports.sort();
        ports
    };
    // What the API server holds (`lab get` reads it there).
    let ports = || ports_in(lab.get_json("services"));
    let served = |want: &[(&str, u64)]| {
        let want: Vec<(String, u64)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        common::wait_for(Duration::from_secs(10), || {
            ports_in(lab.get_json("services")) == want
        })
    };

    let out = apply(&format!(
        "{}---\n{}",
        service("svc-good", 80),
        service("svc-bad", 99999)
    ));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Service default/svc-good created"),
        "{stdout}"
    );
    assert!(!stdout.contains("svc-bad"), "{stdout}");
    assert!(
        stderr.contains("m.yaml: document 2 (Service default/svc-bad): spec.ports[0].port: "),
        "{stderr}"
    );
    assert!(stderr.contains("1 object(s) refused"), "{stderr}");
    assert_eq!(ports(), [("svc-good".to_owned(), 80)]);
    assert!(served(&[("svc-good", 80)]), "{}", lab.log());

    // An update that is refused keeps what was applied before.
    let out = apply(&service("svc-good", 70000));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(Service default/svc-good): spec.ports[0].port: "),
        "{stderr}"
    );
    assert_eq!(ports(), [("svc-good".to_owned(), 80)]);

    // And all good: applied, success.
    let out = apply(&service("svc-good", 81));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ports(), [("svc-good".to_owned(), 81)]);
    assert!(served(&[("svc-good", 81)]), "{}", lab.log());

    // What only the API server can refuse (an address another Service
    // holds) is its 422, naming the field; the good object beside it is
    // applied, as kubectl apply does.
    let services = lab.get_json("services");
    let good_ip = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == "svc-good")
        .and_then(|s| s["spec"]["clusterIP"].as_str())
        .unwrap()
        .to_owned();
    let out = apply(&format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-dup}}\nspec: {{clusterIP: {good_ip}, ports: [{{port: 80}}]}}\n",
        service("svc-more", 82)
    ));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Service default/svc-more created"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "(Service default/svc-dup): Service \"svc-dup\" is invalid: spec.clusterIPs: "
        ) && stderr.contains(&format!(
            "failed to allocate IP {good_ip}: provided IP is already allocated"
        )),
        "{stderr}"
    );
    assert_eq!(
        ports(),
        [("svc-good".to_owned(), 81), ("svc-more".to_owned(), 82)]
    );
    // Applied again unchanged: nothing written, as kubectl says it.
    let out = apply(&service("svc-more", 82));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Service default/svc-more unchanged"),
        "{stdout}"
    );
    // And deleted through the API.
    let out = lab.strait(&["lab", "delete", "--name", &lab.name, "service/svc-more"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Service default/svc-more deleted"),
        "{stdout}"
    );
    assert_eq!(ports(), [("svc-good".to_owned(), 81)]);
}

/// The rules the first traced SYN matched in table `ip strait`, hook after
/// hook, as `nft monitor trace` reports them: (chain, rule text). The
/// kernel gives the packet a new trace id when NAT changes it, so the
/// SYN's events are found by its source port and flags.
fn kernel_matched_rules(trace: &str) -> Vec<(String, String)> {
    let syn_port = |line: &str| -> Option<String> {
        if !line.contains(" packet: ") || !line.contains("tcp flags == syn ") {
            return None;
        }
        let rest = line.split(" tcp sport ").nth(1)?;
        rest.split(' ').next().map(str::to_owned)
    };
    // The last connection traced: the one that was answered (earlier ones
    // may have reached a server not listening yet).
    let Some(port) = trace.lines().rev().find_map(syn_port) else {
        return Vec::new();
    };
    let ids: BTreeSet<&str> = trace
        .lines()
        .filter(|l| syn_port(l).as_deref() == Some(port.as_str()))
        .filter_map(|l| l.strip_prefix("trace id ")?.split(' ').next())
        .collect();
    let mut out = Vec::new();
    for line in trace.lines() {
        let Some(rest) = line.strip_prefix("trace id ") else {
            continue;
        };
        let Some((id, rest)) = rest.split_once(' ') else {
            continue;
        };
        if !ids.contains(id) {
            continue;
        }
        let Some(rest) = rest.strip_prefix("ip strait ") else {
            continue;
        };
        let Some((chain, rest)) = rest.split_once(' ') else {
            continue;
        };
        if let Some(rule) = rest.strip_prefix("rule ") {
            let text = rule.rsplit_once(" (verdict").map_or(rule, |(t, _)| t);
            out.push((chain.to_owned(), text.trim().to_owned()));
        }
    }
    out
}

#[test]
fn lab_trace_agrees_with_the_kernels_own_trace() {
    if !common::root_or_skip("lab_trace_agrees_with_the_kernels_own_trace") {
        return;
    }
    let lab = Lab::up(&[], &["examples/service-demo.yaml"]);
    let out = lab.strait(&[
        "lab",
        "trace",
        "--name",
        &lab.name,
        "--from",
        "default/service-demo-client",
        "--to",
        "service-demo:80",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["dns"]["answered"],
        "service-demo.default.svc.cluster.local"
    );
    let vip = report["destination"].as_str().unwrap().to_owned();
    assert!(vip.ends_with(":80"), "{vip}");
    assert_eq!(report["service"], "default/service-demo");
    let hop = &report["first_hop"];
    let client_node = hop["node"].as_str().unwrap().to_owned();
    let ways = hop["outcomes"].as_array().unwrap();
    // Two endpoints, one chance in two each, each on the node it runs on.
    assert_eq!(ways.len(), 2, "{hop:#}");
    let servers = lab.pods_named("service-demo-");
    let servers: Vec<&String> = servers.iter().filter(|p| !p.ends_with("client")).collect();
    for way in ways {
        assert!((way["probability"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(way["dnat"], true);
        assert!(way["pod"]
            .as_str()
            .is_some_and(|p| servers.iter().any(|s| p == format!("default/{s}"))));
        let remote = way["pod_node"] != client_node.as_str();
        assert_eq!(way["overlay"].is_string(), remote, "{way:#}");
        if remote {
            assert!(way["overlay"]
                .as_str()
                .unwrap()
                .starts_with("VXLAN 172.18.0."));
            assert!(way["next"]["outcomes"][0]["fate"] == "forwarded", "{way:#}");
        }
    }

    // The kernel's own account of one real connection from the client.
    let node_index: usize = client_node.trim_start_matches("node-").parse().unwrap();
    let netns = format!("/run/netns/strait-{}-node{node_index}", lab.name);
    let client_ip = lab.pod_ip("default", "service-demo-client");
    let (vip_ip, _) = vip.rsplit_once(':').unwrap();
    let nsenter = |args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(args)
            .output()
            .unwrap()
    };
    let rule = format!(
        "add table ip strait-nftrace\nadd chain ip strait-nftrace pre {{ type filter hook prerouting priority -350; }}\nadd rule ip strait-nftrace pre ip saddr {client_ip} ip daddr {vip_ip} tcp dport 80 meta nftrace set 1\n"
    );
    let dir = common::TempDir::new("lab-nftrace");
    let script = dir.0.join("trace.nft");
    std::fs::write(&script, rule).unwrap();
    let added = nsenter(&["nft", "-f", script.to_str().unwrap()]);
    assert!(added.status.success(), "{added:?}");
    let log = dir.0.join("monitor.txt");
    let monitor = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["nft", "monitor", "trace"])
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut monitor = Kill(monitor);
    // The monitor is listening once a traced packet shows up: retry the
    // connection until one does, and until one is answered (the servers
    // have no readiness probe, so on a busy machine the first connection
    // may reach one that is not listening yet, as it would in a cluster).
    let mut answered = String::new();
    let seen = common::wait_for(Duration::from_secs(30), || {
        let (ok, who) = lab.sh(
            "service-demo-client",
            "default",
            &format!("python3 -c \"import urllib.request as u; print(u.urlopen('http://{vip}', timeout=3).read().decode().strip())\""),
        );
        if ok {
            answered = who;
        }
        !answered.is_empty()
            && std::fs::read_to_string(&log)
                .is_ok_and(|t| t.contains("rule ") && t.contains(" ip strait "))
    });
    let _ = monitor.0.kill();
    let _ = monitor.0.wait();
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(seen, "no trace:\n{trace}");
    let kernel = kernel_matched_rules(&trace);
    assert!(!kernel.is_empty(), "{trace}");
    // The way the tracer gives for the endpoint the kernel picked: the same
    // rules of `ip strait`, in the same order, as the kernel matched them.
    let way = ways
        .iter()
        .find(|w| {
            let pod = w["pod"].as_str().unwrap();
            let name = pod.trim_start_matches("default/");
            answered.contains(name)
        })
        .unwrap_or_else(|| panic!("no way to the endpoint that answered {answered:?}: {hop:#}"));
    let ours: Vec<(String, String)> = way["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["matched"] == true && r["table"] == "strait" && r["family"] == "ip")
        .filter(|r| r["index"].is_number())
        .map(|r| {
            (
                r["chain"].as_str().unwrap().to_owned(),
                r["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Chains and order must agree; the texts differ only in how nft prints
    // numbers (`0x00004000`), so they are shown, not compared.
    assert_eq!(
        ours.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        kernel.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        "tracer: {ours:#?}\nkernel: {kernel:#?}\n{trace}"
    );
}

/// kubectl, with the lab's kubeconfig, drives the lab: what it reads is
/// the cluster as it runs, and what it writes moves the traffic.
#[test]
fn kubectl_drives_the_lab() {
    if !common::root_or_skip("kubectl_drives_the_lab") {
        return;
    }
    let Some(kubectl) = common::kubectl() else {
        eprintln!("skipped kubectl_drives_the_lab: no kubectl 1.30+ (run-tests installs one)");
        return;
    };
    let lab = Lab::up(&[], &["examples/service-demo.yaml"]);
    let kubeconfig = lab.strait(&["lab", "kubeconfig", "--name", &lab.name]);
    assert!(
        kubeconfig.status.success(),
        "{}",
        String::from_utf8_lossy(&kubeconfig.stderr)
    );
    let home = common::TempDir::new("kubectl-home");
    let config = home.0.join("kubeconfig");
    std::fs::write(&config, &kubeconfig.stdout).unwrap();
    let kubectl = |args: &[&str], stdin: Option<&str>| -> Output {
        use std::io::Write;
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&config)
            .args(args)
            .env("HOME", &home.0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    };
    let ok = |args: &[&str], stdin: Option<&str>| -> String {
        let out = kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // What kubectl reads is the lab as it runs: pods with their addresses
    // and nodes, ready; the Service with its allocated address.
    let pods: serde_json::Value =
        serde_json::from_str(&ok(&["get", "pods", "-o", "json"], None)).unwrap();
    let ips: BTreeSet<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        ips.len(),
        3,
        "two servers and a client, each with its address: {pods}"
    );
    assert!(ips.contains(&lab.pod_ip("default", "service-demo-client")));
    let table = ok(&["get", "pods", "-o", "wide"], None);
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains("1/1") && l.contains("Running") && l.contains("node-")),
        "{table}"
    );
    let svc = ok(
        &[
            "get",
            "svc",
            "service-demo",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    assert!(svc.starts_with("10."), "allocated: {svc}");

    // kubectl scale: a third replica starts and answers.
    ok(
        &["scale", "deployment", "service-demo", "--replicas=3"],
        None,
    );
    assert!(common::wait_for(Duration::from_secs(20), || lab
        .pods_named("service-demo-")
        .iter()
        .filter(|n| *n != "service-demo-client")
        .count()
        == 3));
    let seen = answers(&lab, "service-demo-client", "http://service-demo", 80, 3);
    assert_eq!(seen.len(), 3, "three replicas answer: {seen:?}");
    let ready = ok(
        &[
            "get",
            "deploy",
            "service-demo",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        None,
    );
    assert!(
        common::wait_for(Duration::from_secs(20), || ok(
            &[
                "get",
                "deploy",
                "service-demo",
                "-o",
                "jsonpath={.status.readyReplicas}"
            ],
            None
        ) == "3"),
        "readyReplicas {ready}"
    );

    // Addresses are allocated in the create, as kube-apiserver does: the
    // response has them, and an address that is taken or outside the
    // service CIDR is a 422 naming the field, with nothing stored.
    let fresh = "apiVersion: v1\nkind: Service\nmetadata: {name: fresh, namespace: default}\nspec:\n  type: NodePort\n  selector: {app: service_demo_pod}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let created: serde_json::Value =
        serde_json::from_str(&ok(&["create", "-f", "-", "-o", "json"], Some(fresh))).unwrap();
    let fresh_ip = created["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        fresh_ip.starts_with("10."),
        "in the create's response: {created}"
    );
    assert!(
        created["spec"]["ports"][0]["nodePort"].as_i64().is_some(),
        "{created}"
    );
    let got = ok(
        &["get", "svc", "fresh", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    );
    assert_eq!(got, fresh_ip);
    let taken = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: taken, namespace: default}}\nspec:\n  clusterIP: {fresh_ip}\n  ports: [{{port: 80}}]\n");
    let out = kubectl(&["create", "-f", "-"], Some(&taken));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("is invalid: spec.clusterIPs: Invalid value: []string{{\"{fresh_ip}\"}}: failed to allocate IP {fresh_ip}: provided IP is already allocated")),
        "{stderr}"
    );
    let outside = "apiVersion: v1\nkind: Service\nmetadata: {name: outside, namespace: default}\nspec:\n  clusterIP: 192.0.2.10\n  selector: {app: service_demo_pod}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let out = kubectl(&["apply", "-f", "-"], Some(outside));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("spec.clusterIPs: Invalid value: []string{\"192.0.2.10\"}: failed to allocate IP 192.0.2.10: the provided IP (192.0.2.10) is not in the valid range"),
        "{stderr}"
    );
    for name in ["taken", "outside"] {
        let missing = kubectl(&["get", "svc", name], None);
        assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
    }

    // kubectl apply: a new Service is in DNS and in every node's rules.
    let second = "apiVersion: v1\nkind: Service\nmetadata: {name: second, namespace: default}\nspec:\n  selector: {app: service_demo_pod}\n  ports: [{port: 8000, targetPort: 8080}]\n";
    let out = ok(&["apply", "-f", "-"], Some(second));
    assert!(out.contains("service/second created"), "{out}");
    let seen = answers(&lab, "service-demo-client", "http://second:8000", 40, 1);
    assert_eq!(seen.len(), 1, "the new Service answers by name: {seen:?}");

    // A Deployment's pod deleted with kubectl is stopped and replaced.
    let victim = ok(
        &[
            "get",
            "pods",
            "-l",
            "app=service_demo_pod",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    let old_ip = lab.pod_ip("default", &victim);
    assert!(!old_ip.is_empty());
    let out = ok(&["delete", "pod", &victim], None);
    assert!(out.contains("deleted"), "{out}");
    assert!(
        common::wait_for(Duration::from_secs(20), || {
            let ip = lab.pod_ip("default", &victim);
            !ip.is_empty() && ip != old_ip
        }),
        "replaced with a new pod"
    );

    // kubectl delete waits until the pod is gone, and the lab stopped it.
    let out = ok(&["delete", "pod", "service-demo-client"], None);
    assert!(out.contains("deleted"), "{out}");
    assert!(common::wait_for(Duration::from_secs(10), || lab
        .pod_ip("default", "service-demo-client")
        .is_empty()));
    let missing = kubectl(&["get", "pod", "service-demo-client"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
}

/// A ClusterNetworkPolicy applied to a running lab is enforced by the
/// nodes' agents (`--network-policy`, which watch the kind because the
/// lab's API server serves it): an Admin Deny cuts new connections to the
/// echo pod from another node, and the same policy changed to Pass (no
/// NetworkPolicy behind it) lets them through again.
#[test]
fn the_agents_enforce_a_cluster_network_policy() {
    if !common::root_or_skip("the_agents_enforce_a_cluster_network_policy") {
        return;
    }
    let dir = common::TempDir::new("lab-cnp");
    let file = dir.0.join("pods.yaml");
    let pods = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: echo, labels: {{app: echo}}}}\nspec:\n  nodeName: node-1\n  containers: [{{name: c, image: python, command: [python3, -c, {:?}]}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: caller}}\nspec:\n  nodeName: node-2\n  containers: [{{name: c, image: alpine, command: [sleep, '36000']}}]\n",
        ECHO_SOURCE
    );
    std::fs::write(&file, pods).unwrap();
    let lab = Lab::up(&[], &[file.to_str().unwrap()]);
    let echo_ip = lab.pod_ip("default", "echo");
    let script = format!(
        "python3 -c \"import socket; print(socket.create_connection(('{echo_ip}', 9000), 2).recv(64).decode())\""
    );
    let reaches = |want: bool| {
        common::wait_for(Duration::from_secs(20), || {
            lab.sh("caller", "default", &script).0 == want
        })
    };
    assert!(reaches(true), "caller cannot reach echo\n{}", lab.log());
    let policy = |action: &str| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: echo-closed}}\nspec:\n  tier: Admin\n  priority: 1\n  subject:\n    pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: echo}}}}}}\n  ingress:\n  - action: {action}\n    from: [{{namespaces: {{}}}}]\n    protocols: [{{tcp: {{destinationPort: {{number: 9000}}}}}}]\n"
        )
    };
    lab.apply(&policy("Deny"));
    assert!(
        reaches(false),
        "the Admin Deny is not enforced\n{}",
        lab.log()
    );
    lab.apply(&policy("Pass"));
    assert!(
        reaches(true),
        "Pass (no NetworkPolicy behind it) does not let the caller in again\n{}",
        lab.log()
    );
}

/// `python3` in the lab's underlay namespace ("the internet"): stdout, and
/// whether it succeeded.
fn from_underlay(lab: &Lab, script: &str) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/strait-{}-underlay", lab.name))
        .args(["--", "python3", "-c", script])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    )
}

/// GET `path` with `Host: host` from `node_ip:80`, as a client outside the
/// cluster sends it: the status and body.
fn http_get(lab: &Lab, node_ip: &str, host: &str, path: &str) -> (bool, String) {
    from_underlay(
        lab,
        &format!(
            "import http.client as h\n\
             c = h.HTTPConnection('{node_ip}', 80, timeout=3)\n\
             c.request('GET', '{path}', headers={{'Host': '{host}'}})\n\
             r = c.getresponse()\n\
             print(r.status, r.read().decode().strip())"
        ),
    )
}

#[test]
fn the_nodes_serve_ingresses_to_the_outside() {
    if !common::root_or_skip("the_nodes_serve_ingresses_to_the_outside") {
        return;
    }
    let lab = Lab::up(&[], &["examples/ingress-lab.yaml"]);
    let logs = || lab.log_with_ingress();
    // Every node answers for the Ingress, by host and longest path prefix,
    // straight to the Services' pods.
    for node_ip in ["172.18.0.2", "172.18.0.3"] {
        let mut last = String::new();
        let ok = common::wait_for(Duration::from_secs(30), || {
            last = http_get(&lab, node_ip, "demo.example", "/api/v1").1;
            last.starts_with("200 api lab-api-")
        });
        assert!(ok, "{node_ip}: {last}\n{}", logs());
        let (_, web) = http_get(&lab, node_ip, "demo.example", "/index");
        assert!(
            web.starts_with("200 web lab-web-") && web.ends_with(" /index"),
            "{web}"
        );
        // `/apis` is not under the prefix `/api` (element-wise matching).
        let (_, apis) = http_get(&lab, node_ip, "demo.example", "/apis");
        assert!(apis.starts_with("200 web "), "{apis}");
        // A host no rule names, and no default backend: 404.
        let (_, other) = http_get(&lab, node_ip, "other.example", "/");
        assert!(other.starts_with("404"), "{other}");
    }
    // Both web pods get requests through one node (round robin over the
    // endpoints, not one sticky connection).
    let mut pods = BTreeSet::new();
    for _ in 0..20 {
        let (_, web) = http_get(&lab, "172.18.0.2", "demo.example", "/");
        if let Some(pod) = web.split_whitespace().nth(2) {
            pods.insert(pod.to_owned());
        }
        if pods.len() == 2 {
            break;
        }
    }
    assert_eq!(pods.len(), 2, "{pods:?}");

    // The controllers publish the nodes' addresses in the Ingress's status,
    // as kubectl and `lab get` show it.
    let mut status = serde_json::Value::Null;
    let ok = common::wait_for(Duration::from_secs(20), || {
        status = lab.get_json("ingresses")["items"][0]["status"].clone();
        status["loadBalancer"]["ingress"]
            == serde_json::json!([{"ip": "172.18.0.2"}, {"ip": "172.18.0.3"}])
    });
    assert!(ok, "{status}\n{}", logs());
    let table = lab.strait(&["lab", "get", "--name", &lab.name, "ingresses"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("CLASS") && header.contains("ADDRESS"),
        "{table}"
    );
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with("lab-demo ")
            && row.contains("strait")
            && row.contains("demo.example")
            && row.contains("172.18.0.2,172.18.0.3"),
        "{table}"
    );

    // TLS: a kubernetes.io/tls Secret and the Ingress's `tls`, chosen by
    // SNI; the client verifies the certificate it is served.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["demo.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    lab.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-tls}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: lab-demo}}\nspec:\n\
         \x20 tls:\n  - hosts: [demo.example]\n    secretName: demo-tls\n\
         \x20 rules:\n  - host: demo.example\n    http:\n      paths:\n\
         \x20     - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: lab-web, port: {{name: http}}}}\n\
         \x20     - path: /api\n        pathType: Prefix\n        backend:\n          service: {{name: lab-api, port: {{number: 80}}}}\n",
        b64(&cert.pem()),
        b64(&key.serialize_pem()),
    ));
    let ca = common::TempDir::new("ingress-ca");
    let ca_file = ca.0.join("ca.pem");
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let https = |node_ip: &str| {
        from_underlay(
            &lab,
            &format!(
                "import socket, ssl\n\
                 ctx = ssl.create_default_context(cafile='{}')\n\
                 s = ctx.wrap_socket(socket.create_connection(('{node_ip}', 443), timeout=3), server_hostname='demo.example')\n\
                 s.sendall(b'GET /api/tls HTTP/1.1\\r\\nHost: demo.example\\r\\nConnection: close\\r\\n\\r\\n')\n\
                 data = b''\n\
                 while True:\n\
                 \x20   chunk = s.recv(65536)\n\
                 \x20   if not chunk: break\n\
                 \x20   data += chunk\n\
                 print(data.decode().split('\\r\\n\\r\\n', 1)[1].strip())",
                ca_file.display()
            ),
        )
    };
    for node_ip in ["172.18.0.2", "172.18.0.3"] {
        let mut last = (false, String::new());
        let ok = common::wait_for(Duration::from_secs(20), || {
            last = https(node_ip);
            last.0 && last.1.starts_with("api lab-api-") && last.1.ends_with(" /api/tls")
        });
        assert!(ok, "{node_ip}: {last:?}\n{}", logs());
    }

    // A Service's pods going away is followed: api scaled to 0 is 503.
    lab.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: lab-api}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: http\n        image: python:3\n        command: [sleep, '3600']\n");
    let mut last = String::new();
    let ok = common::wait_for(Duration::from_secs(30), || {
        last = http_get(&lab, "172.18.0.2", "demo.example", "/api/v1").1;
        last.starts_with("503")
    });
    assert!(ok, "{last}\n{}", logs());
}

/// GET from `node_ip:80` with `Host: host`, as a client outside the
/// cluster sends it: the status, the `x-gateway` response header and the
/// body.
fn http_get_header(lab: &Lab, node_ip: &str, host: &str, path: &str) -> (bool, String) {
    from_underlay(
        lab,
        &format!(
            "import http.client as h\n\
             c = h.HTTPConnection('{node_ip}', 80, timeout=3)\n\
             c.request('GET', '{path}', headers={{'Host': '{host}'}})\n\
             r = c.getresponse()\n\
             print(r.status, r.getheader('x-gateway'), r.read().decode().strip())"
        ),
    )
}

/// The condition of `type_` in a JSON `conditions` list: (status, reason,
/// observedGeneration).
fn condition_of(conditions: &serde_json::Value, type_: &str) -> (String, String, i64) {
    let c = conditions
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
        c["observedGeneration"].as_i64().unwrap_or(-1),
    )
}

fn object_named<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|o| o["metadata"]["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn the_nodes_serve_gateways_to_the_outside_and_write_their_status() {
    if !common::root_or_skip("the_nodes_serve_gateways_to_the_outside_and_write_their_status") {
        return;
    }
    let lab = Lab::up(&[], &["examples/gateway-lab.yaml"]);
    let logs = || lab.log_with_ingress();
    // Both nodes route the HTTPRoute by path prefix, straight to the pods,
    // with the rule's response header; a host no listener covers is 404;
    // the route whose Service is missing answers 500 and hurts no other.
    for node_ip in ["172.18.0.2", "172.18.0.3"] {
        let mut last = String::new();
        let ok = common::wait_for(Duration::from_secs(30), || {
            last = http_get_header(&lab, node_ip, "shop.gateway.example", "/api/v1").1;
            last.starts_with("200 None api gw-api-")
        });
        assert!(ok, "{node_ip}: {last}\n{}", logs());
        let (_, web) = http_get_header(&lab, node_ip, "shop.gateway.example", "/index");
        assert!(
            web.starts_with("200 strait web gw-web-") && web.ends_with(" /index"),
            "{web}"
        );
        let (_, broken) = http_get_header(&lab, node_ip, "broken.gateway.example", "/");
        assert!(broken.starts_with("500 "), "{broken}");
        let (_, other) = http_get_header(&lab, node_ip, "other.example", "/");
        assert!(other.starts_with("404 "), "{other}");
    }

    // The status, as the spec asks it and `lab get -o json` shows it.
    let mut seen = String::new();
    let ok = common::wait_for(Duration::from_secs(30), || {
        let classes = lab.get_json("gatewayclasses");
        let gateways = lab.get_json("gateways");
        let routes = lab.get_json("httproutes");
        let class = object_named(&classes, "strait");
        let gateway = object_named(&gateways, "lab");
        let shop = object_named(&routes, "lab-shop");
        let broken = object_named(&routes, "broken");
        seen = format!("{class}\n{gateway}\n{shop}\n{broken}");
        let gen = |o: &serde_json::Value| o["metadata"]["generation"].as_i64().unwrap_or(0);
        let listener = &gateway["status"]["listeners"][0];
        let shop_parent = &shop["status"]["parents"][0];
        let broken_parent = &broken["status"]["parents"][0];
        condition_of(&class["status"]["conditions"], "Accepted")
            == ("True".into(), "Accepted".into(), gen(class))
            && condition_of(&gateway["status"]["conditions"], "Accepted")
                == ("True".into(), "Accepted".into(), gen(gateway))
            && condition_of(&gateway["status"]["conditions"], "Programmed")
                == ("True".into(), "Programmed".into(), gen(gateway))
            && gateway["status"]["addresses"]
                == serde_json::json!([
                    {"type": "IPAddress", "value": "172.18.0.2"},
                    {"type": "IPAddress", "value": "172.18.0.3"}
                ])
            && listener["name"] == "http"
            && listener["attachedRoutes"] == 2
            && condition_of(&listener["conditions"], "Programmed").0 == "True"
            && shop["status"]["parents"].as_array().map(Vec::len) == Some(1)
            && shop_parent["controllerName"] == "strait.dev/gateway-controller"
            && shop_parent["parentRef"]["name"] == "lab"
            && shop_parent["parentRef"]["sectionName"] == "http"
            && condition_of(&shop_parent["conditions"], "Accepted")
                == ("True".into(), "Accepted".into(), gen(shop))
            && condition_of(&shop_parent["conditions"], "ResolvedRefs")
                == ("True".into(), "ResolvedRefs".into(), gen(shop))
            && condition_of(&broken_parent["conditions"], "Accepted").0 == "True"
            && condition_of(&broken_parent["conditions"], "ResolvedRefs")
                == ("False".into(), "BackendNotFound".into(), gen(broken))
    });
    assert!(ok, "{seen}\n{}", logs());

    // A change of the Gateway is followed: a listener on a port the nodes
    // do not listen on is not accepted (PortUnavailable), at the new
    // generation; the other listener and its routes stay served.
    lab.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: lab}\nspec:\n\
         \x20 gatewayClassName: strait\n  listeners:\n\
         \x20 - {name: http, port: 80, protocol: HTTP, hostname: '*.gateway.example'}\n\
         \x20 - {name: alt, port: 8080, protocol: HTTP, hostname: alt.example}\n",
    );
    let ok = common::wait_for(Duration::from_secs(30), || {
        let gateways = lab.get_json("gateways");
        let gateway = object_named(&gateways, "lab");
        seen = gateway.to_string();
        let gen = gateway["metadata"]["generation"].as_i64().unwrap_or(0);
        let listeners = gateway["status"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let alt = listeners.iter().find(|l| l["name"] == "alt");
        gen == 2
            && condition_of(&gateway["status"]["conditions"], "Programmed")
                == ("True".into(), "Programmed".into(), 2)
            && alt.is_some_and(|alt| {
                condition_of(&alt["conditions"], "Accepted")
                    == ("False".into(), "PortUnavailable".into(), 2)
            })
    });
    assert!(ok, "{seen}\n{}", logs());
    let (_, web) = http_get_header(&lab, "172.18.0.2", "shop.gateway.example", "/");
    assert!(web.starts_with("200 strait web gw-web-"), "{web}");

    // Fixed, the broken route's Service appears: its refs resolve and it
    // is served.
    lab.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: no-such-service}\nspec:\n\
         \x20 selector: {app: gw-web}\n  ports:\n  - {port: 80, targetPort: http}\n",
    );
    let mut last = String::new();
    let ok = common::wait_for(Duration::from_secs(30), || {
        last = http_get_header(&lab, "172.18.0.3", "broken.gateway.example", "/fixed").1;
        let routes = lab.get_json("httproutes");
        let broken = object_named(&routes, "broken");
        last.starts_with("200 None web gw-web-")
            && condition_of(
                &broken["status"]["parents"][0]["conditions"],
                "ResolvedRefs",
            )
            .0 == "True"
    });
    assert!(ok, "{last}\n{}", logs());
}
