//! Keeping the kernel in step with a changing cluster: re-plan only the
//! Services a change touches, and send only their chains and elements.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use strait_linux::nft_apply;
use strait_model::{ChangeSet, ClusterState, Kind};

use crate::health::HealthCheck;
use crate::plan::{
    plan_family, service_of, service_problems, slices_of, Family, NodeContext, Protocol,
    ServicePort,
};
use crate::render::{
    affinity_set_type, is_shared_chain, merge, port_id, render_base, render_full, render_port,
    table, Ruleset,
};
use crate::Result;

type ServiceKey = (String, String);

/// What one sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    Full(Duration),
    Partial(Duration),
    Unchanged,
}

/// The proxy: one table per address family, each kept in step on its own.
pub struct ServiceProxy {
    families: [FamilyProxy; 2],
}

impl ServiceProxy {
    pub fn new(ctx: NodeContext) -> ServiceProxy {
        ServiceProxy {
            families: [
                FamilyProxy::new(ctx.clone(), Family::V4),
                FamilyProxy::new(ctx, Family::V6),
            ],
        }
    }

    /// Plan everything and replace the tables.
    pub fn full_sync(&mut self, state: &ClusterState) -> Result<Sync> {
        let started = Instant::now();
        for f in &mut self.families {
            f.full_sync(state)?;
        }
        Ok(Sync::Full(started.elapsed()))
    }

    /// Bring the kernel from `old` to `new`, touching only what changed.
    /// Walks every object to find the changes: sources that know them give
    /// them to [`ServiceProxy::apply_changes`] instead.
    pub fn update(&mut self, old: &ClusterState, new: &ClusterState) -> Result<Sync> {
        self.apply_changes(&old.diff(new), old, new)
    }

    /// Bring the kernel from `old` to `new`, which differ by `changes` (as
    /// the source that made `new` says): only the Services they touch are
    /// planned again.
    pub fn apply_changes(
        &mut self,
        changes: &ChangeSet,
        old: &ClusterState,
        new: &ClusterState,
    ) -> Result<Sync> {
        let started = Instant::now();
        let affected = affected_services(changes, old, new);
        // The sync is as big as the biggest of the families'.
        let (mut full, mut partial) = (false, false);
        for f in &mut self.families {
            match f.update(new, &affected)? {
                Sync::Full(_) => full = true,
                Sync::Partial(_) => partial = true,
                Sync::Unchanged => {}
            }
        }
        Ok(if full {
            Sync::Full(started.elapsed())
        } else if partial {
            Sync::Partial(started.elapsed())
        } else {
            Sync::Unchanged
        })
    }

    /// The health checks to serve now (one per Service, whatever its families).
    pub fn health_checks(&self) -> Vec<HealthCheck> {
        let mut by_service: BTreeMap<ServiceKey, HealthCheck> = BTreeMap::new();
        for f in &self.families {
            for (key, hc) in &f.health {
                let entry = by_service.entry(key.clone()).or_insert_with(|| hc.clone());
                entry.local_endpoints = entry.local_endpoints.max(hc.local_endpoints);
            }
        }
        by_service.into_values().collect()
    }

    /// Service ports, chains and map elements programmed (both families).
    pub fn stats(&self) -> (usize, usize, usize) {
        self.families
            .iter()
            .map(FamilyProxy::stats)
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }

    /// How the last partial syncs reached the kernel: "netlink", "nft",
    /// or both ("netlink+nft") when both families changed.
    pub fn last_path(&self) -> &'static str {
        match (self.families[0].last_path, self.families[1].last_path) {
            (a, "none") => a,
            ("none", b) => b,
            (a, b) if a == b => a,
            _ => "netlink+nft",
        }
    }

    /// The Services that are not programmed, or programmed with their load
    /// balancer kept closed, and why (`field: why` lines), both families.
    pub fn service_errors(&self) -> BTreeMap<ServiceKey, Vec<String>> {
        let mut out: BTreeMap<ServiceKey, Vec<String>> = BTreeMap::new();
        for f in &self.families {
            let refused = f.refused.iter().map(|(k, why)| {
                (
                    k,
                    format!("not programmed in table {}: {why}", table(f.family)),
                )
            });
            let problems = f
                .problems
                .iter()
                .flat_map(|(k, ps)| ps.iter().map(move |p| (k, p.clone())));
            for (key, why) in refused.chain(problems) {
                let list = out.entry(key.clone()).or_default();
                if !list.contains(&why) {
                    list.push(why);
                }
            }
        }
        out
    }

    /// conntrack deletions that failed so far (each is retried).
    pub fn conntrack_failures(&self) -> u64 {
        self.families.iter().map(|f| f.conntrack_failures).sum()
    }

    /// Remove strait's tables (`strait proxy --cleanup`). Missing is fine.
    pub fn cleanup() -> Result<()> {
        let mut script = String::new();
        for family in Family::ALL {
            let t = table(family);
            script.push_str(&format!("add table {t}\ndelete table {t}\n"));
        }
        nft_apply(&script)?;
        Ok(())
    }
}

/// The proxy's memory of what the kernel holds in one family's table, per Service.
struct FamilyProxy {
    ctx: NodeContext,
    family: Family,
    /// Whether the table may exist (a family nothing uses gets none).
    has_table: bool,
    fragments: BTreeMap<ServiceKey, Ruleset>,
    health: BTreeMap<ServiceKey, HealthCheck>,
    planned: BTreeMap<ServiceKey, Vec<ServicePort>>,
    /// Every element with its value and how many Services want it (several
    /// Services may share a hairpin pair or a ClusterIP).
    elements: BTreeMap<(&'static str, String), (String, u32)>,
    in_kernel: bool,
    /// The long-lived socket for partial syncs, opened on first use.
    netlink: Option<strait_linux::NfNetlink>,
    /// How the last partial sync went in: "netlink" or "nft".
    last_path: &'static str,
    /// The shared `*-dnat-N` chains the kernel has.
    shared_chains: BTreeSet<String>,
    /// Services not programmed, and why: the kernel refused their rules, or
    /// their chain ids collide. Retried whenever anything changes.
    refused: BTreeMap<ServiceKey, String>,
    /// What could not be read in programmed Services (their LB kept closed).
    problems: BTreeMap<ServiceKey, Vec<String>>,
    /// Which Service owns each chain id, to catch collisions.
    id_owner: HashMap<String, ServiceKey>,
    ids_of: BTreeMap<ServiceKey, Vec<String>>,
    /// conntrack deletions not done yet (conntrack failed): retried on the
    /// next sync, so no stale UDP flow is forgotten.
    conntrack_pending: Vec<Vec<String>>,
    conntrack_failures: u64,
}

/// A Service's new rules (`None`: it has none any more).
type Change = (ServiceKey, Option<Ruleset>);

impl FamilyProxy {
    fn new(ctx: NodeContext, family: Family) -> FamilyProxy {
        FamilyProxy {
            ctx,
            family,
            // Unknown until the first sync: a table left by an earlier run
            // that this cluster no longer needs is removed then.
            has_table: true,
            fragments: BTreeMap::new(),
            health: BTreeMap::new(),
            planned: BTreeMap::new(),
            elements: BTreeMap::new(),
            in_kernel: false,
            netlink: None,
            last_path: "none",
            shared_chains: BTreeSet::new(),
            refused: BTreeMap::new(),
            problems: BTreeMap::new(),
            id_owner: HashMap::new(),
            ids_of: BTreeMap::new(),
            conntrack_pending: Vec::new(),
            conntrack_failures: 0,
        }
    }

    fn base(&self) -> Ruleset {
        render_base(
            &self.ctx.cluster_cidrs,
            &self.ctx.service_cidrs,
            &self.ctx.nodeport_networks(),
            self.family,
        )
    }

    /// The whole ruleset this family wants.
    fn ruleset(&self) -> Ruleset {
        let mut rs = self.base();
        for f in self.fragments.values() {
            merge(&mut rs, f.clone());
        }
        rs
    }

    /// Whether a pod network of this family is known (outsiders are then
    /// masqueraded).
    fn has_pod_network(&self) -> bool {
        self.ctx
            .cluster_cidrs
            .iter()
            .any(|c| Family::of(c.addr()) == self.family)
    }

    /// Whether this family needs its table: IPv4 always (as `--dry-run`
    /// shows), IPv6 once a pod network or a Service is in it.
    fn in_use(&self) -> bool {
        self.family == Family::V4
            || self.has_pod_network()
            || self.planned.values().any(|p| !p.is_empty())
    }

    /// Forget what was planned for a Service that is not programmed.
    fn forget(&mut self, key: &ServiceKey) {
        self.health.remove(key);
        self.planned.remove(key);
        self.problems.remove(key);
        for id in self.ids_of.remove(key).unwrap_or_default() {
            if self.id_owner.get(&id) == Some(key) {
                self.id_owner.remove(&id);
            }
        }
    }

    /// Plan one Service: its rules, and remember its health check and size.
    /// `None` when it has no rules (gone) or cannot have any (refused).
    fn fragment(&mut self, state: &ClusterState, key: &ServiceKey) -> Option<Ruleset> {
        self.forget(key);
        self.refused.remove(key);
        let service = state.services.get(&key.0, &key.1)?;
        let slices = slices_of(state, &key.0, &key.1);
        let masq = self.has_pod_network();
        let ports = plan_family(service, &slices, &self.ctx, self.family);
        let ids: BTreeSet<String> = ports.iter().map(port_id).collect();
        if let Some((id, other)) = ids
            .iter()
            .find_map(|id| self.id_owner.get(id).map(|o| (id, o)))
        {
            let why = format!(
                "its chain id {id} collides with Service {:?}/{:?}",
                other.0, other.1
            );
            self.refuse(key, why);
            return None;
        }
        for id in &ids {
            self.id_owner.insert(id.clone(), key.clone());
        }
        self.ids_of.insert(key.clone(), ids.into_iter().collect());
        let problems = service_problems(service);
        if !problems.is_empty() && !ports.is_empty() {
            self.problems.insert(key.clone(), problems);
        }
        let mut rs = Ruleset {
            family: self.family,
            ..Ruleset::default()
        };
        self.planned.insert(key.clone(), ports.clone());
        for sp in ports {
            if let Some(port) = sp.health_check_node_port {
                self.health.insert(
                    key.clone(),
                    HealthCheck {
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                        port,
                        local_endpoints: sp.local_endpoints.len(),
                    },
                );
            }
            merge(&mut rs, render_port(&sp, masq));
        }
        rs.elements.retain(|_, e| !e.is_empty());
        Some(rs)
    }

    /// Report a Service that is not programmed.
    fn refuse(&mut self, key: &ServiceKey, why: String) {
        tracing::error!(
            "Service {:?}/{:?} is not programmed ({} table): {why}",
            key.0,
            key.1,
            table(self.family)
        );
        self.forget(key);
        self.refused.insert(key.clone(), why);
    }

    /// Service ports, per-service chains and map elements programmed.
    fn stats(&self) -> (usize, usize, usize) {
        let chains = self
            .fragments
            .values()
            .flat_map(|f| f.chains.keys())
            .filter(|n| !is_shared_chain(n))
            .count()
            + self.shared_chains.len();
        (
            self.planned.values().map(Vec::len).sum(),
            chains,
            self.elements.len(),
        )
    }

    /// Plan everything and replace the whole table. When the kernel refuses
    /// the whole, the Services go in group by group, halving the groups
    /// it refuses, so that only the Services it refuses alone are left out.
    fn full_sync(&mut self, state: &ClusterState) -> Result<Sync> {
        let started = Instant::now();
        self.fragments.clear();
        self.elements.clear();
        self.health.clear();
        self.planned.clear();
        self.problems.clear();
        self.refused.clear();
        self.id_owner.clear();
        self.ids_of.clear();
        for service in state.services.iter() {
            let key = (
                service.metadata.namespace.clone().unwrap_or_default(),
                service.metadata.name.clone().unwrap_or_default(),
            );
            if let Some(f) = self.fragment(state, &key) {
                self.count(&f, 1);
                self.fragments.insert(key, f);
            }
        }
        self.in_kernel = false;
        let ruleset = self.ruleset();
        if self.in_use() {
            if let Err(e) = nft_apply(&render_full(&ruleset)) {
                tracing::warn!(
                    "the kernel refused the whole {} table ({e}); programming Services in groups to find which",
                    table(self.family)
                );
                // The table without Services first: if even that fails the
                // problem is not a Service's.
                let fresh: Vec<Change> = std::mem::take(&mut self.fragments)
                    .into_iter()
                    .map(|(k, f)| (k, Some(f)))
                    .collect();
                self.elements.clear();
                nft_apply(&render_full(&self.base()))?;
                self.shared_chains.clear();
                self.has_table = true;
                self.in_kernel = true;
                self.program(fresh);
                return Ok(Sync::Full(started.elapsed()));
            }
            self.has_table = true;
        } else if self.has_table {
            let t = table(self.family);
            nft_apply(&format!("add table {t}\ndelete table {t}\n"))?;
            self.has_table = false;
        }
        self.shared_chains = ruleset
            .chains
            .keys()
            .filter(|n| is_shared_chain(n))
            .cloned()
            .collect();
        self.in_kernel = true;
        Ok(Sync::Full(started.elapsed()))
    }

    fn count(&mut self, f: &Ruleset, delta: i32) {
        for (set, elements) in &f.elements {
            for (k, v) in elements {
                let entry = self
                    .elements
                    .entry((set, k.clone()))
                    .or_insert((v.clone(), 0));
                entry.1 = (entry.1 as i32 + delta).max(0) as u32;
                if delta > 0 {
                    entry.0 = v.clone();
                }
            }
        }
    }

    /// Bring the kernel to `new` for the `affected` Services (and retry
    /// those refused before). A Service the kernel refuses is left out and
    /// reported; the others are programmed.
    fn update(&mut self, new: &ClusterState, affected: &BTreeSet<ServiceKey>) -> Result<Sync> {
        if !self.in_kernel {
            return self.full_sync(new);
        }
        let started = Instant::now();
        if affected.is_empty() {
            return Ok(Sync::Unchanged);
        }
        let mut affected = affected.clone();
        affected.extend(self.refused.keys().cloned());
        let planned_before: Vec<ServicePort> = affected
            .iter()
            .filter_map(|k| self.planned.get(k))
            .flatten()
            .cloned()
            .collect();
        let fresh: Vec<Change> = affected
            .iter()
            .map(|k| (k.clone(), self.fragment(new, k)))
            .collect();
        if !self.has_table && self.in_use() {
            // The family's first Service: the table is made whole.
            return self.full_sync(new);
        }
        let changed = match self.try_apply(&fresh) {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(
                    "the kernel refused a partial sync of {} Service(s) ({e}); applying them in groups to find which",
                    fresh.len()
                );
                self.program(fresh);
                true
            }
        };
        let planned_after: Vec<&ServicePort> = affected
            .iter()
            .filter_map(|k| self.planned.get(k))
            .flatten()
            .collect();
        let elapsed = started.elapsed();
        let mut deletions = std::mem::take(&mut self.conntrack_pending);
        deletions.extend(stale_udp_flows(&planned_before, &planned_after));
        self.clear_conntrack(deletions);
        if !changed {
            return Ok(Sync::Unchanged);
        }
        Ok(Sync::Partial(elapsed))
    }

    /// Apply `changes` in groups: a group the kernel refuses is halved until
    /// each Service it refuses alone is reported and left out.
    fn program(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let Err(e) = self.try_apply(&changes) else {
            return;
        };
        if changes.len() > 1 {
            let mut first = changes;
            let second = first.split_off(first.len() / 2);
            self.program(first);
            self.program(second);
            return;
        }
        let (key, _) = changes.into_iter().next().expect("one change");
        self.refuse(&key, format!("the kernel refused its rules: {e}"));
        // Its old rules go too, so that what runs matches what is reported.
        if self.fragments.contains_key(&key) {
            if let Err(e) = self.try_apply(&[(key.clone(), None)]) {
                tracing::warn!(
                    "cannot remove the old rules of Service {:?}/{:?}: {e}",
                    key.0,
                    key.1
                );
            }
        }
    }

    /// Apply `changes` as one transaction, or nothing: on failure the
    /// proxy's memory is as before. Whether anything was sent.
    fn try_apply(&mut self, changes: &[Change]) -> Result<bool> {
        let mut before = Ruleset::default();
        let mut after = Ruleset::default();
        let mut touched: BTreeSet<(&'static str, String)> = BTreeSet::new();
        for (key, new_f) in changes {
            let old_f = self.fragments.get(key).cloned().unwrap_or_default();
            for f in [Some(&old_f), new_f.as_ref()].into_iter().flatten() {
                for (set, els) in &f.elements {
                    touched.extend(els.keys().map(|k| (*set, k.clone())));
                }
            }
            merge(&mut before, old_f);
            if let Some(f) = new_f {
                merge(&mut after, f.clone());
            }
        }
        // The reference counts before, of the elements these Services touch.
        let elements_before: BTreeMap<(&'static str, String), (String, u32)> = touched
            .iter()
            .filter_map(|k| self.elements.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        for (key, new_f) in changes {
            if let Some(old_f) = self.fragments.get(key).cloned() {
                self.count(&old_f, -1);
            }
            if let Some(f) = new_f {
                self.count(f, 1);
            }
        }
        let mut shared_before = self.shared_chains.clone();
        let ops = diff_ops(
            &before,
            &after,
            &elements_before,
            &mut self.elements,
            &mut self.shared_chains,
        );
        // New shared chains go first, on their own: nft cannot add their
        // rules to a table it reads back (`conflicting protocols specified:
        // ip vs. th`), so they must never ride in an nft script, and
        // unused they are harmless.
        let (shared_ops, ops): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| match op {
            Op::AddChain(c) | Op::AddRule { chain: c, .. } => is_shared_chain(c),
            _ => false,
        });
        let mut result = Ok(());
        if !shared_ops.is_empty() {
            result = self.apply_ops(&shared_ops);
            if result.is_ok() {
                shared_before = self.shared_chains.clone();
            }
        }
        if result.is_ok() && !ops.is_empty() {
            result = self.apply_ops(&ops);
        }
        if let Err(e) = result {
            for k in touched {
                match elements_before.get(&k) {
                    Some(v) => {
                        self.elements.insert(k, v.clone());
                    }
                    None => {
                        self.elements.remove(&k);
                    }
                }
            }
            self.shared_chains = shared_before;
            return Err(e);
        }
        for (key, new_f) in changes {
            match new_f {
                Some(f) => {
                    self.fragments.insert(key.clone(), f.clone());
                }
                None => {
                    self.fragments.remove(key);
                }
            }
        }
        Ok(!shared_ops.is_empty() || !ops.is_empty())
    }

    /// Over the long-lived netlink socket when every step can be encoded
    /// there, else through `nft`.
    fn apply_ops(&mut self, ops: &[Op]) -> Result<()> {
        if let Some(batch) = crate::netlink::batch(ops, self.family) {
            if self.netlink.is_none() {
                self.netlink = Some(strait_linux::NfNetlink::open()?);
            }
            let socket = self.netlink.as_mut().expect("opened above");
            match socket.apply(&batch) {
                Ok(()) => {
                    self.last_path = "netlink";
                    return Ok(());
                }
                // The batch was refused whole: nothing changed; try nft, which
                // reports the problem in its own words.
                Err(e) => tracing::warn!("netlink batch refused ({e}); retrying through nft"),
            }
        }
        nft_apply(&ops_text(ops, self.family))?;
        self.last_path = "nft";
        Ok(())
    }

    /// Delete conntrack entries; what fails is reported, counted and kept
    /// for the next sync (at most [`CONNTRACK_PENDING_MAX`]).
    fn clear_conntrack(&mut self, deletions: Vec<Vec<String>>) {
        for args in deletions {
            if let Err(e) = run_conntrack(&args) {
                self.conntrack_failures += 1;
                tracing::warn!(
                    "conntrack -D -p udp {} failed, retried at the next sync: {e}",
                    args.join(" ")
                );
                self.conntrack_pending.push(args);
            }
        }
        if self.conntrack_pending.len() > CONNTRACK_PENDING_MAX {
            let dropped = self.conntrack_pending.len() - CONNTRACK_PENDING_MAX;
            tracing::error!("{dropped} conntrack deletion(s) given up: conntrack keeps failing");
            self.conntrack_pending.drain(..dropped);
        }
    }
}

/// How many failed conntrack deletions wait for a retry.
const CONNTRACK_PENDING_MAX: usize = 4096;

/// The Services whose rules a change set may alter.
fn affected_services(
    changes: &ChangeSet,
    old: &ClusterState,
    new: &ClusterState,
) -> BTreeSet<ServiceKey> {
    let mut out = BTreeSet::new();
    for change in &changes.changes {
        let key = change.key();
        match key.kind {
            Kind::Service => {
                out.insert((key.namespace.clone(), key.name.clone()));
            }
            Kind::EndpointSlice => {
                for state in [old, new] {
                    if let Some(slice) = state.endpoint_slices.get(&key.namespace, &key.name) {
                        out.extend(service_of(slice));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// One step of a partial sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddSet {
        name: String,
        timeout: u32,
    },
    AddChain(String),
    FlushChain(String),
    AddRule {
        chain: String,
        rule: String,
    },
    DeleteElements {
        set: &'static str,
        keys: Vec<String>,
    },
    AddElements {
        set: &'static str,
        elements: Vec<(String, String)>,
    },
    DeleteChain(String),
    DeleteSet(String),
}

/// The ops as an nft script (the fallback, and what a human reads).
pub fn ops_text(ops: &[Op], family: Family) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let table = table(family);
    for op in ops {
        let _ = match op {
            Op::AddSet { name, timeout } => writeln!(
                out,
                "add set {table} {name} {{ {} }}",
                affinity_set_type(family, *timeout)
            ),
            Op::AddChain(c) => writeln!(out, "add chain {table} {c}"),
            Op::FlushChain(c) => writeln!(out, "flush chain {table} {c}"),
            Op::AddRule { chain, rule } => writeln!(out, "add rule {table} {chain} {rule}"),
            Op::DeleteElements { set, keys } => writeln!(
                out,
                "delete element {table} {set} {{ {} }}",
                keys.join(", ")
            ),
            Op::AddElements { set, elements } => {
                let list: Vec<String> = elements
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() {
                            k.clone()
                        } else {
                            format!("{k} : {v}")
                        }
                    })
                    .collect();
                writeln!(out, "add element {table} {set} {{ {} }}", list.join(", "))
            }
            Op::DeleteChain(c) => writeln!(out, "delete chain {table} {c}"),
            Op::DeleteSet(s) => writeln!(out, "delete set {table} {s}"),
        };
    }
    out
}

/// The steps from `before` to `after` (the fragments of the changed
/// Services). Elements go by reference count: one is deleted only when no
/// Service wants it any more, added only when the first one does. Order
/// matters: what is jumped to exists first; nothing is deleted while used.
fn diff_ops(
    before: &Ruleset,
    after: &Ruleset,
    elements_before: &BTreeMap<(&'static str, String), (String, u32)>,
    elements_now: &mut BTreeMap<(&'static str, String), (String, u32)>,
    shared_in_kernel: &mut BTreeSet<String>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for (name, timeout) in &after.affinity_sets {
        if !before.affinity_sets.contains_key(name) {
            ops.push(Op::AddSet {
                name: name.clone(),
                timeout: *timeout,
            });
        }
    }
    let order = |name: &str| match name.split('-').next() {
        Some("ep") => 0,
        Some("svc" | "local") => 1,
        _ => 2,
    };
    // Shared chains depend only on their name: added once, kept (a full
    // sync drops the unused ones).
    for (name, rules) in after.chains.iter().filter(|(n, _)| is_shared_chain(n)) {
        if shared_in_kernel.insert(name.clone()) {
            ops.push(Op::AddChain(name.clone()));
            for rule in rules {
                ops.push(Op::AddRule {
                    chain: name.clone(),
                    rule: rule.clone(),
                });
            }
        }
    }
    let mut changed: Vec<(&String, &Vec<String>)> = after
        .chains
        .iter()
        .filter(|(n, r)| !is_shared_chain(n) && before.chains.get(*n) != Some(r))
        .collect();
    changed.sort_by_key(|(n, _)| order(n));
    for (name, rules) in &changed {
        ops.push(if before.chains.contains_key(*name) {
            Op::FlushChain((*name).clone())
        } else {
            Op::AddChain((*name).clone())
        });
        for rule in rules.iter() {
            ops.push(Op::AddRule {
                chain: (*name).clone(),
                rule: rule.clone(),
            });
        }
    }
    let touched: BTreeSet<(&'static str, String)> = before
        .elements
        .iter()
        .chain(after.elements.iter())
        .flat_map(|(set, els)| els.keys().map(move |k| (*set, k.clone())))
        .collect();
    let mut deletes: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut adds: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
    for key in touched {
        // Forget what no Service wants any more (only these can have dropped to 0).
        if elements_now.get(&key).is_some_and(|(_, n)| *n == 0) {
            elements_now.remove(&key);
        }
        let was = elements_before
            .get(&key)
            .filter(|(_, n)| *n > 0)
            .map(|(v, _)| v.clone());
        let is = elements_now
            .get(&key)
            .filter(|(_, n)| *n > 0)
            .map(|(v, _)| v.clone());
        if was == is {
            continue;
        }
        if was.is_some() {
            deletes.entry(key.0).or_default().push(key.1.clone());
        }
        if let Some(v) = is {
            adds.entry(key.0).or_default().push((key.1.clone(), v));
        }
    }
    for (set, keys) in deletes {
        ops.push(Op::DeleteElements { set, keys });
    }
    for (set, elements) in adds {
        ops.push(Op::AddElements { set, elements });
    }
    let mut removed: Vec<&String> = before
        .chains
        .keys()
        .filter(|n| !is_shared_chain(n) && !after.chains.contains_key(*n))
        .collect();
    removed.sort_by_key(|n| std::cmp::Reverse(order(n)));
    for name in removed.iter().filter(|n| order(n) == 2) {
        ops.push(Op::DeleteChain((*name).clone()));
    }
    for name in removed.iter().filter(|n| order(n) < 2) {
        // Flushed first: a service chain may jump to an endpoint chain deleted below.
        ops.push(Op::FlushChain((*name).clone()));
    }
    for name in removed.iter().filter(|n| order(n) < 2) {
        ops.push(Op::DeleteChain((*name).clone()));
    }
    for name in before
        .affinity_sets
        .keys()
        .filter(|n| !after.affinity_sets.contains_key(*n))
    {
        ops.push(Op::DeleteSet(name.clone()));
    }
    ops
}

/// UDP has no connection to end: conntrack keeps sending a client's packets
/// to the endpoint it first got. When an endpoint leaves a UDP Service, or a
/// Service gets its first endpoint (its rejects may be cached), those entries
/// are deleted so that the next packet is balanced afresh — as kube-proxy does.
/// The `conntrack -D -p udp` arguments for that.
fn stale_udp_flows(before: &[ServicePort], after: &[&ServicePort]) -> Vec<Vec<String>> {
    let key = |sp: &ServicePort| (sp.namespace.clone(), sp.name.clone(), sp.port_name.clone());
    let mut deletions: Vec<Vec<String>> = Vec::new();
    for old in before.iter().filter(|sp| sp.protocol == Protocol::Udp) {
        let new = after.iter().find(|sp| key(sp) == key(old));
        let remaining: Vec<std::net::IpAddr> = new
            .map(|sp| sp.all_endpoints.iter().map(|e| e.ip).collect())
            .unwrap_or_default();
        let vips: Vec<String> = old
            .cluster_ip
            .iter()
            .chain(&old.external_ips)
            .chain(&old.load_balancer_ips)
            .map(ToString::to_string)
            .collect();
        for gone in old
            .all_endpoints
            .iter()
            .filter(|e| !remaining.contains(&e.ip))
        {
            for vip in &vips {
                deletions.push(vec![
                    "--orig-dst".into(),
                    vip.clone(),
                    "--reply-src".into(),
                    gone.ip.to_string(),
                ]);
            }
            if let Some(np) = old.node_port {
                deletions.push(vec![
                    "--orig-port-dst".into(),
                    np.to_string(),
                    "--reply-src".into(),
                    gone.ip.to_string(),
                ]);
            }
        }
    }
    for new in after
        .iter()
        .filter(|sp| sp.protocol == Protocol::Udp && sp.has_endpoints)
    {
        let had = before
            .iter()
            .any(|sp| key(sp) == key(new) && sp.has_endpoints);
        if !had {
            for vip in new
                .cluster_ip
                .iter()
                .chain(&new.external_ips)
                .chain(&new.load_balancer_ips)
            {
                deletions.push(vec!["--orig-dst".into(), vip.to_string()]);
            }
        }
    }
    deletions
}

/// One `conntrack -D -p udp ARGS`. Exit 1 with "0 flow entries" just means
/// there was nothing to delete; anything else is a failure.
fn run_conntrack(args: &[String]) -> std::result::Result<(), String> {
    let v6 = args.iter().any(|a| a.contains(':'));
    let out = std::process::Command::new("conntrack")
        .args(["-D", "-p", "udp"])
        .args(if v6 { &["-f", "ipv6"][..] } else { &[] })
        .args(args)
        .output()
        .map_err(|e| format!("cannot run conntrack (apt-get install conntrack): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains(" 0 flow entries") {
        Ok(())
    } else {
        Err(format!("{}: {}", out.status, stderr.trim()))
    }
}
