//! The network calls strait makes, as two small traits: [`NetOps`] for the
//! calls into one network namespace (rtnetlink and its sysctls) and
//! [`Namespaces`] for reaching a namespace. Production code takes them
//! generically and is given the kernel ([`Kernel`], [`Netlink`]); tests give
//! it [`crate::fake::FakeKernel`], which records every call and models enough
//! of the kernel's state to answer the queries, so the CNI plugin's and the
//! lab's network code is tested without root.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::{Link, NetNs, Netlink, Result, RouteInfo, Vxlan};

/// What strait does in one network namespace. The methods mean what the
/// same-named methods of [`Netlink`] mean (they are its documentation).
pub trait NetOps {
    fn link_by_name(&self, name: &str) -> impl Future<Output = Result<Option<Link>>> + Send;
    fn link_by_index(&self, index: u32) -> impl Future<Output = Result<Option<Link>>> + Send;
    fn links(&self) -> impl Future<Output = Result<Vec<Link>>> + Send;
    fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<Link>> + Send;
    fn add_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns_fd: i32,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn add_vxlan(&self, v: &Vxlan) -> impl Future<Output = Result<u32>> + Send;
    fn replace_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<()>> + Send;
    fn append_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    ) -> impl Future<Output = Result<()>> + Send;
    fn add_route_v4(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    fn set_up_in(
        &self,
        index: u32,
        controller: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn set_up(&self, index: u32) -> impl Future<Output = Result<()>> + Send;
    fn set_down(&self, index: u32) -> impl Future<Output = Result<()>> + Send;
    fn set_controller(&self, index: u32, bridge: u32) -> impl Future<Output = Result<()>> + Send;
    fn set_promiscuous(&self, index: u32, on: bool) -> impl Future<Output = Result<()>> + Send;
    fn set_hairpin(&self, index: u32, on: bool) -> impl Future<Output = Result<()>> + Send;
    fn del_link(&self, index: u32) -> impl Future<Output = Result<()>> + Send;
    fn add_address(&self, index: u32, addr: IpNet) -> impl Future<Output = Result<()>> + Send;
    fn add_address_without_broadcast(
        &self,
        index: u32,
        addr: IpNet,
    ) -> impl Future<Output = Result<()>> + Send;
    fn addresses(
        &self,
        index: Option<u32>,
    ) -> impl Future<Output = Result<Vec<(u32, IpNet)>>> + Send;
    fn add_route(
        &self,
        destination: IpNet,
        gateway: Option<IpAddr>,
        index: u32,
    ) -> impl Future<Output = Result<()>> + Send;
    fn routes(&self, ipv6: bool) -> impl Future<Output = Result<Vec<RouteInfo>>> + Send;
    /// Write a sysctl (`net.ipv4.ip_forward`) of this namespace.
    fn write_sysctl(&self, key: &str, value: &str) -> Result<()>;
}

/// How code reaches a network namespace other than its own.
pub trait Namespaces {
    /// An open namespace; it stays usable while this value lives.
    type Netns;
    type Netlink: NetOps;
    /// Open the namespace at `path` (`/run/netns/x`, `/proc/PID/ns/net`).
    fn open_netns(&self, path: &str) -> Result<Self::Netns>;
    /// Whether what was opened is a network namespace at all.
    fn is_network(&self, ns: &Self::Netns) -> bool;
    /// The descriptor that names it in [`NetOps::add_veth`].
    fn netns_fd(&self, ns: &Self::Netns) -> i32;
    /// A connection in `ns`, or in the caller's own namespace for `None`.
    fn connect(&self, ns: Option<&Self::Netns>) -> Result<Self::Netlink>;
}

/// The kernel itself: namespaces are entered with `setns` for the time it
/// takes to open a netlink socket in them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernel;

impl Namespaces for Kernel {
    type Netns = NetNs;
    type Netlink = Netlink;

    fn open_netns(&self, path: &str) -> Result<NetNs> {
        NetNs::open(path)
    }

    fn is_network(&self, ns: &NetNs) -> bool {
        ns.is_network()
    }

    fn netns_fd(&self, ns: &NetNs) -> i32 {
        ns.fd()
    }

    fn connect(&self, ns: Option<&NetNs>) -> Result<Netlink> {
        match ns {
            None => Netlink::connect(),
            Some(ns) => {
                let _inside = ns.enter()?;
                Netlink::connect()
            }
        }
    }
}

impl NetOps for Netlink {
    fn link_by_name(&self, name: &str) -> impl Future<Output = Result<Option<Link>>> + Send {
        Netlink::link_by_name(self, name)
    }
    fn link_by_index(&self, index: u32) -> impl Future<Output = Result<Option<Link>>> + Send {
        Netlink::link_by_index(self, index)
    }
    fn links(&self) -> impl Future<Output = Result<Vec<Link>>> + Send {
        Netlink::links(self)
    }
    fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<Link>> + Send {
        Netlink::ensure_bridge(self, name, mtu)
    }
    fn add_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns_fd: i32,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::add_veth(self, host_name, peer_name, peer_netns_fd, mtu)
    }
    fn add_vxlan(&self, v: &Vxlan) -> impl Future<Output = Result<u32>> + Send {
        Netlink::add_vxlan(self, v)
    }
    fn replace_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::replace_neighbour(self, index, ip, mac)
    }
    fn append_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::append_fdb(self, index, mac, dst)
    }
    fn add_route_v4(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::add_route_v4(self, destination, gateway, index, onlink)
    }
    fn set_up_in(
        &self,
        index: u32,
        controller: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::set_up_in(self, index, controller)
    }
    fn set_up(&self, index: u32) -> impl Future<Output = Result<()>> + Send {
        Netlink::set_up(self, index)
    }
    fn set_down(&self, index: u32) -> impl Future<Output = Result<()>> + Send {
        Netlink::set_down(self, index)
    }
    fn set_controller(&self, index: u32, bridge: u32) -> impl Future<Output = Result<()>> + Send {
        Netlink::set_controller(self, index, bridge)
    }
    fn set_promiscuous(&self, index: u32, on: bool) -> impl Future<Output = Result<()>> + Send {
        Netlink::set_promiscuous(self, index, on)
    }
    fn set_hairpin(&self, index: u32, on: bool) -> impl Future<Output = Result<()>> + Send {
        Netlink::set_hairpin(self, index, on)
    }
    fn del_link(&self, index: u32) -> impl Future<Output = Result<()>> + Send {
        Netlink::del_link(self, index)
    }
    fn add_address(&self, index: u32, addr: IpNet) -> impl Future<Output = Result<()>> + Send {
        Netlink::add_address(self, index, addr)
    }
    fn add_address_without_broadcast(
        &self,
        index: u32,
        addr: IpNet,
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::add_address_without_broadcast(self, index, addr)
    }
    fn addresses(
        &self,
        index: Option<u32>,
    ) -> impl Future<Output = Result<Vec<(u32, IpNet)>>> + Send {
        Netlink::addresses(self, index)
    }
    fn add_route(
        &self,
        destination: IpNet,
        gateway: Option<IpAddr>,
        index: u32,
    ) -> impl Future<Output = Result<()>> + Send {
        Netlink::add_route(self, destination, gateway, index)
    }
    fn routes(&self, ipv6: bool) -> impl Future<Output = Result<Vec<RouteInfo>>> + Send {
        Netlink::routes(self, ipv6)
    }
    fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        Netlink::write_sysctl(self, key, value)
    }
}
