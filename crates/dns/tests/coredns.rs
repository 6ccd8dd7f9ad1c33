//! strait's cluster DNS held to CoreDNS's `kubernetes` plugin, as its own
//! tests pin it down: the cases of plugin/kubernetes/handler_test.go,
//! handler_case_test.go, handler_pod_insecure_test.go, reverse_test.go and
//! kubernetes_apex_test.go, plus what the plugin's code does where those
//! tests are silent (endpoint names of ClusterIP Services, ExternalNames
//! that are addresses, IPv6 endpoint names ending in `::`, the SOA's TTL,
//! EDNS versions, truncation). The questions go to a zone built from
//! manifests exactly as `strait dns -f` builds it (the EndpointSlice
//! controller included, so readiness and hostnames are the controller's),
//! and, for what depends on the transport, to a real server on loopback.
//!
//! Where strait answers differently on purpose, the case says so and the
//! README ("strait dns", held to CoreDNS's tests) says why.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use strait_dns::{answer, DnsMetrics, DnsServer, Forwarder, Outcome, SharedZone, Zone};
use strait_model::controllers::{reconcile, ClusterConfig};
use strait_model::{parse_str, ClusterState, Format};

const FIXTURE: &str = include_str!("fixtures/coredns-cluster.yaml");

/// The fixture (and `extra` manifests) through the controllers, as
/// `strait dns -f` with both Service CIDRs sees it.
fn cluster(extra: &str) -> ClusterState {
    let text = if extra.is_empty() {
        FIXTURE.to_owned()
    } else {
        format!("{FIXTURE}---\n{extra}")
    };
    let loaded = parse_str("coredns-cluster.yaml", &text, Format::Yaml).expect("fixture parses");
    let desired =
        ClusterState::from_objects(loaded.objects.into_iter().map(|(o, at)| (o, Some(at))))
            .expect("fixture has no duplicates");
    let config = ClusterConfig::default()
        .with_service_cidrs(&["10.96.0.0/12".into(), "fd00:96::/108".into()])
        .expect("CIDRs");
    reconcile(desired, None, &config).expect("controllers accept the fixture")
}

/// The DNS Service's addresses: the 10th of each Service CIDR.
fn nameservers() -> Vec<IpAddr> {
    vec!["10.96.0.10".parse().unwrap(), "fd00:96::a".parse().unwrap()]
}

fn zone_with(extra: &str, ttl: u32) -> Zone {
    Zone::build(&cluster(extra), "cluster.local", ttl, 1, &nameservers())
}

fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

/// What strait does with a question, from the zone alone.
enum Got {
    Answer(Message),
    /// Answered up to a CNAME out of the cluster, whose target (this type)
    /// the server then asks upstream.
    Chase(Message, Name),
    Forward,
}

fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Got {
    match answer(zone, &question(name, qtype)) {
        Outcome::Answer(m) => Got::Answer(m),
        Outcome::Chase(m, target) => Got::Chase(m, target),
        Outcome::Forward => Got::Forward,
    }
}

/// One record as `owner ttl TYPE data`; an SOA without its serial (it is
/// the zone's build time in both servers).
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

/// Sorted, as CoreDNS's `test.SortAndCheck` compares them.
fn rrs(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(rr).collect();
    v.sort();
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The zone's SOA as CoreDNS writes it in negative answers (TTL 5: the
/// plugin's default, capped at 300; minimum = the TTL).
const SOA: &str =
    "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 7200 1800 86400 5";

/// name, type, rcode, answer, additional, authority.
type Case = (
    &'static str,
    RecordType,
    ResponseCode,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// Check `cases`, collecting every difference before failing.
fn check(zone: &Zone, cases: &[Case]) {
    let mut wrong = Vec::new();
    for &(name, qtype, rcode, answer, additional, authority) in cases {
        let m = match ask(zone, name, qtype) {
            Got::Answer(m) => m,
            Got::Chase(_, target) => {
                wrong.push(format!("{name} {qtype}: chased upstream to {target}"));
                continue;
            }
            Got::Forward => {
                wrong.push(format!("{name} {qtype}: forwarded"));
                continue;
            }
        };
        let got = (
            m.metadata.response_code,
            rrs(&m.answers),
            rrs(&m.additionals),
            rrs(&m.authorities),
        );
        let want = (
            rcode,
            strings(answer),
            strings(additional),
            strings(authority),
        );
        if got != want {
            wrong.push(format!("{name} {qtype}:\n  got  {got:?}\n  want {want:?}"));
        }
        // Every cluster answer is authoritative (CoreDNS sets AA).
        if !m.metadata.authoritative {
            wrong.push(format!("{name} {qtype}: not authoritative"));
        }
        // A CNAME comes before the records of its target (test.CNAMEOrder).
        if let Some(at) = m
            .answers
            .iter()
            .rposition(|r| r.record_type() == RecordType::CNAME)
        {
            if m.answers[..at]
                .iter()
                .any(|r| r.record_type() != RecordType::CNAME)
            {
                wrong.push(format!("{name} {qtype}: a CNAME after its target"));
            }
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

use RecordType::{A, AAAA, CNAME, HINFO, NS, PTR, SRV, TXT};
use ResponseCode::{NXDomain, NoError};

/// handler_test.go: commonDnsTestCases and dnsTestCases.
#[test]
fn handler_cases() {
    let zone = zone_with("", 5);
    check(&zone, &[
        // ClusterIP Services: A, SRV on the bare name and on named ports,
        // the target's address in the additional section.
        ("svc1.testns.svc.cluster.local.", A, NoError, &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[], &[]),
        ("svcempty.testns.svc.cluster.local.", A, NoError, &["svcempty.testns.svc.cluster.local. 5 A 10.96.1.2"], &[], &[]),
        ("svc1.testns.svc.cluster.local.", SRV, NoError, &["svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."], &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[]),
        ("svcempty.testns.svc.cluster.local.", SRV, NoError, &["svcempty.testns.svc.cluster.local. 5 SRV 0 100 80 svcempty.testns.svc.cluster.local."], &["svcempty.testns.svc.cluster.local. 5 A 10.96.1.2"], &[]),
        ("svc6.testns.svc.cluster.local.", SRV, NoError, &["svc6.testns.svc.cluster.local. 5 SRV 0 100 80 svc6.testns.svc.cluster.local."], &["svc6.testns.svc.cluster.local. 5 AAAA fd00:96::6"], &[]),
        ("_http._tcp.svc1.testns.svc.cluster.local.", SRV, NoError, &["_http._tcp.svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."], &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[]),
        ("_http._tcp.svcempty.testns.svc.cluster.local.", SRV, NoError, &["_http._tcp.svcempty.testns.svc.cluster.local. 5 SRV 0 100 80 svcempty.testns.svc.cluster.local."], &["svcempty.testns.svc.cluster.local. 5 A 10.96.1.2"], &[]),
        // Headless: every ready endpoint (h8-not-ready is not among them).
        ("hdls1.testns.svc.cluster.local.", A, NoError, &["hdls1.testns.svc.cluster.local. 5 A 10.244.0.2", "hdls1.testns.svc.cluster.local. 5 A 10.244.0.3", "hdls1.testns.svc.cluster.local. 5 A 10.244.0.4", "hdls1.testns.svc.cluster.local. 5 A 10.244.0.5"], &[], &[]),
        ("hdlsprtls.testns.svc.cluster.local.", A, NoError, &["hdlsprtls.testns.svc.cluster.local. 5 A 10.244.0.20"], &[], &[]),
        // The name exists with another type: NODATA with the SOA.
        ("svc1.testns.svc.cluster.local.", AAAA, NoError, &[], &[], &[SOA]),
        ("svc0.testns.svc.cluster.local.", AAAA, NXDomain, &[], &[], &[SOA]),
        ("svc0.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("svc0.svc-nons.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("dns-version.cluster.local.", TXT, NoError, &["dns-version.cluster.local. 28800 TXT 1.1.0"], &[], &[]),
        ("svc1.testns.svc.cluster.local.", TXT, NoError, &[], &[], &[SOA]),
        ("svc0.svc-nons.svc.cluster.local.", TXT, NXDomain, &[], &[], &[SOA]),
        ("bogusendpoint.hdls1.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("bogusendpoint.svc0.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("svc6.testns.svc.cluster.local.", AAAA, NoError, &["svc6.testns.svc.cluster.local. 5 AAAA fd00:96::6"], &[], &[]),
        ("_http._tcp.svc6.testns.svc.cluster.local.", SRV, NoError, &["_http._tcp.svc6.testns.svc.cluster.local. 5 SRV 0 100 80 svc6.testns.svc.cluster.local."], &["svc6.testns.svc.cluster.local. 5 AAAA fd00:96::6"], &[]),
        ("hdls1.testns.svc.cluster.local.", AAAA, NoError, &["hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::1", "hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::2"], &[], &[]),
        // `svc.cluster.local`, `pod.cluster.local` and a namespace exist
        // (NODATA); NS below the apex is NODATA too, or NXDOMAIN.
        ("svc.cluster.local.", A, NoError, &[], &[], &[SOA]),
        ("pod.cluster.local.", A, NoError, &[], &[], &[SOA]),
        ("testns.svc.cluster.local.", A, NoError, &[], &[], &[SOA]),
        ("svc.cluster.local.", NS, NoError, &[], &[], &[SOA]),
        ("testns.svc.cluster.local.", NS, NoError, &[], &[], &[SOA]),
        ("foo.cluster.local.", NS, NXDomain, &[], &[], &[SOA]),
        ("foo.svc.cluster.local.", NS, NXDomain, &[], &[], &[SOA]),
        // Dual stack: one SRV per (address, port), weight 100 split, then
        // duplicates dropped: 50.
        ("svc-dual-stack.testns.svc.cluster.local.", A, NoError, &["svc-dual-stack.testns.svc.cluster.local. 5 A 10.96.1.3"], &[], &[]),
        ("svc-dual-stack.testns.svc.cluster.local.", AAAA, NoError, &["svc-dual-stack.testns.svc.cluster.local. 5 AAAA fd00:96::3"], &[], &[]),
        ("svc-dual-stack.testns.svc.cluster.local.", SRV, NoError, &["svc-dual-stack.testns.svc.cluster.local. 5 SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local."], &["svc-dual-stack.testns.svc.cluster.local. 5 A 10.96.1.3", "svc-dual-stack.testns.svc.cluster.local. 5 AAAA fd00:96::3"], &[]),
        // SOA below the apex: NODATA.
        ("svc1.testns.svc.cluster.local.", RecordType::SOA, NoError, &[], &[], &[SOA]),
        // Nothing exists below an ExternalName.
        ("endpoint.external.testns.svc.cluster.local.", CNAME, NXDomain, &[], &[], &[SOA]),
        ("subdomain.subdomain.external.testns.svc.cluster.local.", CNAME, NXDomain, &[], &[], &[SOA]),
        // Headless SRV: one per (endpoint name, port); weight 100 over the
        // six (address, port) pairs, 16; dup-name's two addresses both in
        // the additional section.
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
        ("fd00-244--1.hdls1.testns.svc.cluster.local.", AAAA, NoError, &["fd00-244--1.hdls1.testns.svc.cluster.local. 5 AAAA fd00:244::1"], &[], &[]),
        ("10-244-0-20.hdlsprtls.testns.svc.cluster.local.", A, NoError, &["10-244-0-20.hdlsprtls.testns.svc.cluster.local. 5 A 10.244.0.20"], &[], &[]),
        ("10-244-0-2.hdls1.testns.svc.cluster.local.", A, NoError, &["10-244-0-2.hdls1.testns.svc.cluster.local. 5 A 10.244.0.2"], &[], &[]),
        ("10-244-0-3.hdls1.testns.svc.cluster.local.", A, NoError, &["10-244-0-3.hdls1.testns.svc.cluster.local. 5 A 10.244.0.3"], &[], &[]),
        ("dup-name.hdls1.testns.svc.cluster.local.", A, NoError, &["dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.4", "dup-name.hdls1.testns.svc.cluster.local. 5 A 10.244.0.5"], &[], &[]),
        // ExternalName: the CNAME; into the cluster, followed.
        ("external.testns.svc.cluster.local.", CNAME, NoError, &["external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."], &[], &[]),
        ("external-to-service.testns.svc.cluster.local.", A, NoError, &["external-to-service.testns.svc.cluster.local. 5 CNAME svc1.testns.svc.cluster.local.", "svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[], &[]),
    ]);
    // "CNAME External": out of the cluster the answer so far is the CNAME,
    // completed from upstream (the server test below does it for real).
    for qtype in [A, AAAA, TXT] {
        let Got::Chase(m, target) = ask(&zone, "external.testns.svc.cluster.local.", qtype) else {
            panic!("external {qtype} is not completed upstream");
        };
        assert_eq!(target.to_ascii(), "ext.interwebs.test.");
        assert_eq!(
            rrs(&m.answers),
            ["external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."]
        );
    }
}

/// handler_case_test.go: names are matched whatever their case, and the
/// zone part of every name made for the answer keeps the question's case.
#[test]
fn case_cases() {
    check(&zone_with("", 5), &[
        ("not-a-service.testns.svc.ClUsTeR.lOcAl.", A, NXDomain, &[], &[], &["ClUsTeR.lOcAl. 5 SOA ns.dns.ClUsTeR.lOcAl. hostmaster.ClUsTeR.lOcAl. 7200 1800 86400 5"]),
        ("SvC1.TeStNs.SvC.cLuStEr.LoCaL.", A, NoError, &["SvC1.TeStNs.SvC.cLuStEr.LoCaL. 5 A 10.96.1.1"], &[], &[]),
        ("_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL.", SRV, NoError, &["_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL."], &["svc1.testns.svc.cLuStEr.LoCaL. 5 A 10.96.1.1"], &[]),
        ("Cluster.local.", RecordType::SOA, NoError, &["Cluster.local. 5 SOA ns.dns.Cluster.local. hostmaster.Cluster.local. 7200 1800 86400 5"], &[], &[]),
        ("DUP-NAME.HDLS1.TESTNS.SVC.CLUSTER.LOCAL.", A, NoError, &["DUP-NAME.HDLS1.TESTNS.SVC.CLUSTER.LOCAL. 5 A 10.244.0.4", "DUP-NAME.HDLS1.TESTNS.SVC.CLUSTER.LOCAL. 5 A 10.244.0.5"], &[], &[]),
        ("DNS-VERSION.CLUSTER.LOCAL.", TXT, NoError, &["DNS-VERSION.CLUSTER.LOCAL. 28800 TXT 1.1.0"], &[], &[]),
    ]);
}

/// handler_pod_insecure_test.go: the default Corefile's `pods insecure`
/// answers any well-formed dashed address in a namespace that exists.
#[test]
fn pod_insecure_cases() {
    check(
        &zone_with("", 5),
        &[
            (
                "10-240-0-1.podns.pod.cluster.local.",
                A,
                NoError,
                &["10-240-0-1.podns.pod.cluster.local. 5 A 10.240.0.1"],
                &[],
                &[],
            ),
            (
                "172-0-0-2.podns.pod.cluster.local.",
                A,
                NoError,
                &["172-0-0-2.podns.pod.cluster.local. 5 A 172.0.0.2"],
                &[],
                &[],
            ),
            (
                "blah.podns.pod.cluster.local.",
                A,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
            (
                "blah.podns.pod.cluster.local.",
                AAAA,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
            (
                "blah.podns.pod.cluster.local.",
                HINFO,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
            (
                "blah.pod-nons.pod.cluster.local.",
                A,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
            (
                "10-240-0-1.pod-nons.pod.cluster.local.",
                A,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
            ("podns.pod.cluster.local.", A, NoError, &[], &[], &[SOA]),
            // Not in CoreDNS's tests, but its findPods: IPv6 when the name has
            // `--` or not three dashes; an address of the other family is NODATA.
            (
                "fd00-244--7.podns.pod.cluster.local.",
                AAAA,
                NoError,
                &["fd00-244--7.podns.pod.cluster.local. 5 AAAA fd00:244::7"],
                &[],
                &[],
            ),
            (
                "10-240-0-1.podns.pod.cluster.local.",
                AAAA,
                NoError,
                &[],
                &[],
                &[SOA],
            ),
            (
                "1-2-3-4-5.podns.pod.cluster.local.",
                A,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
            (
                "256-0-0-1.podns.pod.cluster.local.",
                A,
                NXDomain,
                &[],
                &[],
                &[SOA],
            ),
        ],
    );
}

/// kubernetes_apex_test.go: the zone's apex.
#[test]
fn apex_cases() {
    check(
        &zone_with("", 5),
        &[
            ("cluster.local.", RecordType::SOA, NoError, &[SOA], &[], &[]),
            ("cluster.local.", HINFO, NoError, &[], &[], &[SOA]),
            // CoreDNS names its own address `ns.dns.<zone>` when it finds no
            // Service of its own; strait gives the DNS Service's addresses.
            (
                "cluster.local.",
                NS,
                NoError,
                &["cluster.local. 5 NS ns.dns.cluster.local."],
                &[
                    "ns.dns.cluster.local. 5 A 10.96.0.10",
                    "ns.dns.cluster.local. 5 AAAA fd00:96::a",
                ],
                &[],
            ),
            ("cluster.local.", A, NoError, &[], &[], &[SOA]),
            ("cluster.local.", AAAA, NoError, &[], &[], &[SOA]),
            ("cluster.local.", SRV, NoError, &[], &[], &[SOA]),
            (
                "ns.dns.cluster.local.",
                A,
                NoError,
                &["ns.dns.cluster.local. 5 A 10.96.0.10"],
                &[],
                &[],
            ),
            (
                "ns.dns.cluster.local.",
                AAAA,
                NoError,
                &["ns.dns.cluster.local. 5 AAAA fd00:96::a"],
                &[],
                &[],
            ),
        ],
    );
}

/// reverse_test.go, with the default Corefile's zones (`cluster.local
/// in-addr.arpa ip6.arpa`, `fallthrough in-addr.arpa ip6.arpa`): PTR for
/// Service addresses and for the endpoints of every Service, headless or
/// not; an address that is not the cluster's goes on (to the upstreams).
#[test]
fn reverse_cases() {
    let zone = zone_with("", 5);
    check(&zone, &[
        // An endpoint of a ClusterIP Service, with a hostname.
        ("1.1.244.10.in-addr.arpa.", PTR, NoError, &["1.1.244.10.in-addr.arpa. 5 PTR ep1a.svc1.testns.svc.cluster.local."], &[], &[]),
        // A Service's cluster IP, in each family.
        ("1.1.96.10.in-addr.arpa.", PTR, NoError, &["1.1.96.10.in-addr.arpa. 5 PTR svc1.testns.svc.cluster.local."], &[], &[]),
        ("3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", PTR, NoError, &["3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. 5 PTR svc-dual-stack.testns.svc.cluster.local."], &[], &[]),
        // IPv6 endpoints.
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa.", PTR, NoError, &["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa. 5 PTR fd00-244--1.hdls1.testns.svc.cluster.local."], &[], &[]),
        // An endpoint of two Services: both names.
        ("99.1.244.10.in-addr.arpa.", PTR, NoError, &["99.1.244.10.in-addr.arpa. 5 PTR 10-244-1-99.svc1.testns.svc.cluster.local.", "99.1.244.10.in-addr.arpa. 5 PTR 10-244-1-99.svc2.testns.svc.cluster.local."], &[], &[]),
        // Reverse-looking names inside the cluster domain are just names.
        ("example.org.cluster.local.", PTR, NXDomain, &[], &[], &[SOA]),
        ("svc1.testns.svc.cluster.local.", PTR, NoError, &[], &[], &[SOA]),
        ("100.0.0.10.cluster.local.", PTR, NXDomain, &[], &[], &[SOA]),
    ]);
    // Not the cluster's: with `fallthrough in-addr.arpa ip6.arpa` CoreDNS
    // hands these on to `forward`; so does strait.
    for name in [
        "101.0.0.10.in-addr.arpa.",
        // A not-ready endpoint has no PTR either.
        "8.0.244.10.in-addr.arpa.",
    ] {
        assert!(
            matches!(ask(&zone, name, PTR), Got::Forward),
            "{name} PTR is not forwarded"
        );
    }
}

/// What CoreDNS's code does where its tests are silent, with the
/// EndpointSlice controller deciding who is published.
#[test]
fn endpoint_publishing_cases() {
    check(&zone_with("", 5), &[
        // Not ready: neither in the Service's name nor with a name of its own.
        ("10-244-0-8.hdls1.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        // publishNotReadyAddresses: the not-ready pod is published.
        ("hdls-pnr.testns.svc.cluster.local.", A, NoError, &["hdls-pnr.testns.svc.cluster.local. 5 A 10.244.0.30"], &[], &[]),
        ("10-244-0-30.hdls-pnr.testns.svc.cluster.local.", A, NoError, &["10-244-0-30.hdls-pnr.testns.svc.cluster.local. 5 A 10.244.0.30"], &[], &[]),
        // hostname + subdomain: the name only under the Service the
        // subdomain names; elsewhere the dashed address.
        ("named.hdls-sub.testns.svc.cluster.local.", A, NoError, &["named.hdls-sub.testns.svc.cluster.local. 5 A 10.244.0.10"], &[], &[]),
        ("10-244-0-9.hdls-sub.testns.svc.cluster.local.", A, NoError, &["10-244-0-9.hdls-sub.testns.svc.cluster.local. 5 A 10.244.0.9"], &[], &[]),
        ("elsewhere.hdls-sub.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("elsewhere.svc1.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        // A headless Service with no ready endpoint has no name.
        ("hdlsnone.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("_http._tcp.hdlsnone.testns.svc.cluster.local.", SRV, NXDomain, &[], &[], &[SOA]),
        // Endpoint names of a ClusterIP Service (CoreDNS: `r.endpoint != ""`
        // looks in the endpoints whatever the Service); its own name keeps
        // the cluster IP.
        ("ep1a.svc1.testns.svc.cluster.local.", A, NoError, &["ep1a.svc1.testns.svc.cluster.local. 5 A 10.244.1.1"], &[], &[]),
        ("10-244-1-99.svc1.testns.svc.cluster.local.", A, NoError, &["10-244-1-99.svc1.testns.svc.cluster.local. 5 A 10.244.1.99"], &[], &[]),
        ("10-244-1-99.svc2.testns.svc.cluster.local.", A, NoError, &["10-244-1-99.svc2.testns.svc.cluster.local. 5 A 10.244.1.99"], &[], &[]),
        ("ep1a.svc1.testns.svc.cluster.local.", AAAA, NoError, &[], &[], &[SOA]),
        // An IPv6 address ending in `::` is named with a trailing 0: a
        // label cannot end with a hyphen.
        ("fd00-244-1--0.hdls-v6.testns.svc.cluster.local.", AAAA, NoError, &["fd00-244-1--0.hdls-v6.testns.svc.cluster.local. 5 AAAA fd00:244:1::"], &[], &[]),
        ("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa.", PTR, NoError, &["0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa. 5 PTR fd00-244-1--0.hdls-v6.testns.svc.cluster.local."], &[], &[]),
    ]);
}

/// SRV names, ports and protocols (CoreDNS's matchPortAndProtocol), and
/// ExternalNames as findServices and HostType treat them.
#[test]
fn srv_and_external_name_cases() {
    let zone = zone_with("", 5);
    check(&zone, &[
        // Three ports: the bare name's weight is 100/3; 53/UDP and 53/TCP
        // are one (target, port), kept once.
        ("svc-multi.testns.svc.cluster.local.", SRV, NoError, &["svc-multi.testns.svc.cluster.local. 5 SRV 0 33 53 svc-multi.testns.svc.cluster.local.", "svc-multi.testns.svc.cluster.local. 5 SRV 0 33 80 svc-multi.testns.svc.cluster.local."], &["svc-multi.testns.svc.cluster.local. 5 A 10.96.1.5"], &[]),
        ("_dns._udp.svc-multi.testns.svc.cluster.local.", SRV, NoError, &["_dns._udp.svc-multi.testns.svc.cluster.local. 5 SRV 0 100 53 svc-multi.testns.svc.cluster.local."], &["svc-multi.testns.svc.cluster.local. 5 A 10.96.1.5"], &[]),
        ("_dns-tcp._tcp.svc-multi.testns.svc.cluster.local.", SRV, NoError, &["_dns-tcp._tcp.svc-multi.testns.svc.cluster.local. 5 SRV 0 100 53 svc-multi.testns.svc.cluster.local."], &["svc-multi.testns.svc.cluster.local. 5 A 10.96.1.5"], &[]),
        // The port's name with another protocol, or an unknown port.
        ("_dns._tcp.svc-multi.testns.svc.cluster.local.", SRV, NXDomain, &[], &[], &[SOA]),
        ("_http._udp.svc1.testns.svc.cluster.local.", SRV, NXDomain, &[], &[], &[SOA]),
        ("_https._tcp.svc1.testns.svc.cluster.local.", SRV, NXDomain, &[], &[], &[SOA]),
        // A named port's SRV name exists for other types (NODATA).
        ("_http._tcp.svc1.testns.svc.cluster.local.", A, NoError, &[], &[], &[SOA]),
        // A portless headless Service has A records and no SRV (port -1).
        ("hdlsprtls.testns.svc.cluster.local.", SRV, NoError, &[], &[], &[SOA]),
        // No named ports below an ExternalName.
        ("_http._tcp.external.testns.svc.cluster.local.", SRV, NXDomain, &[], &[], &[SOA]),
        // An ExternalName that is an address: HostType is A, not CNAME,
        // so findServices keeps nothing and the name does not exist.
        ("external-ip.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("external-ip.testns.svc.cluster.local.", CNAME, NXDomain, &[], &[], &[SOA]),
        // Wildcards went from the plugin in CoreDNS 1.9: `*` is a label
        // like any other, and no Service is called that.
        ("*.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
        ("*.hdls1.testns.svc.cluster.local.", A, NXDomain, &[], &[], &[SOA]),
    ]);
}

/// Where strait answers differently from CoreDNS, on purpose (see the
/// README): each case pins strait's answer and names CoreDNS's.
#[test]
fn deliberate_differences() {
    check(&zone_with("", 5), &[
        // CoreDNS: NXDOMAIN (parseRequest rejects the one-label name for
        // every type but TXT). A name that has a TXT record exists: NODATA
        // (RFC 8020: NXDOMAIN would deny the TXT record too).
        ("dns-version.cluster.local.", A, NoError, &[], &[], &[SOA]),
        // CoreDNS: NXDOMAIN for `dns.cluster.local`, the parent of the
        // `ns.dns.cluster.local` it answers; an empty non-terminal exists.
        ("dns.cluster.local.", A, NoError, &[], &[], &[SOA]),
        // CoreDNS: a PTR name's A goes to the upstreams (fallthrough); the
        // name is ours and exists: NODATA with the reverse zone's SOA.
        ("1.1.96.10.in-addr.arpa.", A, NoError, &[], &[], &["in-addr.arpa. 5 SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 7200 1800 86400 5"]),
        // CoreDNS: NODATA for an in-cluster CNAME whose target lacks the
        // type (it drops the CNAME). The CNAME exists for every type
        // (RFC 1034 §3.6.2): it is the answer, the target's SOA follows.
        ("external-to-service.testns.svc.cluster.local.", AAAA, NoError, &["external-to-service.testns.svc.cluster.local. 5 CNAME svc1.testns.svc.cluster.local."], &[], &[]),
        // CoreDNS: NODATA for ANY (no `any` plugin in the default
        // Corefile). RFC 8482: one RRset.
        ("svc1.testns.svc.cluster.local.", RecordType::ANY, NoError, &["svc1.testns.svc.cluster.local. 5 A 10.96.1.1"], &[], &[]),
    ]);
}

/// The SOA's TTL is the zone's at most 300 s (CoreDNS's SOA()); its
/// minimum field, the negative-caching TTL, is the zone's as it is. Every
/// other record carries the zone's TTL.
#[test]
fn soa_ttl_is_capped_and_minimum_follows_the_ttl() {
    let zone = zone_with("", 600);
    const SOA_600: &str = "cluster.local. 300 SOA ns.dns.cluster.local. hostmaster.cluster.local. 7200 1800 86400 600";
    check(
        &zone,
        &[
            (
                "svc0.testns.svc.cluster.local.",
                A,
                NXDomain,
                &[],
                &[],
                &[SOA_600],
            ),
            (
                "cluster.local.",
                RecordType::SOA,
                NoError,
                &[SOA_600],
                &[],
                &[],
            ),
            (
                "svc1.testns.svc.cluster.local.",
                A,
                NoError,
                &["svc1.testns.svc.cluster.local. 600 A 10.96.1.1"],
                &[],
                &[],
            ),
        ],
    );
    // The serial is the zone's (the time of the snapshot): a later zone
    // has a later one.
    let Got::Answer(m) = ask(&zone_with("", 5), "cluster.local.", RecordType::SOA) else {
        panic!("SOA is ours");
    };
    let Some(RData::SOA(soa)) = m.answers.first().map(|r| &r.data) else {
        panic!("no SOA: {m:?}");
    };
    assert_eq!(soa.serial, 1);
}

/// Transfers are the `transfer` plugin's, absent from the default
/// Corefile: REFUSED. Other zones go to the upstreams.
#[test]
fn transfers_refused_other_zones_forwarded() {
    let zone = zone_with("", 5);
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let Got::Answer(m) = ask(&zone, "cluster.local.", qtype) else {
            panic!("{qtype} is not answered");
        };
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{qtype}");
    }
    for name in [
        "example.org.",
        "cluster.local.example.org.",
        "local.",
        "svc.",
    ] {
        assert!(
            matches!(ask(&zone, name, A), Got::Forward),
            "{name} is not forwarded"
        );
    }
}

// ---- Over the wire: a real server on loopback ----

/// A 60-pod headless Service (does not fit in 512 bytes) and a 6-pod one
/// whose SRV answer fits but whose addresses do not.
fn big_services() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: many, namespace: testns}\n\
         spec: {clusterIP: None, selector: {app: many}, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: srvs, namespace: testns}\n\
         spec: {clusterIP: None, selector: {app: srvs}, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: to-hdls1, namespace: testns}\n\
         spec: {type: ExternalName, externalName: hdls1.testns.svc.cluster.local}\n",
    );
    for (app, count) in [("many", 60), ("srvs", 6)] {
        for i in 1..=count {
            let third = if app == "many" { 50 } else { 51 };
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-{i}, namespace: testns, labels: {{app: {app}}}}}\n\
                 spec: {{containers: [{{name: c, image: x}}]}}\n\
                 status: {{phase: Running, podIP: 10.244.{third}.{i}, podIPs: [{{ip: 10.244.{third}.{i}}}], conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            ));
        }
    }
    text
}

/// A stand-in upstream on loopback: `ext.interwebs.test` has an A and a
/// TXT record; everything else is NXDOMAIN.
struct Upstream {
    addr: SocketAddr,
}

impl Upstream {
    fn start() -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let serving = socket;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Serves until the test process exits.
            while let Ok((n, from)) = serving.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut m = Message::response(q.metadata.id, q.metadata.op_code);
                m.metadata.recursion_available = true;
                m.queries = q.queries.clone();
                let Some(question) = q.queries.first() else {
                    continue;
                };
                let name = question.name().to_ascii().to_ascii_lowercase();
                match (name.as_str(), question.query_type()) {
                    ("ext.interwebs.test.", RecordType::A) => m.answers.push(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::A("192.0.2.1".parse().unwrap()),
                    )),
                    ("ext.interwebs.test.", RecordType::TXT) => m.answers.push(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["upstream".into()])),
                    )),
                    ("example.org.", RecordType::A) => m.answers.push(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::A("192.0.2.80".parse().unwrap()),
                    )),
                    ("ext.interwebs.test." | "example.org.", _) => {}
                    _ => m.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = serving.send_to(&m.to_vec().unwrap(), from);
            }
        });
        Upstream { addr }
    }
}

fn server(upstream: &Upstream) -> DnsServer {
    let zone = Zone::build(
        &cluster(&big_services()),
        "cluster.local",
        5,
        1,
        &nameservers(),
    );
    DnsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        SharedZone::new(zone),
        Forwarder::new(vec![upstream.addr], Duration::from_secs(2)),
        Arc::new(DnsMetrics::default()),
    )
    .expect("a loopback port")
}

fn with_edns(mut m: Message, payload: u16, version: u8) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    edns.set_version(version);
    m.edns = Some(edns);
    m
}

/// Ask over UDP; also returns the answer's size on the wire.
fn udp(at: SocketAddr, q: &Message) -> (Message, usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&q.to_vec().unwrap(), at).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer over UDP");
    (Message::from_vec(&buf[..n]).unwrap(), n)
}

fn tcp(at: SocketAddr, q: &Message) -> (Message, usize) {
    let mut s = TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let bytes = q.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).unwrap();
    (Message::from_vec(&body).unwrap(), body.len())
}

/// Truncation, TCP fallback and EDNS buffer sizes, as CoreDNS's
/// ScrubWriter (miekg/dns `Truncate`) does them: a reply fits the client's
/// buffer (512 without EDNS, its payload size with, never less than 512);
/// additional records are dropped first and without TC; TC when answers
/// do not fit, and TCP carries everything.
#[test]
fn truncation_tcp_fallback_and_edns_sizes() {
    let upstream = Upstream::start();
    let dns = server(&upstream);
    let at = dns.udp_address;
    let many = "many.testns.svc.cluster.local.";

    let (m, n) = udp(at, &question(many, A));
    assert!(m.metadata.truncation, "60 A records in 512 bytes");
    assert!(n <= 512);
    let (m, _) = tcp(at, &question(many, A));
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60, "TCP carries them all");
    for (payload, fits) in [(1232, true), (4096, true), (512, false), (100, false)] {
        let (m, n) = udp(at, &with_edns(question(many, A), payload, 0));
        let limit = usize::from(payload.max(512));
        assert!(n <= limit, "{n} bytes for a {payload}-byte buffer");
        assert_eq!(!m.metadata.truncation, fits, "payload {payload}");
        assert_eq!(
            m.answers.len(),
            if fits { 60 } else { 0 },
            "payload {payload}"
        );
        assert!(m.edns.is_some(), "an EDNS query gets an OPT back");
    }

    // The SRV answer fits 512 bytes, its targets' addresses do not: they go,
    // TC stays clear, and the same question over TCP has them.
    let srvs = "_http._tcp.srvs.testns.svc.cluster.local.";
    let (full, full_len) = tcp(at, &question(srvs, SRV));
    assert_eq!((full.answers.len(), full.additionals.len()), (6, 6));
    assert!(
        full_len > 512,
        "the case needs an answer over 512 bytes ({full_len})"
    );
    let (m, n) = udp(at, &question(srvs, SRV));
    assert!(n <= 512);
    assert!(!m.metadata.truncation, "TC for additional records alone");
    assert_eq!(rrs(&m.answers), rrs(&full.answers));
    assert!(m.additionals.is_empty());
}

/// core/dnsserver: an EDNS version other than 0 is BADVERS (extended
/// rcode 16) with an OPT of version 0, whatever the name.
#[test]
fn edns_versions_other_than_zero_are_badvers() {
    let upstream = Upstream::start();
    let dns = server(&upstream);
    for name in ["svc1.testns.svc.cluster.local.", "example.org."] {
        let (m, _) = udp(dns.udp_address, &with_edns(question(name, A), 1232, 1));
        // 16 is BADVERS in a reply's OPT (hickory names it BADSIG too).
        assert_eq!(u16::from(m.metadata.response_code), 16, "{name}");
        assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0), "{name}");
        assert!(m.answers.is_empty());
        // Version 0 is answered.
        let (m, _) = udp(dns.udp_address, &with_edns(question(name, A), 1232, 0));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
    }
}

/// Other zones are forwarded; an ExternalName's CNAME is completed with
/// the upstream's records for its target (A, AAAA and TXT as CoreDNS's
/// A(), AAAA() and TXT() do); the cluster's answers keep the client's id
/// and case; a stored answer is the same answer.
#[test]
fn forwarding_and_external_names_over_the_wire() {
    let upstream = Upstream::start();
    let dns = server(&upstream);
    let at = dns.udp_address;
    let (m, _) = udp(at, &question("example.org.", A));
    assert_eq!(rrs(&m.answers), ["example.org. 60 A 192.0.2.80"]);
    let (m, _) = udp(at, &question("nowhere.example.", A));
    assert_eq!(m.metadata.response_code, NXDomain);

    let (m, _) = udp(at, &question("external.testns.svc.cluster.local.", A));
    assert_eq!(
        m.answers.iter().map(rr).collect::<Vec<_>>(),
        [
            "external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test.",
            "ext.interwebs.test. 60 A 192.0.2.1"
        ]
    );
    let (m, _) = udp(at, &question("external.testns.svc.cluster.local.", TXT));
    assert_eq!(
        m.answers.iter().map(rr).collect::<Vec<_>>(),
        [
            "external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test.",
            "ext.interwebs.test. 60 TXT upstream"
        ]
    );
    // Without recursion desired: the CNAME alone, the client follows it.
    let mut q = question("external.testns.svc.cluster.local.", A);
    q.metadata.recursion_desired = false;
    let (m, _) = udp(at, &q);
    assert_eq!(
        rrs(&m.answers),
        ["external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."]
    );

    // Twice, the second from the stored answer: same records, own id/case.
    for (id, name) in [
        (1, "SVC1.testns.svc.cluster.local."),
        (2, "svc1.TESTNS.svc.cluster.local."),
    ] {
        for _ in 0..2 {
            let mut q = question(name, A);
            q.metadata.id = id;
            let (m, _) = udp(at, &q);
            assert_eq!(m.metadata.id, id);
            assert!(m.metadata.authoritative);
            assert_eq!(
                m.answers.iter().map(rr).collect::<Vec<_>>(),
                [format!("{name} 5 A 10.96.1.1")]
            );
        }
    }
}

/// The default Corefile's `loadbalance`: the addresses of a name come in
/// another order from one query to the next (strait turns them by the
/// query's id), over the first answer's path and the stored answer's
/// alike, UDP and TCP, the records themselves unchanged; the same query
/// (a retransmission) gets the same order.
#[test]
fn addresses_are_load_balanced() {
    let upstream = Upstream::start();
    let dns = server(&upstream);
    let want = [
        "hdls1.testns.svc.cluster.local. 5 A 10.244.0.2",
        "hdls1.testns.svc.cluster.local. 5 A 10.244.0.3",
        "hdls1.testns.svc.cluster.local. 5 A 10.244.0.4",
        "hdls1.testns.svc.cluster.local. 5 A 10.244.0.5",
    ];
    let mut firsts = std::collections::BTreeSet::new();
    for id in 0..8u16 {
        let mut q = with_edns(question("hdls1.testns.svc.cluster.local.", A), 1232, 0);
        q.metadata.id = id;
        let (over_udp, _) = udp(dns.udp_address, &q);
        let (over_tcp, _) = tcp(dns.tcp_address, &q);
        assert_eq!(rrs(&over_udp.answers), want);
        assert_eq!(over_udp.answers, over_tcp.answers, "id {id}");
        firsts.insert(rr(&over_udp.answers[0]));
    }
    assert_eq!(
        firsts.len(),
        4,
        "every address comes first in turn: {firsts:?}"
    );
    // Behind a CNAME the addresses turn, the CNAME stays first.
    let mut firsts = std::collections::BTreeSet::new();
    for id in 0..4u16 {
        let mut q = question("to-hdls1.testns.svc.cluster.local.", A);
        q.metadata.id = id;
        let (m, _) = udp(dns.udp_address, &q);
        assert_eq!(
            rr(&m.answers[0]),
            "to-hdls1.testns.svc.cluster.local. 5 CNAME hdls1.testns.svc.cluster.local."
        );
        assert_eq!(rrs(&m.answers[1..]), want);
        firsts.insert(rr(&m.answers[1]));
    }
    assert_eq!(firsts.len(), 4, "{firsts:?}");
}
