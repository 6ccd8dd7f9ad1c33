//! The incremental planner: one node's plan kept up to date from the
//! objects that changed, instead of planned again from the whole cluster.
//!
//! A full plan at 10,000 policies over 10,000 pods reads every policy and
//! resolves every selector (hundreds of milliseconds); a pod that changes
//! labels touches a handful of elements. What a pod or namespace change
//! can reach, with the policies themselves unchanged:
//!
//! - **the local pod's class**: the policies of its own namespace that
//!   select it (a podSelector is only ever matched in the policy's
//!   namespace), so a local pod is classified again by reading its
//!   namespace's policies, not the cluster's;
//! - **its element in each class's peer sets** (`<class>-pods-<ports>`): for each
//!   class of the node, the rules whose peer selectors it matches give its
//!   ports — asked of the selectors directly ([`super::GroupSel`]), no
//!   cluster-wide group lists;
//! - a class's `-any` set (peers on every port) is aggregated into
//!   prefixes, so when a pod enters or leaves it, that class is rendered
//!   again whole, as is a class that appears (from the pods its rules can
//!   reach: the namespaces its selectors cover) or loses its last member.
//!
//! Port sets are shared by the table and exist while a peer element goes
//! with them: they are counted, and removed at zero. The transaction is the
//! difference of only the sets and chains touched.
//!
//! What is not incremental (the caller plans in full): a change to a
//! NetworkPolicy, and any change while ClusterNetworkPolicies exist (their
//! tiers are resolved while planning into per-class interval maps).
//! The full planner stays the reference: the property test in
//! `tests` holds random change sequences to it, table for table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use strait_model::{ClusterState, CompactPod, Kind, ObjectKey};
use strait_nft::{DataType, ElementValue, Set, Table, Transaction, Value, Verdict, L3};

use super::GroupSel;
use super::{
    class_chain, class_name, class_port_sets, describe, host, named_ports, namespace_labels,
    pods_set, read_pod, render_class, resolve, Analysis, ClassKey, Direction, Grants, Peers, Plan,
    PodInfo, PolicyInfo, PortEntry, PortSets, Ports, Stats,
};
use crate::{Error, Protocol};

type PodKey = (String, String);

/// Port ranges of one peer: (protocol, first, last).
type Ranges = Vec<(u8, u16, u16)>;

/// One class of the node: its key and the local pods in it.
struct Class {
    key: ClassKey,
    members: BTreeMap<PodKey, Vec<IpAddr>>,
}

/// A node's plan, and what it takes to change it without planning again.
pub struct Incremental {
    node: String,
    plan: Plan,
    problems: Vec<Error>,
    /// The policies as the full plan read them (indexes as in the keys).
    policies: Vec<PolicyInfo>,
    /// Policy indexes by namespace, in the planner's order.
    by_namespace: HashMap<String, Vec<usize>>,
    /// The classes, by chain name, and the chain name by key.
    classes: HashMap<String, Class>,
    names: HashMap<ClassKey, String>,
    /// The pods taking part in policy, by namespace and name.
    pods: BTreeMap<String, BTreeMap<String, Arc<CompactPod>>>,
    /// Namespace labels (with the name label) as last planned.
    ns_labels: HashMap<String, BTreeMap<String, String>>,
    /// How many pods of the view hold each address. Elements are keyed
    /// by address: while two pods share one (an address reused before
    /// the old pod is gone), an element cannot be said to be one pod's,
    /// so changes touching a shared address are planned in full.
    owners: HashMap<IpAddr, u32>,
    /// Per family: port sets by ranges, and how many peer elements go
    /// to each.
    port_sets: [PortSets; 2],
    port_refs: [HashMap<String, usize>; 2],
    /// Whether the plan has ClusterNetworkPolicy tiers (then every change
    /// is planned in full).
    tiers: bool,
    /// The part of the stats that is not NetworkPolicy classes (tiers).
    tier_stats: Stats,
    /// An update gave up half-way: the plan no longer says what the
    /// kernel has (the caller replaces the tables).
    spoilt: bool,
}

/// A pod's two sides of a change.
struct Delta<'s> {
    key: PodKey,
    old: Option<(PodInfo<'s>, BTreeMap<String, String>)>,
    new: Option<(PodInfo<'s>, BTreeMap<String, String>)>,
}

/// The sets and chains one update touched, as they were before it.
#[derive(Default)]
struct Touched {
    sets: [BTreeMap<String, Option<Set>>; 2],
    chains: [BTreeMap<String, Option<strait_nft::Chain>>; 2],
}

fn fam(l3: L3) -> usize {
    match l3 {
        L3::V4 => 0,
        L3::V6 => 1,
    }
}

impl Incremental {
    /// Plan `node` in full and keep what changes need.
    pub fn new(state: &ClusterState, node: &str) -> Incremental {
        let analysis = Analysis::new(state);
        let (plan, keys, port_sets) = analysis.plan_parts(node);
        let mut classes: HashMap<String, Class> = HashMap::new();
        let mut names = HashMap::new();
        // Members from the verdict maps of the plan (what it put there).
        let mut member_of: HashMap<IpAddr, PodKey> = HashMap::new();
        let mut pods: BTreeMap<String, BTreeMap<String, Arc<CompactPod>>> = BTreeMap::new();
        let mut owners: HashMap<IpAddr, u32> = HashMap::new();
        for p in state.pods.iter() {
            if let Some(info) = read_pod(p) {
                for ip in &info.ips {
                    *owners.entry(*ip).or_default() += 1;
                }
                if info.node == node {
                    for ip in &info.ips {
                        member_of.insert(*ip, (info.namespace.to_owned(), info.name.to_owned()));
                    }
                }
                pods.entry(info.namespace.to_owned())
                    .or_default()
                    .insert(info.name.to_owned(), p.clone());
            }
        }
        for (key, name) in keys {
            names.insert(key.clone(), name.clone());
            classes.insert(
                name,
                Class {
                    key,
                    members: BTreeMap::new(),
                },
            );
        }
        for table in plan.tables() {
            for map in ["ingress", "egress"] {
                for (k, e) in &table.sets[map].elements {
                    let (Some(Value::Addr(ip)), Some(ElementValue::Verdict(Verdict::Goto(c)))) =
                        (k.first(), &e.value)
                    else {
                        continue;
                    };
                    if let (Some(class), Some(pod)) = (classes.get_mut(c), member_of.get(ip)) {
                        class.members.entry(pod.clone()).or_default().push(*ip);
                    }
                }
            }
        }
        let mut port_refs: [HashMap<String, usize>; 2] = Default::default();
        for (i, table) in plan.tables().into_iter().enumerate() {
            for name in classes.keys() {
                count_refs(table, name, &mut port_refs[i], true);
            }
        }
        let mut by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in analysis.policies.iter().enumerate() {
            by_namespace.entry(p.namespace.clone()).or_default().push(i);
        }
        let mut ns_labels = HashMap::new();
        for ns in state.namespaces.iter() {
            let name = ns.metadata.name.clone().unwrap_or_default();
            ns_labels.insert(name.clone(), namespace_labels(state, &name));
        }
        for ns in pods.keys() {
            ns_labels
                .entry(ns.clone())
                .or_insert_with(|| namespace_labels(state, ns));
        }
        let tiers = !analysis.cnps.is_empty();
        let Analysis {
            policies, problems, ..
        } = analysis;
        let mut planner = Incremental {
            node: node.to_owned(),
            plan,
            problems,
            policies,
            by_namespace,
            classes,
            names,
            pods,
            ns_labels,
            owners,
            port_sets,
            port_refs,
            tiers,
            tier_stats: Stats::default(),
            spoilt: false,
        };
        let np = planner.np_stats();
        let all = planner.plan.stats;
        planner.tier_stats = Stats {
            isolated_ingress: all.isolated_ingress - np.isolated_ingress,
            isolated_egress: all.isolated_egress - np.isolated_egress,
            classes: all.classes - np.classes,
            elements: all.elements - np.elements,
        };
        planner
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The plan as it stands.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What could not be honoured (from the last full plan: only policy
    /// changes, planned in full, change it).
    pub fn problems(&self) -> &[Error] {
        &self.problems
    }

    pub fn into_plan(self) -> Plan {
        self.plan
    }

    /// Whether an update gave up after changing the plan: it no longer
    /// matches the kernel, and the tables are to be replaced whole.
    pub fn spoilt(&self) -> bool {
        self.spoilt
    }

    /// Bring the plan to `new`, where the objects of `touched` (a
    /// superset of what changed since the last plan) may differ: the
    /// transactions for both families (`ip`, `ip6`; empty when nothing
    /// changed), or `None` when the change needs a full plan (a policy
    /// changed, or there are ClusterNetworkPolicies).
    pub fn update<'k>(
        &mut self,
        new: &ClusterState,
        touched: impl IntoIterator<Item = &'k ObjectKey>,
    ) -> Option<[Transaction; 2]> {
        if self.tiers || !new.cluster_network_policies.is_empty() {
            return None;
        }
        let mut pod_keys: BTreeSet<PodKey> = BTreeSet::new();
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for key in touched {
            match key.kind {
                Kind::NetworkPolicy | Kind::ClusterNetworkPolicy => return None,
                Kind::Pod => {
                    pod_keys.insert((key.namespace.clone(), key.name.clone()));
                }
                Kind::Namespace => {
                    namespaces.insert(key.name.clone());
                }
                _ => {}
            }
        }
        // Namespace labels before and after; every pod of a relabelled
        // namespace is a peer that may have changed.
        let mut new_labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for ns in &namespaces {
            let labels = namespace_labels(new, ns);
            if self.ns_labels.get(ns) != Some(&labels) {
                for name in self.pods.get(ns).into_iter().flat_map(|m| m.keys()) {
                    pod_keys.insert((ns.clone(), name.clone()));
                }
                for p in new.pods.in_namespace(ns) {
                    pod_keys.insert((ns.clone(), p.metadata.name.clone().unwrap_or_default()));
                }
            }
            new_labels.insert(ns.clone(), labels);
        }
        let old_ns = |ns: &str| {
            self.ns_labels.get(ns).cloned().unwrap_or_else(|| {
                BTreeMap::from([(super::NAMESPACE_NAME_LABEL.to_owned(), ns.to_owned())])
            })
        };
        let new_ns = |ns: &str| {
            new_labels
                .get(ns)
                .cloned()
                .or_else(|| self.ns_labels.get(ns).cloned())
                .unwrap_or_else(|| namespace_labels(new, ns))
        };
        // The old pods are ours; keep them alive past the view's update.
        let old_pods: Vec<(PodKey, Option<Arc<CompactPod>>)> = pod_keys
            .iter()
            .map(|(ns, name)| {
                (
                    (ns.clone(), name.clone()),
                    self.pods.get(ns).and_then(|m| m.get(name)).cloned(),
                )
            })
            .collect();
        let mut deltas: Vec<Delta> = Vec::new();
        for ((ns, name), old) in &old_pods {
            let now = new.pods.get(ns, name).filter(|p| read_pod(p).is_some());
            let labels_changed = namespaces.contains(ns) && old_ns(ns) != new_ns(ns);
            if let (Some(o), Some(n)) = (old, now) {
                if Arc::ptr_eq(o, n) && !labels_changed {
                    continue;
                }
            }
            deltas.push(Delta {
                key: (ns.clone(), name.clone()),
                old: old.as_deref().and_then(read_pod).map(|p| (p, old_ns(ns))),
                new: now.and_then(|p| read_pod(p)).map(|p| (p, new_ns(ns))),
            });
        }
        // Shared addresses, before or after: plan in full (nothing has
        // changed yet).
        let mut after: HashMap<IpAddr, u32> = HashMap::new();
        for d in &deltas {
            for (p, _) in d.old.iter().chain(&d.new) {
                for ip in &p.ips {
                    after
                        .entry(*ip)
                        .or_insert_with(|| self.owners.get(ip).copied().unwrap_or(0));
                }
            }
        }
        if after.values().any(|n| *n > 1) {
            return None;
        }
        for d in &deltas {
            for ip in d.old.iter().flat_map(|(p, _)| &p.ips) {
                let n = after.get_mut(ip).expect("counted");
                *n = n.saturating_sub(1);
            }
            for ip in d.new.iter().flat_map(|(p, _)| &p.ips) {
                *after.get_mut(ip).expect("counted") += 1;
            }
        }
        if after.values().any(|n| *n > 1) {
            return None;
        }
        for (ip, n) in after {
            if n == 0 {
                self.owners.remove(&ip);
            } else {
                self.owners.insert(ip, n);
            }
        }

        let mut touched = Touched::default();
        // Classes to render again whole (new, emptied, `-any` changed, or
        // present in another family now).
        let mut rerender: BTreeSet<String> = BTreeSet::new();
        for d in &deltas {
            if !self.move_local(d, &mut touched, &mut rerender) {
                self.spoilt = true;
                return None;
            }
            self.patch_peers(d, &mut touched, &mut rerender);
        }
        // The view moves to `new` before classes are rendered from it.
        for d in &deltas {
            let (ns, name) = &d.key;
            match new.pods.get(ns, name).filter(|_| d.new.is_some()) {
                Some(p) => {
                    self.pods
                        .entry(ns.clone())
                        .or_default()
                        .insert(name.clone(), p.clone());
                }
                None => {
                    if let Some(m) = self.pods.get_mut(ns) {
                        m.remove(name);
                        if m.is_empty() {
                            self.pods.remove(ns);
                        }
                    }
                }
            }
        }
        for (ns, labels) in new_labels {
            self.ns_labels.insert(ns, labels);
        }
        for name in &rerender {
            self.render(name, &mut touched);
        }
        self.collect_port_sets(&mut touched);
        self.plan.stats = self.np_stats();
        let t = self.tier_stats;
        self.plan.stats.isolated_ingress += t.isolated_ingress;
        self.plan.stats.isolated_egress += t.isolated_egress;
        self.plan.stats.classes += t.classes;
        self.plan.stats.elements += t.elements;
        Some(self.transactions(touched))
    }

    /// The local pod's classes, old and new: its verdict-map elements
    /// move. `false` when a new class's name is taken (a hash collision:
    /// plan in full).
    fn move_local(
        &mut self,
        d: &Delta,
        touched: &mut Touched,
        rerender: &mut BTreeSet<String>,
    ) -> bool {
        for dir in [Direction::Ingress, Direction::Egress] {
            let old = d
                .old
                .as_ref()
                .filter(|(p, _)| p.node == self.node)
                .and_then(|(p, _)| self.classify(p, dir).map(|k| (k, p.ips.clone())));
            let new = d
                .new
                .as_ref()
                .filter(|(p, _)| p.node == self.node)
                .and_then(|(p, _)| self.classify(p, dir).map(|k| (k, p.ips.clone())));
            if old == new {
                continue;
            }
            let map = dir.as_str();
            if let Some((key, ips)) = old {
                let Some(name) = self.names.get(&key).cloned() else {
                    return false;
                };
                for ip in &ips {
                    let table = self.table(L3::of(*ip), touched, Some(map), None);
                    table.sets[map].elements.remove(&vec![Value::Addr(*ip)]);
                }
                let class = self.classes.get_mut(&name).expect("a known class");
                let before = families(&class.members);
                class.members.remove(&d.key);
                if class.members.is_empty() || families(&class.members) != before {
                    rerender.insert(name);
                }
            }
            if let Some((key, ips)) = new {
                let name = match self.names.get(&key) {
                    Some(n) => n.clone(),
                    None => {
                        let mut taken = BTreeSet::new();
                        let name = class_name(&self.policies, &key, &mut taken);
                        let in_use = self.plan.chains.contains_key(&name)
                            || self.plan.v4.chains.contains_key(&name)
                            || self.plan.v6.chains.contains_key(&name);
                        if in_use {
                            return false;
                        }
                        self.names.insert(key.clone(), name.clone());
                        self.classes.insert(
                            name.clone(),
                            Class {
                                key: key.clone(),
                                members: BTreeMap::new(),
                            },
                        );
                        name
                    }
                };
                for ip in &ips {
                    let table = self.table(L3::of(*ip), touched, Some(map), None);
                    table.sets[map].insert(
                        vec![Value::Addr(*ip)],
                        Some(ElementValue::Verdict(Verdict::Goto(name.clone()))),
                    );
                }
                let class = self.classes.get_mut(&name).expect("a known class");
                let before = families(&class.members);
                class.members.insert(d.key.clone(), ips);
                if before == [false, false] || families(&class.members) != before {
                    rerender.insert(name);
                }
            }
        }
        true
    }

    /// The pod as a peer of every class: its `-pods-<ports>` elements (a
    /// set and its rule in the class chain come with the first peer on those
    /// ports and go with the last).
    fn patch_peers(&mut self, d: &Delta, touched: &mut Touched, rerender: &mut BTreeSet<String>) {
        let names: Vec<String> = self.classes.keys().cloned().collect();
        for name in names {
            if rerender.contains(&name) {
                continue;
            }
            let class = &self.classes[&name];
            let old = d.old.as_ref().map(|(p, l)| {
                (
                    self.element(&class.key, p.namespace, l, p.labels, p.pod, &p.ips),
                    p.ips.clone(),
                )
            });
            let new = d.new.as_ref().map(|(p, l)| {
                (
                    self.element(&class.key, p.namespace, l, p.labels, p.pod, &p.ips),
                    p.ips.clone(),
                )
            });
            // The addresses in `-any` (aggregated: rendered again).
            let any = |e: &Option<((bool, Ranges), Vec<IpAddr>)>| {
                e.as_ref().filter(|e| e.0 .0).map(|e| e.1.clone())
            };
            if any(&old) != any(&new) {
                rerender.insert(name);
                continue;
            }
            let ranges = |e: Option<((bool, Ranges), Vec<IpAddr>)>| {
                e.filter(|e| !e.0 .1.is_empty())
                    .map(|e| (merge(e.0 .1), e.1))
            };
            let (old, new) = (ranges(old), ranges(new));
            if old == new {
                continue;
            }
            let dir = class.key.direction;
            if let Some((merged, ips)) = &old {
                for ip in ips {
                    let l3 = L3::of(*ip);
                    let f = fam(l3);
                    let Some(ports) = self.port_sets[f].get(merged).cloned() else {
                        continue; // the class is not in this family
                    };
                    let set = pods_set(&name, &ports);
                    let table = self.table(l3, touched, Some(&set), None);
                    let removed = table
                        .sets
                        .get_mut(&set)
                        .and_then(|s| s.elements.remove(&vec![Value::Addr(*ip)]));
                    let emptied = table.sets.get(&set).is_some_and(|s| s.elements.is_empty());
                    if removed.is_some() {
                        unref(&mut self.port_refs[f], &ports);
                    }
                    if emptied {
                        let table = self.table_mut(l3);
                        // The last peer on these ports: its set and rule go.
                        table.sets.shift_remove(&set);
                        let sets = class_port_sets(table, &name);
                        self.table(l3, touched, None, Some(&name));
                        let table = self.table_mut(l3);
                        class_chain(table, l3, &name, dir, &sets);
                    }
                }
            }
            if let Some((merged, ips)) = &new {
                for ip in ips {
                    let l3 = L3::of(*ip);
                    let f = fam(l3);
                    if !self.plan_table(l3).chains.contains_key(&name) {
                        continue; // the class is not in this family
                    }
                    let ports = self.port_chain(l3, merged, touched);
                    let set = pods_set(&name, &ports);
                    let table = self.table(l3, touched, Some(&set), None);
                    if !table.sets.contains_key(&set) {
                        // The first peer on these ports: a set and a rule.
                        table.set(&set, Set::new(&[DataType::addr(l3)]));
                        let sets = class_port_sets(table, &name);
                        self.table(l3, touched, None, Some(&name));
                        let table = self.table_mut(l3);
                        class_chain(table, l3, &name, dir, &sets);
                    }
                    let table = self.table_mut(l3);
                    table.sets[set.as_str()].insert(vec![Value::Addr(*ip)], None);
                    *self.port_refs[f].entry(ports).or_default() += 1;
                }
            }
        }
    }

    /// The policies isolating local pod `p` in `dir`, as a class key.
    fn classify(&self, p: &PodInfo, dir: Direction) -> Option<ClassKey> {
        let list: Vec<usize> = self
            .by_namespace
            .get(p.namespace)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&pi| {
                let policy = &self.policies[pi];
                policy.rules(dir).is_some()
                    && policy
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| s.matches_opt(p.labels))
            })
            .collect();
        if list.is_empty() {
            return None;
        }
        let named = if dir == Direction::Ingress {
            named_ports(&self.policies, p.pod, &list)
        } else {
            Vec::new()
        };
        Some(ClassKey {
            direction: dir,
            policies: list,
            named,
        })
    }

    /// What a class allows one pod as a peer: on every port (its address
    /// goes to `-any`), and on these ports (its `-pods-<ports>` element), exactly
    /// as [`Analysis::grants`] reads the rules.
    fn element(
        &self,
        key: &ClassKey,
        namespace: &str,
        ns_labels: &BTreeMap<String, String>,
        labels: Option<&BTreeMap<String, String>>,
        pod: &CompactPod,
        ips: &[IpAddr],
    ) -> (bool, Ranges) {
        self.element_by(key, pod, ips, |_, _, s| {
            s.matches(namespace, ns_labels, labels)
        })
    }

    /// [`Self::element`], asking `in_group(rule number, selector number in the rule, selector)` whether
    /// the pod is in a peer group (rules numbered over the class's policies
    /// in order, as [`PeerIndex`] numbers them): rendering a class asks it
    /// of ~2,000 pods, and then each distinct selector is matched once per
    /// pod instead of once per rule naming it.
    fn element_by(
        &self,
        key: &ClassKey,
        pod: &CompactPod,
        ips: &[IpAddr],
        in_group: impl Fn(usize, usize, &GroupSel) -> bool,
    ) -> (bool, Ranges) {
        let mut any = false;
        let mut ranges = Vec::new();
        let mut rule_no = 0;
        for &pi in &key.policies {
            for rule in self.policies[pi].rules(key.direction).into_iter().flatten() {
                let no = rule_no;
                rule_no += 1;
                let (everyone, in_groups, in_nets) = match &rule.peers {
                    Peers::Any => (true, false, false),
                    Peers::Some { nets, sels, .. } => (
                        false,
                        sels.iter().enumerate().any(|(j, s)| in_group(no, j, s)),
                        ips.iter().any(|ip| nets.iter().any(|n| n.contains(ip))),
                    ),
                };
                let entries = match &rule.ports {
                    Ports::All => {
                        any |= in_groups;
                        continue;
                    }
                    Ports::Listed(entries) => entries,
                };
                for e in entries {
                    match e {
                        PortEntry::Range { proto, lo, hi } if in_groups => {
                            ranges.push((*proto, *lo, *hi))
                        }
                        PortEntry::Range { .. } => {}
                        PortEntry::Named { proto, name } if key.direction == Direction::Ingress => {
                            if in_groups {
                                if let Some(p) = named_in_key(key, *proto, name) {
                                    ranges.push((proto.number(), p, p));
                                }
                            }
                        }
                        PortEntry::Named { proto, name } => {
                            if everyone || in_groups || in_nets {
                                if let Some(p) = resolve(pod, name, *proto) {
                                    ranges.push((proto.number(), p, p));
                                }
                            }
                        }
                    }
                }
            }
        }
        (any, ranges)
    }

    /// Render class `name` again from the current view (or remove it when
    /// it has no members left).
    fn render(&mut self, name: &str, touched: &mut Touched) {
        // Out with the old, in both families.
        for l3 in [L3::V4, L3::V6] {
            let f = fam(l3);
            if self.plan_table(l3).chains.contains_key(name) {
                let table = match l3 {
                    L3::V4 => &self.plan.v4,
                    L3::V6 => &self.plan.v6,
                };
                count_refs(table, name, &mut self.port_refs[f], false);
                let mut sets = vec![format!("{name}-any"), format!("{name}-nets")];
                sets.extend(
                    class_port_sets(self.plan_table(l3), name)
                        .iter()
                        .map(|p| pods_set(name, p)),
                );
                let table = self.table(l3, touched, None, Some(name));
                table.chains.shift_remove(name);
                for s in &sets {
                    let table = self.table(l3, touched, Some(s), None);
                    table.sets.shift_remove(s);
                }
            }
        }
        self.plan.chains.remove(name);
        let Some(class) = self.classes.get(name) else {
            return;
        };
        if class.members.is_empty() {
            let key = class.key.clone();
            self.classes.remove(name);
            self.names.remove(&key);
            return;
        }
        let key = class.key.clone();
        let present = families(&class.members);
        self.plan.chains.insert(
            name.to_owned(),
            format!(
                "{} of pods isolated by NetworkPolicy {}",
                key.direction.as_str(),
                describe(key.policies.iter().map(|&pi| format!(
                    "{}/{}",
                    self.policies[pi].namespace, self.policies[pi].name
                )))
            ),
        );
        // The pods the rules can reach.
        let mut everyone = false;
        let mut sels = Vec::new();
        let mut any: Vec<IpNet> = Vec::new();
        let mut nets: Vec<(u8, Vec<IpNet>, u16, u16)> = Vec::new();
        for &pi in &key.policies {
            for rule in self.policies[pi].rules(key.direction).into_iter().flatten() {
                let rule_nets = match &rule.peers {
                    Peers::Any => {
                        vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
                    }
                    Peers::Some { nets, sels: s, .. } => {
                        sels.extend(s.iter().cloned());
                        nets.clone()
                    }
                };
                let entries = match &rule.ports {
                    Ports::All => {
                        any.extend(rule_nets);
                        continue;
                    }
                    Ports::Listed(entries) => entries,
                };
                for e in entries {
                    let range = match e {
                        PortEntry::Range { proto, lo, hi } => Some((*proto, *lo, *hi)),
                        PortEntry::Named { proto, name } if key.direction == Direction::Ingress => {
                            named_in_key(&key, *proto, name).map(|p| (proto.number(), p, p))
                        }
                        PortEntry::Named { .. } => {
                            // Resolved per destination pod: any pod the
                            // peers reach, networks included.
                            everyone |= matches!(rule.peers, Peers::Any) || !rule_nets.is_empty();
                            None
                        }
                    };
                    if let Some((proto, lo, hi)) = range {
                        if !rule_nets.is_empty() {
                            nets.push((proto, rule_nets.clone(), lo, hi));
                        }
                    }
                }
            }
        }
        // The distinct selectors of the class's rules (groups are shared
        // between rules naming the same selectors: ten policies' rules
        // often name four), each matched once per pod below.
        let index = PeerIndex::new(&self.policies, &key);
        // The pods of the namespaces the selectors cover (owned here, as
        // the table changes below), with which selectors cover each.
        let mut scanned: Vec<(usize, Arc<CompactPod>)> = Vec::new();
        let mut covering: Vec<Vec<bool>> = Vec::new();
        for (ns, pods) in &self.pods {
            let labels = self.ns_labels.get(ns.as_str()).cloned().unwrap_or_else(|| {
                BTreeMap::from([(super::NAMESPACE_NAME_LABEL.to_owned(), ns.clone())])
            });
            let covers: Vec<bool> = index.sels.iter().map(|s| s.covers(ns, &labels)).collect();
            if !everyone && !covers.iter().any(|c| *c) {
                continue;
            }
            let at = covering.len();
            covering.push(covers);
            scanned.extend(pods.values().map(|p| (at, p.clone())));
        }
        let mut candidates: Vec<PodInfo> = Vec::new();
        let mut g = Grants {
            any,
            nets,
            pods: Default::default(),
        };
        {
            let mut matched = vec![false; index.sels.len()];
            for (at, p) in &scanned {
                // GroupSel::matches: the namespace covered, then the pods.
                let labels = p.metadata.labels.as_ref();
                let mut some = false;
                for (i, s) in index.sels.iter().enumerate() {
                    matched[i] = covering[*at][i] && s.matches_pod(labels);
                    some |= matched[i];
                }
                // In no group, a pod is a peer only through a named egress
                // port of a rule reaching everyone or networks (`everyone`):
                // most of the scanned pods are skipped here, unread.
                if !some && !everyone {
                    continue;
                }
                let Some(info) = read_pod(p) else { continue };
                let (a, ranges) = self.element_by(&key, p, &info.ips, |rule, j, _| {
                    matched[index.rules[rule][j]]
                });
                if a {
                    g.any.extend(info.ips.iter().map(host));
                }
                if !ranges.is_empty() {
                    g.pods.insert(candidates.len(), ranges);
                    candidates.push(info);
                }
            }
        }
        for l3 in [L3::V4, L3::V6] {
            let f = fam(l3);
            if !present[f] {
                continue;
            }
            for s in ["any", "nets"] {
                self.table(l3, touched, Some(&format!("{name}-{s}")), None);
            }
            self.table(l3, touched, None, Some(name));
            // New port sets are noted as touched afterwards.
            let before: BTreeSet<String> = self.port_sets[f].values().cloned().collect();
            let table = match l3 {
                L3::V4 => &mut self.plan.v4,
                L3::V6 => &mut self.plan.v6,
            };
            render_class(
                table,
                l3,
                name,
                key.direction,
                &g,
                &candidates,
                &mut self.port_sets[f],
            );
            // Its peer sets were not there before (removed above).
            for p in class_port_sets(table, name) {
                touched.sets[f].entry(pods_set(name, &p)).or_insert(None);
            }
            count_refs(table, name, &mut self.port_refs[f], true);
            let added: Vec<String> = self.port_sets[f]
                .values()
                .filter(|n| !before.contains(*n))
                .cloned()
                .collect();
            for ports in added {
                touched.sets[f].entry(ports).or_insert(None);
            }
        }
    }

    /// The port set for `merged` in family `l3`, added when new.
    fn port_chain(&mut self, l3: L3, merged: &Ranges, touched: &mut Touched) -> String {
        let f = fam(l3);
        if let Some(name) = self.port_sets[f].get(merged) {
            return name.clone();
        }
        let table = match l3 {
            L3::V4 => &mut self.plan.v4,
            L3::V6 => &mut self.plan.v6,
        };
        let name = super::port_set(table, &mut self.port_sets[f], merged);
        touched.sets[f].entry(name.clone()).or_insert(None);
        name
    }

    fn table_mut(&mut self, l3: L3) -> &mut Table {
        match l3 {
            L3::V4 => &mut self.plan.v4,
            L3::V6 => &mut self.plan.v6,
        }
    }

    /// Remove the port sets no peer element goes with any more.
    fn collect_port_sets(&mut self, touched: &mut Touched) {
        for l3 in [L3::V4, L3::V6] {
            let f = fam(l3);
            let dead: Vec<String> = self.port_refs[f]
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(c, _)| c.clone())
                .collect();
            for ports in dead {
                self.port_refs[f].remove(&ports);
                let table = self.table(l3, touched, Some(&ports), None);
                table.sets.shift_remove(&ports);
                self.port_sets[f].retain(|_, n| *n != ports);
            }
        }
    }

    fn plan_table(&self, l3: L3) -> &Table {
        match l3 {
            L3::V4 => &self.plan.v4,
            L3::V6 => &self.plan.v6,
        }
    }

    /// The table of `l3`, noting the set and chain about to change (as
    /// they are now, the first time).
    fn table(
        &mut self,
        l3: L3,
        touched: &mut Touched,
        set: Option<&str>,
        chain: Option<&str>,
    ) -> &mut Table {
        let f = fam(l3);
        let table = match l3 {
            L3::V4 => &mut self.plan.v4,
            L3::V6 => &mut self.plan.v6,
        };
        if let Some(s) = set {
            if !touched.sets[f].contains_key(s) {
                touched.sets[f].insert(s.to_owned(), table.sets.get(s).cloned());
            }
        }
        if let Some(c) = chain {
            if !touched.chains[f].contains_key(c) {
                touched.chains[f].insert(c.to_owned(), table.chains.get(c).cloned());
            }
        }
        table
    }

    /// The difference over the touched sets and chains only.
    fn transactions(&self, touched: Touched) -> [Transaction; 2] {
        let Touched { sets, chains } = touched;
        let mut out = Vec::new();
        for ((l3, sets), chains) in [L3::V4, L3::V6].into_iter().zip(sets).zip(chains) {
            let table = self.plan_table(l3);
            let mut old = Table::new(table.family, &table.name);
            let mut new = Table::new(table.family, &table.name);
            for (name, before) in sets {
                if let Some(s) = before {
                    old.sets.insert(name.clone(), s);
                }
                if let Some(s) = table.sets.get(&name) {
                    new.sets.insert(name, s.clone());
                }
            }
            for (name, before) in chains {
                if let Some(c) = before {
                    old.chains.insert(name.clone(), c);
                }
                if let Some(c) = table.chains.get(&name) {
                    new.chains.insert(name, c.clone());
                }
            }
            out.push(strait_nft::diff::diff(&old, &new));
        }
        let v6 = out.pop().expect("two families");
        let v4 = out.pop().expect("two families");
        [v4, v6]
    }

    /// The stats of the NetworkPolicy part, counted from the tables: one
    /// pass over each table's sets (each is `<class>-any`, `<class>-nets`,
    /// `<class>-pods-<ports>` or not a class's; class names never hold
    /// `-pods-`), not a scan of every set per class: with 200 classes and
    /// 800 sets that was most of a remote pod's planning.
    fn np_stats(&self) -> Stats {
        let mut s = Stats::default();
        for table in self.plan.tables() {
            s.isolated_ingress += table.sets["ingress"].elements.len();
            s.isolated_egress += table.sets["egress"].elements.len();
            for name in self.classes.keys() {
                if table.chains.contains_key(name) {
                    s.classes += 1;
                }
            }
            for (set_name, set) in &table.sets {
                let class = match set_name.find("-pods-") {
                    Some(at) => &set_name[..at],
                    None => match set_name
                        .strip_suffix("-any")
                        .or_else(|| set_name.strip_suffix("-nets"))
                    {
                        Some(c) => c,
                        None => continue,
                    },
                };
                if self.classes.contains_key(class) && table.chains.contains_key(class) {
                    s.elements += set.elements.len();
                }
            }
        }
        s.elements += s.isolated_ingress + s.isolated_egress;
        s
    }
}

/// The distinct peer selectors of a class's rules, and for each rule
/// (numbered over the class's policies in order) the index of each of its
/// selectors.
struct PeerIndex {
    sels: Vec<Arc<GroupSel>>,
    rules: Vec<Vec<usize>>,
}

impl PeerIndex {
    fn new(policies: &[PolicyInfo], key: &ClassKey) -> PeerIndex {
        let mut sels: Vec<Arc<GroupSel>> = Vec::new();
        let mut at: HashMap<*const GroupSel, usize> = HashMap::new();
        let mut rules = Vec::new();
        for &pi in &key.policies {
            for rule in policies[pi].rules(key.direction).into_iter().flatten() {
                let mut of_rule = Vec::new();
                if let Peers::Some { sels: s, .. } = &rule.peers {
                    for sel in s {
                        let i = *at.entry(Arc::as_ptr(sel)).or_insert_with(|| {
                            sels.push(sel.clone());
                            sels.len() - 1
                        });
                        of_rule.push(i);
                    }
                }
                rules.push(of_rule);
            }
        }
        PeerIndex { sels, rules }
    }
}

/// How a class's ingress key maps a named port.
fn named_in_key(key: &ClassKey, proto: Protocol, name: &str) -> Option<u16> {
    key.named
        .iter()
        .find(|(p, n, _)| *p == proto && n == name)
        .and_then(|(_, _, port)| *port)
}

/// Which families the members have addresses in.
fn families(members: &BTreeMap<PodKey, Vec<IpAddr>>) -> [bool; 2] {
    let mut out = [false, false];
    for ip in members.values().flatten() {
        out[fam(L3::of(*ip))] = true;
    }
    out
}

/// Ranges as [`super::port_set`] merges them (its key).
fn merge(mut ranges: Ranges) -> Ranges {
    ranges.sort_unstable();
    let mut merged: Ranges = Vec::with_capacity(ranges.len());
    for (proto, lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if last.0 == proto && u32::from(lo) <= u32::from(last.2) + 1 => {
                last.2 = last.2.max(hi)
            }
            _ => merged.push((proto, lo, hi)),
        }
    }
    merged
}

/// Count (or uncount) the peer elements of class `name` that go with
/// each port set.
fn count_refs(table: &Table, name: &str, refs: &mut HashMap<String, usize>, add: bool) {
    for p in class_port_sets(table, name) {
        let n = table.sets[pods_set(name, &p).as_str()].elements.len();
        if add {
            *refs.entry(p).or_default() += n;
        } else if let Some(r) = refs.get_mut(&p) {
            *r = r.saturating_sub(n);
        }
    }
}

fn unref(refs: &mut HashMap<String, usize>, chain: &str) {
    if let Some(n) = refs.get_mut(chain) {
        *n = n.saturating_sub(1);
    }
}
