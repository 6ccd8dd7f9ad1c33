//! Links, addresses and routes over rtnetlink, for one network namespace:
//! the one the calling thread was in when [`Netlink::connect`] ran.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::{Error, Result};

/// A netlink connection to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
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
        Ok(Netlink { handle })
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

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl_error(format!("set link {index} up"), e))
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
        match self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
        {
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

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
