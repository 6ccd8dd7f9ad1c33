//! `strait agent` through the API server's failures, as kube-proxy
//! survives them (issue 12): a forced `410 Gone`, a restart of the API
//! server, and 60 s of API downtime — while a client loop goes through a
//! Service's ClusterIP, a new connection each iteration plus one
//! long-lived connection, and must never fail. Root: the node, the client
//! and the pod are network namespaces of the test; the API server runs in
//! this process, inside the node's namespace (on its loopback), where the
//! agent process runs too.
//!
//! What is held: the relist after 410 touches neither the kernel (the
//! ruleset is the same, byte for byte, and the agent made no sync) nor the
//! node's state; after a restart the agent resumes its watches from the
//! versions it has (no relist) and follows a change; while the API is
//! down the rules stay, `/healthz` stays 200 as kube-proxy's does (it only
//! turns 503 for an update queued too long, and an outage queues nothing:
//! load balancers must not drain every node at once because the control
//! plane is away) while its body names every failing watch; once the API
//! is back a change through it reaches the kernel, and the failing
//! watches are cleared. The agent with a wrong token, or without RBAC for
//! one kind, says which resource and verb fail and stays 503.

#[path = "common/api.rs"]
mod api;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::ApiServer;
use common::{root_or_skip, spawn_in, wait_for, Background, NetNs, TempDir, TestNs};

use strait_apiserver::auth::{Tokens, UserInfo};
use strait_apiserver::resources::Resource;

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

const NODE_IP: &str = "172.31.252.1";
const CLIENT_IP: &str = "172.31.252.2";
const POD_IP: &str = "10.244.1.5";
const POD_GATEWAY: &str = "10.244.1.1";

const MANIFESTS: &str = r#"apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 172.31.252.1}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.50, clusterIPs: [10.96.0.50], ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: node-1}"#;

/// A Service `name` on `ip` with the same pod behind it.
fn another_service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, clusterIPs: [{ip}], ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- {{addresses: [{POD_IP}], conditions: {{ready: true}}, nodeName: node-1}}"
    )
}

fn ok(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node's whole ruleset, without counters and timeouts (`nft -s`):
/// what the agent programmed, not what traffic did to it.
fn ruleset(node: &TestNs) -> String {
    let out = node.command("nft", &["-s", "list", "ruleset"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET path` from inside `ns`: status and body (0 when unreachable).
fn get(ns: &TestNs, addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    ns.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    })
}

/// The sum of a metric's samples over its labels (`name{…} v` and `name v`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The kinds `/healthz` says are failing now.
fn failing_watches(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["failingWatches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP server in the pod that echoes every line back, one thread per
/// connection, until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &TestNs, addr: SocketAddr) -> Echo {
        let listener = ns
            .run(move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || echo(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo(stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    // The long-lived connection is quiet for a while between exchanges.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the client loop saw.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// New connections tried, and those that failed (when, why).
    tries: u64,
    failures: Vec<String>,
    /// Exchanges over the long-lived connection, and those that failed.
    long_exchanges: u64,
    long_failures: Vec<String>,
    slowest: Duration,
    /// Connections that took longer than half a second (a lost SYN is
    /// sent again after one): slow, not failed, but said.
    slow: u64,
}

/// The client loop: from the client's namespace, a new connection to the
/// Service each iteration (a line out, the same line back), and every
/// tenth iteration a line over one connection opened at the start.
struct Probe {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<JoinHandle<()>>,
}

/// One line out and the same line back, within three seconds each way (a
/// machine shared by many builds may stall a while; a lost rule fails at
/// once: the node has no route for a ClusterIP it does not translate).
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    line: &str,
) -> std::io::Result<()> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut back = String::new();
    reader.read_line(&mut back)?;
    if back.trim_end() != line {
        return Err(std::io::Error::other(format!(
            "sent {line:?}, got back {back:?}"
        )));
    }
    Ok(())
}

fn connect(vip: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.set_write_timeout(Some(Duration::from_secs(3)))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

impl Probe {
    fn start(client: PathBuf, vip: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (flag, counts) = (stop.clone(), tally.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ns = NetNs::open(&client).expect("the client's namespace");
            let _inside = ns.enter().expect("enter the client's namespace");
            let started = Instant::now();
            let (mut long, mut long_reader) = connect(vip).expect("the long-lived connection");
            exchange(&mut long, &mut long_reader, "long 0").expect("the long-lived connection");
            let _ = ready_tx.send(());
            let mut i = 0u64;
            while !flag.load(Ordering::SeqCst) {
                i += 1;
                let t = Instant::now();
                let result = connect(vip)
                    .and_then(|(mut s, mut r)| exchange(&mut s, &mut r, &i.to_string()));
                let took = t.elapsed();
                {
                    let mut c = counts.lock().unwrap();
                    c.tries += 1;
                    c.slowest = c.slowest.max(took);
                    if took > Duration::from_millis(500) {
                        c.slow += 1;
                    }
                    if let Err(e) = result {
                        c.failures.push(format!(
                            "#{i} at {:.1} s: {e}",
                            started.elapsed().as_secs_f64()
                        ));
                    }
                }
                if i.is_multiple_of(10) {
                    let result = exchange(&mut long, &mut long_reader, &format!("long {i}"));
                    let mut c = counts.lock().unwrap();
                    c.long_exchanges += 1;
                    if let Err(e) = result {
                        c.long_failures.push(format!(
                            "#{i} at {:.1} s: {e}",
                            started.elapsed().as_secs_f64()
                        ));
                    }
                }
                // Pacing of the load (about a hundred connections a second), not a wait for anything.
                std::thread::sleep(Duration::from_millis(5));
            }
            // The long-lived connection still works at the end.
            let result = exchange(&mut long, &mut long_reader, "long end");
            let mut c = counts.lock().unwrap();
            c.long_exchanges += 1;
            if let Err(e) = result {
                c.long_failures.push(format!("at the end: {e}"));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the long-lived connection is made through the Service");
        Probe {
            stop,
            tally,
            thread: Some(thread),
        }
    }

    fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Stop the loop (after a last exchange on the long-lived connection).
    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the client loop");
        }
        self.tally()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node (agent and API server), the pod behind the Service, and a
/// client outside the node.
struct Bed {
    node: TestNs,
    client: TestNs,
    _pod: TestNs,
    _echo: Echo,
    dir: TempDir,
}

impl Bed {
    fn new() -> Bed {
        let node = TestNs::new("node");
        let client = TestNs::new("client");
        let pod = TestNs::new("pod");
        let dir = TempDir::new("api-failures");
        ok(node.command("ip", &["link", "set", "lo", "up"]));
        ok(node.command("sysctl", &["-qw", "net.ipv4.ip_forward=1"]));
        // The client, off the node, routes the Service range to it.
        ok(client.command(
            "ip",
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "uplink", "netns",
                &node.name,
            ],
        ));
        ok(client.command(
            "ip",
            &["addr", "add", &format!("{CLIENT_IP}/30"), "dev", "eth0"],
        ));
        ok(client.command("ip", &["link", "set", "eth0", "up"]));
        ok(client.command("ip", &["route", "add", "10.0.0.0/8", "via", NODE_IP]));
        ok(node.command(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/30"), "dev", "uplink"],
        ));
        ok(node.command("ip", &["link", "set", "uplink", "up"]));
        // The pod, on a veth of its own, its gateway the node.
        ok(pod.command(
            "ip",
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "pod0", "netns", &node.name,
            ],
        ));
        ok(pod.command(
            "ip",
            &["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"],
        ));
        ok(pod.command("ip", &["link", "set", "eth0", "up"]));
        ok(pod.command("ip", &["link", "set", "lo", "up"]));
        ok(pod.command("ip", &["route", "add", "default", "via", POD_GATEWAY]));
        ok(node.command(
            "ip",
            &["addr", "add", &format!("{POD_GATEWAY}/24"), "dev", "pod0"],
        ));
        ok(node.command("ip", &["link", "set", "pod0", "up"]));
        let echo = Echo::start(&pod, format!("{POD_IP}:8080").parse().unwrap());
        Bed {
            node,
            client,
            _pod: pod,
            _echo: echo,
            dir,
        }
    }

    /// `strait agent` in the node with `kubeconfig`; its log and health address.
    fn agent(&self, kubeconfig: &str, tag: &str) -> (Background, PathBuf, SocketAddr) {
        let path = self.dir.0.join(format!("{tag}.kubeconfig"));
        std::fs::write(&path, kubeconfig).unwrap();
        let log = self.dir.0.join(format!("{tag}.log"));
        let kc = path.display().to_string();
        let agent = spawn_in(
            &self.node,
            STRAIT,
            &[
                "-v",
                "agent",
                "--kubeconfig",
                &kc,
                "--node-name",
                "node-1",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--healthz-bind-address",
                "127.0.0.1:0",
            ],
            &log,
        );
        let mut health = None;
        assert!(
            wait_for(Duration::from_secs(20), || {
                health = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .split("address=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|a| a.parse().ok());
                health.is_some()
            }),
            "no health address logged: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        (agent, log, health.unwrap())
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[test]
fn the_agent_survives_410_a_restart_and_a_minute_of_api_downtime() {
    if !root_or_skip("the_agent_survives_410_a_restart_and_a_minute_of_api_downtime") {
        return;
    }
    let test_started = Instant::now();
    let bed = Bed::new();
    let mut api = ApiServer::start(Some(&bed.node), Tokens::default());
    api.create(MANIFESTS, Duration::ZERO);
    let (_agent, log, health) = bed.agent(&api.server().admin_kubeconfig(), "agent");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || ruleset(&bed.node)
            .contains("10.96.0.50")),
        "the rules never came: {}",
        logged()
    );
    assert!(
        wait_for(Duration::from_secs(5), || get(
            &bed.node, health, "/healthz"
        )
        .0 == 200),
        "{}",
        logged()
    );
    let metrics = || get(&bed.node, health, "/metrics").1;
    // Kernel syncs (full and partial), snapshots handed out, relists.
    let syncs = |m: &str| metric(m, "strait_proxy_sync_duration_seconds_count");
    let updates = |m: &str| metric(m, "strait_kube_updates_total");
    let lists = |m: &str| metric(m, "strait_kube_full_lists_total");
    // Without --network-policy the agent watches what the Service proxy
    // reads: a 410 relists every one of those kinds.
    let kinds = strait_kube::PROXY_KINDS.len() as f64;

    let vip: SocketAddr = "10.96.0.50:80".parse().unwrap();
    let probe = Probe::start(bed.client.ns.path().to_owned(), vip);
    assert!(wait_for(Duration::from_secs(10), || probe.tally().tries >= 20));

    // (a) A forced 410 Gone: every watch ends with ERROR 410, the agent
    // lists every kind again — and finds nothing to change.
    let before = ruleset(&bed.node);
    let m0 = metrics();
    let compacted_at = Instant::now();
    api.server().store().compact();
    assert!(
        wait_for(Duration::from_secs(20), || lists(&metrics())
            >= lists(&m0) + kinds),
        "the agent did not list every kind again: {}",
        logged()
    );
    let relisted_in = compacted_at.elapsed();
    let m1 = metrics();
    assert!(
        logged().contains("expired (410 Gone): listing services again"),
        "{}",
        logged()
    );
    assert_eq!(ruleset(&bed.node), before, "the relist changed the rules");
    assert_eq!(
        syncs(&m1),
        syncs(&m0),
        "the relist re-programmed the kernel"
    );
    assert_eq!(
        updates(&m1),
        updates(&m0),
        "the relist handed out an update"
    );

    // (b) A restart: connections cut, the same store served again at once.
    let restarted_at = Instant::now();
    api.stop();
    api.serve_again();
    api.create(
        &another_service("web2", "10.96.0.51"),
        Duration::from_secs(10),
    );
    assert!(
        wait_for(Duration::from_secs(30), || ruleset(&bed.node)
            .contains("10.96.0.51")),
        "a change after the restart never reached the kernel: {}",
        logged()
    );
    let restart_to_change = restarted_at.elapsed();
    let m2 = metrics();
    assert_eq!(
        lists(&m2),
        lists(&m1),
        "after a restart the watches resume from their versions, no relist"
    );

    // (b2) Changes the agent missed while away, then compacted (another
    // API server of the control plane took them, etcd compacted): the
    // re-watch is 410, the relist finds the difference, and only then
    // is the kernel touched.
    api.stop();
    let services = Resource::by_plural("", "v1", "services").unwrap();
    let slices = Resource::by_plural("discovery.k8s.io", "v1", "endpointslices").unwrap();
    for doc in another_service("web4", "10.96.0.53").split("\n---\n") {
        let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
        let resource = if value["kind"] == "Service" {
            services
        } else {
            slices
        };
        api.server()
            .with_write_context(|ctx| api.server().store().create(resource, "default", value, ctx))
            .unwrap();
    }
    api.server().store().compact();
    let missed_at = Instant::now();
    api.serve_again();
    assert!(
        wait_for(Duration::from_secs(30), || ruleset(&bed.node)
            .contains("10.96.0.53")),
        "what was missed never reached the kernel: {}",
        logged()
    );
    let missed_in = missed_at.elapsed();
    assert!(
        wait_for(Duration::from_secs(30), || lists(&metrics())
            >= lists(&m2) + kinds),
        "every kind lists again after 410: {}",
        logged()
    );
    // The relists are taken (above) and everything they brought is
    // applied: nothing is in flight when the API goes down.
    let mut body = String::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            body = get(&bed.node, health, "/healthz").1;
            serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v["oldestQueuedSeconds"].is_null())
        }),
        "changes wait to be applied: {body}"
    );
    let m2b = metrics();
    assert!(syncs(&m2b) > syncs(&m2), "the difference was synced");

    assert!(
        wait_for(Duration::from_secs(45), || {
            body = get(&bed.node, health, "/healthz").1;
            failing_watches(&body).is_empty()
        }),
        "after the restart the watches are still said to fail: {body}"
    );

    // (c) 60 s without the API server.
    let before_down = ruleset(&bed.node);
    let syncs_before_down = syncs(&m2b);
    api.stop();
    let down_at = Instant::now();
    let mut health_codes = std::collections::BTreeMap::<u16, u32>::new();
    let mut all_failing_after = None;
    while down_at.elapsed() < Duration::from_secs(60) {
        let (status, body) = get(&bed.node, health, "/healthz");
        *health_codes.entry(status).or_default() += 1;
        if all_failing_after.is_none() && failing_watches(&body).len() == kinds as usize {
            all_failing_after = Some(down_at.elapsed());
        }
        // The scenario is the minute itself: look at health once a second.
        std::thread::sleep(Duration::from_millis(1000));
    }
    body = get(&bed.node, health, "/healthz").1;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failing = &v["failingWatches"][0];
    assert!(
        failing["since"].as_str().is_some_and(|s| s.ends_with('Z'))
            && failing["error"]
                .as_str()
                .is_some_and(|e| e.contains("retrying")),
        "{body}"
    );
    let all_failing_after = all_failing_after.unwrap_or_else(|| {
        panic!(
            "/healthz never named every watch failing: {}",
            get(&bed.node, health, "/healthz").1
        )
    });
    assert_eq!(
        health_codes.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "kube-proxy's /healthz stays 200 while nothing is queued"
    );
    let during = probe.tally();
    assert_eq!(
        ruleset(&bed.node),
        before_down,
        "a rule was lost while the API was down"
    );
    assert!(
        logged().contains("cannot watch services") || logged().contains("cannot list services"),
        "{}",
        logged()
    );
    let m3 = metrics();
    assert_eq!(
        syncs(&m3),
        syncs_before_down,
        "nothing to sync while the API is away"
    );
    api.serve_again();
    let back_at = Instant::now();
    api.create(
        &another_service("web3", "10.96.0.52"),
        Duration::from_secs(10),
    );
    let created_after = back_at.elapsed();
    assert!(
        wait_for(Duration::from_secs(45), || ruleset(&bed.node)
            .contains("10.96.0.52")),
        "a change after the outage never reached the kernel: {}",
        logged()
    );
    let recovered_in = back_at.elapsed();
    assert!(
        wait_for(Duration::from_secs(45), || {
            let (status, b) = get(&bed.node, health, "/healthz");
            body = b;
            status == 200 && failing_watches(&body).is_empty()
        }),
        "the watches are still said to fail: {body}"
    );
    let healthy_in = back_at.elapsed();
    // The new Service answers too.
    let web3 = bed.client.run(|| {
        let (mut s, mut r) = connect("10.96.0.52:80".parse().unwrap())?;
        exchange(&mut s, &mut r, "web3")
    });
    assert!(web3.is_ok(), "{web3:?}");

    let tally = probe.finish();
    println!(
        "client loop through the Service for {}: {} connections, {} failed, {} slower than 0.5 s (slowest {:.1} ms); {} exchanges on one long-lived connection, {} failed",
        secs(test_started.elapsed()),
        tally.tries,
        tally.failures.len(),
        tally.slow,
        tally.slowest.as_secs_f64() * 1e3,
        tally.long_exchanges,
        tally.long_failures.len()
    );
    println!(
        "410 Gone: every kind listed again in {}, {} kernel syncs, ruleset byte-identical",
        secs(relisted_in),
        syncs(&m1) - syncs(&m0)
    );
    println!(
        "restart: a Service created after it was in the kernel {} after the restart, no relist",
        secs(restart_to_change)
    );
    println!(
        "down, changes made meanwhile, compacted, back: every kind listed again, the difference in the kernel {} after the return",
        secs(missed_in)
    );
    println!(
        "60 s down: {} connections during it, /healthz {:?} (every watch named failing after {}), rules unchanged, 0 syncs; back: a Service created {} after the return was in the kernel {} after it, failing watches cleared after {}",
        during.tries,
        health_codes,
        secs(all_failing_after),
        secs(created_after),
        secs(recovered_in),
        secs(healthy_in)
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} connections failed: {:?}",
        tally.failures.len(),
        tally.tries,
        &tally.failures[..tally.failures.len().min(10)]
    );
    assert!(
        tally.long_failures.is_empty() && tally.long_exchanges > 10,
        "the long-lived connection: {:?} ({} exchanges)",
        tally.long_failures,
        tally.long_exchanges
    );
}

/// A wrong token (401) and a token without RBAC for one kind (403): the
/// agent says which resource and verb, `/healthz` is 503 (no first sync:
/// a node without every kind listed programs nothing), and nothing is
/// programmed.
#[test]
fn the_agent_reports_401_and_403_naming_the_resource_and_the_verb() {
    if !root_or_skip("the_agent_reports_401_and_403_naming_the_resource_and_the_verb") {
        return;
    }
    let bed = Bed::new();
    let token = "strait-agent-token-without-endpointslices";
    let api = ApiServer::start(
        Some(&bed.node),
        Tokens {
            tokens: vec![(
                token.to_owned(),
                UserInfo::service_account("kube-system", "strait"),
            )],
        },
    );
    api.create(MANIFESTS, Duration::ZERO);
    // What deploy/'s ClusterRole grants, but endpointslices.
    api.create(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: strait-partial}\nrules:\n- {apiGroups: [\"\"], resources: [services, nodes, namespaces, pods], verbs: [get, list, watch]}\n- {apiGroups: [networking.k8s.io], resources: [networkpolicies, ingresses, ingressclasses], verbs: [get, list, watch]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: strait-partial}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: strait-partial}\nsubjects:\n- {kind: ServiceAccount, name: strait, namespace: kube-system}",
        Duration::ZERO,
    );
    let server = api.server();
    for (tag, kubeconfig, expected, kind) in [
        (
            "wrong-token",
            server.kubeconfig("someone", "not-a-token-the-server-knows"),
            "the API server does not know us (401 Unauthorized) when we list services",
            "Service",
        ),
        (
            "no-endpointslices",
            server.kubeconfig("strait", token),
            "the API server forbids us to list endpointslices (403 Forbidden)",
            "EndpointSlice",
        ),
    ] {
        let (agent, log, health) = bed.agent(&kubeconfig, tag);
        let mut body = String::new();
        assert!(
            wait_for(Duration::from_secs(20), || {
                let (status, b) = get(&bed.node, health, "/healthz");
                body = b;
                status == 503 && failing_watches(&body).iter().any(|k| k == kind)
            }),
            "{tag}: /healthz {body}"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(expected), "{tag}: {text}");
        println!(
            "{tag}: {}",
            text.lines()
                .find(|l| l.contains(expected))
                .unwrap_or_default()
        );
        assert!(
            !ruleset(&bed.node).contains("strait"),
            "{tag}: nothing is programmed without every kind listed"
        );
        drop(agent);
    }
}
