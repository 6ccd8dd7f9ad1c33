//! The transaction that takes the kernel from one table to another: only
//! what changed, in an order the kernel accepts within one batch.
//!
//! Order: new sets, new chains (empty, so rules anywhere may jump to
//! them); chains whose rules changed and chains that go away are flushed;
//! elements that went away or changed are deleted; removed sets and sets
//! whose declaration changed are deleted (their rules are gone by then);
//! chains whose hook, priority or type changed are deleted and created
//! again; changed sets are declared again; then the rules of every
//! flushed or created chain and the new elements (a rule that binds a map
//! makes the kernel walk its elements, so they come after); removed
//! chains last. The kernel refuses
//! to delete a chain something still jumps to or a set a rule still uses,
//! so everything that refers to a chain or set that is recreated is
//! flushed (rules) or deleted (map elements) first and written again after.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Chain, Element, ElementValue, Expr, Op, Set, Table, Transaction, Verdict};

/// The declaration of a set without its elements (a change of it needs the
/// set deleted and created again).
fn declaration(s: &Set) -> Set {
    Set {
        key: s.key.clone(),
        data: s.data.clone(),
        flags: s.flags,
        timeout: s.timeout,
        elements: BTreeMap::new(),
    }
}

fn same_declaration(a: &Set, b: &Set) -> bool {
    a.key == b.key && a.data == b.data && a.flags == b.flags && a.timeout == b.timeout
}

/// Whether a base chain must be deleted and created again to become
/// `new` (its type, hook or priority changed, or it stopped or started
/// being a base chain). A policy alone is changed in place.
fn needs_recreate(old: &Chain, new: &Chain) -> bool {
    match (&old.base, &new.base) {
        (None, None) => false,
        (Some(a), Some(b)) => a.kind != b.kind || a.hook != b.hook || a.priority != b.priority,
        _ => true,
    }
}

fn element_chain(e: &Element) -> Option<&str> {
    match &e.value {
        Some(ElementValue::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) => Some(c),
        _ => None,
    }
}

fn rule_refs(chain: &Chain) -> impl Iterator<Item = (&'static str, &str)> {
    chain
        .rules
        .iter()
        .flat_map(|r| r.exprs.iter())
        .flat_map(Expr::references)
}

/// The minimal atomic transaction from `old` to `new` (same family and
/// name; a different one gives the transaction that replaces the table).
pub fn diff(old: &Table, new: &Table) -> Transaction {
    let mut tx = Transaction::new(new.family, &new.name);
    if old.family != new.family || old.name != new.name {
        tx.ops.push(Op::AddTable);
        tx.ops.push(Op::DeleteTable);
        tx.ops.push(Op::AddTable);
        let empty = Table::new(new.family, &new.name);
        tx.ops.extend(diff(&empty, new).ops);
        return tx;
    }

    let added_sets: Vec<&String> = new
        .sets
        .keys()
        .filter(|n| !old.sets.contains_key(*n))
        .collect();
    let removed_sets: Vec<&String> = old
        .sets
        .keys()
        .filter(|n| !new.sets.contains_key(*n))
        .collect();
    let changed_sets: BTreeSet<&String> = new
        .sets
        .iter()
        .filter(|(n, s)| old.sets.get(*n).is_some_and(|o| !same_declaration(o, s)))
        .map(|(n, _)| n)
        .collect();
    let added_chains: Vec<&String> = new
        .chains
        .keys()
        .filter(|n| !old.chains.contains_key(*n))
        .collect();
    let removed_chains: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    let recreated: BTreeSet<&String> = new
        .chains
        .iter()
        .filter(|(n, c)| old.chains.get(*n).is_some_and(|o| needs_recreate(o, c)))
        .map(|(n, _)| n)
        .collect();

    // Chains in both whose rules are written again: they changed, or they
    // refer to a set or chain that is deleted and created again (in old,
    // the reference must go before the object does).
    let mut rewritten: BTreeSet<&String> = BTreeSet::new();
    for (name, c) in &new.chains {
        let Some(o) = old.chains.get(name) else {
            continue;
        };
        let refers = || {
            rule_refs(o).any(|(what, target)| match what {
                "chain" => recreated.iter().any(|r| r.as_str() == target),
                _ => changed_sets.iter().any(|s| s.as_str() == target),
            })
        };
        let anything_recreated = !recreated.is_empty() || !changed_sets.is_empty();
        if o.rules != c.rules || recreated.contains(name) || (anything_recreated && refers()) {
            rewritten.insert(name);
        }
    }

    // 1. New sets and chains.
    for name in &added_sets {
        tx.ops.push(Op::AddSet {
            name: (*name).clone(),
            set: declaration(&new.sets[*name]),
        });
    }
    for name in &added_chains {
        tx.ops.push(Op::AddChain {
            name: (*name).clone(),
            base: new.chains[*name].base,
        });
    }
    // A policy change in place.
    for (name, c) in &new.chains {
        if let Some(o) = old.chains.get(name) {
            if !recreated.contains(name) && o.base != c.base {
                tx.ops.push(Op::AddChain {
                    name: name.clone(),
                    base: c.base,
                });
            }
        }
    }
    // 2. Flush what is written again, and the chains that go away (their
    //    rules may use a set or chain that is recreated below).
    for name in &rewritten {
        tx.ops.push(Op::FlushChain((*name).clone()));
    }
    for name in &removed_chains {
        if !old.chains[*name].rules.is_empty() {
            tx.ops.push(Op::FlushChain((*name).clone()));
        }
    }
    // 3. Element deletes in sets that stay: gone, changed, or pointing at
    //    a chain that is recreated or removed.
    let gone_chain = |c: &str| {
        recreated.iter().any(|r| r.as_str() == c) || removed_chains.iter().any(|r| r.as_str() == c)
    };
    let mut re_add: BTreeMap<&String, Vec<(Vec<crate::Value>, Element)>> = BTreeMap::new();
    for (name, s) in &new.sets {
        let Some(o) = old.sets.get(name) else {
            continue;
        };
        if changed_sets.contains(name) {
            continue;
        }
        let mut deletes = Vec::new();
        let mut adds = Vec::new();
        // Both maps are sorted by key: one walk through the two.
        let mut old_it = o.elements.iter().peekable();
        let mut new_it = s.elements.iter().peekable();
        loop {
            match (old_it.peek(), new_it.peek()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    deletes.push((*k).clone());
                    old_it.next();
                }
                (None, Some((k, ne))) => {
                    adds.push(((*k).clone(), (*ne).clone()));
                    new_it.next();
                }
                (Some((ok, oe)), Some((nk, ne))) => match ok.cmp(nk) {
                    std::cmp::Ordering::Less => {
                        deletes.push((*ok).clone());
                        old_it.next();
                    }
                    std::cmp::Ordering::Greater => {
                        adds.push(((*nk).clone(), (*ne).clone()));
                        new_it.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if ne != oe || element_chain(oe).is_some_and(gone_chain) {
                            deletes.push((*ok).clone());
                            adds.push(((*nk).clone(), (*ne).clone()));
                        }
                        old_it.next();
                        new_it.next();
                    }
                },
            }
        }
        if !deletes.is_empty() {
            tx.ops.push(Op::DeleteElements {
                set: name.clone(),
                keys: deletes,
            });
        }
        if !adds.is_empty() {
            re_add.insert(name, adds);
        }
    }
    // 4. Sets that go away or are declared anew: nothing uses them any
    //    more (their rules are flushed), and their elements may still
    //    point at chains that are deleted next.
    for name in &removed_sets {
        tx.ops.push(Op::DeleteSet((*name).clone()));
    }
    for name in &changed_sets {
        tx.ops.push(Op::DeleteSet((*name).clone()));
    }
    for name in &recreated {
        tx.ops.push(Op::DeleteChain((*name).clone()));
        tx.ops.push(Op::AddChain {
            name: (*name).clone(),
            base: new.chains[*name].base,
        });
    }
    for name in &changed_sets {
        tx.ops.push(Op::AddSet {
            name: (*name).clone(),
            set: declaration(&new.sets[*name]),
        });
    }
    // 5. Rules of new and rewritten chains.
    for (name, c) in &new.chains {
        if added_chains.contains(&name) || rewritten.contains(name) {
            for rule in &c.rules {
                tx.ops.push(Op::AddRule {
                    chain: name.clone(),
                    rule: rule.clone(),
                });
            }
        }
    }
    // 6. Elements of new and recreated sets, and the adds of the others
    //    (after the rules: a rule binding a map walks its elements).
    for (name, s) in &new.sets {
        let elements: Vec<(Vec<crate::Value>, Element)> =
            if added_sets.contains(&name) || changed_sets.contains(name) {
                s.elements
                    .iter()
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect()
            } else {
                re_add.remove(name).unwrap_or_default()
            };
        if !elements.is_empty() {
            tx.ops.push(Op::AddElements {
                set: name.clone(),
                elements,
            });
        }
    }
    // 7. Removed chains last: flushed above, so none jumps to another, and
    //    the map elements that pointed at them are gone.
    for name in &removed_chains {
        tx.ops.push(Op::DeleteChain((*name).clone()));
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BaseChain, ChainType, DataType, Field, Hook, MapData, Priority, Rule, Value};

    fn ip(s: &str) -> Value {
        Value::Addr(s.parse().unwrap())
    }

    fn base() -> Table {
        let mut t = Table::new(crate::Family::Ip, "t");
        t.set("ips", Set::new(&[DataType::Ipv4Addr]))
            .insert(vec![ip("10.0.0.1")], None);
        t.set("vm", Set::map(&[DataType::Ipv4Addr], MapData::Verdict))
            .insert(
                vec![ip("10.96.0.1")],
                Some(ElementValue::Verdict(Verdict::Goto("svc".into()))),
            );
        t.chain(
            "pre",
            Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
        )
        .rule(vec![Expr::vmap(&[Field::IpDaddr], "vm")]);
        t.chain("svc", Chain::regular())
            .rule(vec![Expr::lookup(&[Field::IpSaddr], "ips"), Expr::accept()]);
        t
    }

    fn position(tx: &Transaction, f: impl Fn(&Op) -> bool) -> usize {
        tx.ops
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no such op in {:#?}", tx.ops))
    }

    #[test]
    fn the_same_table_needs_nothing() {
        assert!(diff(&base(), &base()).is_empty());
        // A note is for people only.
        let mut b = base();
        b.chains["svc"].note = Some("x".into());
        assert!(diff(&base(), &b).is_empty());
    }

    #[test]
    fn an_element_change_touches_only_that_element() {
        let mut b = base();
        b.sets["ips"].insert(vec![ip("10.0.0.2")], None);
        b.sets["vm"].insert(
            vec![ip("10.96.0.1")],
            Some(ElementValue::Verdict(Verdict::Jump("svc".into()))),
        );
        let tx = diff(&base(), &b);
        assert_eq!(
            tx.ops,
            vec![
                Op::DeleteElements {
                    set: "vm".into(),
                    keys: vec![vec![ip("10.96.0.1")]]
                },
                Op::AddElements {
                    set: "ips".into(),
                    elements: vec![(
                        vec![ip("10.0.0.2")],
                        Element {
                            value: None,
                            comment: None
                        }
                    )]
                },
                Op::AddElements {
                    set: "vm".into(),
                    elements: vec![(
                        vec![ip("10.96.0.1")],
                        Element {
                            value: Some(ElementValue::Verdict(Verdict::Jump("svc".into()))),
                            comment: None
                        }
                    )]
                },
            ]
        );
    }

    #[test]
    fn changed_rules_are_flushed_and_written_again() {
        let mut b = base();
        b.chains["svc"].rule(vec![Expr::drop()]);
        let tx = diff(&base(), &b);
        assert_eq!(tx.ops[0], Op::FlushChain("svc".into()));
        assert_eq!(tx.ops.len(), 3, "{:#?}", tx.ops);
        assert!(
            matches!(&tx.ops[2], Op::AddRule { rule, .. } if *rule == Rule::new(vec![Expr::drop()]))
        );
    }

    #[test]
    fn new_things_come_first_and_removals_last() {
        let mut b = base();
        b.set("new", Set::new(&[DataType::Mark]));
        b.chain("fresh", Chain::regular())
            .rule(vec![Expr::lookup(&[Field::Mark], "new"), Expr::accept()]);
        b.chains["svc"].rule(vec![Expr::jump("fresh")]);
        b.sets.shift_remove("ips");
        b.chains["svc"].rules.remove(0);
        let tx = diff(&base(), &b);
        let add_set = position(
            &tx,
            |o| matches!(o, Op::AddSet { name, .. } if name == "new"),
        );
        let add_chain = position(
            &tx,
            |o| matches!(o, Op::AddChain { name, .. } if name == "fresh"),
        );
        let jump = position(
            &tx,
            |o| matches!(o, Op::AddRule { chain, .. } if chain == "svc"),
        );
        let flush = position(&tx, |o| *o == Op::FlushChain("svc".into()));
        let del = position(&tx, |o| *o == Op::DeleteSet("ips".into()));
        assert!(add_set < add_chain && add_chain < jump);
        assert!(flush < del, "the rule using the set goes before the set");
    }

    #[test]
    fn a_removed_chain_loses_its_references_first() {
        let mut b = base();
        b.chains.shift_remove("svc");
        b.sets["vm"].elements.clear();
        let tx = diff(&base(), &b);
        let del_elem = position(
            &tx,
            |o| matches!(o, Op::DeleteElements { set, .. } if set == "vm"),
        );
        let flush = position(&tx, |o| *o == Op::FlushChain("svc".into()));
        let del = position(&tx, |o| *o == Op::DeleteChain("svc".into()));
        assert!(del_elem < del && flush < del);
    }

    #[test]
    fn a_moved_base_chain_is_recreated_and_a_policy_changed_in_place() {
        let mut b = base();
        b.chains["pre"].base.as_mut().unwrap().priority = Priority::Value(-99);
        let tx = diff(&base(), &b);
        let flush = position(&tx, |o| *o == Op::FlushChain("pre".into()));
        let del = position(&tx, |o| *o == Op::DeleteChain("pre".into()));
        let add = position(
            &tx,
            |o| matches!(o, Op::AddChain { name, .. } if name == "pre"),
        );
        let rule = position(
            &tx,
            |o| matches!(o, Op::AddRule { chain, .. } if chain == "pre"),
        );
        assert!(flush < del && del < add && add < rule);

        let mut b = base();
        b.chains["pre"].base.as_mut().unwrap().policy = crate::Policy::Drop;
        let tx = diff(&base(), &b);
        assert_eq!(
            tx.ops,
            vec![Op::AddChain {
                name: "pre".into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Prerouting,
                    priority: Priority::Dstnat,
                    policy: crate::Policy::Drop
                })
            }]
        );
    }

    #[test]
    fn a_changed_set_declaration_recreates_the_set_and_its_users() {
        let mut b = base();
        let mut decl = Set::new(&[DataType::Ipv4Addr]).interval();
        decl.insert(vec![Value::Net("10.0.0.0/8".parse().unwrap())], None);
        b.set("ips", decl);
        let tx = diff(&base(), &b);
        let flush = position(&tx, |o| *o == Op::FlushChain("svc".into()));
        let del = position(&tx, |o| *o == Op::DeleteSet("ips".into()));
        let add = position(
            &tx,
            |o| matches!(o, Op::AddSet { name, .. } if name == "ips"),
        );
        let elems = position(
            &tx,
            |o| matches!(o, Op::AddElements { set, .. } if set == "ips"),
        );
        let rule = position(
            &tx,
            |o| matches!(o, Op::AddRule { chain, .. } if chain == "svc"),
        );
        assert!(flush < del && del < add && add < elems && add < rule);
    }
}
