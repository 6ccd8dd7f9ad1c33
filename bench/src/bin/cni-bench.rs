//! CNI ADD+DEL cycle time and 100 concurrent ADDs: strait against the
//! reference `bridge` + `host-local` plugins from /usr/lib/cni, same subnet,
//! same machine, alternating in one run. Needs root; builds its own node and
//! pod namespaces and removes them.
//! Usage: cni-bench [CYCLES] [CONCURRENT]   (strait binary: $STRAIT or target/release/strait)

use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_linux::NetNs;

struct Ns(String, NetNs);

impl Ns {
    fn new(name: String) -> Ns {
        let _ = NetNs::delete(&name);
        let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        Ns(name, ns)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.0);
    }
}

fn conf(plugin_type: &str, data_dir: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": plugin_type, "bridge": "cni0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]], "dataDir": data_dir}
    })
    .to_string()
}

fn call(node: &Ns, plugin: &str, command: &str, id: &str, netns: &str, conf: &str) {
    let call = strait_cni::Call {
        command,
        container_id: id,
        netns,
        ifname: "eth0",
        conf,
        env: &[],
    };
    let reply =
        strait_cni::invoke(std::path::Path::new(plugin), &node.1, &call).expect("run the plugin");
    assert!(reply.code == 0, "{plugin} {command} failed: {}", reply.json);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !strait_linux::is_root() {
        eprintln!("cni-bench needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let cycles: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let concurrent: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let strait = std::env::var("STRAIT").unwrap_or_else(|_| "target/release/strait".into());
    let reference = "/usr/lib/cni/bridge";
    assert!(
        std::path::Path::new(reference).exists(),
        "needs {reference}: apt-get install containernetworking-plugins"
    );
    let tag = std::process::id();
    let data = std::env::temp_dir().join(format!("strait-bench-cni-{tag}"));
    let data_dir = data.to_str().unwrap().to_owned();
    let node = Arc::new(Ns::new(format!("strait-bench-{tag}-node")));
    let pod = Ns::new(format!("strait-bench-{tag}-pod"));
    let plugins = [
        ("strait", strait.as_str(), conf("strait", &data_dir)),
        ("reference", reference, conf("bridge", &data_dir)),
    ];

    // Warm up both (bridge creation, page cache), then alternate.
    for (_, bin, conf) in &plugins {
        call(&node, bin, "ADD", "warm", &pod.path(), conf);
        call(&node, bin, "DEL", "warm", &pod.path(), conf);
    }
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..cycles {
        for (p, (_, bin, conf)) in plugins.iter().enumerate() {
            let id = format!("cycle-{i}");
            let start = Instant::now();
            call(&node, bin, "ADD", &id, &pod.path(), conf);
            call(&node, bin, "DEL", &id, &pod.path(), conf);
            times[p].push(start.elapsed());
        }
    }
    let (s, r) = (median(times[0].clone()), median(times[1].clone()));
    println!("ADD+DEL cycle, median of {cycles} (alternating):");
    println!("  strait     {:8.2} ms", ms(s));
    println!(
        "  reference  {:8.2} ms   (bridge + host-local from /usr/lib/cni)",
        ms(r)
    );
    println!(
        "  ratio strait/reference = {:.2}",
        s.as_secs_f64() / r.as_secs_f64()
    );

    println!("{concurrent} concurrent ADDs (wall time until all returned):");
    let pods: Vec<Ns> = (0..concurrent)
        .map(|i| Ns::new(format!("strait-bench-{tag}-c{i}")))
        .collect();
    let mut walls = Vec::new();
    for (name, bin, conf) in &plugins {
        let start = Instant::now();
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (node, bin, conf, path) =
                    (node.clone(), bin.to_string(), conf.clone(), pod.path());
                std::thread::spawn(move || {
                    call(&node, &bin, "ADD", &format!("par-{i}"), &path, &conf)
                })
            })
            .collect();
        for h in handles {
            h.join().expect("ADD succeeded");
        }
        let wall = start.elapsed();
        walls.push(wall);
        println!("  {name:<10} {:8.1} ms", ms(wall));
        for (i, pod) in pods.iter().enumerate() {
            call(&node, bin, "DEL", &format!("par-{i}"), &pod.path(), conf);
        }
    }
    println!(
        "  ratio strait/reference = {:.2}",
        walls[0].as_secs_f64() / walls[1].as_secs_f64()
    );
    drop(pods);
    let _ = std::fs::remove_dir_all(&data);
}
