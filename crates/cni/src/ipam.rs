//! IPAM with host-local's semantics and on-disk format, so that addresses
//! handed out by the reference plugin are respected and vice versa:
//! `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.<set>` the last address given from range set `<set>`,
//! and `lock` is flock()ed by whoever changes the directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{code, Error, Result};
use crate::types::{IpamConf, RangeConf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LINE_BREAK: &str = "\r\n";

/// One range: addresses `start..=end` of `subnet`, `gateway` never handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

/// Ranges of one address family; one address is allocated per set.
pub type RangeSet = Vec<Range>;

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

impl Range {
    fn from_conf(conf: &RangeConf, field: &str) -> Result<Range> {
        let subnet: IpNet = conf.subnet.parse().map_err(|_| {
            Error::config(
                &format!("{field}.subnet"),
                format!("{:?} is not a CIDR", conf.subnet),
            )
        })?;
        let subnet = subnet.trunc();
        let v4 = subnet.addr().is_ipv4();
        let size_bits = subnet.max_prefix_len() - subnet.prefix_len();
        if size_bits < 2 {
            return Err(Error::config(
                &format!("{field}.subnet"),
                format!("{subnet} is too small"),
            ));
        }
        let network = to_u128(subnet.network());
        let last = to_u128(subnet.broadcast());
        // Like host-local: .1 to the last address before broadcast (IPv4).
        let first_usable = network + 1;
        let last_usable = if v4 { last - 1 } else { last };
        let check = |ip: IpAddr, name: &str| -> Result<u128> {
            let n = to_u128(ip);
            if ip.is_ipv4() != v4 || n < first_usable || n > last_usable {
                return Err(Error::config(
                    &format!("{field}.{name}"),
                    format!("{ip} is not a usable address of {subnet}"),
                ));
            }
            Ok(n)
        };
        let start = match conf.range_start {
            Some(ip) => check(ip, "rangeStart")?,
            None => first_usable,
        };
        let end = match conf.range_end {
            Some(ip) => check(ip, "rangeEnd")?,
            None => last_usable,
        };
        if start > end {
            return Err(Error::config(
                &format!("{field}.rangeStart"),
                "is after rangeEnd",
            ));
        }
        let gateway = match conf.gateway {
            Some(gw) => {
                if !subnet.contains(&gw) {
                    return Err(Error::config(
                        &format!("{field}.gateway"),
                        format!("{gw} is not in {subnet}"),
                    ));
                }
                Some(gw)
            }
            None => Some(from_u128(first_usable, v4)),
        };
        Ok(Range {
            subnet,
            start: from_u128(start, v4),
            end: from_u128(end, v4),
            gateway,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.subnet.addr().is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }
}

/// The range sets of an `ipam` section (`ranges`, or the older `subnet` form).
pub fn range_sets(ipam: &IpamConf) -> Result<Vec<RangeSet>> {
    let mut sets = Vec::new();
    if let Some(subnet) = &ipam.subnet {
        let conf = RangeConf {
            subnet: subnet.clone(),
            range_start: ipam.range_start,
            range_end: ipam.range_end,
            gateway: ipam.gateway,
        };
        sets.push(vec![Range::from_conf(&conf, "ipam")?]);
    }
    for (i, set) in ipam.ranges.iter().enumerate() {
        if set.is_empty() {
            return Err(Error::config(
                &format!("ipam.ranges[{i}]"),
                "an empty range set",
            ));
        }
        let mut ranges = Vec::new();
        for (j, conf) in set.iter().enumerate() {
            let range = Range::from_conf(conf, &format!("ipam.ranges[{i}][{j}]"))?;
            if let Some(first) = ranges.first() {
                let first: &Range = first;
                if first.subnet.addr().is_ipv4() != range.subnet.addr().is_ipv4() {
                    return Err(Error::config(
                        &format!("ipam.ranges[{i}][{j}]"),
                        "a range set must be of one address family",
                    ));
                }
            }
            if ranges
                .iter()
                .any(|r: &Range| r.contains(range.start) || r.contains(range.end))
            {
                return Err(Error::config(
                    &format!("ipam.ranges[{i}][{j}]"),
                    "overlaps another range of the set",
                ));
            }
            ranges.push(range);
        }
        sets.push(ranges);
    }
    if sets.is_empty() {
        return Err(Error::config(
            "ipam.ranges",
            "no range: give ipam.ranges (or ipam.subnet)",
        ));
    }
    Ok(sets)
}

/// One reservation on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub ip: IpAddr,
    pub container_id: String,
    pub ifname: String,
}

/// The directory of one network, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(code::IO_FAILURE, format!("{what} {}: {e}", path.display()))
}

impl Store {
    /// Open (creating) `<data_dir>/<network>` and take its lock; waits for
    /// other ADDs and DELs of the same network, reference plugin included.
    pub fn open(data_dir: &str, network: &str) -> Result<Store> {
        let dir = Path::new(data_dir).join(network);
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("open", &lock_path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io("lock", &lock_path, std::io::Error::from(e)))?;
        Ok(Store { dir, _lock: lock })
    }

    /// Every reservation in the directory.
    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io("read", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let Ok(content) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = content.trim().splitn(2, LINE_BREAK);
            let container_id = lines.next().unwrap_or_default().trim().to_owned();
            let ifname = lines.next().unwrap_or_default().trim().to_owned();
            out.push(Reservation {
                ip,
                container_id,
                ifname,
            });
        }
        out.sort_by_key(|r| to_u128(r.ip));
        Ok(out)
    }

    fn reserved(&self, ip: IpAddr) -> bool {
        self.dir.join(ip.to_string()).exists()
    }

    /// Reserve `ip` for the attachment; false if it is taken.
    fn reserve(&self, ip: IpAddr, container_id: &str, ifname: &str, set: usize) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io("create", &path, e)),
        };
        // A reservation half written would hold the address for no one:
        // on any failure it goes again, and the caller sees the error.
        let written = file
            .write_all(format!("{container_id}{LINE_BREAK}{ifname}").as_bytes())
            .map_err(|e| io("write", &path, e))
            .and_then(|()| {
                let last = self.dir.join(format!("last_reserved_ip.{set}"));
                std::fs::write(&last, ip.to_string()).map_err(|e| io("write", &last, e))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        std::fs::read_to_string(self.dir.join(format!("last_reserved_ip.{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Addresses held by an attachment.
    pub fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|r| {
                r.container_id == container_id && (r.ifname == ifname || r.ifname.is_empty())
            })
            .map(|r| r.ip)
            .collect())
    }

    /// Free every address of an attachment; returns them. Nothing held is fine.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let held = self.held_by(container_id, ifname)?;
        for ip in &held {
            self.release_ip(*ip)?;
        }
        Ok(held)
    }

    pub fn release_ip(&self, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path, e)),
        }
    }

    /// One address from each range set for the attachment: a requested one if
    /// it falls in the set, else the next free one after the last reserved
    /// (round robin, as host-local does). All or nothing.
    pub fn allocate<'s>(
        &self,
        sets: &'s [RangeSet],
        container_id: &str,
        ifname: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<(IpAddr, &'s Range)>> {
        if let Some(ip) = self.held_by(container_id, ifname)?.first() {
            return Err(Error::internal(format!(
                "{ip} is already allocated to container {container_id} interface {ifname}; duplicate allocation is not allowed"
            )));
        }
        let mut got: Vec<(IpAddr, &'s Range)> = Vec::new();
        let result = (|| {
            for (i, set) in sets.iter().enumerate() {
                let wanted = requested
                    .iter()
                    .find(|ip| set.iter().any(|r| r.contains(**ip)));
                let (ip, range) = match wanted {
                    Some(ip) => {
                        let range = set.iter().find(|r| r.contains(*ip)).expect("found above");
                        if range.gateway == Some(*ip) {
                            return Err(Error::internal(format!(
                                "requested address {ip} is the gateway of {}",
                                range.subnet
                            )));
                        }
                        if !self.reserve(*ip, container_id, ifname, i)? {
                            return Err(Error::internal(format!(
                                "requested address {ip} is already allocated"
                            )));
                        }
                        (*ip, range)
                    }
                    None => self.next_free(set, i, container_id, ifname)?,
                };
                got.push((ip, range));
            }
            if let Some(ip) = requested
                .iter()
                .find(|ip| !sets.iter().flatten().any(|r| r.contains(**ip)))
            {
                return Err(Error::internal(format!(
                    "requested address {ip} is not in any configured range"
                )));
            }
            Ok(())
        })();
        if let Err(e) = result {
            for (ip, _) in &got {
                let _ = self.release_ip(*ip);
            }
            return Err(e);
        }
        Ok(got)
    }

    fn next_free<'s>(
        &self,
        set: &'s RangeSet,
        index: usize,
        container_id: &str,
        ifname: &str,
    ) -> Result<(IpAddr, &'s Range)> {
        let v4 = set[0].subnet.addr().is_ipv4();
        // Walk the set as one list: all of range 0, then range 1, …,
        // starting after the last reserved address when it is in the set.
        let total: u128 = set
            .iter()
            .map(|r| to_u128(r.end) - to_u128(r.start) + 1)
            .sum();
        let mut position = 0u128;
        if let Some(last) = self.last_reserved(index) {
            let mut offset = 0u128;
            for r in set {
                if r.contains(last) {
                    position = (offset + to_u128(last) - to_u128(r.start) + 1) % total;
                    break;
                }
                offset += to_u128(r.end) - to_u128(r.start) + 1;
            }
        }
        let at = |mut pos: u128| -> (IpAddr, &'s Range) {
            for r in set {
                let len = to_u128(r.end) - to_u128(r.start) + 1;
                if pos < len {
                    return (from_u128(to_u128(r.start) + pos, v4), r);
                }
                pos -= len;
            }
            unreachable!("position is below the total")
        };
        // Bounded: a /8 walk must not run for ever on a full range.
        let limit = total.min(1 << 24);
        for step in 0..limit {
            let (ip, range) = at((position + step) % total);
            if range.gateway == Some(ip) || self.reserved(ip) {
                continue;
            }
            if self.reserve(ip, container_id, ifname, index)? {
                return Ok((ip, range));
            }
        }
        let subnets: Vec<String> = set.iter().map(|r| r.subnet.to_string()).collect();
        Err(Error::internal(format!(
            "no IP addresses available in range set {}",
            subnets.join(", ")
        )))
    }

    /// Whether each set has a free address (for STATUS).
    pub fn has_free(&self, set: &RangeSet) -> bool {
        let v4 = set[0].subnet.addr().is_ipv4();
        set.iter().any(|r| {
            let (a, b) = (to_u128(r.start), to_u128(r.end));
            (a..=b.min(a + (1 << 24))).any(|n| {
                let ip = from_u128(n, v4);
                r.gateway != Some(ip) && !self.reserved(ip)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> IpamConf {
        serde_json::from_str(json).unwrap()
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "strait-ipam-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn ranges_default_like_host_local() {
        let sets = range_sets(&conf(r#"{"ranges":[[{"subnet":"10.1.2.0/24"}]]}"#)).unwrap();
        let r = &sets[0][0];
        assert_eq!(r.start.to_string(), "10.1.2.1");
        assert_eq!(r.end.to_string(), "10.1.2.254");
        assert_eq!(r.gateway.unwrap().to_string(), "10.1.2.1");
        let err = range_sets(&conf(
            r#"{"ranges":[[{"subnet":"10.1.2.0/24","rangeStart":"10.1.3.5"}]]}"#,
        ))
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(
            err.msg.contains("ipam.ranges[0][0].rangeStart"),
            "{}",
            err.msg
        );
        assert!(range_sets(&conf(r#"{"subnet":"10.9.0.0/16"}"#)).is_ok());
        assert!(range_sets(&conf(r#"{}"#)).is_err());
    }

    #[test]
    fn round_robin_reservations_in_host_local_format() {
        let dir = tempdir();
        let sets = range_sets(&conf(r#"{"ranges":[[{"subnet":"10.1.2.0/29"}]]}"#)).unwrap();
        let store = Store::open(dir.to_str().unwrap(), "net").unwrap();
        let a = store.allocate(&sets, "ctr-a", "eth0", &[]).unwrap()[0].0;
        let b = store.allocate(&sets, "ctr-b", "eth0", &[]).unwrap()[0].0;
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("10.1.2.2".into(), "10.1.2.3".into())
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("net/10.1.2.2")).unwrap(),
            "ctr-a\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("net/last_reserved_ip.0")).unwrap(),
            "10.1.2.3"
        );
        // Releasing a and allocating again continues after the last one.
        store.release("ctr-a", "eth0").unwrap();
        let c = store.allocate(&sets, "ctr-c", "eth0", &[]).unwrap()[0].0;
        assert_eq!(c.to_string(), "10.1.2.4");
        // Duplicate allocation for one attachment is refused.
        assert!(store.allocate(&sets, "ctr-c", "eth0", &[]).is_err());
        // .2 .3(b) .4(c) .5 .6 : three more fit, then the range is full.
        for id in ["d", "e", "f"] {
            store.allocate(&sets, id, "eth0", &[]).unwrap();
        }
        let err = store.allocate(&sets, "g", "eth0", &[]).unwrap_err();
        assert!(
            err.msg
                .contains("no IP addresses available in range set 10.1.2.0/29"),
            "{}",
            err.msg
        );
        assert!(!store.has_free(&sets[0]));
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn requested_addresses() {
        let dir = tempdir();
        let sets = range_sets(&conf(r#"{"ranges":[[{"subnet":"10.1.2.0/24"}]]}"#)).unwrap();
        let store = Store::open(dir.to_str().unwrap(), "net").unwrap();
        let ip: IpAddr = "10.1.2.77".parse().unwrap();
        assert_eq!(store.allocate(&sets, "a", "eth0", &[ip]).unwrap()[0].0, ip);
        assert!(store
            .allocate(&sets, "b", "eth0", &[ip])
            .unwrap_err()
            .msg
            .contains("already allocated"));
        let gw: IpAddr = "10.1.2.1".parse().unwrap();
        assert!(store
            .allocate(&sets, "c", "eth0", &[gw])
            .unwrap_err()
            .msg
            .contains("gateway"));
        let outside: IpAddr = "10.9.9.9".parse().unwrap();
        assert!(store
            .allocate(&sets, "d", "eth0", &[outside])
            .unwrap_err()
            .msg
            .contains("not in any configured range"));
        // Nothing leaked by the failures.
        assert_eq!(store.reservations().unwrap().len(), 1);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
