//! The DNS benchmark's data, the same records three ways: manifests for
//! strait, a hosts file for dnsmasq, local-data for unbound, and a dnsperf
//! query file (cluster names only).
//! Usage: gen-dns DIR [SERVICES] [HEADLESS] [ENDPOINTS_PER_HEADLESS]

use std::fmt::Write as _;
use std::net::Ipv4Addr;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: gen-dns DIR [SERVICES] [HEADLESS] [ENDPOINTS]"),
    );
    let services: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let headless: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let per: u32 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(50);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut manifests, mut hosts, mut unbound, mut queries) =
        (String::new(), String::new(), String::new(), String::new());
    let base = u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1000;
    for s in 0..services {
        let ns = format!("ns-{}", s % 20);
        let ip = Ipv4Addr::from(base + s);
        let name = format!("svc-{s}.{ns}.svc.cluster.local");
        let _ = writeln!(
            manifests,
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"svc-{s}","namespace":"{ns}"}},"spec":{{"clusterIP":"{ip}","ports":[{{"name":"http","port":80}}]}}}}"#
        );
        let _ = writeln!(hosts, "{ip} {name}");
        let _ = writeln!(unbound, "  local-data: \"{name}. 5 IN A {ip}\"");
        let _ = writeln!(queries, "{name} A");
    }
    let pod_base = u32::from(Ipv4Addr::new(10, 128, 0, 0));
    for h in 0..headless {
        let ns = format!("ns-{}", h % 20);
        let _ = writeln!(
            manifests,
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"hl-{h}","namespace":"{ns}"}},"spec":{{"clusterIP":"None","ports":[{{"name":"http","port":8080}}]}}}}"#
        );
        let mut endpoints = Vec::new();
        for e in 0..per {
            let ip = Ipv4Addr::from(pod_base + h * per + e);
            endpoints.push(format!(
                r#"{{"addresses":["{ip}"],"conditions":{{"ready":true}}}}"#
            ));
            let name = format!(
                "{}.hl-{h}.{ns}.svc.cluster.local",
                ip.to_string().replace('.', "-")
            );
            let _ = writeln!(hosts, "{ip} {name}");
            let _ = writeln!(unbound, "  local-data: \"{name}. 5 IN A {ip}\"");
            let _ = writeln!(queries, "{name} A");
        }
        let _ = writeln!(
            manifests,
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"hl-{h}-1","namespace":"{ns}","labels":{{"kubernetes.io/service-name":"hl-{h}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080}}],"endpoints":[{}]}}"#,
            endpoints.join(",")
        );
    }
    std::fs::write(dir.join("cluster.json"), manifests).unwrap();
    std::fs::write(dir.join("hosts"), hosts).unwrap();
    std::fs::write(dir.join("unbound-data.conf"), unbound).unwrap();
    std::fs::write(dir.join("queries"), queries).unwrap();
}
