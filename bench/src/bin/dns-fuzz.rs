//! Junk at the cluster DNS: starts `strait dns` (the binary next to this
//! one) on 127.0.0.1 with the DNS test fixture, sends PACKETS generated
//! hostile packets (9 in 10 over UDP, 1 in 10 over TCP, both at once, at
//! the server's pace), and meanwhile asks a valid question over UDP and
//! over TCP every 100 ms. Prints the rate, how many probes were answered
//! and how fast, and the server's RSS before, at its peak and after; stops
//! the server (by its PID) and exits non-zero if it died or stopped
//! answering. Everything stays on loopback; bounded by MAX_SECONDS.
//! Usage: dns-fuzz [PACKETS=1000000] [MAX_SECONDS=600] [SEED=1]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_dns::junk::{flood_tcp, flood_udp, probe_tcp, probe_udp, rss_kib};

const NAME: &str = "web.default.svc.cluster.local";

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let packets: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(600);
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let strait = std::env::current_exe()
        .expect("own path")
        .with_file_name("strait");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dns-cluster.yaml");
    let log = std::env::temp_dir().join(format!("strait-dns-fuzz-{}.log", std::process::id()));
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port for /metrics");
    let child = Command::new(&strait)
        .args(["dns", "-f"])
        .arg(&fixture)
        .args(["--listen", "127.0.0.1:0", "--metrics-address"])
        .arg(metrics.to_string())
        .args([
            "--service-cidr",
            "10.96.0.0/12",
            "--service-cidr",
            "fd00:96::/108",
            "--upstream",
            "127.0.0.1:9",
            "--upstream-timeout-ms",
            "200",
            "-v",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", strait.display()));
    let mut server = Server(child);
    let pid = server.0.id();
    let started = Instant::now();
    let addr: SocketAddr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("udp=") {
            let rest = &text[at + 4..];
            let end = rest.find(' ').unwrap_or(rest.len());
            break rest[..end].parse().expect("udp=IP:PORT");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "strait dns did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(probe_udp(addr, NAME, 1, Duration::from_secs(3)).is_some());
    let before = rss_kib(pid).unwrap_or(0);
    println!(
        "strait dns pid {pid} on {addr}; RSS before: {before} KiB; {packets} packets, seed {seed}"
    );

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tcp_share = packets / 10;
    let udp = std::thread::spawn(move || flood_udp(addr, seed, packets - tcp_share, deadline));
    let tcp = std::thread::spawn(move || flood_tcp(addr, seed ^ 0x5eed, tcp_share, deadline));
    let (mut udp_ok, mut tcp_ok, mut probes, mut peak) = (0u32, 0u32, 0u32, before);
    let (mut udp_slowest, mut tcp_slowest) = (Duration::ZERO, Duration::ZERO);
    while !(udp.is_finished() && tcp.is_finished()) {
        probes += 1;
        let id = probes as u16;
        if let Some(took) = probe_udp(addr, NAME, id, Duration::from_secs(1)) {
            udp_ok += 1;
            udp_slowest = udp_slowest.max(took);
        }
        if let Some(took) = probe_tcp(addr, NAME, id, Duration::from_secs(2)) {
            tcp_ok += 1;
            tcp_slowest = tcp_slowest.max(took);
        }
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100)); // probe pace
    }
    let udp = udp.join().expect("UDP flood").expect("UDP flood");
    let tcp = tcp.join().expect("TCP flood").expect("TCP flood");
    let alive = server.0.try_wait().ok().flatten().is_none();
    let after_udp = (0..5).any(|i| probe_udp(addr, NAME, i, Duration::from_secs(1)).is_some());
    let after_tcp = probe_tcp(addr, NAME, 9, Duration::from_secs(2)).is_some();
    let after = rss_kib(pid).unwrap_or(0);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let panicked = text.contains("panicked");
    drop(server);
    let _ = std::fs::remove_file(&log);

    let sent = udp.sent + tcp.sent;
    let elapsed = udp.elapsed.max(tcp.elapsed);
    println!(
        "sent {sent} packets in {:.1} s: {:.0} packets/s",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  UDP {} sent, {} answered, {:.0}/s; TCP {} sent, {} answered, {:.0}/s",
        udp.sent,
        udp.answered,
        udp.sent as f64 / udp.elapsed.as_secs_f64(),
        tcp.sent,
        tcp.answered,
        tcp.sent as f64 / tcp.elapsed.as_secs_f64()
    );
    println!(
        "probes during: UDP {udp_ok}/{probes} answered (slowest {udp_slowest:?}), TCP {tcp_ok}/{probes} (slowest {tcp_slowest:?})"
    );
    println!("after: alive {alive}, UDP answered {after_udp}, TCP answered {after_tcp}, panic in log {panicked}");
    println!("RSS: before {before} KiB, peak {peak} KiB, after {after} KiB");
    if !alive || panicked || !after_udp || !after_tcp || tcp_ok < probes {
        std::process::exit(1);
    }
}
