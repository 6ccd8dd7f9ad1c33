//! Whole-table replace of a proxy-sized table: strait-nft's netlink batch
//! (`Socket::replace`, encode included) against `nft -f` of the same
//! table's text, interleaved in one network namespace of the bench's own.
//!
//! `nft-bench [SERVICES] [ENDPOINTS_PER_SERVICE] [ROUNDS] [--shared-map]`,
//! default 10000 × 4 (10k chains, 10k + 40k = 50k map elements), 5 rounds.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_nft::netlink::Socket;
use strait_nft::{
    diff, text, Chain, ChainType, DataType, ElementValue, Expr, Family, Field, Hook, MapData,
    MarkOp, Priority, Set, Table, Value, Verdict, L3,
};

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// A table in the proxy's shape: a verdict map from service to chain, a
/// DNAT map from (service, slot) to endpoint, one chain per service.
/// `shared`: every service chain looks up the endpoint map itself (the
/// kernel then checks each map element against each of those rules, which
/// makes loading quadratic for nft and netlink alike); otherwise one rule
/// looks it up and service chains DNAT by numgen rules.
fn proxy_table(services: u32, endpoints: u32, shared: bool) -> Table {
    let mut t = Table::new(Family::Ip, "strait-bench");
    let key = [
        DataType::Ipv4Addr,
        DataType::InetProto,
        DataType::InetService,
    ];
    t.set("service-ips", Set::map(&key, MapData::Verdict));
    t.set(
        "service-endpoints",
        Set::map(
            &[
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
                DataType::Slot,
            ],
            MapData::Value(vec![DataType::Ipv4Addr, DataType::InetService]),
        ),
    );
    t.set("cluster-cidrs", Set::new(&[DataType::Ipv4Addr]).interval())
        .insert(vec![Value::Net("10.244.0.0/16".parse().unwrap())], None);
    let map_key = vec![
        Field::IpDaddr,
        Field::L4Proto,
        Field::ThDport,
        Field::NumgenRandom {
            modulus: endpoints.max(1),
        },
    ];
    let pre = t.chain(
        "nat-prerouting",
        Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
    );
    pre.rule(vec![Expr::vmap(
        &[Field::IpDaddr, Field::L4Proto, Field::ThDport],
        "service-ips",
    )]);
    if !shared {
        pre.rule(vec![Expr::DnatMap {
            l3: L3::V4,
            key: map_key.clone(),
            map: "service-endpoints".into(),
        }]);
    }
    for s in 0..services {
        let vip = ip(0x0a60_0000 + s);
        let chain = format!("svc-{s}");
        t.sets["service-ips"].insert(
            vec![Value::Addr(vip), Value::TCP, Value::Port(80)],
            Some(ElementValue::Verdict(Verdict::Goto(chain.clone()))),
        );
        for e in 0..endpoints {
            t.sets["service-endpoints"].insert(
                vec![
                    Value::Addr(vip),
                    Value::TCP,
                    Value::Port(80),
                    Value::Number(e),
                ],
                Some(ElementValue::Data(vec![
                    Value::Addr(ip(0x0af4_0000 + s * endpoints + e)),
                    Value::Port(8080),
                ])),
            );
        }
        let c = t.chain(&chain, Chain::regular());
        c.rule(vec![
            Expr::not_in(&[Field::IpSaddr], "cluster-cidrs"),
            Expr::SetMark(MarkOp::Or(0x4000)),
        ]);
        if shared {
            c.rule(vec![Expr::DnatMap {
                l3: L3::V4,
                key: map_key.clone(),
                map: "service-endpoints".into(),
            }]);
        } else {
            for e in 0..endpoints {
                c.rule(vec![
                    Expr::eq(Field::NumgenRandom { modulus: endpoints }, Value::Number(e)),
                    Expr::eq(Field::L4Proto, Value::TCP),
                    Expr::Dnat {
                        to: ip(0x0af4_0000 + s * endpoints + e),
                        port: Some(8080),
                    },
                ]);
            }
        }
    }
    t
}

fn nft_file(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn list(t: &Table) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", &t.name])
        .output()
        .expect("nft list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(v: &[Duration]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn main() {
    let shared = std::env::args().any(|a| a == "--shared-map");
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter(|a| a != "--shared-map")
        .map(|a| a.parse().expect("numbers: SERVICES ENDPOINTS ROUNDS"))
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let endpoints = args.get(1).copied().unwrap_or(4);
    let rounds = args.get(2).copied().unwrap_or(5).max(1);
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED nft-bench: needs root (a network namespace, nf_tables)");
        return;
    }
    let t = proxy_table(services, endpoints, shared);
    t.validate().expect("a valid table");
    let elements: usize = t.sets.values().map(|s| s.elements.len()).sum();
    println!(
        "table ({}): {} chains, {} rules, {elements} elements",
        if shared {
            "every service chain binds the endpoint map"
        } else {
            "one rule binds each map"
        },
        t.chains.len(),
        t.chains.values().map(|c| c.rules.len()).sum::<usize>()
    );
    // Everything in a network namespace of this thread's own; it goes
    // away with the thread.
    let t2 = t.clone();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        run(&t2, rounds);
    })
    .join()
    .expect("bench thread");
}

fn run(t: &Table, rounds: u32) {
    let mut socket = Socket::open().expect("netlink socket");
    let text_start = Instant::now();
    let script = text::table_script(t);
    let text_time = text_start.elapsed();
    println!(
        "nft text: {:.1} MB, rendered in {:.1} ms",
        script.len() as f64 / 1e6,
        ms(text_time)
    );
    // Warm up both paths once (module loading, first table).
    socket.replace(t).expect("netlink replace");
    nft_file(&script).expect("nft -f");
    let (mut netlink, mut nft) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let run_netlink = |nl: &mut Vec<Duration>, s: &mut Socket| {
            let start = Instant::now();
            s.replace(t).expect("netlink replace");
            nl.push(start.elapsed());
        };
        let run_nft = |v: &mut Vec<Duration>| {
            let start = Instant::now();
            let script = text::table_script(t);
            nft_file(&script).expect("nft -f");
            v.push(start.elapsed());
        };
        // Alternate which goes first.
        if round % 2 == 0 {
            run_netlink(&mut netlink, &mut socket);
            run_nft(&mut nft);
        } else {
            run_nft(&mut nft);
            run_netlink(&mut netlink, &mut socket);
        }
    }
    // Both leave the same table behind.
    socket.replace(t).expect("netlink replace");
    let a = list(t);
    nft_file(&script).expect("nft -f");
    let b = list(t);
    assert_eq!(a, b, "netlink and nft -f leave different tables");
    let (nm, nmin, nmax) = stats(&netlink);
    let (fm, fmin, fmax) = stats(&nft);
    println!("rounds: {rounds} (interleaved)");
    println!("netlink replace (encode + apply): median {nm:.1} ms  (min {nmin:.1}, max {nmax:.1})");
    println!("nft -f of table_script (render + apply): median {fm:.1} ms  (min {fmin:.1}, max {fmax:.1})");
    println!(
        "ratio nft -f / netlink: {:.2}x median (range {:.2}x – {:.2}x)",
        fm / nm,
        fmin / nmax,
        fmax / nmin
    );
    println!("listings equal after both: yes");
    one_change(t, &mut socket, rounds, false);
    one_change(t, &mut socket, rounds, true);
}

/// One endpoint of one service changes (its map element and its DNAT
/// rule): `diff` + `Socket::apply` against `nft -f` of the same
/// transaction's text, back and forth.
fn one_change(t: &Table, socket: &mut Socket, rounds: u32, with_rule: bool) {
    let mut t2 = t.clone();
    let Some((key, _)) = t2.sets["service-endpoints"]
        .elements
        .iter()
        .next()
        .map(|(k, e)| (k.clone(), e.clone()))
    else {
        return;
    };
    let moved = ip(0x0bf4_0001);
    t2.sets["service-endpoints"].insert(
        key,
        Some(ElementValue::Data(vec![
            Value::Addr(moved),
            Value::Port(8080),
        ])),
    );
    if let Some(c) = t2.chains.get_mut("svc-0").filter(|_| with_rule) {
        if let Some(rule) = c.rules.last_mut() {
            if let Some(Expr::Dnat { to, .. }) = rule.exprs.last_mut() {
                *to = moved;
            }
        }
    }
    let (mut diff_time, mut netlink, mut nft) = (Vec::new(), Vec::new(), Vec::new());
    let mut ops = 0;
    socket.replace(t).expect("netlink replace");
    for _ in 0..rounds {
        for (from, to) in [(t, &t2), (&t2, t)] {
            let start = Instant::now();
            let tx = diff::diff(from, to);
            diff_time.push(start.elapsed());
            ops = tx.ops.len();
            socket.apply(&tx).expect("netlink apply");
            netlink.push(start.elapsed());
        }
        for (from, to) in [(t, &t2), (&t2, t)] {
            let start = Instant::now();
            let tx = diff::diff(from, to);
            nft_file(&text::transaction_script(&tx)).expect("nft -f");
            nft.push(start.elapsed());
        }
    }
    let (dm, dmin, dmax) = stats(&diff_time);
    let (nm, nmin, nmax) = stats(&netlink);
    let (fm, fmin, fmax) = stats(&nft);
    println!(
        "one endpoint change, {} ({ops} ops), {} applies each:",
        if with_rule {
            "map element and DNAT rule"
        } else {
            "map element only"
        },
        netlink.len()
    );
    println!("  diff of the two tables: median {dm:.2} ms  (min {dmin:.2}, max {dmax:.2})");
    println!("  diff + netlink apply: median {nm:.2} ms  (min {nmin:.2}, max {nmax:.2})");
    println!(
        "  diff + nft -f of transaction_script: median {fm:.2} ms  (min {fmin:.2}, max {fmax:.2})"
    );
    println!("  ratio nft -f / netlink: {:.1}x median", fm / nm);
}
