//! Keeping the kernel in step with a changing cluster: re-plan only the
//! Services a change touches, and send only their chains and elements, as
//! one [`strait_nft::Transaction`]: over a netlink socket kept open, or
//! through `nft -f` of its text when netlink does not take it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_linux::nft_apply;
use strait_model::{ChangeSet, ClusterState, Kind};
use strait_nft::netlink::Socket;
use strait_nft::{text, Chain, Element, Op, Rule, Table, Transaction, Value};

use crate::health::HealthCheck;
use crate::plan::{
    plan_family, service_of, service_problems, slices_of, Family, NodeContext, Protocol,
    ServicePort,
};
use crate::render::{
    affinity_set, into_table, is_shared_chain, merge, nft_family, port_id, render_base,
    render_port, table, to_table, Ruleset, TABLE_NAME,
};
use crate::{Error, Result};

type ServiceKey = (String, String);

/// One Service's plan in one family: its ports, shared between what is
/// planned and what is programmed.
type Plan = Arc<[ServicePort]>;

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
        let mut socket = None;
        for family in Family::ALL {
            apply(&mut socket, &remove_table(family))?;
        }
        Ok(())
    }
}

/// The proxy's memory of what the kernel holds in one family's table, per Service.
struct FamilyProxy {
    ctx: NodeContext,
    family: Family,
    /// Whether the table may exist (a family nothing uses gets none).
    has_table: bool,
    /// The plan whose rules the kernel holds, per Service. Its rules are
    /// rendered again when a partial sync diffs them (rendering is
    /// deterministic, and the node context never changes): keeping every
    /// Service's rendered rules instead cost ~130 MB at 10k Services.
    programmed: BTreeMap<ServiceKey, Plan>,
    /// Per-service chains the programmed rules have (shared ones apart).
    chain_count: usize,
    health: BTreeMap<ServiceKey, HealthCheck>,
    planned: BTreeMap<ServiceKey, Plan>,
    /// How many Services want each element (several Services may share a
    /// hairpin pair, or claim the same address).
    elements: ElementCounts,
    in_kernel: bool,
    /// The long-lived socket for partial syncs, opened on first use.
    netlink: Option<Socket>,
    /// How the last partial sync went in: "netlink" or "nft".
    last_path: &'static str,
    /// The shared `*-dnat-N` chains the kernel has.
    shared_chains: BTreeMap<String, Chain>,
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

/// A Service's new plan (`None`: it has no rules any more).
type Change = (ServiceKey, Option<Plan>);

/// An element of a set or map of the table.
type ElementKey = (&'static str, Vec<Value>);

/// An element's set and key, packed into bytes (see [`packed`]): a tenth of
/// the typed key's heap. The proxy remembers one per element programmed
/// (120k at 10k Services × 5 endpoints).
type PackedKey = Box<[u8]>;

/// How many Services want each element. The values are not kept: those
/// of the Services a sync changes are rendered again.
type ElementCounts = HashMap<PackedKey, u32>;

/// An element's set and key as bytes, one to one: the set's name, then
/// each value with a tag that says how long it is.
fn packed(set: &str, key: &[Value]) -> PackedKey {
    let mut out = Vec::with_capacity(set.len() + 1 + key.len() * 6);
    out.extend_from_slice(set.as_bytes());
    out.push(0);
    let addr = |out: &mut Vec<u8>, ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    };
    for v in key {
        match v {
            Value::Addr(ip) => {
                out.push(1);
                addr(&mut out, ip);
            }
            Value::Net(net) => {
                out.push(2);
                addr(&mut out, &net.addr());
                out.push(net.prefix_len());
            }
            Value::Proto(p) => out.extend_from_slice(&[3, *p]),
            Value::Port(p) => {
                out.push(4);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Value::PortRange(a, b) => {
                out.push(5);
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
            Value::Number(n) | Value::Mark(n) | Value::CtState(n) | Value::CtStatus(n) => {
                let tag = match v {
                    Value::Number(_) => 6,
                    Value::Mark(_) => 7,
                    Value::CtState(_) => 8,
                    _ => 9,
                };
                out.push(tag);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::AddrType(t) => out.extend_from_slice(&[10, *t]),
            Value::NfProto(l3) => out.extend_from_slice(&[
                11,
                match l3 {
                    strait_nft::L3::V4 => 4,
                    strait_nft::L3::V6 => 6,
                },
            ]),
            Value::Ifname(name) => {
                out.push(12);
                out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(name.as_bytes());
            }
        }
    }
    out.into_boxed_slice()
}

impl FamilyProxy {
    fn new(ctx: NodeContext, family: Family) -> FamilyProxy {
        FamilyProxy {
            ctx,
            family,
            // Unknown until the first sync: a table left by an earlier run
            // that this cluster no longer needs is removed then.
            has_table: true,
            programmed: BTreeMap::new(),
            chain_count: 0,
            health: BTreeMap::new(),
            planned: BTreeMap::new(),
            elements: HashMap::new(),
            in_kernel: false,
            netlink: None,
            last_path: "none",
            shared_chains: BTreeMap::new(),
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

    /// The rules of one Service's plan, exactly as they were rendered when
    /// it was programmed: [`render_port`] depends on the port and on the
    /// node context only.
    fn render(&self, ports: &[ServicePort]) -> Ruleset {
        let masq = self.has_pod_network();
        let mut rs = Ruleset {
            family: self.family,
            ..Ruleset::default()
        };
        for sp in ports {
            merge(&mut rs, render_port(sp, masq));
        }
        rs.elements.retain(|_, e| !e.is_empty());
        rs
    }

    /// The rules of every programmed Service, in one ruleset.
    fn render_programmed(&self) -> Ruleset {
        let mut all = Ruleset {
            family: self.family,
            ..Ruleset::default()
        };
        for ports in self.programmed.values() {
            merge(&mut all, self.render(ports));
        }
        all
    }

    /// The whole table this family wants: `services` (the rules of the
    /// programmed Services) and `shared`, shared chains no Service uses
    /// any more but the kernel has.
    fn table_with(&self, services: Ruleset, shared: &BTreeMap<String, Chain>) -> Table {
        let base = self.base();
        let kept = Ruleset {
            family: self.family,
            chains: shared.clone(),
            ..Ruleset::default()
        };
        into_table(self.family, [base, kept, services])
    }

    /// The whole table this family wants, rendered from the programmed plans.
    fn table(&self, shared: &BTreeMap<String, Chain>) -> Table {
        self.table_with(self.render_programmed(), shared)
    }

    /// Whether Services' rules can go to the kernel: every name an
    /// nftables name, every chain and set they name there, every element of
    /// its set's shape. Checked with the skeleton around them. Our own
    /// names and parsed values: never seen failing; a Service that would
    /// is refused like one the kernel refuses.
    fn check(&self, rules: &Ruleset) -> Result<()> {
        to_table(self.family, [rules]).validate()?;
        Ok(())
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

    /// Plan one Service, and remember its health check and size. `None`
    /// when it has no rules (gone) or cannot have any (refused).
    fn fragment(&mut self, state: &ClusterState, key: &ServiceKey) -> Option<Plan> {
        self.forget(key);
        self.refused.remove(key);
        let service = state.services.get(&key.0, &key.1)?;
        let slices = slices_of(state, &key.0, &key.1);
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
        for sp in &ports {
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
        }
        let ports: Plan = ports.into();
        self.planned.insert(key.clone(), ports.clone());
        Some(ports)
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
        (
            self.planned.values().map(|p| p.len()).sum(),
            self.chain_count + self.shared_chains.len(),
            self.elements.len(),
        )
    }

    /// Plan everything and replace the whole table. When the kernel refuses
    /// the whole, the Services go in group by group, halving the groups
    /// it refuses, so that only the Services it refuses alone are left out.
    fn full_sync(&mut self, state: &ClusterState) -> Result<Sync> {
        let started = Instant::now();
        self.programmed.clear();
        self.chain_count = 0;
        self.elements.clear();
        self.health.clear();
        self.planned.clear();
        self.problems.clear();
        self.refused.clear();
        self.id_owner.clear();
        self.ids_of.clear();
        // Every Service's rules go into one ruleset as they are rendered;
        // only their plans are kept.
        let mut all = Ruleset {
            family: self.family,
            ..Ruleset::default()
        };
        for service in state.services.iter() {
            let key = (
                service.metadata.namespace.clone().unwrap_or_default(),
                service.metadata.name.clone().unwrap_or_default(),
            );
            if let Some(ports) = self.fragment(state, &key) {
                let rules = self.render(&ports);
                self.count(&rules, 1);
                merge(&mut all, rules);
                self.programmed.insert(key, ports);
            }
        }
        self.in_kernel = false;
        let whole = self.table_with(all, &BTreeMap::new());
        if self.in_use() {
            let applied = whole.validate().map_err(Error::from);
            if let Err(e) = applied.and_then(|()| self.replace(&whole)) {
                tracing::warn!(
                    "the kernel refused the whole {} table ({e}); programming Services in groups to find which",
                    table(self.family)
                );
                // The table without Services first: if even that fails the
                // problem is not a Service's.
                let fresh: Vec<Change> = std::mem::take(&mut self.programmed)
                    .into_iter()
                    .map(|(k, f)| (k, Some(f)))
                    .collect();
                self.elements.clear();
                self.chain_count = 0;
                self.replace(&self.table(&BTreeMap::new()))?;
                self.shared_chains.clear();
                self.has_table = true;
                self.in_kernel = true;
                self.program(fresh);
                return Ok(Sync::Full(started.elapsed()));
            }
            self.has_table = true;
        } else if self.has_table {
            apply(&mut self.netlink, &remove_table(self.family))?;
            self.has_table = false;
        }
        self.shared_chains = whole
            .chains
            .into_iter()
            .filter(|(n, _)| is_shared_chain(n))
            .collect();
        self.in_kernel = true;
        Ok(Sync::Full(started.elapsed()))
    }

    /// Count a Service's rules in (`delta` 1) or out (-1): its elements,
    /// and its own chains.
    fn count(&mut self, f: &Ruleset, delta: i32) {
        let own = f.chains.keys().filter(|n| !is_shared_chain(n)).count();
        if delta > 0 {
            self.chain_count += own;
        } else {
            self.chain_count = self.chain_count.saturating_sub(own);
        }
        for (set, elements) in &f.elements {
            for k in elements.keys() {
                let entry = self.elements.entry(packed(set, k)).or_insert(0);
                *entry = (*entry as i32 + delta).max(0) as u32;
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
            .flat_map(|p| p.iter())
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
            .flat_map(|p| p.iter())
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
        if self.programmed.contains_key(&key) {
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
        // The rules the kernel has for these Services, rendered again from
        // their programmed plans, and the rules they get.
        let rendered: Vec<(Option<Ruleset>, Option<Ruleset>)> = changes
            .iter()
            .map(|(key, new)| {
                let old = self.programmed.get(key).map(|p| self.render(p));
                (old, new.as_ref().map(|p| self.render(p)))
            })
            .collect();
        let mut before = Ruleset::default();
        let mut after = Ruleset::default();
        let mut touched: BTreeSet<ElementKey> = BTreeSet::new();
        for (old_f, new_f) in &rendered {
            for f in [old_f, new_f].into_iter().flatten() {
                for (set, els) in &f.elements {
                    touched.extend(els.keys().map(|k| (*set, k.clone())));
                }
            }
            if let Some(f) = new_f {
                merge(&mut after, f.clone());
            }
        }
        self.check(&after)?;
        // The reference counts before, of the elements these Services touch.
        let elements_before: ElementCounts = touched
            .iter()
            .map(|(set, k)| packed(set, k))
            .filter_map(|k| self.elements.get(&k).map(|n| (k, *n)))
            .collect();
        let chains_before = self.chain_count;
        for (old_f, new_f) in rendered {
            if let Some(f) = &old_f {
                self.count(f, -1);
            }
            if let Some(f) = &new_f {
                self.count(f, 1);
            }
            if let Some(f) = old_f {
                merge(&mut before, f);
            }
        }
        let mut shared_before = self.shared_chains.clone();
        let ops = diff_ops(
            &before,
            &after,
            self.family,
            &elements_before,
            &mut self.elements,
            &mut self.shared_chains,
        );
        // New shared chains go first, on their own: nft cannot add their
        // rules to a table it reads back (`conflicting protocols specified:
        // ip vs. th`), so they must never ride in an nft script with the
        // rest, and unused they are harmless.
        let (shared_ops, ops): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| match op {
            Op::AddChain { name: c, .. } | Op::AddRule { chain: c, .. } => is_shared_chain(c),
            _ => false,
        });
        let sent = !shared_ops.is_empty() || !ops.is_empty();
        let mut result = Ok(());
        if !shared_ops.is_empty() {
            result = self.apply(self.transaction(shared_ops));
            if let Err(e) = result {
                // Without netlink there is no other way in for them than
                // the whole table, as a full sync loads it: the Services
                // as they are, with the new shared chains.
                tracing::info!(
                    "new shared chains did not go in as a transaction ({e}); replacing the {} table with them",
                    table(self.family)
                );
                let whole = self.table(&self.shared_chains);
                result = self.replace(&whole).map(|path| self.last_path = path);
            }
            if result.is_ok() {
                shared_before = self.shared_chains.clone();
            }
        }
        if result.is_ok() && !ops.is_empty() {
            result = self.apply(self.transaction(ops));
        }
        if let Err(e) = result {
            for (set, k) in touched {
                let k = packed(set, &k);
                match elements_before.get(&k) {
                    Some(n) => {
                        self.elements.insert(k, *n);
                    }
                    None => {
                        self.elements.remove(&k);
                    }
                }
            }
            self.shared_chains = shared_before;
            self.chain_count = chains_before;
            return Err(e);
        }
        for (key, new) in changes {
            match new {
                Some(ports) => {
                    self.programmed.insert(key.clone(), ports.clone());
                }
                None => {
                    self.programmed.remove(key);
                }
            }
        }
        Ok(sent)
    }

    /// A transaction on this family's table.
    fn transaction(&self, ops: Vec<Op>) -> Transaction {
        Transaction {
            family: nft_family(self.family),
            table: TABLE_NAME.to_owned(),
            ops,
        }
    }

    /// Apply a partial sync's steps, remembering which way they went in.
    fn apply(&mut self, tx: Transaction) -> Result<()> {
        self.last_path = apply(&mut self.netlink, &tx)?;
        Ok(())
    }

    /// Replace the table by `whole`: over netlink, else `nft -f` of its
    /// text. Which way it went in.
    fn replace(&mut self, whole: &Table) -> Result<&'static str> {
        if let Some(socket) = self.socket() {
            match socket.replace(whole) {
                Ok(()) => return Ok("netlink"),
                Err(e) => tracing::warn!(
                    "netlink refused the {} table ({e}); retrying through nft",
                    table(self.family)
                ),
            }
        }
        nft_apply(&text::table_script(whole))?;
        Ok("nft")
    }

    fn socket(&mut self) -> Option<&mut Socket> {
        open(&mut self.netlink)
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

/// The socket, opened now if it is not yet (`None` when nf_tables
/// netlink cannot be had: everything then goes through `nft`).
fn open(socket: &mut Option<Socket>) -> Option<&mut Socket> {
    if socket.is_none() {
        match Socket::open() {
            Ok(s) => *socket = Some(s),
            Err(e) => tracing::debug!("no nf_tables netlink socket ({e}); using nft"),
        }
    }
    socket.as_mut()
}

/// Apply `tx` over the netlink socket when it takes it, else through
/// `nft -f` of its text. Which way it went in: "netlink" or "nft".
fn apply(socket: &mut Option<Socket>, tx: &Transaction) -> Result<&'static str> {
    if let Some(s) = open(socket) {
        match s.apply(tx) {
            Ok(()) => return Ok("netlink"),
            // The batch was refused whole: nothing changed; try nft, which
            // reports the problem in its own words.
            Err(e) => tracing::warn!("netlink batch refused ({e}); retrying through nft"),
        }
    }
    // Nothing the netlink encoder would refuse reaches nft's grammar either.
    tx.validate()?;
    nft_apply(&text::transaction_script(tx))?;
    Ok("nft")
}

/// Remove a family's table (missing is fine).
fn remove_table(family: Family) -> Transaction {
    Transaction {
        family: nft_family(family),
        table: TABLE_NAME.to_owned(),
        ops: vec![Op::AddTable, Op::DeleteTable],
    }
}

/// The steps that add `chain`'s rules to the chain `name`.
fn add_rules(ops: &mut Vec<Op>, name: &str, chain: &Chain) {
    ops.extend(chain.rules.iter().map(|rule: &Rule| Op::AddRule {
        chain: name.to_owned(),
        rule: rule.clone(),
    }));
}

/// The steps from `before` to `after` (the rules of the changed Services,
/// before and after). Elements go by reference count: one is deleted only
/// when no Service wants it any more, added only when the first one does,
/// and replaced when the value a changed Service gives it changes. Order
/// matters: what is jumped to exists first; nothing is deleted while used.
fn diff_ops(
    before: &Ruleset,
    after: &Ruleset,
    family: Family,
    elements_before: &ElementCounts,
    elements_now: &mut ElementCounts,
    shared_in_kernel: &mut BTreeMap<String, Chain>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for (name, timeout) in &after.affinity_sets {
        if !before.affinity_sets.contains_key(name) {
            ops.push(Op::AddSet {
                name: name.clone(),
                set: affinity_set(family, *timeout),
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
    for (name, chain) in after.chains.iter().filter(|(n, _)| is_shared_chain(n)) {
        if !shared_in_kernel.contains_key(name) {
            shared_in_kernel.insert(name.clone(), chain.clone());
            ops.push(Op::AddChain {
                name: name.clone(),
                base: None,
            });
            add_rules(&mut ops, name, chain);
        }
    }
    let mut changed: Vec<(&String, &Chain)> = after
        .chains
        .iter()
        .filter(|(n, c)| !is_shared_chain(n) && before.chains.get(*n) != Some(c))
        .collect();
    changed.sort_by_key(|(n, _)| order(n));
    for (name, chain) in &changed {
        ops.push(if before.chains.contains_key(*name) {
            Op::FlushChain((*name).clone())
        } else {
            Op::AddChain {
                name: (*name).clone(),
                base: None,
            }
        });
        add_rules(&mut ops, name, chain);
    }
    let touched: BTreeSet<ElementKey> = before
        .elements
        .iter()
        .chain(after.elements.iter())
        .flat_map(|(set, els)| els.keys().map(move |k| (*set, k.clone())))
        .collect();
    let mut deletes: BTreeMap<&'static str, Vec<Vec<Value>>> = BTreeMap::new();
    let mut adds: BTreeMap<&'static str, Vec<(Vec<Value>, Element)>> = BTreeMap::new();
    for (set, k) in touched {
        let key = packed(set, &k);
        // Forget what no Service wants any more (only these can have dropped to 0).
        if elements_now.get(&key) == Some(&0) {
            elements_now.remove(&key);
        }
        let wanted_before = elements_before.get(&key).copied().unwrap_or(0);
        let wanted_now = elements_now.get(&key).copied().unwrap_or(0);
        let value_before = before.elements.get(set).and_then(|e| e.get(&k));
        let value_after = after.elements.get(set).and_then(|e| e.get(&k));
        let (delete, add) = match (wanted_before > 0, wanted_now > 0, value_after) {
            (false, false, _) => (false, None),
            (true, false, _) => (true, None),
            // Only the changed Services can have added it.
            (false, true, value) => (false, value),
            // Still wanted, and no changed Service sets it: it stays as is.
            (true, true, None) => (false, None),
            // A set's element has no value to change.
            (true, true, Some(None)) => (false, None),
            (true, true, Some(value)) => {
                // A changed Service alone had it: its own value is the
                // kernel's. Otherwise (Services that claim the same
                // address and port) the changed Service's value is put in.
                let unchanged = wanted_before == 1 && value_before == Some(value);
                if unchanged {
                    (false, None)
                } else {
                    (true, Some(value))
                }
            }
        };
        if delete {
            deletes.entry(set).or_default().push(k.clone());
        }
        if let Some(value) = add {
            let element = Element {
                value: value.clone(),
                comment: None,
            };
            adds.entry(set).or_default().push((k, element));
        }
    }
    for (set, keys) in deletes {
        ops.push(Op::DeleteElements {
            set: set.to_owned(),
            keys,
        });
    }
    for (set, elements) in adds {
        ops.push(Op::AddElements {
            set: set.to_owned(),
            elements,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Endpoint;

    fn port(name: &str, cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
        let eps: Vec<Endpoint> = endpoints
            .iter()
            .map(|ip| Endpoint {
                ip: ip.parse().unwrap(),
                port: 8080,
                local: true,
            })
            .collect();
        ServicePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            family: Family::V4,
            cluster_ip: Some(cluster_ip.parse().unwrap()),
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            node_port: None,
            source_ranges: Vec::new(),
            firewall: false,
            lb_ips_as_sources: false,
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            cluster_endpoints: eps.clone(),
            local_endpoints: eps.clone(),
            has_endpoints: !eps.is_empty(),
            all_endpoints: eps,
            health_check_node_port: None,
        }
    }

    fn diff(
        before: &Ruleset,
        after: &Ruleset,
        counts_before: &ElementCounts,
        counts_now: &mut ElementCounts,
    ) -> Vec<Op> {
        let touched: BTreeSet<ElementKey> = [before, after]
            .iter()
            .flat_map(|r| {
                r.elements
                    .iter()
                    .flat_map(|(s, els)| els.keys().map(move |k| (*s, k.clone())))
            })
            .collect();
        let before_touched: ElementCounts = touched
            .iter()
            .map(|(s, k)| packed(s, k))
            .filter_map(|k| counts_before.get(&k).map(|n| (k, *n)))
            .collect();
        let mut shared = BTreeMap::new();
        for (n, c) in before.chains.iter().filter(|(n, _)| is_shared_chain(n)) {
            shared.insert(n.clone(), c.clone());
        }
        diff_ops(
            before,
            after,
            Family::V4,
            &before_touched,
            counts_now,
            &mut shared,
        )
    }

    fn counts(fragments: &[&Ruleset]) -> ElementCounts {
        let mut out = ElementCounts::new();
        for f in fragments {
            for (set, els) in &f.elements {
                for k in els.keys() {
                    *out.entry(packed(set, k)).or_insert(0) += 1;
                }
            }
        }
        out
    }

    #[test]
    fn an_endpoint_replaced_is_an_element_change_only() {
        let before = render_port(
            &port("web", "10.96.0.5", &["10.244.1.2", "10.244.1.3"]),
            true,
        );
        let after = render_port(
            &port("web", "10.96.0.5", &["10.244.1.9", "10.244.1.3"]),
            true,
        );
        let ops = diff(&before, &after, &counts(&[&before]), &mut counts(&[&after]));
        assert!(
            ops.iter()
                .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. })),
            "{ops:?}"
        );
        let tx = Transaction {
            family: nft_family(Family::V4),
            table: TABLE_NAME.into(),
            ops,
        };
        let text = text::transaction_script(&tx);
        assert_eq!(
            text,
            "delete element ip strait hairpin { 10.244.1.2 . 10.244.1.2 }\n\
             delete element ip strait service-endpoints { 10.96.0.5 . tcp . 80 . 0 }\n\
             add element ip strait hairpin { 10.244.1.9 . 10.244.1.9 }\n\
             add element ip strait service-endpoints { 10.96.0.5 . tcp . 80 . 0 : 10.244.1.9 . 8080 }\n"
        );
    }

    #[test]
    fn an_element_two_services_share_goes_only_with_the_last() {
        // Two Services with the same endpoint: one hairpin element.
        let a = render_port(&port("a", "10.96.0.5", &["10.244.1.2"]), true);
        let b = render_port(&port("b", "10.96.0.6", &["10.244.1.2"]), true);
        let hairpin = (
            "hairpin",
            vec![
                Value::Addr("10.244.1.2".parse().unwrap()),
                Value::Addr("10.244.1.2".parse().unwrap()),
            ],
        );
        let before = counts(&[&a, &b]);
        assert_eq!(before[&packed(hairpin.0, &hairpin.1)], 2);
        // `a` goes: its ClusterIP goes, the shared hairpin pair stays.
        let mut now = counts(&[&b]);
        let ops = diff(&a, &Ruleset::default(), &before, &mut now);
        let deleted: Vec<&Vec<Value>> = ops
            .iter()
            .filter_map(|op| match op {
                Op::DeleteElements { set, keys } if set == "hairpin" => Some(keys),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(deleted.is_empty(), "{ops:?}");
        assert!(ops.iter().any(|op| matches!(
            op,
            Op::DeleteElements { set, .. } if set == "cluster-ips"
        )));
        // Then `b` goes: now the pair goes too.
        let mut none = ElementCounts::new();
        let ops = diff(&b, &Ruleset::default(), &now, &mut none);
        assert!(ops.iter().any(|op| matches!(
            op,
            Op::DeleteElements { set, keys } if set == "hairpin" && keys.contains(&hairpin.1)
        )));
    }

    #[test]
    fn a_new_endpoint_count_adds_its_shared_chain_once_and_every_table_is_valid() {
        let two = render_port(
            &port("web", "10.96.0.5", &["10.244.1.2", "10.244.1.3"]),
            true,
        );
        let three = render_port(
            &port(
                "web",
                "10.96.0.5",
                &["10.244.1.2", "10.244.1.3", "10.244.1.4"],
            ),
            true,
        );
        for rs in [&two, &three] {
            to_table(Family::V4, [rs]).validate().unwrap();
        }
        let ops = diff(&two, &three, &counts(&[&two]), &mut counts(&[&three]));
        let added: Vec<&String> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AddChain { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(added, ["cluster-dnat-3"]);
        // The dispatch element is re-pointed: deleted, then added.
        let text = text::transaction_script(&Transaction {
            family: nft_family(Family::V4),
            table: TABLE_NAME.into(),
            ops,
        });
        assert!(text.contains("add rule ip strait cluster-dnat-3 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints\n"), "{text}");
        assert!(
            text.contains("add element ip strait service-ips { 10.96.0.5 . tcp . 80 : goto cluster-dnat-3 }\n"),
            "{text}"
        );
    }

    #[test]
    fn a_rule_naming_a_missing_chain_is_not_valid() {
        let mut rs = render_port(&port("web", "10.96.0.5", &["10.244.1.2"]), true);
        rs.chains
            .entry("svc-X".into())
            .or_default()
            .rule(vec![strait_nft::Expr::goto("nowhere")]);
        let err = to_table(Family::V4, [&rs]).validate().unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
    }
}
