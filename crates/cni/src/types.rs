//! The CNI wire format: network configuration in, results out, in the shape
//! of the version the runtime asked for.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{code, Error, Result};

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The network configuration on stdin, with the reference `bridge` plugin's
/// field names so that a conflist moves over by changing `type` only.
/// Unknown fields are ignored, as the spec requires.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub args: Option<ConfArgs>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    /// The older single-range form host-local still accepts.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub routes: Vec<RouteConf>,
    #[serde(default)]
    pub data_dir: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    pub subnet: String,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RouteConf {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConfArgs {
    #[serde(default)]
    pub cni: Option<CniArgs>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CniArgs {
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Parse stdin: malformed JSON is a decoding failure (code 6), a field of the
/// wrong type an invalid configuration (code 7) naming the field.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        Error::new(
            code::DECODING_FAILURE,
            format!("cannot decode the network configuration: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(Error::new(
            code::DECODING_FAILURE,
            "the network configuration must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize::<_, NetConf>(&value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(config)".to_owned()
        } else {
            path
        };
        Error::config(&field, e.into_inner())
    })
}

/// One configured interface in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// The result of ADD in strait's own terms; [`CniResult::to_json`] shapes it
/// for the requested version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConf>,
}

impl CniResult {
    pub fn to_json(&self, version: &str) -> Value {
        let old = version.starts_with("0.");
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = serde_json::to_value(ip).unwrap_or_default();
                if old {
                    // 0.3.x and 0.4.0 name the family of each address.
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    v["version"] = Value::String(family.into());
                }
                v
            })
            .collect();
        serde_json::json!({
            "cniVersion": version,
            "interfaces": self.interfaces,
            "ips": ips,
            "routes": self.routes,
            "dns": {},
        })
    }

    /// Read a `prevResult` of any supported version.
    pub fn from_value(value: &Value) -> Result<CniResult> {
        CniResult::deserialize(value).map_err(|e| Error::config("prevResult", e))
    }
}

/// `CNI_ARGS`: `K=V;K=V`.
pub fn parse_cni_args(args: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Error::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            )
        })?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}
