//! Root tests against the kernel: each case in a network namespace of its
//! own (a thread that unshared its network namespace; the namespace goes
//! away with the thread, so nothing is left behind even on failure).
//!
//! (a) a table loaded with `Socket::replace` lists as the same table loaded
//!     with `nft -f text::table_script`;
//! (b) `Socket::apply(diff(A, B))` on A lists as B loaded directly;
//! (c) a transaction the kernel refuses changes nothing.

use std::io::Write;
use std::process::{Command, Stdio};

use strait_nft::netlink::Socket;
use strait_nft::*;
type Result<T, E> = std::result::Result<T, E>;

mod corpus;

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, nf_tables)");
    false
}

/// Run `f` on a thread in a new network namespace of its own.
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare a network namespace");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// `nft ARGS` in the calling thread's namespace, `input` on stdin.
fn nft(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The table as `nft list` prints it, with the seconds left of elements
/// with a timeout taken out (they tick).
fn listing(t: &Table) -> Result<String, String> {
    let out = nft(&["list", "table", text::family(t.family), &t.name], None)?;
    let mut clean = String::new();
    let mut words = out.split(' ').peekable();
    while let Some(w) = words.next() {
        if w == "expires" {
            words.next();
            continue;
        }
        clean.push_str(w);
        clean.push(' ');
    }
    Ok(clean)
}

/// A listing with the order that carries no meaning taken out: sets, maps
/// and chains sorted by name (the kernel lists them in the order they were
/// created), elements sorted (hash sets list in table order). Rules keep
/// their order.
fn normalized(listing: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in listing.lines() {
        let t = line.trim();
        if line.starts_with("\t") && !line.starts_with("\t\t") && t.ends_with('{') {
            current = Some(vec![t.to_owned()]);
        } else if line.starts_with("\t}") {
            if let Some(b) = current.take() {
                blocks.push(b.join("\n"));
            }
        } else if let Some(b) = current.as_mut() {
            // The kernel gives a dynamic set a size when an `update` rule
            // binds it and keeps it after the rule is gone: history, not
            // what the table says.
            if !t.is_empty() && t != "size 65535" {
                b.push(t.to_owned());
            }
        }
    }
    for b in &mut blocks {
        if let Some(start) = b.find("elements = {") {
            let end = b[start..].find('}').map(|e| start + e).unwrap_or(b.len());
            let inner = &b[start + "elements = {".len()..end];
            let mut items: Vec<String> = inner
                .split(',')
                .map(|i| i.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            items.sort();
            *b = format!(
                "{}elements = {{ {} {}",
                &b[..start],
                items.join(", "),
                &b[end..]
            );
        }
    }
    blocks.sort();
    blocks.join("\n\n")
}

fn by_nft(t: &Table) -> Result<String, String> {
    in_netns(|| {
        nft(&["-f", "-"], Some(&text::table_script(t)))?;
        listing(t)
    })
}

fn by_netlink(t: &Table) -> Result<String, String> {
    in_netns(|| {
        let mut s = Socket::open().map_err(|e| e.to_string())?;
        s.replace(t).map_err(|e| e.to_string())?;
        listing(t)
    })
}

/// One round trip; Ok(true) when both loaded it, Ok(false) when both
/// refused it.
fn round_trip(name: &str, t: &Table) -> Result<bool, String> {
    let a = by_nft(t);
    let b = by_netlink(t);
    match (a, b) {
        (Ok(a), Ok(b)) if a == b => Ok(true),
        (Ok(a), Ok(b)) => Err(format!(
            "{name}: listings differ\n--- nft -f\n{a}\n--- netlink\n{b}\n--- script\n{}",
            text::table_script(t)
        )),
        (Err(_), Err(_)) => Ok(false),
        (Ok(_), Err(e)) => Err(format!(
            "{name}: nft -f took it, netlink refused: {e}\n{}",
            text::table_script(t)
        )),
        (Err(e), Ok(_)) => Err(format!(
            "{name}: netlink took it, nft -f refused: {e}\n{}",
            text::table_script(t)
        )),
    }
}

#[test]
fn hand_written_tables_list_the_same_either_way() {
    if !root_or_skip("hand_written_tables_list_the_same_either_way") {
        return;
    }
    let mut failures = Vec::new();
    let mut loaded = 0;
    let tables = corpus::hand_written();
    for (name, t) in &tables {
        match round_trip(name, t) {
            Ok(true) => loaded += 1,
            Ok(false) => failures.push(format!("{name}: both refused it")),
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "hand-written round trips: {loaded} of {} loaded and equal",
        tables.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn generated_tables_list_the_same_either_way() {
    if !root_or_skip("generated_tables_list_the_same_either_way") {
        return;
    }
    let mut failures = Vec::new();
    let (mut loaded, mut refused) = (0, 0);
    let n = corpus::cases();
    for seed in 0..n {
        let t = corpus::generate(seed);
        match round_trip(&format!("seed {seed}"), &t) {
            Ok(true) => loaded += 1,
            Ok(false) => refused += 1,
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "generated round trips: {loaded} loaded and equal, {refused} refused by both, {} differ (of {n})",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(loaded * 10 >= n as usize * 9, "too many refused: {refused}");
}

#[test]
fn a_diff_takes_one_table_to_the_other() {
    if !root_or_skip("a_diff_takes_one_table_to_the_other") {
        return;
    }
    let mut failures = Vec::new();
    let (mut ok, mut skipped) = (0, 0);
    let n = corpus::cases();
    for seed in 0..n {
        let a = corpus::generate(seed);
        let b = corpus::variant(seed, seed.wrapping_mul(31).wrapping_add(7));
        let want = match by_nft(&b) {
            Ok(w) => normalized(&w),
            Err(_) => {
                skipped += 1;
                continue;
            }
        };
        let tx = diff::diff(&a, &b);
        let got = in_netns(|| {
            let mut s = Socket::open().map_err(|e| e.to_string())?;
            s.replace(&a).map_err(|e| format!("load A: {e}"))?;
            s.apply(&tx).map_err(|e| format!("apply the diff: {e}"))?;
            listing(&b).map(|l| normalized(&l))
        });
        match got {
            Ok(got) if got == want => ok += 1,
            Ok(got) => failures.push(format!(
                "seed {seed}: after the diff\n{got}\n--- B\n{want}\n--- diff\n{}",
                text::transaction_script(&tx)
            )),
            Err(e) if e.starts_with("load A") => skipped += 1,
            Err(e) => failures.push(format!(
                "seed {seed}: {e}\n--- diff\n{}",
                text::transaction_script(&tx)
            )),
        }
    }
    eprintln!(
        "diffs: {ok} equal, {skipped} skipped (A or B refused), {} failed (of {n})",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ok * 10 >= n as usize * 9, "too many skipped: {skipped}");
}

#[test]
fn a_refused_transaction_changes_nothing() {
    if !root_or_skip("a_refused_transaction_changes_nothing") {
        return;
    }
    let mut cases = 0;
    for seed in 0..20 {
        let a = corpus::generate(seed);
        let result = in_netns(|| {
            let mut s = Socket::open().map_err(|e| e.to_string())?;
            s.replace(&a).map_err(|e| e.to_string())?;
            let before = listing(&a)?;
            // A good change, then a rule jumping to a chain that is not
            // there (Table::validate would have caught it; a transaction
            // is not validated as a whole).
            let mut tx = Transaction::new(a.family, &a.name);
            tx.ops.push(Op::AddChain {
                name: "fresh".into(),
                base: None,
            });
            tx.ops.push(Op::AddRule {
                chain: "fresh".into(),
                rule: Rule::new(vec![Expr::Counter, Expr::accept()]),
            });
            if let Some(name) = a.chains.keys().next() {
                tx.ops.push(Op::FlushChain(name.clone()));
            }
            tx.ops.push(Op::AddRule {
                chain: "fresh".into(),
                rule: Rule::new(vec![Expr::jump("missing")]),
            });
            let err = s
                .apply(&tx)
                .expect_err("the kernel must refuse a jump to nowhere");
            let after = listing(&a)?;
            Ok::<_, String>((before, after, err.to_string()))
        });
        match result {
            Ok((before, after, err)) => {
                assert_eq!(
                    before, after,
                    "seed {seed}: the refused transaction changed the table"
                );
                assert!(
                    err.contains("add rule to chain fresh"),
                    "seed {seed}: the error names the failing command: {err}"
                );
                if cases == 0 {
                    eprintln!("the kernel's refusal, as reported: {err}");
                }
                cases += 1;
            }
            Err(e) if e.contains("refused") || e.contains("kernel") => continue,
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    eprintln!("refused transactions: {cases} cases, none changed anything");
    assert!(cases >= 15);
}

#[test]
fn a_fresh_socket_applies_a_diff_to_a_table_nft_loaded() {
    if !root_or_skip("a_fresh_socket_applies_a_diff_to_a_table_nft_loaded") {
        return;
    }
    let mut cases = 0;
    for seed in 0..30 {
        let a = corpus::generate(seed);
        let b = corpus::variant(seed, seed + 1000);
        let Ok(want) = by_nft(&b) else { continue };
        let got = in_netns(|| {
            nft(&["-f", "-"], Some(&text::table_script(&a)))?;
            // This socket never saw the sets: it asks the kernel.
            let mut s = Socket::open().map_err(|e| e.to_string())?;
            s.apply(&diff::diff(&a, &b))
                .map_err(|e| format!("apply: {e}"))?;
            listing(&b)
        });
        match got {
            Ok(got) => assert_eq!(normalized(&got), normalized(&want), "seed {seed}"),
            Err(e) if e.starts_with("apply") => panic!("seed {seed}: {e}"),
            Err(_) => continue,
        }
        cases += 1;
    }
    eprintln!("diffs applied by a fresh socket: {cases}");
    assert!(cases >= 25);
}
