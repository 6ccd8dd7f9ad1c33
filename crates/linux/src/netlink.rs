//! Links, addresses and routes over rtnetlink, for one network namespace:
//! the one the calling thread was in when [`Netlink::connect`] ran.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

use crate::{Error, Result};

/// A netlink connection to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// Which namespace the socket was opened in (device and inode of its
    /// nsfs file): sysctls are written through /proc/sys, which follows the
    /// calling thread, so [`Netlink::write_sysctl`] checks they agree.
    netns: Option<(u64, u64)>,
}

/// The identity of the calling thread's network namespace.
fn thread_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// What strait needs to know of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    /// Index of the bridge (or other controller) it is attached to.
    pub controller: Option<u32>,
    pub kind: Option<String>,
}

/// A route as read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub output: Option<u32>,
}

fn nl_error(what: impl Into<String>, e: rtnetlink::Error) -> Error {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    };
    let message = match errno {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    };
    Error::Netlink {
        what: what.into(),
        message,
        errno,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A VXLAN device as flannel's vxlan backend makes it (`ip link add NAME
/// type vxlan id VNI dstport PORT dev DEV local LOCAL nolearning`), with its
/// MAC and MTU set and up, in one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    pub name: String,
    pub vni: u32,
    pub dstport: u16,
    /// Index of the underlay link the tunnel leaves by.
    pub dev: u32,
    pub local: Ipv4Addr,
    /// Whether the device learns remote MACs from traffic; flannel sets
    /// them itself, so it does not.
    pub learning: bool,
    pub mac: [u8; 6],
    pub mtu: u32,
}

pub(crate) fn vxlan_message(v: &Vxlan) -> LinkMessage {
    LinkVxlan::new(&v.name, v.vni)
        .port(v.dstport)
        .dev(v.dev)
        .local(v.local)
        .learning(v.learning)
        .address(v.mac.to_vec())
        .mtu(v.mtu)
        .up()
        .build()
}

/// A permanent neighbour (ARP) entry: `ip neigh replace IP lladdr MAC dev
/// LINK nud permanent`.
pub(crate) fn neighbour_message(index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg
}

/// A forwarding entry of the device itself (not of a bridge it is a port
/// of): `bridge fdb append MAC dev LINK dst IP`, which for a VXLAN device
/// says which remote VTEP frames for MAC are sent to.
pub(crate) fn fdb_message(index: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    msg
}

/// `ip route add DEST via GW dev LINK [onlink]`: protocol `boot` as `ip`
/// gives it, so the table reads the same.
pub(crate) fn route_v4_message(
    destination: ipnet::Ipv4Net,
    gateway: Ipv4Addr,
    index: u32,
    onlink: bool,
) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .gateway(gateway)
        .output_interface(index)
        .protocol(RouteProtocol::Boot);
    if onlink {
        builder = builder.onlink();
    }
    builder.build()
}

/// `aa:bb:cc:dd:ee:ff` to bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        controller: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = mac_string(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

impl Netlink {
    /// Connect in the calling thread's network namespace. Needs a tokio
    /// runtime: the connection runs as a task on it.
    pub fn connect() -> Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| Error::Netlink {
            what: "open a netlink socket".into(),
            message: e.to_string(),
            errno: e.raw_os_error(),
        })?;
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            netns: thread_netns(),
        })
    }

    /// Write a sysctl of this connection's namespace. /proc/sys/net is the
    /// calling thread's: a thread that is elsewhere gets an error rather
    /// than changing another namespace.
    pub fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        if self.netns.is_none() || thread_netns() != self.netns {
            return Err(Error::Sysctl {
                key: key.to_owned(),
                source: std::io::Error::other(
                    "the calling thread is not in the namespace of this netlink connection",
                ),
            });
        }
        crate::write_sysctl(key, value)
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(link_of)),
            Err(e) => {
                let e = nl_error(format!("find link {name}"), e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(link_of)),
            Err(e) => {
                let e = nl_error(format!("find link {index}"), e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error("list links", e))?;
        Ok(msgs.iter().map(link_of).collect())
    }

    /// The bridge `name`, created (up, with `mtu` when given) if absent.
    pub async fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        if let Some(link) = self.link_by_name(name).await? {
            if link.kind.as_deref() != Some("bridge") {
                return Err(Error::Netlink {
                    what: format!("use {name} as a bridge"),
                    message: format!(
                        "{name} exists and is a {} device, not a bridge",
                        link.kind.as_deref().unwrap_or("plain")
                    ),
                    errno: None,
                });
            }
            if !link.up {
                self.set_up(link.index).await?;
            }
            return Ok(link);
        }
        let mut builder = LinkBridge::new(name).up();
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Err(e) = self.handle.link().add(builder.build()).execute().await {
            let e = nl_error(format!("create bridge {name}"), e);
            // Another ADD may have created it at the same moment: fine.
            if !e.is_exists() {
                return Err(e);
            }
        }
        self.link_by_name(name)
            .await?
            .ok_or_else(|| Error::Netlink {
                what: format!("create bridge {name}"),
                message: "it vanished right after creation".into(),
                errno: None,
            })
    }

    /// A veth pair: `host_name` here, `peer_name` created directly inside the
    /// namespace `peer_netns_fd`, so that no name clash can happen here.
    pub async fn add_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns_fd: i32,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_owned())
            .setns_by_fd(peer_netns_fd);
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
        }
        let mut builder = LinkVeth::new(host_name, peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("create veth pair {host_name} / {peer_name}"), e))
    }

    /// Send one request that only wants an acknowledgement.
    async fn ack(&self, what: String, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut response = handle.request(req).map_err(|e| nl_error(what.clone(), e))?;
        while let Some(reply) = futures_util::StreamExt::next(&mut response).await {
            if let NetlinkPayload::Error(err) = reply.payload {
                return Err(nl_error(what, rtnetlink::Error::NetlinkError(err)));
            }
        }
        Ok(())
    }

    /// Create the VXLAN device `v` (up); its index.
    pub async fn add_vxlan(&self, v: &Vxlan) -> Result<u32> {
        let what = format!("create vxlan device {}", v.name);
        self.handle
            .link()
            .add(vxlan_message(v))
            .execute()
            .await
            .map_err(|e| nl_error(what.clone(), e))?;
        self.link_by_name(&v.name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| Error::Netlink {
                what,
                message: "it vanished right after creation".into(),
                errno: None,
            })
    }

    /// Set (or replace) the permanent neighbour entry `ip` → `mac` on link `index`.
    pub async fn replace_neighbour(&self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.ack(
            format!("set neighbour {ip} on link {index}"),
            RouteNetlinkMessage::NewNeighbour(neighbour_message(index, ip, mac)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Append a forwarding entry `mac` → remote `dst` to the VXLAN link `index`.
    pub async fn append_fdb(&self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        self.ack(
            format!(
                "add fdb entry {} dst {dst} on link {index}",
                mac_string(&mac)
            ),
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, dst)),
            NLM_F_CREATE | NLM_F_APPEND,
        )
        .await
    }

    /// An IPv4 route via `gateway` out of link `index`, `onlink` when the
    /// gateway is on no subnet of that link (flannel's vxlan routes).
    pub async fn add_route_v4(
        &self,
        destination: ipnet::Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
    ) -> Result<()> {
        self.handle
            .route()
            .add(route_v4_message(destination, gateway, index, onlink))
            .execute()
            .await
            .map_err(|e| nl_error(format!("add route to {destination} via {gateway}"), e))
    }

    /// Set link `index` up, attached to `controller` when given, in one message.
    pub async fn set_up_in(&self, index: u32, controller: Option<u32>) -> Result<()> {
        let mut builder = LinkUnspec::new_with_index(index).up();
        if let Some(c) = controller {
            builder = builder.controller(c);
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("set link {index} up"), e))
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("set link {index} up"), e))
    }

    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("set link {index} down"), e))
    }

    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("attach link {index} to bridge {bridge}"), e))
    }

    pub async fn set_promiscuous(&self, index: u32, on: bool) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).promiscuous(on).build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("set promiscuous mode on link {index}"), e))
    }

    /// Let frames leave a bridge port through the port they came in on, so
    /// that a pod reaching itself through a Service gets its packets back.
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        let msg = LinkBridgePort::new(index)
            .append_info_data(InfoBridgePort::HairpinMode(on))
            .build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| nl_error(format!("set hairpin mode on link {index}"), e))
    }

    pub async fn del_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| nl_error(format!("delete link {index}"), e))
    }

    /// Add `addr` (address with prefix) to link `index`; already there is fine.
    pub async fn add_address(&self, index: u32, addr: IpNet) -> Result<()> {
        self.add_address_with(index, addr, true).await
    }

    /// [`Netlink::add_address`] without the broadcast address netlink
    /// requests otherwise carry: what `ip addr add ADDR dev LINK` gives.
    pub async fn add_address_without_broadcast(&self, index: u32, addr: IpNet) -> Result<()> {
        self.add_address_with(index, addr, false).await
    }

    async fn add_address_with(&self, index: u32, addr: IpNet, broadcast: bool) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if !broadcast {
            request
                .message_mut()
                .attributes
                .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_error(format!("add address {addr} to link {index}"), e);
                if e.is_exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Addresses of link `index` (all links when `None`), with prefixes.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        let mut request = self.handle.address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let msgs: Vec<_> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error("list addresses", e))?;
        let mut out = Vec::new();
        for msg in msgs {
            let ip = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = ip {
                if let Ok(net) = IpNet::new(ip, msg.header.prefix_len) {
                    out.push((msg.header.index, net));
                }
            }
        }
        Ok(out)
    }

    /// A route to `destination` via `gateway` (or directly) out of link `index`.
    pub async fn add_route(
        &self,
        destination: IpNet,
        gateway: Option<IpAddr>,
        index: u32,
    ) -> Result<()> {
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .map_err(|e| Error::Netlink {
                what: format!("route to {destination}"),
                message: e.to_string(),
                errno: None,
            })?
            .output_interface(index);
        if let Some(gw) = gateway {
            builder = builder.gateway(gw).map_err(|e| Error::Netlink {
                what: format!("route to {destination} via {gw}"),
                message: e.to_string(),
                errno: None,
            })?;
        }
        let what = match gateway {
            Some(gw) => format!("add route to {destination} via {gw}"),
            None => format!("add route to {destination}"),
        };
        match self.handle.route().add(builder.build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_error(what, e);
                if e.is_exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Routes of the main table for one family.
    pub async fn routes(&self, ipv6: bool) -> Result<Vec<RouteInfo>> {
        let request = if ipv6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error("list routes", e))?;
        let mut out = Vec::new();
        for msg in msgs {
            let mut dest: Option<IpAddr> = None;
            let mut gateway = None;
            let mut output = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(a) => dest = route_ip(a),
                    RouteAttribute::Gateway(a) => gateway = route_ip(a),
                    RouteAttribute::Oif(i) => output = Some(*i),
                    _ => {}
                }
            }
            let dest = dest.unwrap_or(if ipv6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            });
            if let Ok(destination) = IpNet::new(dest, msg.header.destination_prefix_length) {
                out.push(RouteInfo {
                    destination,
                    gateway,
                    output,
                });
            }
        }
        Ok(out)
    }
}

/// An IPv4 route of the main table, with what tells whose it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    pub destination: ipnet::Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub output: Option<u32>,
    /// `proto` of `ip route`: who made it (strait marks its own).
    pub protocol: u8,
    pub onlink: bool,
}

/// A neighbour (ARP) entry of one link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighbourEntry {
    pub ip: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

/// Six bytes of a link-layer address, or `None` for anything else.
fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

impl Netlink {
    /// The VXLAN settings of link `index` as the kernel reports them
    /// (`None`: no such link, or not a VXLAN device). `mac` and `mtu` are
    /// the link's.
    pub async fn vxlan_of(&self, index: u32) -> Result<Option<Vxlan>> {
        use netlink_packet_route::link::InfoVxlan;
        let mut stream = self.handle.link().get().match_index(index).execute();
        let msg = match stream.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) => {
                let e = nl_error(format!("find link {index}"), e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let link = link_of(&msg);
        let mut data = None;
        for attr in &msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = attr {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(d)) = info {
                        data = Some(d.clone());
                    }
                }
            }
        }
        let Some(data) = data else {
            return Ok(None);
        };
        let mut v = Vxlan {
            name: link.name,
            vni: 0,
            dstport: 0,
            dev: 0,
            local: Ipv4Addr::UNSPECIFIED,
            // The kernel's default when the attribute is absent.
            learning: true,
            mac: parse_mac(&link.mac).unwrap_or_default(),
            mtu: link.mtu,
        };
        for d in data {
            match d {
                InfoVxlan::Id(id) => v.vni = id,
                InfoVxlan::Port(p) => v.dstport = p,
                InfoVxlan::Link(l) => v.dev = l,
                InfoVxlan::Local(ip) => v.local = ip,
                InfoVxlan::Learning(l) => v.learning = l,
                _ => {}
            }
        }
        Ok(Some(v))
    }

    /// Set the MTU of link `index`.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("set mtu {mtu} on link {index}"), e))
    }

    /// Remove `addr` from link `index`; already gone is fine.
    pub async fn del_address(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut msg = netlink_packet_route::address::AddressMessage::default();
        msg.header.family = match addr {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.addr()));
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_error(format!("remove address {addr} from link {index}"), e);
                if e.is_not_found() || e.errno() == Some(99) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The unicast IPv4 routes of the main table.
    pub async fn routes_v4_main(&self) -> Result<Vec<RouteEntry>> {
        use netlink_packet_route::route::{RouteFlags, RouteHeader};
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error("list routes", e))?;
        let mut out = Vec::new();
        for msg in msgs {
            let mut table = u32::from(msg.header.table);
            let mut dest = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            let mut output = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = *a,
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
                    RouteAttribute::Oif(i) => output = Some(*i),
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN)
                || msg.header.kind != RouteType::Unicast
            {
                continue;
            }
            if let Ok(destination) = ipnet::Ipv4Net::new(dest, msg.header.destination_prefix_length)
            {
                out.push(RouteEntry {
                    destination,
                    gateway,
                    output,
                    protocol: u8::from(msg.header.protocol),
                    onlink: msg.header.flags.contains(RouteFlags::Onlink),
                });
            }
        }
        Ok(out)
    }

    /// Add or replace the route to `destination` in the main table: via
    /// `gateway` out of link `index`, marked with `protocol`.
    pub async fn replace_route_v4(
        &self,
        destination: ipnet::Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
        protocol: u8,
    ) -> Result<()> {
        let mut msg = route_v4_message(destination, gateway, index, onlink);
        msg.header.protocol = RouteProtocol::from(protocol);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_error(format!("set route to {destination} via {gateway}"), e))
    }

    /// Remove the main table's route to `destination` out of link `index`;
    /// already gone is fine.
    pub async fn del_route_v4(&self, destination: ipnet::Ipv4Net, index: u32) -> Result<()> {
        use netlink_packet_route::route::RouteScope;
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .output_interface(index)
            .build();
        // As `ip route del` asks: any protocol, any scope (the kernel
        // matches a given protocol, and would then find no route).
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_error(format!("remove route to {destination}"), e);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Dump neighbour messages of one family (`Inet`: ARP; `Bridge`: FDB).
    async fn neighbour_dump(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error("list neighbours", e))
    }

    /// The IPv4 neighbour entries of link `index`.
    pub async fn neighbours_v4(&self, index: u32) -> Result<Vec<NeighbourEntry>> {
        let mut out = Vec::new();
        for msg in self.neighbour_dump(AddressFamily::Inet).await? {
            if msg.header.ifindex != index {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
                    NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(NeighbourEntry {
                    ip,
                    mac,
                    permanent: msg.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    /// Remove the neighbour entry `ip` of link `index`; already gone is fine.
    pub async fn del_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_error(format!("remove neighbour {ip} from link {index}"), e);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The forwarding entries of the device `index` itself (`bridge fdb
    /// show dev LINK` with `self`): MAC and remote, if any.
    pub async fn fdb_of(&self, index: u32) -> Result<Vec<([u8; 6], Option<Ipv4Addr>)>> {
        let mut out = Vec::new();
        for msg in self.neighbour_dump(AddressFamily::Bridge).await? {
            if msg.header.ifindex != index || !msg.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(*a),
                    // In the bridge family the address comes undecoded.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        dst = <[u8; 4]>::try_from(bytes.as_slice())
                            .ok()
                            .map(Ipv4Addr::from);
                    }
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push((mac, dst));
            }
        }
        Ok(out)
    }

    /// Remove the forwarding entry `mac` → `dst` of the device `index`;
    /// already gone is fine.
    pub async fn del_fdb(&self, index: u32, mac: [u8; 6], dst: Option<Ipv4Addr>) -> Result<()> {
        let mut msg = fdb_message(index, mac, dst.unwrap_or(Ipv4Addr::UNSPECIFIED));
        if dst.is_none() {
            msg.attributes
                .retain(|a| !matches!(a, NeighbourAttribute::Destination(_)));
        }
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_error(
                    format!("remove fdb entry {} from link {index}", mac_string(&mac)),
                    e,
                );
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::InfoVxlan;
    use netlink_packet_route::route::RouteFlags;

    #[test]
    fn macs_parse_and_print_back() {
        let mac = parse_mac("0a:58:ac:12:00:02").unwrap();
        assert_eq!(mac, [0x0a, 0x58, 0xac, 0x12, 0, 2]);
        assert_eq!(mac_string(&mac), "0a:58:ac:12:00:02");
        for bad in [
            "",
            "0a:58:ac:12:00",
            "0a:58:ac:12:00:02:03",
            "0a:58:ac:12:00:2",
            "zz:58:ac:12:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn vxlan_message_says_what_ip_link_add_says() {
        let msg = vxlan_message(&Vxlan {
            name: "flannel.1".into(),
            vni: 1,
            dstport: 8472,
            dev: 7,
            local: Ipv4Addr::new(172, 18, 0, 2),
            learning: false,
            mac: [0x0a, 0x58, 0xac, 0x12, 0, 2],
            mtu: 1450,
        });
        assert!(msg.header.flags.contains(LinkFlags::Up));
        let attrs = &msg.attributes;
        assert!(attrs.contains(&LinkAttribute::IfName("flannel.1".into())));
        assert!(attrs.contains(&LinkAttribute::Mtu(1450)));
        assert!(attrs.contains(&LinkAttribute::Address(vec![0x0a, 0x58, 0xac, 0x12, 0, 2])));
        let data = attrs
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("vxlan info data");
        for want in [
            InfoVxlan::Id(1),
            InfoVxlan::Port(8472),
            InfoVxlan::Link(7),
            InfoVxlan::Local(Ipv4Addr::new(172, 18, 0, 2)),
            InfoVxlan::Learning(false),
        ] {
            assert!(data.contains(&want), "{want:?} missing from {data:?}");
        }
    }

    #[test]
    fn fdb_entries_belong_to_the_device_and_name_the_remote() {
        let msg = fdb_message(5, [1, 2, 3, 4, 5, 6], Ipv4Addr::new(172, 18, 0, 3));
        assert_eq!(msg.header.family, AddressFamily::Bridge);
        assert_eq!(msg.header.ifindex, 5);
        // NTF_SELF: the VXLAN device's own table, as `bridge fdb` defaults to.
        assert!(msg.header.flags.contains(NeighbourFlags::Own));
        assert!(msg
            .attributes
            .contains(&NeighbourAttribute::LinkLayerAddress(vec![
                1, 2, 3, 4, 5, 6
            ])));
        assert!(msg
            .attributes
            .contains(&NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(172, 18, 0, 3)
            ))));
    }

    #[test]
    fn neighbours_are_permanent_arp_entries() {
        let msg = neighbour_message(5, Ipv4Addr::new(10, 244, 1, 0), [1, 2, 3, 4, 5, 6]);
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.state, NeighbourState::Permanent);
        assert!(msg
            .attributes
            .contains(&NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(10, 244, 1, 0)
            ))));
    }

    #[test]
    fn onlink_routes_carry_the_flag_and_others_do_not() {
        let dest: ipnet::Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 244, 1, 0);
        let on = route_v4_message(dest, gw, 4, true);
        assert!(on.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(on.header.destination_prefix_length, 24);
        assert!(on.attributes.contains(&RouteAttribute::Oif(4)));
        assert!(on
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(gw))));
        let off = route_v4_message(dest, gw, 4, false);
        assert!(!off.header.flags.contains(RouteFlags::Onlink));
    }
}
