//! The reachability matrix: for every pair of pods, port and protocol,
//! whether a new connection is allowed.

use serde::Serialize;

/// The protocols a NetworkPolicy port may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// As the API spells it (`TCP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One probe's answer, as `-o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub allowed: bool,
}

/// Every probe's answer; `pods` in the order of rows and columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matrix {
    pub pods: Vec<PodRef>,
    pub cells: Vec<Cell>,
}

/// One cell where two matrices disagree (or one has no answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    /// `self`'s answer; `None` when it has no such cell.
    pub left: Option<bool>,
    /// `other`'s answer; `None` when it has no such cell.
    pub right: Option<bool>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<bool>| match v {
            Some(true) => "allowed",
            Some(false) => "denied",
            None => "absent",
        };
        write!(
            f,
            "{} -> {} {}/{}: {} vs {}",
            self.from,
            self.to,
            self.protocol.as_str(),
            self.port,
            show(self.left),
            show(self.right)
        )
    }
}

impl Matrix {
    /// The answer for one probe, if the matrix has it.
    pub fn get(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> Option<bool> {
        self.cells
            .iter()
            .find(|c| c.from == from && c.to == to && c.port == port && c.protocol == protocol)
            .map(|c| c.allowed)
    }

    /// Every answer by probe: lookups in O(1) for tables of many pods.
    fn index(&self) -> std::collections::HashMap<(&str, &str, u16, Protocol), bool> {
        self.cells
            .iter()
            .map(|c| {
                (
                    (c.from.as_str(), c.to.as_str(), c.port, c.protocol),
                    c.allowed,
                )
            })
            .collect()
    }

    /// The (protocol, port) pairs the matrix has cells for, in cell order.
    pub fn probes(&self) -> Vec<(Protocol, u16)> {
        let mut out: Vec<(Protocol, u16)> = Vec::new();
        for c in &self.cells {
            if !out.contains(&(c.protocol, c.port)) {
                out.push((c.protocol, c.port));
            }
        }
        out
    }

    /// The cyclonus-style text: one table per protocol/port, a header row
    /// of `ns/pod` columns, one row per source pod; `.` allowed, `X`
    /// denied (`?` where the matrix has no answer).
    pub fn to_text(&self) -> String {
        let names: Vec<String> = self.pods.iter().map(ToString::to_string).collect();
        let index = self.index();
        let mut out = String::new();
        for (i, (protocol, port)) in self.probes().into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let corner = format!("{}/{}", protocol.as_str(), port);
            let first = names
                .iter()
                .map(String::len)
                .chain([corner.len()])
                .max()
                .unwrap_or(0);
            let widths: Vec<usize> = names.iter().map(|n| n.len().max(1)).collect();
            let rule = {
                let mut r = format!("+{}+", "-".repeat(first + 2));
                for w in &widths {
                    r.push_str(&"-".repeat(w + 2));
                    r.push('+');
                }
                r.push('\n');
                r
            };
            let row = |label: &str, cells: &[String]| {
                let mut r = format!("| {label:<first$} |");
                for (cell, w) in cells.iter().zip(&widths) {
                    r.push_str(&format!(" {cell:<w$} |"));
                }
                r.push('\n');
                r
            };
            out.push_str(&rule);
            out.push_str(&row(&corner, &names));
            out.push_str(&rule);
            for from in &names {
                let marks: Vec<String> = names
                    .iter()
                    .map(|to| {
                        match index
                            .get(&(from.as_str(), to.as_str(), port, protocol))
                            .copied()
                        {
                            Some(true) => ".",
                            Some(false) => "X",
                            None => "?",
                        }
                        .to_owned()
                    })
                    .collect();
                out.push_str(&row(from, &marks));
            }
            out.push_str(&rule);
        }
        out
    }

    /// `-o json`: the list of cells, each
    /// `{"from", "to", "port", "protocol", "allowed"}`.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        let mut text = serde_json::to_string_pretty(&self.cells).unwrap_or_else(|_| "[]".into());
        text.push('\n');
        text
    }

    /// Every cell where `self` and `other` differ, including cells only
    /// one of them has, in `self`'s cell order then `other`'s.
    pub fn differences(&self, other: &Matrix) -> Vec<Difference> {
        let mut out = Vec::new();
        let mine = self.index();
        let theirs_all = other.index();
        for c in &self.cells {
            let theirs = theirs_all
                .get(&(c.from.as_str(), c.to.as_str(), c.port, c.protocol))
                .copied();
            if theirs != Some(c.allowed) {
                out.push(Difference {
                    from: c.from.clone(),
                    to: c.to.clone(),
                    port: c.port,
                    protocol: c.protocol,
                    left: Some(c.allowed),
                    right: theirs,
                });
            }
        }
        for c in &other.cells {
            if !mine.contains_key(&(c.from.as_str(), c.to.as_str(), c.port, c.protocol)) {
                out.push(Difference {
                    from: c.from.clone(),
                    to: c.to.clone(),
                    port: c.port,
                    protocol: c.protocol,
                    left: None,
                    right: Some(c.allowed),
                });
            }
        }
        out
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    /// `tcp`, `udp` or `sctp`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(format!("{s:?} is not a protocol: use tcp, udp or sctp")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Matrix {
        let pods = vec![
            PodRef {
                namespace: "x".into(),
                name: "a".into(),
            },
            PodRef {
                namespace: "y".into(),
                name: "web-1".into(),
            },
        ];
        let mut cells = Vec::new();
        for from in &pods {
            for to in &pods {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    cells.push(Cell {
                        from: from.to_string(),
                        to: to.to_string(),
                        port: 80,
                        protocol,
                        // y/web-1 takes TCP from itself only.
                        allowed: to.namespace == "x" || (protocol == Protocol::Tcp && from == to),
                    });
                }
            }
        }
        Matrix { pods, cells }
    }

    #[test]
    fn text_is_one_table_per_protocol_and_port() {
        insta::assert_snapshot!(sample().to_text());
    }

    #[test]
    fn json_is_a_list_of_cells() {
        insta::assert_snapshot!(sample().to_json());
    }

    #[test]
    fn differences_name_each_cell() {
        let a = sample();
        let mut b = sample();
        b.cells[0].allowed = !b.cells[0].allowed;
        b.cells.pop();
        let d: Vec<String> = a.differences(&b).iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            [
                "x/a -> x/a TCP/80: allowed vs denied",
                "y/web-1 -> y/web-1 UDP/80: denied vs absent"
            ]
        );
        assert!(a.differences(&a).is_empty());
        let d = b.differences(&a);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].left, None);
    }

    #[test]
    fn protocols_parse_in_any_case() {
        assert_eq!("tcp".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert_eq!("SCTP".parse::<Protocol>(), Ok(Protocol::Sctp));
        assert!("icmp".parse::<Protocol>().is_err());
    }
}
