//! `strait dns` as users run it: the binary, a manifest, real questions over
//! UDP and TCP on loopback, and stub upstream servers started by the test.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

struct Dns {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    _dir: common::TempDir,
    manifest: std::path::PathBuf,
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `strait dns` on a loopback port with the fixture (copied, so the
/// test may change it), forwarding to `upstream`.
fn start(upstream: Option<SocketAddr>) -> Dns {
    start_with(upstream, None)
}

/// [`start`] with these manifests instead of the fixture.
fn start_with(upstream: Option<SocketAddr>, manifests: Option<&str>) -> Dns {
    let dir = common::TempDir::new("dns");
    let manifest = dir.0.join("cluster.yaml");
    match manifests {
        Some(text) => std::fs::write(&manifest, text).unwrap(),
        None => {
            let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/dns-cluster.yaml");
            std::fs::copy(fixture, &manifest).unwrap();
        }
    }
    let log = dir.0.join("dns.log");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut args: Vec<String> = vec![
        "dns".into(),
        "-f".into(),
        manifest.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-address".into(),
        metrics.to_string(),
        "--service-cidr".into(),
        "10.96.0.0/12".into(),
        "--service-cidr".into(),
        "fd00:96::/108".into(),
        "--upstream-timeout-ms".into(),
        "300".into(),
        "--poll-ms".into(),
        "50".into(),
        "-v".into(),
    ];
    match upstream {
        Some(u) => args.extend(["--upstream".into(), u.to_string()]),
        None => args.extend(["--upstream".into(), "127.0.0.1:9".into()]),
    }
    let child = Command::new(STRAIT)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The log says where it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("udp=") {
            let rest = &text[at + 4..];
            let end = rest.find(' ').unwrap_or(rest.len());
            break rest[..end].parse::<SocketAddr>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "strait dns did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Dns {
        child,
        addr,
        metrics,
        _dir: dir,
        manifest,
    }
}

fn question(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn udp(addr: SocketAddr, m: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.send_to(&m.to_vec().unwrap(), addr).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer over UDP");
    Message::from_vec(&buf[..n]).unwrap()
}

fn tcp(addr: SocketAddr, m: &Message) -> Message {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let bytes = m.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    Message::from_vec(&body).unwrap()
}

/// Ask over UDP and over TCP; both must say the same; return it.
fn ask(dns: &Dns, name: &str, qtype: RecordType) -> Message {
    let q = question(name, qtype, true);
    let over_udp = udp(dns.addr, &q);
    let over_tcp = tcp(dns.addr, &q);
    assert_eq!(
        over_udp.answers, over_tcp.answers,
        "{name} {qtype}: UDP and TCP differ"
    );
    assert_eq!(
        over_udp.metadata.response_code,
        over_tcp.metadata.response_code
    );
    assert_eq!(over_udp.metadata.id, 4242);
    over_udp
}

fn values(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

fn has_soa(m: &Message) -> bool {
    m.authorities
        .iter()
        .any(|r| matches!(r.data, RData::SOA(_)))
}

#[test]
fn seed_003_hostname_of_a_headless_service_resolves_to_the_pod() {
    let dns = start(None);
    let m = ask(
        &dns,
        "trouble2.maker.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(values(&m), ["10.244.2.22"]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5, "default TTL");
    // The headless name: every ready endpoint; the pod without hostname by its dashed IP.
    assert_eq!(
        values(&ask(
            &dns,
            "maker.default.svc.cluster.local.",
            RecordType::A
        )),
        ["10.244.1.21", "10.244.2.22", "10.244.2.23"]
    );
    assert_eq!(
        values(&ask(
            &dns,
            "10-244-2-23.maker.default.svc.cluster.local.",
            RecordType::A
        )),
        ["10.244.2.23"]
    );
    // SRV per endpoint and named port, targets' addresses in the additional section.
    let srv = ask(
        &dns,
        "_http._tcp.maker.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(srv.answers.len(), 3);
    assert!(
        values(&srv).contains(&"0 33 8080 trouble2.maker.default.svc.cluster.local.".to_string()),
        "{:?}",
        values(&srv)
    );
    assert_eq!(
        srv.additionals
            .iter()
            .filter(|r| matches!(r.data, RData::A(_)))
            .count(),
        3
    );
    // PTR of a ready headless endpoint.
    assert_eq!(
        values(&ask(&dns, "22.2.244.10.in-addr.arpa.", RecordType::PTR)),
        ["trouble2.maker.default.svc.cluster.local."]
    );
}

#[test]
fn cluster_ip_services_answer_a_aaaa_srv_ptr_case_insensitively() {
    let dns = start(None);
    assert_eq!(
        values(&ask(&dns, "web.default.svc.cluster.local.", RecordType::A)),
        ["10.96.100.10"]
    );
    assert_eq!(
        values(&ask(&dns, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A)),
        ["10.96.100.10"]
    );
    assert_eq!(
        values(&ask(
            &dns,
            "dual.default.svc.cluster.local.",
            RecordType::AAAA
        )),
        ["fd00:96::11"]
    );
    let srv = ask(
        &dns,
        "_dns._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(values(&srv), ["0 100 53 web.default.svc.cluster.local."]);
    assert_eq!(srv.additionals.len(), 1);
    assert_eq!(
        values(&ask(&dns, "10.100.96.10.in-addr.arpa.", RecordType::PTR)),
        ["web.default.svc.cluster.local."]
    );
    let v6 = "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(
        values(&ask(&dns, v6, RecordType::PTR)),
        ["dual.default.svc.cluster.local."]
    );
    assert_eq!(
        values(&ask(&dns, "dns-version.cluster.local.", RecordType::TXT)),
        ["1.1.0"]
    );
    assert_eq!(
        values(&ask(
            &dns,
            "10-244-7-7.default.pod.cluster.local.",
            RecordType::A
        )),
        ["10.244.7.7"]
    );
}

#[test]
fn readiness_decides_who_is_published() {
    let dns = start(None);
    assert_eq!(
        values(&ask(
            &dns,
            "quiet.default.svc.cluster.local.",
            RecordType::A
        )),
        ["10.244.3.32"]
    );
    assert_eq!(
        values(&ask(
            &dns,
            "peers.default.svc.cluster.local.",
            RecordType::A
        )),
        ["10.244.3.41"],
        "publishNotReadyAddresses"
    );
}

#[test]
fn external_names_are_cnames() {
    let dns = start(None);
    let m = ask(&dns, "my-exter.dev.svc.cluster.local.", RecordType::A);
    // In the cluster domain: the CNAME and its target's address.
    assert_eq!(
        values(&m),
        ["10.96.100.10", "web.default.svc.cluster.local."]
    );
    let m = ask(&dns, "outside.dev.svc.cluster.local.", RecordType::A);
    assert_eq!(values(&m), ["db.example.org."]);
}

#[test]
fn nxdomain_and_nodata_carry_an_soa() {
    let dns = start(None);
    let m = ask(&dns, "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(has_soa(&m) && m.answers.is_empty());
    let m = ask(&dns, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "the name exists: NODATA"
    );
    assert!(has_soa(&m) && m.answers.is_empty());
    let m = ask(&dns, "default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "names with names below them exist"
    );
}

#[test]
fn a_real_server_truncates_refuses_transfers_and_survives_garbage() {
    let dns = start(None);
    // 60 endpoints do not fit in 512 bytes: TC over UDP, everything over TCP.
    let q = question("many.default.svc.cluster.local.", RecordType::A, false);
    let m = udp(dns.addr, &q);
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert_eq!(tcp(dns.addr, &q).answers.len(), 60);
    // With EDNS and 1232 bytes it fits.
    assert_eq!(
        udp(
            dns.addr,
            &question("many.default.svc.cluster.local.", RecordType::A, true)
        )
        .answers
        .len(),
        60
    );
    assert_eq!(
        udp(
            dns.addr,
            &question("cluster.local.", RecordType::AXFR, false)
        )
        .metadata
        .response_code,
        ResponseCode::Refused
    );
    let any = udp(
        dns.addr,
        &question("web.default.svc.cluster.local.", RecordType::ANY, false),
    );
    assert_eq!(
        values(&any),
        ["10.96.100.10"],
        "ANY is answered minimally (RFC 8482)"
    );
    // Garbage with a header: FORMERR; without: silence; the server lives on.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
        .send_to(
            &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
            dns.addr,
        )
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).expect("FORMERR");
    assert_eq!((n, buf[0], buf[1], buf[3] & 0xf), (12, 0x12, 0x34, 1));
    socket.send_to(&[1, 2, 3], dns.addr).unwrap();
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "no answer to a fragment"
    );
    // Several queries in flight on one TCP connection.
    let mut s = TcpStream::connect(dns.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for (i, name) in [
        "web.default.svc.cluster.local.",
        "maker.default.svc.cluster.local.",
    ]
    .iter()
    .enumerate()
    {
        let mut q = question(name, RecordType::A, false);
        q.metadata.id = 100 + i as u16;
        let bytes = q.to_vec().unwrap();
        s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
        s.write_all(&bytes).unwrap();
    }
    for i in 0..2 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        assert_eq!(Message::from_vec(&body).unwrap().metadata.id, 100 + i);
    }
    assert_eq!(
        values(&ask(&dns, "web.default.svc.cluster.local.", RecordType::A)),
        ["10.96.100.10"]
    );
}

#[test]
fn changed_manifests_are_served_within_a_second() {
    let dns = start(None);
    let mut text = std::fs::read_to_string(&dns.manifest).unwrap();
    text.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec: {clusterIP: 10.96.100.99, ports: [{port: 80}]}\n");
    std::fs::write(&dns.manifest, text).unwrap();
    let ok = common::wait_for(Duration::from_secs(1), || {
        values(&udp(
            dns.addr,
            &question("late.default.svc.cluster.local.", RecordType::A, false),
        )) == ["10.96.100.99"]
    });
    assert!(ok, "the new Service resolves within a second");
}

/// A stub upstream on loopback: answers `*.example.org` A with 192.0.2.1
/// (TTL 60), NXDOMAIN for `missing.example.org`, truncates `big.example.org`
/// over UDP (and answers it over TCP), never answers `slow.example.org`.
struct Upstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

fn stub_answer(q: &Message, over_tcp: bool) -> Option<Message> {
    let name = q.queries[0].name().to_ascii().to_ascii_lowercase();
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.queries = q.queries.clone();
    m.metadata.recursion_available = true;
    let owner = q.queries[0].name().clone();
    match name.as_str() {
        "slow.example.org." => return None,
        "missing.example.org." => {
            m.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                Name::from_ascii("ns.example.org.").unwrap(),
                Name::from_ascii("h.example.org.").unwrap(),
                1,
                1,
                1,
                1,
                30,
            );
            m.authorities.push(Record::from_rdata(
                Name::from_ascii("example.org.").unwrap(),
                60,
                RData::SOA(soa),
            ));
        }
        "big.example.org." if !over_tcp => m.metadata.truncation = true,
        _ => m.answers.push(Record::from_rdata(
            owner,
            60,
            RData::A(A("192.0.2.1".parse().unwrap())),
        )),
    }
    Some(m)
}

fn upstream() -> Upstream {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let (udp_queries, tcp_queries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let count = udp_queries.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if let Some(m) = stub_answer(&q, false) {
                let _ = socket.send_to(&m.to_vec().unwrap(), peer);
            }
        }
    });
    let count = tcp_queries.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut body).is_err() {
                continue;
            }
            let q = Message::from_vec(&body).unwrap();
            let bytes = stub_answer(&q, true).unwrap().to_vec().unwrap();
            let _ = s.write_all(&(bytes.len() as u16).to_be_bytes());
            let _ = s.write_all(&bytes);
        }
    });
    Upstream {
        addr,
        udp_queries,
        tcp_queries,
    }
}

#[test]
fn other_names_are_forwarded_cached_retried_over_tcp_or_fail_fast() {
    let up = upstream();
    let dns = start(Some(up.addr));
    let m = udp(
        dns.addr,
        &question("www.example.org.", RecordType::A, false),
    );
    assert_eq!(values(&m), ["192.0.2.1"]);
    assert!(m.metadata.recursion_available);
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 1);
    // Cached: the second question does not reach the upstream; TTL counts down.
    let again = udp(
        dns.addr,
        &question("WWW.example.org.", RecordType::A, false),
    );
    assert_eq!(values(&again), ["192.0.2.1"]);
    assert!(again.answers[0].ttl <= 60);
    assert_eq!(
        up.udp_queries.load(Ordering::SeqCst),
        1,
        "served from the cache"
    );
    // Negative answers are cached too.
    for _ in 0..2 {
        let m = udp(
            dns.addr,
            &question("missing.example.org.", RecordType::A, false),
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 2);
    // Truncated over UDP: asked again over TCP.
    let m = udp(
        dns.addr,
        &question("big.example.org.", RecordType::A, false),
    );
    assert_eq!(values(&m), ["192.0.2.1"]);
    assert_eq!(up.tcp_queries.load(Ordering::SeqCst), 1);
    // An upstream that does not answer: SERVFAIL within the timeout, not a hang.
    let started = Instant::now();
    let m = udp(
        dns.addr,
        &question("slow.example.org.", RecordType::A, false),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Cluster names never wait for upstreams.
    assert_eq!(
        values(&udp(
            dns.addr,
            &question("web.default.svc.cluster.local.", RecordType::A, false)
        )),
        ["10.96.100.10"]
    );

    let metrics = http_get(dns.metrics, "/metrics");
    for name in [
        "strait_dns_queries_total",
        "strait_dns_request_duration_seconds_bucket",
        "strait_dns_cache_hits_total",
        "strait_dns_upstream_errors_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(http_get(dns.metrics, "/ready").starts_with("HTTP/1.1 200"));
    assert!(http_get(dns.metrics, "/healthz").starts_with("HTTP/1.1 200"));
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn repeated_questions_get_the_same_answers_with_their_own_ids() {
    // The second and later identical questions are answered from stored
    // wire bytes: ids, flags, EDNS and size limits must still be right.
    let dns = start(None);
    for (name, qtype) in [
        ("web.default.svc.cluster.local.", RecordType::A),
        (
            "_http._tcp.maker.default.svc.cluster.local.",
            RecordType::SRV,
        ),
        ("nope.default.svc.cluster.local.", RecordType::A),
        ("my-exter.dev.svc.cluster.local.", RecordType::A),
    ] {
        let reference = tcp(dns.addr, &question(name, qtype, false));
        for round in 0..5u16 {
            for edns in [false, true] {
                let mut q = question(name, qtype, edns);
                q.metadata.id = 1000 + round * 2 + u16::from(edns);
                q.metadata.recursion_desired = round % 2 == 0;
                let m = udp(dns.addr, &q);
                assert_eq!(m.metadata.id, q.metadata.id);
                assert_eq!(m.metadata.recursion_desired, q.metadata.recursion_desired);
                assert_eq!(
                    m.metadata.response_code, reference.metadata.response_code,
                    "{name}"
                );
                assert_eq!(m.answers, reference.answers, "{name} round {round}");
                assert_eq!(m.authorities.len(), reference.authorities.len());
                assert_eq!(m.edns.is_some(), edns, "OPT only when asked with OPT");
            }
        }
    }
    // Stored big answers still truncate for clients without EDNS.
    let big = question("many.default.svc.cluster.local.", RecordType::A, true);
    assert_eq!(udp(dns.addr, &big).answers.len(), 60);
    assert_eq!(udp(dns.addr, &big).answers.len(), 60);
    let small = udp(
        dns.addr,
        &question("many.default.svc.cluster.local.", RecordType::A, false),
    );
    assert!(small.metadata.truncation);
}

/// A connection that sends one byte of a message and no more.
fn slow_loris(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0]).unwrap();
    s
}

#[test]
fn slow_loris_clients_cannot_lock_out_dns_over_tcp() {
    let dns = start(None);
    // More trickling clients than the server keeps connections (256).
    let lorises: Vec<TcpStream> = (0..266).map(|_| slow_loris(dns.addr)).collect();
    // A real client is still answered, promptly (well before the 2 s a
    // message may take: it is not waiting for a loris to time out).
    let started = Instant::now();
    let q = question("web.default.svc.cluster.local.", RecordType::A, false);
    assert_eq!(values(&tcp(dns.addr, &q)), ["10.96.100.10"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(lorises);

    // A client trickling a byte every 300 ms never completes its message:
    // the connection closes at the message deadline, whatever it sends.
    let mut s = slow_loris(dns.addr);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a trickling client keeps its connection"
        );
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => break true,
            Ok(_) => panic!("an answer to half a message"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break true,
        }
        if s.write_all(&[40]).is_err() {
            break true;
        }
    };
    assert!(closed);
}

#[test]
fn classes_other_than_in_are_refused() {
    let up = upstream();
    let dns = start(Some(up.addr));
    for (name, class) in [
        ("web.default.svc.cluster.local.", DNSClass::CH),
        ("web.default.svc.cluster.local.", DNSClass::ANY),
        ("version.bind.", DNSClass::CH),
        ("www.example.org.", DNSClass::HS),
        ("dns-version.cluster.local.", DNSClass::NONE),
    ] {
        let mut q = question(name, RecordType::A, false);
        q.queries[0].set_query_class(class);
        for m in [udp(dns.addr, &q), tcp(dns.addr, &q)] {
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{name} class {class}"
            );
            assert!(m.answers.is_empty(), "{name} class {class}");
        }
    }
    assert_eq!(
        up.udp_queries.load(Ordering::SeqCst),
        0,
        "nothing forwarded"
    );
}

#[test]
fn listen_on_port_zero_finds_a_port_free_over_both_udp_and_tcp() {
    if !common::root_or_skip("listen_on_port_zero_finds_a_port_free_over_both_udp_and_tcp") {
        return;
    }
    // In a namespace of our own, ephemeral ports are 20; TCP holds 19 of
    // them, so the port UDP gets is almost surely taken over TCP.
    let ns = common::TestNs::new("dnsport");
    let up = ns.command("ip", &["link", "set", "lo", "up"]);
    assert!(up.status.success());
    let range = ns.command(
        "sysctl",
        &["-w", "net.ipv4.ip_local_port_range=40000 40019"],
    );
    assert!(range.status.success(), "{range:?}");
    let held: Vec<std::net::TcpListener> = ns.run(|| {
        (40000..40019)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).unwrap())
            .collect()
    });
    let dir = common::TempDir::new("dnsport");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/dns-cluster.yaml");
    let log = dir.0.join("dns.log");
    let _dns = common::spawn_in(
        &ns,
        STRAIT,
        &[
            "dns",
            "-f",
            fixture.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--service-cidr",
            "10.96.0.0/12",
            "--service-cidr",
            "fd00:96::/108",
            "-v",
        ],
        &log,
    );
    let mut text = String::new();
    let ok = common::wait_for(Duration::from_secs(10), || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("udp=") || text.contains("rror")
    });
    assert!(ok && text.contains("udp=127.0.0.1:40019"), "{text}");
    assert!(text.contains("tcp=127.0.0.1:40019"), "{text}");
    // And it answers there, over both (the client needs a free port).
    drop(held);
    let m = ns.run(|| {
        let at: SocketAddr = "127.0.0.1:40019".parse().unwrap();
        let q = question("web.default.svc.cluster.local.", RecordType::A, false);
        [udp(at, &q), tcp(at, &q)]
    });
    assert_eq!(values(&m[0]), ["10.96.100.10"]);
    assert_eq!(values(&m[1]), ["10.96.100.10"]);
}

/// CoreDNS's own test cluster (plugin/kubernetes/handler_test.go), in this
/// cluster's address ranges: svc1, svcempty (no endpoints), svc6 (IPv6),
/// svc-dual-stack, headless hdls1 (four IPv4 and two IPv6 endpoints, two
/// of them named dup-name), portless headless hdlsprtls, ExternalNames out
/// of and into the cluster, plus a headless Service with no ready endpoint
/// and the pod namespace podns.
const COREDNS_CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: testns}
---
apiVersion: v1
kind: Namespace
metadata: {name: podns}
---
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: testns}
spec: {clusterIP: 10.96.1.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svcempty, namespace: testns}
spec: {clusterIP: 10.96.1.2, selector: {app: nobody}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc6, namespace: testns}
spec: {clusterIP: 'fd00:96::6', clusterIPs: ['fd00:96::6'], ipFamilies: [IPv6], ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc-dual-stack, namespace: testns}
spec:
  ipFamilyPolicy: RequireDualStack
  clusterIP: 10.96.1.3
  clusterIPs: [10.96.1.3, 'fd00:96::3']
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: hdls1, namespace: testns}
spec:
  clusterIP: None
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  selector: {app: hdls1}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: hdlsprtls, namespace: testns}
spec: {clusterIP: None, selector: {app: hdlsprtls}}
---
apiVersion: v1
kind: Service
metadata: {name: hdlsnone, namespace: testns}
spec: {clusterIP: None, selector: {app: nobody}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: testns}
spec: {type: ExternalName, externalName: ext.interwebs.test, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: external-to-service, namespace: testns}
spec: {type: ExternalName, externalName: svc1.testns.svc.cluster.local., ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h2, namespace: testns, labels: {app: hdls1}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.0.2, podIPs: [{ip: 10.244.0.2}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h3, namespace: testns, labels: {app: hdls1}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.0.3, podIPs: [{ip: 10.244.0.3}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h4, namespace: testns, labels: {app: hdls1}}
spec: {containers: [{name: c, image: x}], hostname: dup-name, subdomain: hdls1}
status: {phase: Running, podIP: 10.244.0.4, podIPs: [{ip: 10.244.0.4}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h5, namespace: testns, labels: {app: hdls1}}
spec: {containers: [{name: c, image: x}], hostname: dup-name, subdomain: hdls1}
status: {phase: Running, podIP: 10.244.0.5, podIPs: [{ip: 10.244.0.5}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h6, namespace: testns, labels: {app: hdls1}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 'fd00:244::1', podIPs: [{ip: 'fd00:244::1'}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h7, namespace: testns, labels: {app: hdls1}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 'fd00:244::2', podIPs: [{ip: 'fd00:244::2'}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p20, namespace: testns, labels: {app: hdlsprtls}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.0.20, podIPs: [{ip: 10.244.0.20}], conditions: [{type: Ready, status: "True"}]}
"#;

/// One record as `owner ttl TYPE data`; an SOA without its serial.
fn rr(r: &Record) -> String {
    let data = match &r.data {
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {}",
            soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum
        ),
        other => other.to_string(),
    };
    format!("{} {} {} {}", r.name, r.ttl, r.record_type(), data)
}

fn rrs(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(rr).collect();
    v.sort();
    v
}

const ZONE_SOA: &str =
    "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 7200 1800 86400 5";

/// name, type, rcode, answer, additional, authority (sorted; SOA = the
/// zone's SOA).
type Case = (
    &'static str,
    RecordType,
    ResponseCode,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

#[test]
fn answers_match_coredns_kubernetes_handler_cases() {
    use RecordType::*;
    use ResponseCode::{NXDomain, NoError};
    let up = upstream();
    let dns = start_with(Some(up.addr), Some(COREDNS_CLUSTER));
    let cases: &[Case] = &[
        // handler_test.go, commonDnsTestCases and dnsTestCases.
        ("svc1.testns.svc.cluster.local.", A, NoError, &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[], &[]),
        ("svcempty.testns.svc.cluster.local.", A, NoError, &["svcempty.testns.svc.cluster.local. 5 A 10.96.1.2"], &[], &[]),
        ("svc1.testns.svc.cluster.local.", SRV, NoError, &["svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."], &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[]),
        ("svcempty.testns.svc.cluster.local.", SRV, NoError, &["svcempty.testns.svc.cluster.local. 5 SRV 0 100 80 svcempty.testns.svc.cluster.local."], &["svcempty.testns.svc.cluster.local. 5 A 10.96.1.2"], &[]),
        ("svc6.testns.svc.cluster.local.", SRV, NoError, &["svc6.testns.svc.cluster.local. 5 SRV 0 100 80 svc6.testns.svc.cluster.local."], &["svc6.testns.svc.cluster.local. 5 AAAA fd00:96::6"], &[]),
        ("_http._tcp.svc1.testns.svc.cluster.local.", SRV, NoError, &["_http._tcp.svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."], &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[]),
        ("_http._tcp.svcempty.testns.svc.cluster.local.", SRV, NoError, &["_http._tcp.svcempty.testns.svc.cluster.local. 5 SRV 0 100 80 svcempty.testns.svc.cluster.local."], &["svcempty.testns.svc.cluster.local. 5 A 10.96.1.2"], &[]),
        ("hdls1.testns.svc.cluster.local.", A, NoError, &["hdls1.testns.svc.cluster.local. 5 A 10.244.0.2", "hdls1.testns.svc.cluster.local. 5 A 10.244.0.3", "hdls1.testns.svc.cluster.local. 5 A 10.244.0.4", "hdls1.testns.svc.cluster.local. 5 A 10.244.0.5"], &[], &[]),
        ("hdlsprtls.testns.svc.cluster.local.", A, NoError, &["hdlsprtls.testns.svc.cluster.local. 5 A 10.244.0.20"], &[], &[]),
        ("svc1.testns.svc.cluster.local.", AAAA, NoError, &[], &[], &[ZONE_SOA]),
        ("svc0.testns.svc.cluster.local.", AAAA, NXDomain, &[], &[], &[ZONE_SOA]),
        ("svc0.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("svc0.svc-nons.svc.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("dns-version.cluster.local.", TXT, NoError, &["dns-version.cluster.local. 28800 TXT 1.1.0"], &[], &[]),
        ("svc1.testns.svc.cluster.local.", TXT, NoError, &[], &[], &[ZONE_SOA]),
        ("svc0.svc-nons.svc.cluster.local.", TXT, NXDomain, &[], &[], &[ZONE_SOA]),
        ("bogusendpoint.hdls1.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("bogusendpoint.svc0.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("svc6.testns.svc.cluster.local.", AAAA, NoError, &["svc6.testns.svc.cluster.local. 5 AAAA fd00:96::6"], &[], &[]),
        ("_http._tcp.svc6.testns.svc.cluster.local.", SRV, NoError, &["_http._tcp.svc6.testns.svc.cluster.local. 5 SRV 0 100 80 svc6.testns.svc.cluster.local."], &["svc6.testns.svc.cluster.local. 5 AAAA fd00:96::6"], &[]),
        ("hdls1.testns.svc.cluster.local.", AAAA, NoError, &["hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::1", "hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::2"], &[], &[]),
        ("svc.cluster.local.", A, NoError, &[], &[], &[ZONE_SOA]),
        ("pod.cluster.local.", A, NoError, &[], &[], &[ZONE_SOA]),
        ("testns.svc.cluster.local.", A, NoError, &[], &[], &[ZONE_SOA]),
        ("svc.cluster.local.", NS, NoError, &[], &[], &[ZONE_SOA]),
        ("testns.svc.cluster.local.", NS, NoError, &[], &[], &[ZONE_SOA]),
        ("foo.cluster.local.", NS, NXDomain, &[], &[], &[ZONE_SOA]),
        ("foo.svc.cluster.local.", NS, NXDomain, &[], &[], &[ZONE_SOA]),
        ("svc-dual-stack.testns.svc.cluster.local.", A, NoError, &["svc-dual-stack.testns.svc.cluster.local. 5 A 10.96.1.3"], &[], &[]),
        ("svc-dual-stack.testns.svc.cluster.local.", AAAA, NoError, &["svc-dual-stack.testns.svc.cluster.local. 5 AAAA fd00:96::3"], &[], &[]),
        ("svc-dual-stack.testns.svc.cluster.local.", SRV, NoError, &["svc-dual-stack.testns.svc.cluster.local. 5 SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local."], &["svc-dual-stack.testns.svc.cluster.local. 5 A 10.96.1.3", "svc-dual-stack.testns.svc.cluster.local. 5 AAAA fd00:96::3"], &[]),
        ("svc1.testns.svc.cluster.local.", RecordType::SOA, NoError, &[], &[], &[ZONE_SOA]),
        ("endpoint.external.testns.svc.cluster.local.", CNAME, NXDomain, &[], &[], &[ZONE_SOA]),
        ("subdomain.subdomain.external.testns.svc.cluster.local.", CNAME, NXDomain, &[], &[], &[ZONE_SOA]),
        ("_http._tcp.hdls1.testns.svc.cluster.local.", SRV, NoError,
            &["_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 10-244-0-2.hdls1.testns.svc.cluster.local.",
              "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 10-244-0-3.hdls1.testns.svc.cluster.local.",
              "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.",
              "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 fd00-244--1.hdls1.testns.svc.cluster.local.",
              "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 fd00-244--2.hdls1.testns.svc.cluster.local."],
            &["10-244-0-2.hdls1.testns.svc.cluster.local. 5 A 10.244.0.2",
              "10-244-0-3.hdls1.testns.svc.cluster.local. 5 A 10.244.0.3",
              "dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.4",
              "dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.5",
              "fd00-244--1.hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::1",
              "fd00-244--2.hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::2"], &[]),
        ("fd00-244--2.hdls1.testns.svc.cluster.local.", AAAA, NoError, &["fd00-244--2.hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::2"], &[], &[]),
        ("10-244-0-20.hdlsprtls.testns.svc.cluster.local.", A, NoError, &["10-244-0-20.hdlsprtls.testns.svc.cluster.local. 5 A 10.244.0.20"], &[], &[]),
        ("10-244-0-2.hdls1.testns.svc.cluster.local.", A, NoError, &["10-244-0-2.hdls1.testns.svc.cluster.local. 5 A 10.244.0.2"], &[], &[]),
        ("dup-name.hdls1.testns.svc.cluster.local.", A, NoError, &["dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.4", "dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.5"], &[], &[]),
        ("external.testns.svc.cluster.local.", CNAME, NoError, &["external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."], &[], &[]),
        // Out of the cluster: chased through the upstream (RD is set).
        ("external.testns.svc.cluster.local.", A, NoError, &["ext.interwebs.test. 60 A 192.0.2.1", "external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."], &[], &[]),
        ("external-to-service.testns.svc.cluster.local.", A, NoError, &["external-to-service.testns.svc.cluster.local. 5 CNAME svc1.testns.svc.cluster.local.", "svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[], &[]),
        // The bare headless name: every (endpoint, port).
        ("hdls1.testns.svc.cluster.local.", SRV, NoError,
            &["hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 10-244-0-2.hdls1.testns.svc.cluster.local.",
              "hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 10-244-0-3.hdls1.testns.svc.cluster.local.",
              "hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.",
              "hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 fd00-244--1.hdls1.testns.svc.cluster.local.",
              "hdls1.testns.svc.cluster.local. 5 SRV 0 16 80 fd00-244--2.hdls1.testns.svc.cluster.local."],
            &["10-244-0-2.hdls1.testns.svc.cluster.local. 5 A 10.244.0.2",
              "10-244-0-3.hdls1.testns.svc.cluster.local. 5 A 10.244.0.3",
              "dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.4",
              "dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.5",
              "fd00-244--1.hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::1",
              "fd00-244--2.hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::2"], &[]),
        // A headless Service with no ready endpoint does not exist.
        ("hdlsnone.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("_http._tcp.hdlsnone.testns.svc.cluster.local.", SRV, NXDomain, &[], &[], &[ZONE_SOA]),
        // handler_pod_insecure_test.go (podns exists, pod-nons does not).
        ("10-240-0-1.podns.pod.cluster.local.", A, NoError, &["10-240-0-1.podns.pod.cluster.local. 5 A 10.240.0.1"], &[], &[]),
        ("172-0-0-2.podns.pod.cluster.local.", A, NoError, &["172-0-0-2.podns.pod.cluster.local. 5 A 172.0.0.2"], &[], &[]),
        ("blah.podns.pod.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("blah.podns.pod.cluster.local.", AAAA, NXDomain, &[], &[], &[ZONE_SOA]),
        ("blah.podns.pod.cluster.local.", HINFO, NXDomain, &[], &[], &[ZONE_SOA]),
        ("blah.pod-nons.pod.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("10-240-0-1.pod-nons.pod.cluster.local.", A, NXDomain, &[], &[], &[ZONE_SOA]),
        ("podns.pod.cluster.local.", A, NoError, &[], &[], &[ZONE_SOA]),
        ("default.pod.cluster.local.", A, NoError, &[], &[], &[ZONE_SOA]),
        // handler_case_test.go: the zone part keeps the query's case.
        ("not-a-service.testns.svc.ClUsTeR.lOcAl.", A, NXDomain, &[], &[], &["ClUsTeR.lOcAl. 5 SOA ns.dns.ClUsTeR.lOcAl. hostmaster.ClUsTeR.lOcAl. 7200 1800 86400 5"]),
        ("SvC1.TeStNs.SvC.cLuStEr.LoCaL.", A, NoError, &["SvC1.TeStNs.SvC.cLuStEr.LoCaL. 5 A 10.96.1.1"], &[], &[]),
        ("_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL.", SRV, NoError, &["_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL."], &["svc1.testns.svc.cLuStEr.LoCaL. 5 A 10.96.1.1"], &[]),
        ("Cluster.local.", RecordType::SOA, NoError, &["Cluster.local. 5 SOA ns.dns.Cluster.local. hostmaster.Cluster.local. 7200 1800 86400 5"], &[], &[]),
        // The apex's NS, and its address (the DNS Service's, in each family).
        ("cluster.local.", NS, NoError, &["cluster.local. 5 NS ns.dns.cluster.local."], &["ns.dns.cluster.local. 5 A 10.96.0.10", "ns.dns.cluster.local. 5 AAAA fd00:96::a"], &[]),
        ("ns.dns.cluster.local.", A, NoError, &["ns.dns.cluster.local. 5 A 10.96.0.10"], &[], &[]),
        // HINFO is the RFC 8482 answer to ANY only.
        ("svc1.testns.svc.cluster.local.", HINFO, NoError, &[], &[], &[ZONE_SOA]),
    ];
    let mut wrong = Vec::new();
    for &(name, qtype, rcode, answer, additional, authority) in cases {
        let m = ask(&dns, name, qtype);
        let got = (
            m.metadata.response_code,
            rrs(&m.answers),
            rrs(&m.additionals),
            rrs(&m.authorities),
        );
        let want = (
            rcode,
            answer.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            additional.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            authority.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        if got != want {
            wrong.push(format!("{name} {qtype}:\n  got  {got:?}\n  want {want:?}"));
        }
        // A CNAME comes before the records of its target.
        if let Some(at) = m
            .answers
            .iter()
            .position(|r| r.record_type() == RecordType::CNAME)
        {
            assert!(
                m.answers[..at]
                    .iter()
                    .all(|r| r.record_type() == RecordType::CNAME),
                "{name} {qtype}: CNAME after its target: {:?}",
                rrs(&m.answers)
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ from CoreDNS:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn junk_over_udp_and_tcp_leaves_the_server_answering_in_bounded_memory() {
    use strait_dns::junk::{flood_tcp, flood_udp, probe_tcp, probe_udp, rss_kib};
    let mut dns = start(None);
    let (addr, pid) = (dns.addr, dns.child.id());
    let web = "web.default.svc.cluster.local";
    assert!(probe_udp(addr, web, 1, Duration::from_secs(3)).is_some());
    let before = rss_kib(pid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let udp = std::thread::spawn(move || flood_udp(addr, 1, 18_000, deadline).unwrap());
    let tcp = std::thread::spawn(move || flood_tcp(addr, 2, 2_000, deadline).unwrap());
    // During: valid questions are answered (UDP may drop one under the
    // flood, so a few tries; TCP must answer every time).
    let mut probes = 0u16;
    while !(udp.is_finished() && tcp.is_finished()) {
        probes += 1;
        let over_udp =
            (0..10).any(|_| probe_udp(addr, web, probes, Duration::from_millis(500)).is_some());
        assert!(over_udp, "no UDP answer during the flood (probe {probes})");
        assert!(
            probe_tcp(addr, web, probes, Duration::from_secs(3)).is_some(),
            "no TCP answer during the flood (probe {probes})"
        );
        std::thread::sleep(Duration::from_millis(50)); // pacing, not synchronisation
    }
    let (udp, tcp) = (udp.join().unwrap(), tcp.join().unwrap());
    assert_eq!(
        (udp.sent, tcp.sent),
        (18_000, 2_000),
        "the floods ran to the end"
    );
    assert!(udp.answered > 0 && tcp.answered > 0);
    // After: alive, answering, memory bounded.
    let exited = dns.child.try_wait().unwrap();
    assert!(exited.is_none(), "strait dns exited: {exited:?}");
    assert!(probe_udp(addr, web, 1, Duration::from_secs(3)).is_some());
    assert!(probe_tcp(addr, web, 2, Duration::from_secs(3)).is_some());
    let after = rss_kib(pid).unwrap();
    let log = std::fs::read_to_string(dns._dir.0.join("dns.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "junk: UDP {} sent, {} answered in {:?}; TCP {} sent, {} answered in {:?}; {probes} probes; RSS {before} KiB -> {after} KiB",
        udp.sent, udp.answered, udp.elapsed, tcp.sent, tcp.answered, tcp.elapsed
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Replace `path` at once: a reader never sees half of the new text.
fn write_atomic(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn metric(dns: &Dns, name: &str) -> Option<f64> {
    http_get(dns.metrics, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One bad object hurts only itself: the good Service of the same file is
/// served, the bad one is logged and counted; a good Service changed into a
/// bad one keeps its previous version, as the API server keeps an object
/// whose update it refuses.
#[test]
fn a_refused_service_hurts_only_itself_and_a_refused_update_keeps_the_old_version() {
    let service = |name: &str, ip: &str, port: u32| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, ports: [{{port: {port}}}]}}\n")
    };
    let dns = start_with(
        None,
        Some(&format!(
            "{}---\n{}",
            service("good", "10.96.100.1", 80),
            service("bad", "10.96.100.2", 99999)
        )),
    );
    let a = |name: &str| {
        udp(
            dns.addr,
            &question(
                &format!("{name}.default.svc.cluster.local."),
                RecordType::A,
                false,
            ),
        )
    };
    assert_eq!(
        values(&ask(&dns, "good.default.svc.cluster.local.", RecordType::A)),
        ["10.96.100.1"]
    );
    assert_eq!(a("bad").metadata.response_code, ResponseCode::NXDomain);
    let log = std::fs::read_to_string(dns._dir.0.join("dns.log")).unwrap();
    assert!(
        log.contains("(Service default/bad): spec.ports[0].port: ") && log.contains("refused"),
        "{log}"
    );
    assert_eq!(metric(&dns, "strait_dns_refused_objects"), Some(1.0));

    // good's new version is refused (and would move it); a new Service
    // arriving with it says when the file was read.
    write_atomic(
        &dns.manifest,
        &format!(
            "{}---\n{}---\n{}",
            service("good", "10.96.100.3", 99999),
            service("bad", "10.96.100.2", 99999),
            service("marker", "10.96.100.4", 80)
        ),
    );
    assert!(
        common::wait_for(Duration::from_secs(5), || values(&a("marker"))
            == ["10.96.100.4"]),
        "the file was read again"
    );
    assert_eq!(
        values(&a("good")),
        ["10.96.100.1"],
        "good keeps its old version"
    );
    assert_eq!(a("bad").metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(metric(&dns, "strait_dns_refused_objects"), Some(2.0));
    let log = std::fs::read_to_string(dns._dir.0.join("dns.log")).unwrap();
    assert!(
        log.contains("refused, keeping what was admitted before: Service default/good"),
        "{log}"
    );

    // Fixed: the new version is served.
    write_atomic(&dns.manifest, &service("good", "10.96.100.3", 80));
    assert!(
        common::wait_for(Duration::from_secs(5), || values(&a("good"))
            == ["10.96.100.3"]),
        "the fixed version is served"
    );
    assert_eq!(metric(&dns, "strait_dns_refused_objects"), Some(0.0));
}
