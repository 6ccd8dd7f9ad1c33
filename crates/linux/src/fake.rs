//! A recording fake of the kernel's network, for tests that run without
//! root: [`FakeKernel`] implements [`Namespaces`] and hands out
//! [`FakeNetlink`]s that implement [`NetOps`].
//!
//! It keeps what the calls made — namespaces with their links, addresses,
//! routes, neighbour and forwarding entries and sysctls — and applies the
//! kernel's rules that the callers depend on: names are unique per
//! namespace, a veth's peer goes with it, deleting a link takes its
//! addresses and routes along, a route needs its device up and (unless
//! `onlink`) its gateway on one of the device's subnets. Every call is
//! recorded, and any one of them can be made to fail ([`FakeKernel::fail_call`])
//! to test that callers undo what they did.

use std::collections::{BTreeMap, BTreeSet};
use std::future::{ready, Future};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::{IpNet, Ipv4Net};

use crate::error::libc_errno;
use crate::{mac_string, Error, Link, Namespaces, NetOps, Result, RouteInfo, Vxlan};

const EIO: i32 = 5;
const EBADF: i32 = 9;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;

/// The path under which the caller's own namespace is known.
pub const HOST: &str = "host";

/// Descriptors the fake hands out for its namespaces start here, far from
/// the small numbers a test process has open.
const FD_BASE: i32 = 10_000;

/// One call a caller made, in the namespace it was made in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The namespace's path ([`HOST`] for the caller's own).
    pub netns: String,
    /// What was asked, with links named (`set_up veth1`).
    pub op: String,
    /// Whether it was made to fail.
    pub failed: bool,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.netns, self.op)?;
        if self.failed {
            f.write_str(" (failed)")?;
        }
        Ok(())
    }
}

/// A link as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeLink {
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, `vxlan`; `None` for the loopback.
    pub kind: Option<String>,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub up: bool,
    pub controller: Option<u32>,
    /// A veth's other end: its namespace's path and its index there.
    pub peer: Option<(String, u32)>,
    pub hairpin: bool,
    pub promiscuous: bool,
    pub vxlan: Option<Vxlan>,
}

/// A route of the main table the fake was asked to add.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FakeRoute {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub output: u32,
    pub onlink: bool,
}

/// What one namespace holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsState {
    pub links: BTreeMap<u32, FakeLink>,
    pub addresses: BTreeSet<(u32, IpNet)>,
    pub routes: BTreeSet<FakeRoute>,
    /// Permanent neighbour entries: (link, address) → MAC.
    pub neighbours: BTreeMap<(u32, Ipv4Addr), [u8; 6]>,
    /// A device's own forwarding entries: (link, MAC, remote).
    pub fdb: BTreeSet<(u32, [u8; 6], Ipv4Addr)>,
    pub sysctls: BTreeMap<String, String>,
}

impl NetnsState {
    pub fn link(&self, name: &str) -> Option<&FakeLink> {
        self.links.values().find(|l| l.name == name)
    }

    fn name_of(&self, index: u32) -> String {
        self.links
            .get(&index)
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    }

    /// The namespace as sorted lines that name links rather than number
    /// them (numbers depend on the order things were made in):
    /// `link eth0 veth mtu 1450 up master cni0`, `addr eth0 10.0.0.2/24`,
    /// `route 0.0.0.0/0 via 10.0.0.1 dev eth0`, `neigh flannel.1 10.244.1.0
    /// lladdr …`, `fdb flannel.1 … dst 172.18.0.3`, `sysctl key = value`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in self.links.values() {
            let mut line = format!(
                "link {} {} mtu {}{}",
                l.name,
                l.kind.as_deref().unwrap_or("loopback"),
                l.mtu,
                if l.up { " up" } else { "" }
            );
            if let Some(c) = l.controller {
                line += &format!(" master {}", self.name_of(c));
            }
            if l.hairpin {
                line += " hairpin";
            }
            if l.promiscuous {
                line += " promisc";
            }
            if let Some((ns, _)) = &l.peer {
                line += &format!(" peer in {ns}");
            }
            if let Some(v) = &l.vxlan {
                line += &format!(
                    " vni {} dstport {} dev {} local {}{} mac {}",
                    v.vni,
                    v.dstport,
                    self.name_of(v.dev),
                    v.local,
                    if v.learning { "" } else { " nolearning" },
                    mac_string(&v.mac)
                );
            }
            out.push(line);
        }
        for (index, addr) in &self.addresses {
            out.push(format!("addr {} {addr}", self.name_of(*index)));
        }
        for r in &self.routes {
            let mut line = format!("route {}", r.destination);
            if let Some(gw) = r.gateway {
                line += &format!(" via {gw}");
            }
            line += &format!(" dev {}", self.name_of(r.output));
            if r.onlink {
                line += " onlink";
            }
            out.push(line);
        }
        for ((index, ip), mac) in &self.neighbours {
            out.push(format!(
                "neigh {} {ip} lladdr {}",
                self.name_of(*index),
                mac_string(mac)
            ));
        }
        for (index, mac, dst) in &self.fdb {
            out.push(format!(
                "fdb {} {} dst {dst}",
                self.name_of(*index),
                mac_string(mac)
            ));
        }
        for (k, v) in &self.sysctls {
            out.push(format!("sysctl {k} = {v}"));
        }
        out.sort();
        out
    }
}

#[derive(Debug)]
struct Netns {
    path: String,
    /// A path that opens but is no network namespace (a plain file).
    is_network: bool,
    alive: bool,
    next_index: u32,
    state: NetnsState,
}

#[derive(Debug, Default)]
struct World {
    namespaces: Vec<Netns>,
    calls: Vec<Call>,
    /// Calls made so far, recorded or taken.
    count: usize,
    fail_at: Option<usize>,
    next_mac: u32,
}

/// The fake kernel: shared by every handle it gives out.
#[derive(Clone, Debug)]
pub struct FakeKernel {
    world: Arc<Mutex<World>>,
}

/// An open namespace of the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeNetns {
    id: usize,
}

impl FakeNetns {
    pub fn fd(&self) -> i32 {
        FD_BASE + self.id as i32
    }
}

/// A connection into one namespace of the fake.
#[derive(Clone, Debug)]
pub struct FakeNetlink {
    world: Arc<Mutex<World>>,
    ns: usize,
}

fn errno_error(what: &str, errno: i32) -> Error {
    Error::Netlink {
        what: what.to_owned(),
        message: std::io::Error::from_raw_os_error(errno).to_string(),
        errno: Some(errno),
    }
}

fn loopback() -> FakeLink {
    FakeLink {
        index: 1,
        name: "lo".into(),
        kind: None,
        mac: [0; 6],
        mtu: 65536,
        up: false,
        controller: None,
        peer: None,
        hairpin: false,
        promiscuous: false,
        vxlan: None,
    }
}

impl Default for FakeKernel {
    fn default() -> Self {
        FakeKernel::new()
    }
}

impl FakeKernel {
    /// A kernel with only the caller's own namespace ([`HOST`]), which has
    /// a loopback that is down, as a new namespace has.
    pub fn new() -> FakeKernel {
        let fake = FakeKernel {
            world: Arc::new(Mutex::new(World::default())),
        };
        fake.add_netns(HOST);
        fake
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock left a world that is
        // still consistent (every change is made whole under the lock).
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new network namespace at `path`, with a loopback that is down.
    pub fn add_netns(&self, path: &str) -> FakeNetns {
        let mut w = self.lock();
        let mut state = NetnsState::default();
        state.links.insert(1, loopback());
        w.namespaces.push(Netns {
            path: path.to_owned(),
            is_network: true,
            alive: true,
            next_index: 2,
            state,
        });
        FakeNetns {
            id: w.namespaces.len() - 1,
        }
    }

    /// A path that can be opened but is no network namespace.
    pub fn add_other_file(&self, path: &str) {
        let mut w = self.lock();
        w.namespaces.push(Netns {
            path: path.to_owned(),
            is_network: false,
            alive: true,
            next_index: 1,
            state: NetnsState::default(),
        });
    }

    /// The namespace at `path` goes away with everything in it; the far
    /// ends of its veths go too, as in the kernel.
    pub fn remove_netns(&self, path: &str) {
        let mut w = self.lock();
        let Some(id) = w.find(path) else { return };
        let indexes: Vec<u32> = w.namespaces[id].state.links.keys().copied().collect();
        for index in indexes {
            w.delete_link(id, index);
        }
        w.namespaces[id].alive = false;
    }

    /// A connection into `ns` without going through [`Namespaces`].
    pub fn netlink(&self, ns: &FakeNetns) -> FakeNetlink {
        FakeNetlink {
            world: self.world.clone(),
            ns: ns.id,
        }
    }

    /// A connection into the caller's own namespace.
    pub fn host(&self) -> FakeNetlink {
        FakeNetlink {
            world: self.world.clone(),
            ns: 0,
        }
    }

    /// Make the `n`-th call from now fail (0: the next one), changing nothing.
    pub fn fail_call(&self, n: usize) {
        let mut w = self.lock();
        w.fail_at = Some(w.count + n);
    }

    /// Calls made since the fake was made or last taken from, in order.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Every live namespace by path.
    pub fn state(&self) -> BTreeMap<String, NetnsState> {
        self.lock()
            .namespaces
            .iter()
            .filter(|n| n.alive && n.is_network)
            .map(|n| (n.path.clone(), n.state.clone()))
            .collect()
    }

    /// One namespace (empty when there is none at `path`).
    pub fn netns_state(&self, path: &str) -> NetnsState {
        let w = self.lock();
        w.find(path)
            .map(|id| w.namespaces[id].state.clone())
            .unwrap_or_default()
    }

    /// Change the namespace at `path` behind the callers' backs (a link
    /// someone else removed, a route an administrator deleted).
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut NetnsState)) {
        let mut w = self.lock();
        if let Some(id) = w.find(path) {
            f(&mut w.namespaces[id].state);
        }
    }

    /// [`NetnsState::describe`] of the namespace at `path`.
    pub fn describe(&self, path: &str) -> Vec<String> {
        self.netns_state(path).describe()
    }
}

impl World {
    fn find(&self, path: &str) -> Option<usize> {
        self.namespaces
            .iter()
            .position(|n| n.alive && n.path == path)
    }

    fn mac(&mut self) -> [u8; 6] {
        self.next_mac += 1;
        let b = self.next_mac.to_be_bytes();
        [0x02, 0x00, b[0], b[1], b[2], b[3]]
    }

    /// Delete a link and all that hangs on it; a veth's peer too.
    fn delete_link(&mut self, ns: usize, index: u32) {
        let Some(link) = self.namespaces[ns].state.links.remove(&index) else {
            return;
        };
        let s = &mut self.namespaces[ns].state;
        s.addresses.retain(|(i, _)| *i != index);
        s.routes.retain(|r| r.output != index);
        s.neighbours.retain(|(i, _), _| *i != index);
        s.fdb.retain(|(i, _, _)| *i != index);
        for l in s.links.values_mut() {
            if l.controller == Some(index) {
                l.controller = None;
                l.hairpin = false;
            }
        }
        if let Some((peer_ns, peer_index)) = link.peer {
            if let Some(p) = self.find(&peer_ns) {
                self.delete_link(p, peer_index);
            }
        }
    }
}

impl FakeNetlink {
    /// Record the call `op` (made with the world as it is before it) and
    /// run it, unless it is the one chosen to fail.
    fn call<T>(
        &self,
        op: impl FnOnce(&NetnsState) -> String,
        run: impl FnOnce(&mut World, usize) -> Result<T>,
    ) -> Result<T> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let ns = &w.namespaces[self.ns];
        let netns = ns.path.clone();
        let op = op(&ns.state);
        let n = w.count;
        w.count += 1;
        let failed = w.fail_at == Some(n);
        w.calls.push(Call {
            netns,
            op: op.clone(),
            failed,
        });
        if failed {
            return Err(Error::Netlink {
                what: op,
                message: "injected failure".into(),
                errno: Some(EIO),
            });
        }
        if !w.namespaces[self.ns].alive {
            return Err(errno_error(&op, EINVAL));
        }
        run(&mut w, self.ns)
    }
}

fn state(w: &mut World, ns: usize) -> &mut NetnsState {
    &mut w.namespaces[ns].state
}

fn to_link(l: &FakeLink) -> Link {
    Link {
        index: l.index,
        name: l.name.clone(),
        mac: mac_string(&l.mac),
        mtu: l.mtu,
        up: l.up,
        controller: l.controller,
        kind: l.kind.clone(),
    }
}

fn existing<'a>(s: &'a mut NetnsState, index: u32, what: &str) -> Result<&'a mut FakeLink> {
    s.links
        .get_mut(&index)
        .ok_or_else(|| errno_error(what, libc_errno::ENODEV))
}

fn new_link(index: u32, name: &str, kind: &str, mac: [u8; 6], mtu: u32) -> FakeLink {
    FakeLink {
        index,
        name: name.to_owned(),
        kind: Some(kind.to_owned()),
        mac,
        mtu,
        up: false,
        controller: None,
        peer: None,
        hairpin: false,
        promiscuous: false,
        vxlan: None,
    }
}

fn add_link(w: &mut World, ns: usize, mut link: FakeLink) -> u32 {
    let n = &mut w.namespaces[ns];
    let index = n.next_index;
    n.next_index += 1;
    link.index = index;
    n.state.links.insert(index, link);
    index
}

/// A route's checks, as the kernel makes them for IPv4 and IPv6 alike: the
/// device exists and is up, the gateway is of the destination's family and,
/// unless `onlink`, on a subnet of the device.
fn add_route_to(
    s: &mut NetnsState,
    route: FakeRoute,
    what: &str,
    exists_is_error: bool,
) -> Result<()> {
    let link = s
        .links
        .get(&route.output)
        .ok_or_else(|| errno_error(what, libc_errno::ENODEV))?;
    if !link.up {
        return Err(errno_error(what, ENETDOWN));
    }
    if let Some(gw) = route.gateway {
        if gw.is_ipv4() != route.destination.addr().is_ipv4() {
            return Err(errno_error(what, EINVAL));
        }
        let on_subnet = s
            .addresses
            .iter()
            .any(|(i, a)| *i == route.output && a.contains(&gw));
        if !route.onlink && !on_subnet {
            return Err(errno_error(what, ENETUNREACH));
        }
    }
    if s.routes.iter().any(|r| r.destination == route.destination) {
        return if exists_is_error {
            Err(errno_error(what, libc_errno::EEXIST))
        } else {
            Ok(())
        };
    }
    s.routes.insert(route);
    Ok(())
}

impl Namespaces for FakeKernel {
    type Netns = FakeNetns;
    type Netlink = FakeNetlink;

    fn open_netns(&self, path: &str) -> Result<FakeNetns> {
        self.lock()
            .find(path)
            .map(|id| FakeNetns { id })
            .ok_or_else(|| Error::Netns {
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(libc_errno::ENOENT),
            })
    }

    fn is_network(&self, ns: &FakeNetns) -> bool {
        self.lock().namespaces[ns.id].is_network
    }

    fn netns_fd(&self, ns: &FakeNetns) -> i32 {
        ns.fd()
    }

    fn connect(&self, ns: Option<&FakeNetns>) -> Result<FakeNetlink> {
        let Some(ns) = ns else {
            return Ok(self.host());
        };
        let w = self.lock();
        let n = &w.namespaces[ns.id];
        if !n.is_network || !n.alive {
            return Err(Error::Netns {
                path: n.path.clone(),
                source: std::io::Error::from_raw_os_error(EINVAL),
            });
        }
        Ok(self.netlink(ns))
    }
}

impl NetOps for FakeNetlink {
    fn link_by_name(&self, name: &str) -> impl Future<Output = Result<Option<Link>>> + Send {
        ready(self.call(
            |_| format!("link_by_name {name}"),
            |w, ns| Ok(state(w, ns).link(name).map(to_link)),
        ))
    }

    fn link_by_index(&self, index: u32) -> impl Future<Output = Result<Option<Link>>> + Send {
        ready(self.call(
            |s| format!("link_by_index {}", s.name_of(index)),
            |w, ns| Ok(state(w, ns).links.get(&index).map(to_link)),
        ))
    }

    fn links(&self) -> impl Future<Output = Result<Vec<Link>>> + Send {
        ready(self.call(
            |_| "links".into(),
            |w, ns| Ok(state(w, ns).links.values().map(to_link).collect()),
        ))
    }

    fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<Link>> + Send {
        ready(self.call(
            |_| format!("ensure_bridge {name} mtu {mtu:?}"),
            |w, ns| {
                if let Some(link) = state(w, ns).links.values_mut().find(|l| l.name == name) {
                    if link.kind.as_deref() != Some("bridge") {
                        return Err(Error::Netlink {
                            what: format!("use {name} as a bridge"),
                            message: format!("{name} exists and is not a bridge"),
                            errno: None,
                        });
                    }
                    link.up = true;
                    return Ok(to_link(link));
                }
                let mac = w.mac();
                let mut bridge = new_link(0, name, "bridge", mac, mtu.unwrap_or(1500));
                bridge.up = true;
                let index = add_link(w, ns, bridge);
                Ok(to_link(&state(w, ns).links[&index]))
            },
        ))
    }

    fn add_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns_fd: i32,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send {
        let what = format!("create veth pair {host_name} / {peer_name}");
        ready(self.call(
            |_| format!("add_veth {host_name} {peer_name} mtu {mtu:?}"),
            |w, ns| {
                let peer = usize::try_from(peer_netns_fd - FD_BASE)
                    .ok()
                    .filter(|p| {
                        w.namespaces
                            .get(*p)
                            .is_some_and(|n| n.alive && n.is_network)
                    })
                    .ok_or_else(|| errno_error(&what, EBADF))?;
                if state(w, ns).link(host_name).is_some()
                    || state(w, peer).link(peer_name).is_some()
                {
                    return Err(errno_error(&what, libc_errno::EEXIST));
                }
                let mtu = mtu.unwrap_or(1500);
                let (mac_a, mac_b) = (w.mac(), w.mac());
                let a = add_link(w, ns, new_link(0, host_name, "veth", mac_a, mtu));
                let b = add_link(w, peer, new_link(0, peer_name, "veth", mac_b, mtu));
                let (path_a, path_b) = (
                    w.namespaces[ns].path.clone(),
                    w.namespaces[peer].path.clone(),
                );
                state(w, ns).links.get_mut(&a).expect("just added").peer = Some((path_b, b));
                state(w, peer).links.get_mut(&b).expect("just added").peer = Some((path_a, a));
                Ok(())
            },
        ))
    }

    fn add_vxlan(&self, v: &Vxlan) -> impl Future<Output = Result<u32>> + Send {
        let what = format!("create vxlan device {}", v.name);
        ready(self.call(
            |s| {
                format!(
                    "add_vxlan {} vni {} dev {}",
                    v.name,
                    v.vni,
                    s.name_of(v.dev)
                )
            },
            |w, ns| {
                let s = state(w, ns);
                if !s.links.contains_key(&v.dev) {
                    return Err(errno_error(&what, libc_errno::ENODEV));
                }
                if s.link(&v.name).is_some() {
                    return Err(errno_error(&what, libc_errno::EEXIST));
                }
                let mut link = new_link(0, &v.name, "vxlan", v.mac, v.mtu);
                link.up = true;
                link.vxlan = Some(v.clone());
                Ok(add_link(w, ns, link))
            },
        ))
    }

    fn replace_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| {
                format!(
                    "replace_neighbour {} {ip} {}",
                    s.name_of(index),
                    mac_string(&mac)
                )
            },
            |w, ns| {
                let s = state(w, ns);
                existing(s, index, "set neighbour")?;
                s.neighbours.insert((index, ip), mac);
                Ok(())
            },
        ))
    }

    fn append_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| {
                format!(
                    "append_fdb {} {} dst {dst}",
                    s.name_of(index),
                    mac_string(&mac)
                )
            },
            |w, ns| {
                let s = state(w, ns);
                let link = existing(s, index, "add fdb entry")?;
                if link.kind.as_deref() != Some("vxlan") {
                    return Err(errno_error("add fdb entry", EOPNOTSUPP));
                }
                if !s.fdb.insert((index, mac, dst)) {
                    return Err(errno_error("add fdb entry", libc_errno::EEXIST));
                }
                Ok(())
            },
        ))
    }

    fn add_route_v4(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        let what = format!("add route to {destination} via {gateway}");
        ready(self.call(
            |s| {
                format!(
                    "add_route_v4 {destination} via {gateway} dev {}{}",
                    s.name_of(index),
                    if onlink { " onlink" } else { "" }
                )
            },
            |w, ns| {
                let route = FakeRoute {
                    destination: destination.into(),
                    gateway: Some(gateway.into()),
                    output: index,
                    onlink,
                };
                add_route_to(state(w, ns), route, &what, true)
            },
        ))
    }

    fn set_up_in(
        &self,
        index: u32,
        controller: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| match controller {
                Some(c) => format!("set_up {} master {}", s.name_of(index), s.name_of(c)),
                None => format!("set_up {}", s.name_of(index)),
            },
            |w, ns| {
                let s = state(w, ns);
                if let Some(c) = controller {
                    check_bridge(s, c)?;
                }
                let link = existing(s, index, "set link up")?;
                if controller.is_some() {
                    link.controller = controller;
                }
                link.up = true;
                Ok(())
            },
        ))
    }

    fn set_up(&self, index: u32) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("set_up {}", s.name_of(index)),
            |w, ns| {
                existing(state(w, ns), index, "set link up")?.up = true;
                Ok(())
            },
        ))
    }

    /// Down, as the kernel does it: IPv4 routes out of the link go.
    fn set_down(&self, index: u32) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("set_down {}", s.name_of(index)),
            |w, ns| {
                let s = state(w, ns);
                existing(s, index, "set link down")?.up = false;
                s.routes.retain(|r| r.output != index);
                Ok(())
            },
        ))
    }

    fn set_controller(&self, index: u32, bridge: u32) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("set_controller {} {}", s.name_of(index), s.name_of(bridge)),
            |w, ns| {
                let s = state(w, ns);
                check_bridge(s, bridge)?;
                existing(s, index, "attach link")?.controller = Some(bridge);
                Ok(())
            },
        ))
    }

    fn set_promiscuous(&self, index: u32, on: bool) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("set_promiscuous {} {on}", s.name_of(index)),
            |w, ns| {
                existing(state(w, ns), index, "set promiscuous mode")?.promiscuous = on;
                Ok(())
            },
        ))
    }

    fn set_hairpin(&self, index: u32, on: bool) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("set_hairpin {} {on}", s.name_of(index)),
            |w, ns| {
                let link = existing(state(w, ns), index, "set hairpin mode")?;
                // Only a bridge port has a hairpin mode.
                if link.controller.is_none() {
                    return Err(errno_error("set hairpin mode", EOPNOTSUPP));
                }
                link.hairpin = on;
                Ok(())
            },
        ))
    }

    fn del_link(&self, index: u32) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("del_link {}", s.name_of(index)),
            |w, ns| {
                existing(state(w, ns), index, "delete link")?;
                w.delete_link(ns, index);
                Ok(())
            },
        ))
    }

    fn add_address(&self, index: u32, addr: IpNet) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("add_address {} {addr}", s.name_of(index)),
            |w, ns| add_address_to(state(w, ns), index, addr),
        ))
    }

    fn add_address_without_broadcast(
        &self,
        index: u32,
        addr: IpNet,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(self.call(
            |s| format!("add_address {} {addr} nobroadcast", s.name_of(index)),
            |w, ns| add_address_to(state(w, ns), index, addr),
        ))
    }

    fn addresses(
        &self,
        index: Option<u32>,
    ) -> impl Future<Output = Result<Vec<(u32, IpNet)>>> + Send {
        ready(self.call(
            |s| match index {
                Some(i) => format!("addresses {}", s.name_of(i)),
                None => "addresses".into(),
            },
            |w, ns| {
                Ok(state(w, ns)
                    .addresses
                    .iter()
                    .filter(|(i, _)| index.is_none_or(|want| *i == want))
                    .copied()
                    .collect())
            },
        ))
    }

    fn add_route(
        &self,
        destination: IpNet,
        gateway: Option<IpAddr>,
        index: u32,
    ) -> impl Future<Output = Result<()>> + Send {
        let what = format!("add route to {destination}");
        ready(self.call(
            |s| match gateway {
                Some(gw) => format!("add_route {destination} via {gw} dev {}", s.name_of(index)),
                None => format!("add_route {destination} dev {}", s.name_of(index)),
            },
            |w, ns| {
                let route = FakeRoute {
                    destination,
                    gateway,
                    output: index,
                    onlink: false,
                };
                add_route_to(state(w, ns), route, &what, false)
            },
        ))
    }

    /// The routes added, and the kernel's own route to each subnet of an
    /// address on a link that is up.
    fn routes(&self, ipv6: bool) -> impl Future<Output = Result<Vec<RouteInfo>>> + Send {
        ready(self.call(
            |_| format!("routes {}", if ipv6 { "ipv6" } else { "ipv4" }),
            |w, ns| {
                let s = state(w, ns);
                let connected = s
                    .addresses
                    .iter()
                    .filter(|(i, _)| s.links.get(i).is_some_and(|l| l.up))
                    .map(|(i, a)| RouteInfo {
                        destination: a.trunc(),
                        gateway: None,
                        output: Some(*i),
                    });
                let added = s.routes.iter().map(|r| RouteInfo {
                    destination: r.destination,
                    gateway: r.gateway,
                    output: Some(r.output),
                });
                Ok(connected
                    .chain(added)
                    .filter(|r| r.destination.addr().is_ipv6() == ipv6)
                    .collect())
            },
        ))
    }

    fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.call(
            |_| format!("write_sysctl {key} = {value}"),
            |w, ns| {
                state(w, ns)
                    .sysctls
                    .insert(key.to_owned(), value.to_owned());
                Ok(())
            },
        )
    }
}

fn check_bridge(s: &NetnsState, index: u32) -> Result<()> {
    match s.links.get(&index) {
        None => Err(errno_error("attach to bridge", libc_errno::ENODEV)),
        Some(l) if l.kind.as_deref() != Some("bridge") => {
            Err(errno_error("attach to bridge", EOPNOTSUPP))
        }
        Some(_) => Ok(()),
    }
}

fn add_address_to(s: &mut NetnsState, index: u32, addr: IpNet) -> Result<()> {
    existing(s, index, "add address")?;
    s.addresses.insert((index, addr));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_veth_pair_spans_two_namespaces_and_dies_together() {
        let k = FakeKernel::new();
        let pod = k.add_netns("/run/netns/pod");
        let host = k.host();
        block_on(host.add_veth("veth0", "eth0", pod.fd(), Some(1400))).unwrap();
        let inner = k.netns_state("/run/netns/pod");
        assert_eq!(inner.link("eth0").unwrap().mtu, 1400);
        // Names are per namespace: the same pair again clashes here.
        let again = block_on(host.add_veth("veth0", "eth1", pod.fd(), None)).unwrap_err();
        assert!(again.is_exists(), "{again}");
        let index = k.netns_state(HOST).link("veth0").unwrap().index;
        block_on(host.del_link(index)).unwrap();
        assert!(k.netns_state("/run/netns/pod").link("eth0").is_none());
    }

    #[test]
    fn routes_need_an_up_device_and_a_gateway_on_its_subnet() {
        let k = FakeKernel::new();
        let pod = k.add_netns("p");
        block_on(k.host().add_veth("v", "eth0", pod.fd(), None)).unwrap();
        let nl = k.netlink(&pod);
        let eth0 = k.netns_state("p").link("eth0").unwrap().index;
        let default: IpNet = "0.0.0.0/0".parse().unwrap();
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let down = block_on(nl.add_route(default, Some(gw), eth0)).unwrap_err();
        assert_eq!(down.errno(), Some(ENETDOWN));
        block_on(nl.set_up(eth0)).unwrap();
        let off = block_on(nl.add_route(default, Some(gw), eth0)).unwrap_err();
        assert_eq!(off.errno(), Some(ENETUNREACH));
        block_on(nl.add_address(eth0, "10.0.0.2/24".parse().unwrap())).unwrap();
        block_on(nl.add_route(default, Some(gw), eth0)).unwrap();
        let routes = block_on(nl.routes(false)).unwrap();
        assert_eq!(routes.len(), 2, "{routes:?}");
        // Onlink routes skip the subnet check, as flannel's do.
        let far = Ipv4Net::new(Ipv4Addr::new(10, 9, 0, 0), 24).unwrap();
        block_on(nl.add_route_v4(far, Ipv4Addr::new(10, 9, 0, 0), eth0, true)).unwrap();
        let twice = block_on(nl.add_route_v4(far, Ipv4Addr::new(10, 9, 0, 0), eth0, true));
        assert!(twice.unwrap_err().is_exists());
    }

    #[test]
    fn a_chosen_call_fails_and_changes_nothing() {
        let k = FakeKernel::new();
        let nl = k.host();
        k.fail_call(1);
        block_on(nl.ensure_bridge("br0", None)).unwrap();
        let before = k.state();
        let err = block_on(nl.set_up(1)).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(k.state(), before);
        block_on(nl.set_up(1)).unwrap();
        let calls: Vec<String> = k.take_calls().iter().map(Call::to_string).collect();
        assert_eq!(
            calls,
            [
                "host: ensure_bridge br0 mtu None",
                "host: set_up lo (failed)",
                "host: set_up lo"
            ]
        );
    }
}
