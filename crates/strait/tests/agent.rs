//! `strait agent` against the lab's API server (in process, on
//! 127.0.0.1:0; no root: `--dry-run` prints the ruleset instead of
//! programming it): the rules it would program for the node are those of
//! `strait proxy --dry-run` for the same objects read from manifests.

#[path = "common/api.rs"]
mod api;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use api::ApiServer;
use common::{root_or_skip, spawn_in, wait_for, TestNs};

use kube::api::{Api, DynamicObject, PostParams};
use strait_apiserver::auth::Tokens;
use strait_model::Kind;

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.50, clusterIPs: [10.96.0.50], externalTrafficPolicy: Local, ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: node-1}
- {addresses: [10.244.2.5], conditions: {ready: true}, nodeName: node-2}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]}
"#;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ruleset without its comment lines (which name the command).
fn rules(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn agent_dry_run_programs_what_proxy_dry_run_does_for_the_same_objects() {
    let dir = TempDir(std::env::temp_dir().join(format!("strait-agent-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let manifests = dir.0.join("objects.yaml");
    std::fs::write(&manifests, MANIFESTS).unwrap();
    let manifests = manifests.display().to_string();
    let common = ["--cluster-cidr", "10.244.0.0/16"];

    let proxy = Command::new(STRAIT)
        .args(["proxy", "--dry-run", "--node", "node-1", "-f", &manifests])
        .args(common)
        .output()
        .unwrap();
    let expected = rules(&proxy);
    assert!(expected.contains("10.96.0.50"), "{expected}");

    // The same objects as the controllers leave them (`strait render`:
    // the `kubernetes` Service too), created through the API.
    let render = Command::new(STRAIT)
        .args(["render", "-o", "json", "-f", &manifests])
        .output()
        .unwrap();
    assert!(render.status.success());
    let list: serde_json::Value = serde_json::from_slice(&render.stdout).unwrap();

    let apiserver = ApiServer::start(None, Tokens::default());
    let runtime = &apiserver.runtime;
    let server = apiserver.server();
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(&kubeconfig, server.admin_kubeconfig()).unwrap();
    let text = server.admin_kubeconfig();
    runtime.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        // Namespaces first: objects of a namespace need it.
        let mut items: Vec<serde_json::Value> = list["items"].as_array().unwrap().clone();
        items.sort_by_key(|o| o["kind"] != "Namespace");
        for item in items {
            let kind = Kind::from_name(item["kind"].as_str().unwrap()).unwrap();
            let ar = strait_kube::api_resource(kind).unwrap();
            let mut o: DynamicObject = serde_json::from_value(item).unwrap();
            o.metadata.resource_version = None;
            o.metadata.uid = None;
            let api: Api<DynamicObject> = match o.metadata.namespace.clone() {
                Some(ns) => Api::namespaced_with(client.clone(), &ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            match api.create(&PostParams::default(), &o).await {
                Ok(_) => {}
                // The server makes the system namespaces itself.
                Err(kube::Error::Api(s)) if s.code == 409 && kind == Kind::Namespace => {}
                Err(e) => panic!("{e}"),
            }
        }
    });

    let agent = Command::new(STRAIT)
        .args([
            "agent",
            "--dry-run",
            "--node-name",
            "node-1",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .args(common)
        .output()
        .unwrap();
    drop(apiserver);
    assert_eq!(rules(&agent), expected);
}

/// `GET path` from inside `ns`: status and body.
fn get(ns: &TestNs, addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
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

/// `nft list table ip strait` in `ns` (empty when there is none).
fn table(ns: &TestNs) -> String {
    let out = ns.command("nft", &["list", "table", "ip", "strait"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent for real, as root, in a namespace of the test's own (the API
/// server listens in it too: its loopback is the agent's): it programs
/// the node's rules, serves health, follows a change through the API into
/// the kernel (timed), leaves the rules on SIGTERM, and a restarted agent
/// adopts them unchanged.
#[test]
fn agent_programs_follows_and_keeps_the_rules() {
    if !root_or_skip("agent_programs_follows_and_keeps_the_rules") {
        return;
    }
    let ns = TestNs::new("agent");
    assert!(ns
        .command("ip", &["link", "set", "lo", "up"])
        .status
        .success());
    let dir =
        TempDir(std::env::temp_dir().join(format!("strait-agent-root-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    // Its runtime's threads start inside the namespace: every socket the
    // server and the test's client open is in it.
    let apiserver = ApiServer::start(Some(&ns), Tokens::default());
    let runtime = &apiserver.runtime;
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(&kubeconfig, apiserver.server().admin_kubeconfig()).unwrap();
    let client = apiserver.client.clone();
    let create = |yaml: &str| {
        for doc in yaml.split("\n---\n") {
            let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let kind = Kind::from_name(value["kind"].as_str().unwrap()).unwrap();
            let ar = strait_kube::api_resource(kind).unwrap();
            let o: DynamicObject = serde_json::from_value(value).unwrap();
            let client = client.clone();
            runtime
                .block_on(runtime.spawn(async move {
                    let api: Api<DynamicObject> = match o.metadata.namespace.clone() {
                        Some(ns) => Api::namespaced_with(client, &ns, &ar),
                        None => Api::all_with(client, &ar),
                    };
                    match api.create(&PostParams::default(), &o).await {
                        // The server makes the system namespaces itself.
                        Err(kube::Error::Api(s)) if s.code == 409 && kind == Kind::Namespace => {
                            Ok(())
                        }
                        other => other.map(|_| ()),
                    }
                }))
                .unwrap()
                .unwrap();
        }
    };
    create(MANIFESTS.trim());

    let kc = kubeconfig.display().to_string();
    let (bin, conf) = (dir.0.join("bin"), dir.0.join("net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let (bin_arg, conf_arg) = (bin.display().to_string(), conf.display().to_string());
    let args = [
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
        "--cni-bin-dir",
        &bin_arg,
        "--cni-conf-dir",
        &conf_arg,
    ];
    let log = dir.0.join("agent.log");
    let agent = spawn_in(&ns, STRAIT, &args, &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || table(&ns)
            .contains("10.96.0.50")),
        "the rules never came: {}",
        logged()
    );
    let health: SocketAddr = logged()
        .split("address=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("the health address is logged");
    assert!(wait_for(Duration::from_secs(5), || get(
        &ns, health, "/healthz"
    )
    .0 == 200));
    let (_, body) = get(&ns, health, "/healthz");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["nodeEligible"], true, "{body}");
    let (status, metrics) = get(&ns, health, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("strait_kube_watch_events_total"),
        "{metrics}"
    );
    assert!(metrics.contains("strait_proxy_service_ports"), "{metrics}");
    // The CNI plugin installed, its configuration from the Node's podCIDRs.
    assert!(bin.join("strait").exists());
    let conflist = std::fs::read_to_string(conf.join("10-strait.conflist")).unwrap();
    assert!(conflist.contains("10.244.1.0/24"), "{conflist}");

    // A change through the API, into the kernel: timed (the polling of
    // `nft list` is part of the figure).
    let slices = Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
        client.clone(),
        "default",
    );
    let mut took = Vec::new();
    for i in 0..10 {
        let ip = format!("10.244.1.{}", 100 + i);
        let slices = slices.clone();
        let endpoint = ip.clone();
        let started = Instant::now();
        runtime
            .block_on(runtime.spawn(async move {
                let mut s = slices.get("web-1").await?;
                s.endpoints[0].addresses = vec![endpoint];
                slices.replace("web-1", &PostParams::default(), &s).await
            }))
            .unwrap()
            .unwrap();
        let mut seen = false;
        while started.elapsed() < Duration::from_secs(10) {
            if table(&ns).contains(&ip) {
                seen = true;
                break;
            }
        }
        assert!(seen, "{ip} never reached the kernel: {}", logged());
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "API change → nft rules in the node's namespace: median {:.1} ms, max {:.1} ms over {} changes",
        took[took.len() / 2].as_secs_f64() * 1e3,
        took.last().unwrap().as_secs_f64() * 1e3,
        took.len()
    );

    // SIGTERM: the agent ends, the rules stay.
    let before = table(&ns);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    drop(agent);
    assert_eq!(table(&ns), before, "the rules stay after SIGTERM");

    // A restarted agent adopts the tables: the same rules after its first sync.
    let log2 = dir.0.join("agent2.log");
    let again = spawn_in(&ns, STRAIT, &args, &log2);
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_to_string(&log2)
            .unwrap_or_default()
            .contains("first sync done")),
        "{}",
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    assert_eq!(
        table(&ns),
        before,
        "a restarted agent changes nothing that is right"
    );
    drop(again);

    // --cleanup removes them.
    let out = ns.command(STRAIT, &["agent", "--cleanup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table(&ns).is_empty());
}

/// A field `key=VALUE` of the log lines, once it is there.
fn logged_addr(log: &std::path::Path, key: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(a) = text
            .split(key)
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            return a;
        }
        assert!(Instant::now() < deadline, "no {key} in the log: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_records(server: SocketAddr, name: &str) -> Vec<String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::query();
    m.metadata.id = 7;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(&m.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    let answer = Message::from_vec(&buf[..n]).unwrap();
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

/// `strait dns --kubernetes` answers from the API once it has listed, and
/// a Service created through the API is answered (timed).
#[test]
fn dns_from_the_api_answers_and_follows() {
    let dir = TempDir(std::env::temp_dir().join(format!("strait-dns-kube-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let apiserver = ApiServer::start(None, Tokens::default());
    let runtime = &apiserver.runtime;
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(&kubeconfig, apiserver.server().admin_kubeconfig()).unwrap();
    let client = apiserver.client.clone();
    let create = |yaml: &str| {
        for doc in yaml.split("\n---\n") {
            let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let kind = Kind::from_name(value["kind"].as_str().unwrap()).unwrap();
            let ar = strait_kube::api_resource(kind).unwrap();
            let o: DynamicObject = serde_json::from_value(value).unwrap();
            let api: Api<DynamicObject> = match o.metadata.namespace.clone() {
                Some(ns) => Api::namespaced_with(client.clone(), &ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            match runtime.block_on(api.create(&PostParams::default(), &o)) {
                Ok(_) => {}
                // The server makes the system namespaces itself.
                Err(kube::Error::Api(s)) if s.code == 409 && kind == Kind::Namespace => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    create(MANIFESTS.trim());

    let log = dir.0.join("dns.log");
    let mut child = Command::new(STRAIT)
        .args(["-v", "dns", "--kubernetes", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let dns = logged_addr(&log, "udp=");
    let http = logged_addr(&log, "address=");
    assert_eq!(
        a_records(dns, "web.default.svc.cluster.local."),
        vec!["10.96.0.50"]
    );
    let mut ready = TcpStream::connect(http).unwrap();
    write!(ready, "GET /ready HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = ready.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut took = Vec::new();
    for i in 0..10 {
        let name = format!("new-{i}");
        let ip = format!("10.96.1.{}", 10 + i);
        let started = Instant::now();
        create(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, clusterIPs: [{ip}], ports: [{{port: 80, protocol: TCP}}]}}"
        ));
        let question = format!("{name}.default.svc.cluster.local.");
        while a_records(dns, &question) != vec![ip.clone()] {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name} never answered"
            );
        }
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "Service created through the API → answered by strait dns --kubernetes: median {:.1} ms, max {:.1} ms over {}",
        took[took.len() / 2].as_secs_f64() * 1e3,
        took.last().unwrap().as_secs_f64() * 1e3,
        took.len()
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(apiserver);
}
