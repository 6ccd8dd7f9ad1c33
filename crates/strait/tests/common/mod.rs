//! Helpers for tests that build their own network namespaces. Nothing here
//! touches the host's namespace: every link, address, rule and sysctl is in
//! a namespace the test created, and the guards remove them on every path.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use strait_linux::NetNs;

/// The repository's root, where `examples/` and `tests/fixtures/` are.
/// The seed scenarios in `examples/`, each with golden files per command.
pub const EXAMPLES: [&str; 5] = [
    "service-demo",
    "maker",
    "my-exter",
    "mysql-svc",
    "my-service",
];

pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the strait binary with `args` from the repository's root; it must
/// succeed, and its stdout is returned.
pub fn strait_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("strait runs");
    assert!(
        out.status.success(),
        "strait {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// True when the test may run; otherwise says, unmissably, that it skipped.
pub fn root_or_skip(test: &str) -> bool {
    if strait_linux::is_root() {
        return true;
    }
    // Written to the real stderr, past the test harness's capture.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (network namespaces)"
    );
    false
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`/run/netns/strait-test-…`), deleted on drop.
pub struct TestNs {
    pub name: String,
    pub ns: NetNs,
}

impl TestNs {
    pub fn new(role: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("strait-test-{}-{n}-{role}", std::process::id());
        let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        TestNs { name, ns }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Run `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.run(f).expect("enter namespace")
    }

    /// Run a program inside the namespace (no `ip netns exec`: its PID is ours).
    pub fn command(&self, program: &str, args: &[&str]) -> Output {
        let program = program.to_owned();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.run(move || Command::new(program).args(args).output().expect("run"))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.name);
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("strait-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP server in `ns` on `addr` answering every connection with `reply`
/// (and the peer's address), for up to `connections` connections.
pub fn serve(
    ns: &TestNs,
    addr: SocketAddr,
    reply: &str,
    connections: usize,
) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    let listener = ns
        .run(move || TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let reply = reply.to_owned();
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        listener.set_nonblocking(false).unwrap();
        for _ in 0..connections {
            let Ok((mut stream, peer)) = listener.accept() else {
                break;
            };
            peers.push(peer);
            let _ = stream.write_all(format!("{reply} {peer}\n").as_bytes());
        }
        peers
    })
}

/// Connect from `ns` to `addr` and read the reply, within two seconds.
pub fn fetch(ns: &TestNs, addr: SocketAddr) -> std::io::Result<String> {
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })
}

/// Run `plugin` as a container runtime would: CNI variables in the
/// environment, the configuration on stdin, inside the node's namespace.
pub fn cni(
    plugin: &str,
    node: &TestNs,
    command: &str,
    container_id: &str,
    netns: &str,
    conf: &str,
    extra_env: &[(&str, &str)],
) -> (i32, serde_json::Value) {
    let call = strait_cni::Call {
        command,
        container_id,
        netns,
        ifname: "eth0",
        conf,
        env: extra_env,
    };
    let reply =
        strait_cni::invoke(std::path::Path::new(plugin), &node.ns, &call).expect("run the plugin");
    (reply.code, reply.json)
}

/// Names of the links in `ns`.
pub fn links(ns: &TestNs) -> Vec<String> {
    let out = ns.command("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// A TCP server that answers every connection with `<name> <peer>` until dropped.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &TestNs, addr: SocketAddr, name: &str) -> Server {
        let listener = ns
            .run(move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_owned();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(format!("{name} {peer}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A process started by the test, ended by its PID when dropped.
pub struct Background(pub std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `program` inside `ns` in the background (its stderr to `log`).
pub fn spawn_in(ns: &TestNs, program: &str, args: &[&str], log: &std::path::Path) -> Background {
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let log = std::fs::File::create(log).unwrap();
    let child = ns.run(move || {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn")
    });
    Background(child)
}

/// Wait until `check` holds, up to `timeout`.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A current kubectl (1.30+): `$STRAIT_KUBECTL`, `target/tools/kubectl`
/// (where run-tests puts it) or `kubectl` on PATH; `None` says why not.
#[allow(dead_code)]
pub fn kubectl() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("STRAIT_KUBECTL").map(std::path::PathBuf::from),
        Some(repo().join("target/tools/kubectl")),
        Some(std::path::PathBuf::from("kubectl")),
    ];
    candidates.into_iter().flatten().find(|k| {
        Command::new(k)
            .args(["version", "--client", "-o", "json"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| {
                v["clientVersion"]["minor"]
                    .as_str()?
                    .trim_end_matches('+')
                    .parse::<u32>()
                    .ok()
            })
            .is_some_and(|minor| minor >= 30)
    })
}
