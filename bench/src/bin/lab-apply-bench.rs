//! `lab apply` → the change is in every node's kernel and in DNS answers.
//!
//! For each strait binary given (this build first, then the anchor), in
//! turn, `rounds` times: a 2-node lab with service-demo, then `applies`
//! new Services applied one by one; each is timed from the start of
//! `strait lab apply` until every node's `table ip strait` holds its
//! ClusterIP and the lab's DNS answers its name. Root; every lab it makes
//! is taken down.
//!
//! With `KUBECTL=PATH` set, a third series writes the same Services with
//! that kubectl through the lab's API server (this build only: the anchor
//! has none), timed from the moment kubectl returns — the write is
//! acknowledged — to every kernel and DNS (issue 12 asks < 50 ms).
//!
//! Usage: [KUBECTL=PATH] lab-apply-bench NEW ANCHOR [ROUNDS] [APPLIES]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strait_linux::NetNs;

const LAB: &str = "lapply";
const NODES: usize = 2;
const GIVE_UP: Duration = Duration::from_secs(10);

struct Lab<'a>(&'a Path);

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0)
            .args(["lab", "down", "--name", LAB])
            .output();
    }
}

fn strait(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).output().expect("run strait");
    assert!(
        out.status.success(),
        "strait {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether node `i`'s Service table has `vip` (nft run inside its namespace).
fn node_has(i: usize, vip: &str) -> bool {
    let ns = NetNs::open(format!("/run/netns/strait-{LAB}-node{}", i + 1)).expect("node netns");
    let vip = vip.to_owned();
    ns.run(move || {
        Command::new("nft")
            .args(["list", "table", "ip", "strait"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip} ")))
            .unwrap_or(false)
    })
    .unwrap_or(false)
}

/// A DNS query for `name` (type A), by hand: the bench needs no resolver.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether the lab's DNS pod (asked inside its own namespace) answers
/// `name` with an address.
fn dns_answers(netns: &str, name: &str) -> bool {
    let Ok(ns) = NetNs::open(format!("/run/netns/{netns}")) else {
        return false;
    };
    let q = query(name, 0x5a5a);
    ns.run(move || {
        let s = UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        s.send_to(&q, "127.0.0.1:53").ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        // NOERROR with at least one answer.
        Some(n > 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0)
    })
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn dns_pod_netns() -> String {
    let text = std::fs::read_to_string(format!("/run/strait/{LAB}/state.json")).expect("state");
    let state: serde_json::Value = serde_json::from_str(&text).expect("state JSON");
    state["pods"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(k, _)| k.starts_with("kube-system/strait-dns"))
        .and_then(|(_, p)| p["netns"].as_str().map(str::to_owned))
        .expect("the lab's DNS pod")
}

/// How a Service is written into the lab.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    LabApply,
    /// kubectl with the lab's kubeconfig; timed from kubectl's return.
    Kubectl,
}

/// One lab, `applies` Services applied one after the other: the times.
fn run(bin: &Path, applies: usize, dir: &Path, via: Via, kubectl: Option<&Path>) -> Vec<Duration> {
    let _ = Command::new(bin)
        .args(["lab", "down", "--name", LAB])
        .output();
    strait(
        bin,
        &[
            "lab",
            "up",
            "--name",
            LAB,
            "--nodes",
            &NODES.to_string(),
            "-f",
            "examples/service-demo.yaml",
        ],
    );
    let _lab = Lab(bin);
    let dns = dns_pod_netns();
    let mut times = Vec::new();
    for k in 0..applies {
        let name = format!("bench-{k}");
        let vip = format!("10.96.100.{}", 10 + k);
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  selector: {{app: service_demo_pod}}\n  ports: [{{port: 80, targetPort: http}}]\n"),
        )
        .unwrap();
        let fqdn = format!("{name}.default.svc.cluster.local");
        assert!(
            !dns_answers(&dns, &fqdn),
            "{fqdn} answered before it was applied"
        );
        let mut started = Instant::now();
        match (via, kubectl) {
            (Via::Kubectl, Some(kubectl)) => {
                let out = Command::new(kubectl)
                    .args([
                        "--kubeconfig",
                        &format!("/run/strait/{LAB}/kubeconfig"),
                        "apply",
                        "-f",
                    ])
                    .arg(&file)
                    .env("HOME", dir)
                    .output()
                    .expect("run kubectl");
                assert!(
                    out.status.success(),
                    "kubectl apply: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                // The write is acknowledged: from here on it is strait's time.
                started = Instant::now();
            }
            _ => strait(
                bin,
                &[
                    "lab",
                    "apply",
                    "--name",
                    LAB,
                    "-f",
                    &file.display().to_string(),
                ],
            ),
        }
        let mut pending_nodes: Vec<usize> = (0..NODES).collect();
        let mut dns_done = false;
        while !(pending_nodes.is_empty() && dns_done) {
            assert!(
                started.elapsed() < GIVE_UP,
                "{name} not in place after {GIVE_UP:?}"
            );
            pending_nodes.retain(|&i| !node_has(i, &vip));
            dns_done = dns_done || dns_answers(&dns, &fqdn);
        }
        times.push(started.elapsed());
    }
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !strait_linux::is_root() {
        eprintln!("lab-apply-bench needs root (it runs labs)");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(new), Some(anchor)) = (args.first(), args.get(1)) else {
        eprintln!("usage: lab-apply-bench NEW ANCHOR [ROUNDS] [APPLIES]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let applies: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("strait-lab-apply-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubectl = std::env::var_os("KUBECTL").map(PathBuf::from);
    let mut bins = vec![
        ("this build", PathBuf::from(new), Via::LabApply),
        ("anchor", PathBuf::from(anchor), Via::LabApply),
    ];
    if kubectl.is_some() {
        bins.push(("kubectl", PathBuf::from(new), Via::Kubectl));
    }
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); bins.len()];
    for round in 0..rounds {
        for (i, (what, bin, via)) in bins.iter().enumerate() {
            let times = run(bin, applies, &dir, *via, kubectl.as_deref());
            let list: Vec<String> = times.iter().map(|t| format!("{:.1}", ms(*t))).collect();
            println!("round {}: {what:<10} ms: {}", round + 1, list.join(" "));
            all[i].extend(times);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut medians = Vec::new();
    for (i, (what, bin, _)) in bins.iter().enumerate() {
        let v = &mut all[i];
        v.sort();
        let median = v[v.len() / 2];
        medians.push(median);
        println!(
            "{what:<10} ({}): median {:.1} ms, min {:.1}, p90 {:.1}, max {:.1} over {} applies",
            bin.display(),
            ms(median),
            ms(v[0]),
            ms(v[(v.len() * 9) / 10]),
            ms(v[v.len() - 1]),
            v.len()
        );
    }
    println!(
        "lab apply -> every node's kernel and DNS: ratio this build / anchor (medians): {:.3}",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );
    if let Some(m) = medians.get(2) {
        println!(
            "kubectl write acknowledged -> every node's kernel and DNS: median {:.1} ms (issue 12 target < 50 ms)",
            ms(*m)
        );
    }
}
