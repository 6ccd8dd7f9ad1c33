//! Service addresses allocated in the API server's write, as kube-apiserver
//! allocates them: a Service's ClusterIPs and NodePorts are in the response
//! of its create (and in the next `kubectl get`), and one that asks for an
//! address another Service holds, or one outside the service CIDR, is a 422
//! naming the field, and nothing is stored. The choice is the standalone
//! controllers' own ([`strait_model::controllers::allocate_service`]), so
//! that the lab's controllers, which run the same allocation over what the
//! store holds, agree with every address handed out here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::Value;
use strait_apiserver::admission::ModelAdmission;
use strait_apiserver::store::{Admission, Stored};
use strait_apiserver::{ApiError, Cause, Resource};
use strait_model::controllers::{allocate_service, ClusterConfig, Held};
use strait_model::k8s_openapi::api::core::v1::Service;

/// The model's admission, then the Service allocator.
pub struct LabAdmission {
    config: ClusterConfig,
    index: Mutex<Index>,
}

/// Who was given each address and port. An entry is believed only while
/// the store still holds that Service (same uid) with that address: a
/// deleted or changed Service frees what it had in the same locked step
/// as its write, whichever way it left (delete, namespace deletion, last
/// finalizer), with no release to forget.
#[derive(Default)]
struct Index {
    ips: HashMap<IpAddr, Holder>,
    ports: HashMap<i32, Holder>,
}

#[derive(Clone, PartialEq, Eq)]
struct Holder {
    namespace: String,
    name: String,
    uid: String,
}

/// Stale entries are swept once the index is this much larger than the
/// Services stored: memory stays bounded by what the store holds.
const SLACK: usize = 4096;

impl LabAdmission {
    pub fn new(config: ClusterConfig) -> LabAdmission {
        LabAdmission {
            config,
            index: Mutex::new(Index::default()),
        }
    }
}

fn is_services(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.kind == "Service"
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn needs_cluster_ip(service: &Value) -> bool {
    text(service, "/spec/type") != "ExternalName"
}

fn needs_node_ports(service: &Value) -> bool {
    match text(service, "/spec/type") {
        "NodePort" => true,
        "LoadBalancer" => {
            service
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false)
        }
        _ => false,
    }
}

fn needs_health_check(service: &Value) -> bool {
    text(service, "/spec/type") == "LoadBalancer"
        && text(service, "/spec/externalTrafficPolicy") == "Local"
}

/// A port's protocol, TCP when not given (as admission defaults it).
fn protocol(port: &Value) -> &str {
    match text(port, "/protocol") {
        "" => "TCP",
        p => p,
    }
}

fn unset(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// What an update that does not name them keeps of the stored Service, as
/// kube-apiserver's `patchAllocatedValues` does: a `kubectl replace` or an
/// apply whose list of ports replaces the stored one keeps its ClusterIPs
/// and NodePorts (matched by port and protocol).
fn keep_allocated(new: &mut Value, old: &Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let old_spec = &old["spec"];
    let new_type = spec.get("type").and_then(Value::as_str).unwrap_or("");
    if needs_cluster_ip(old) && new_type != "ExternalName" {
        let kept_ips = unset(spec.get("clusterIP")) && unset(spec.get("clusterIPs"));
        for field in ["clusterIP", "clusterIPs"] {
            if unset(spec.get(field)) && !unset(old_spec.get(field)) {
                spec.insert(field.into(), old_spec[field].clone());
            }
        }
        if kept_ips {
            for field in ["ipFamilies", "ipFamilyPolicy"] {
                if unset(spec.get(field)) && !unset(old_spec.get(field)) {
                    spec.insert(field.into(), old_spec[field].clone());
                }
            }
        }
    }
    let new_view = Value::Object(spec.clone());
    let wrapped = serde_json::json!({ "spec": new_view });
    if needs_node_ports(old) && needs_node_ports(&wrapped) {
        let old_ports = old_spec["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter(|p| unset(p.get("nodePort"))) {
                let had = old_ports
                    .iter()
                    .find(|o| o["port"] == port["port"] && protocol(o) == protocol(port));
                if let Some(np) = had.map(|o| &o["nodePort"]).filter(|n| !unset(Some(n))) {
                    port["nodePort"] = np.clone();
                }
            }
        }
    }
    if needs_health_check(old)
        && needs_health_check(&wrapped)
        && unset(spec.get("healthCheckNodePort"))
        && !unset(old_spec.get("healthCheckNodePort"))
    {
        spec.insert(
            "healthCheckNodePort".into(),
            old_spec["healthCheckNodePort"].clone(),
        );
    }
}

/// kube-apiserver's update validation: a ClusterIP, once set, stays.
fn check_immutable(resource: &Resource, new: &Value, old: &Value) -> Result<(), ApiError> {
    let before = text(old, "/spec/clusterIP");
    let after = text(new, "/spec/clusterIP");
    if needs_cluster_ip(old)
        && needs_cluster_ip(new)
        && !before.is_empty()
        && !after.is_empty()
        && before != after
    {
        let name = text(new, "/metadata/name");
        return Err(ApiError::invalid(
            resource,
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {:?}: may not change once set",
                    after.escape_debug().to_string()
                ),
                field: "spec.clusterIPs[0]".into(),
            }],
        ));
    }
    Ok(())
}

/// kube-apiserver's own refusals of what a Service asks for, in its words:
/// an address or NodePort another Service holds, or one outside the
/// range. (What else the allocation refuses is the model's message.)
fn refuse_as_kube(
    resource: &Resource,
    object: &Value,
    old: Option<&Service>,
    config: &ClusterConfig,
    held_ip: &dyn Fn(IpAddr) -> Option<String>,
    held_port: &dyn Fn(i32) -> Option<String>,
) -> Result<(), ApiError> {
    let name = text(object, "/metadata/name");
    let invalid = |field: String, message: String| {
        ApiError::invalid(
            resource,
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field,
            }],
        )
    };
    let old_spec = old.and_then(|o| o.spec.as_ref());
    let had_ip = |ip: &str| {
        old_spec.is_some_and(|s| {
            s.cluster_ip.as_deref() == Some(ip) || s.cluster_ips.iter().flatten().any(|i| i == ip)
        })
    };
    if needs_cluster_ip(object) {
        let listed: Vec<&str> = match object.pointer("/spec/clusterIPs").and_then(Value::as_array) {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(Value::as_str).collect(),
            _ => Some(text(object, "/spec/clusterIP"))
                .filter(|ip| !ip.is_empty())
                .into_iter()
                .collect(),
        };
        let shown = format!(
            "[]string{{{}}}",
            listed
                .iter()
                .map(|ip| format!("{:?}", ip.escape_debug().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for text_ip in listed.iter().filter(|ip| !had_ip(ip)) {
            let Ok(ip) = text_ip.parse::<IpAddr>() else {
                continue;
            };
            let family = config
                .service_cidrs
                .iter()
                .find(|c| c.is_ipv4() == ip.is_ipv4());
            let problem = match family {
                Some(cidr) if !cidr.net().contains(&ip) => Some(format!(
                    "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    cidr.net()
                )),
                Some(_) if held_ip(ip).is_some() => {
                    Some("provided IP is already allocated".to_owned())
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(invalid(
                    "spec.clusterIPs".into(),
                    format!("Invalid value: {shown}: failed to allocate IP {ip}: {problem}"),
                ));
            }
        }
    }
    if needs_node_ports(object) {
        let range = config.node_port_range;
        let had_port = |port: i64| {
            old_spec.is_some_and(|s| {
                s.ports
                    .iter()
                    .flatten()
                    .any(|p| p.node_port.map(i64::from) == Some(port))
            })
        };
        let ports = object
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, port) in ports.iter().enumerate() {
            let Some(np) = port["nodePort"]
                .as_i64()
                .filter(|p| *p != 0 && !had_port(*p))
            else {
                continue;
            };
            let problem = if !(i64::from(range.first)..=i64::from(range.last)).contains(&np) {
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    range.first, range.last
                )
            } else if i32::try_from(np).ok().and_then(held_port).is_some() {
                "provided port is already allocated".to_owned()
            } else {
                continue;
            };
            return Err(invalid(
                format!("spec.ports[{i}].nodePort"),
                format!("Invalid value: {np}: {problem}"),
            ));
        }
    }
    Ok(())
}

/// Whether the stored Service `holder` names still holds `wanted`.
fn holds(stored: &Stored<'_>, holder: &Holder, wanted: &dyn Fn(&Value) -> bool) -> bool {
    stored
        .get(&holder.namespace, &holder.name)
        .is_some_and(|s| text(s, "/metadata/uid") == holder.uid && wanted(s))
}

fn has_ip(service: &Value, ip: IpAddr) -> bool {
    let parsed = |v: &Value| v.as_str().and_then(|s| s.parse::<IpAddr>().ok());
    service
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(service.pointer("/spec/clusterIP"))
        .any(|v| parsed(v) == Some(ip))
}

fn has_port(service: &Value, port: i32) -> bool {
    let is = |v: &Value| v.as_i64() == Some(i64::from(port));
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| is(&p["nodePort"]))
        || service.pointer("/spec/healthCheckNodePort").is_some_and(is)
}

impl Admission for LabAdmission {
    fn admit(
        &self,
        resource: &Resource,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if let (true, Some(old)) = (is_services(resource), old) {
            keep_allocated(object, old);
            check_immutable(resource, object, old)?;
        }
        ModelAdmission.admit(resource, object, old)
    }

    fn allocate(
        &self,
        resource: &Resource,
        object: &mut Value,
        old: Option<&Value>,
        stored: &Stored<'_>,
    ) -> Result<(), ApiError> {
        if !is_services(resource) {
            return Ok(());
        }
        let me = Holder {
            namespace: text(object, "/metadata/namespace").to_owned(),
            name: text(object, "/metadata/name").to_owned(),
            uid: text(object, "/metadata/uid").to_owned(),
        };
        let typed = |v: &Value| {
            Service::deserialize_from(v)
                .map_err(|e| ApiError::internal(format!("an admitted Service does not read: {e}")))
        };
        let service = typed(object)?;
        let old = old.map(typed).transpose()?;
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let owner = |h: &Holder| format!("Service {}/{}", h.namespace, h.name);
        let same = |h: &Holder| h.namespace == me.namespace && h.name == me.name;
        let held_ip = |ip: IpAddr| {
            index
                .ips
                .get(&ip)
                .filter(|h| !same(h) && holds(stored, h, &|s| has_ip(s, ip)))
                .map(owner)
        };
        let held_port = |port: i32| {
            index
                .ports
                .get(&port)
                .filter(|h| !same(h) && holds(stored, h, &|s| has_port(s, port)))
                .map(owner)
        };
        refuse_as_kube(
            resource,
            object,
            old.as_ref(),
            &self.config,
            &held_ip,
            &held_port,
        )?;
        let held = Held {
            cluster_ip: &held_ip,
            node_port: &held_port,
        };
        let allocated =
            allocate_service(service, old.as_ref(), &self.config, &held).map_err(|e| match e {
                strait_model::Error::Object { field, message, .. } => ApiError::invalid(
                    resource,
                    &me.name,
                    vec![Cause {
                        reason: "FieldValueInvalid".into(),
                        message,
                        field,
                    }],
                ),
                other => ApiError::internal(other.to_string()),
            })?;
        let spec = serde_json::to_value(&allocated.spec)
            .map_err(|e| ApiError::internal(format!("an allocated Service: {e}")))?;
        object["spec"] = spec;
        // The new holdings, then a sweep when stale entries pile up.
        if needs_cluster_ip(object) {
            for ip in allocated
                .spec
                .iter()
                .flat_map(|s| s.cluster_ips.iter().flatten())
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
            {
                index.ips.insert(ip, me.clone());
            }
        }
        for port in allocated.spec.iter().flat_map(|s| {
            s.ports
                .iter()
                .flatten()
                .filter_map(|p| p.node_port)
                .chain(s.health_check_node_port)
        }) {
            index.ports.insert(port, me.clone());
        }
        let limit = stored.len().saturating_mul(4).saturating_add(SLACK);
        if index.ips.len() > limit {
            index
                .ips
                .retain(|ip, h| holds(stored, h, &|s| has_ip(s, *ip)) || *h == me);
        }
        if index.ports.len() > limit {
            index
                .ports
                .retain(|port, h| holds(stored, h, &|s| has_port(s, *port)) || *h == me);
        }
        Ok(())
    }
}

/// Reading a `Service` from a JSON tree without cloning it.
trait FromValue: Sized {
    fn deserialize_from(v: &Value) -> Result<Self, serde_json::Error>;
}

impl FromValue for Service {
    fn deserialize_from(v: &Value) -> Result<Self, serde_json::Error> {
        serde::Deserialize::deserialize(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use strait_apiserver::store::{DeleteOptions, Store, WriteContext};
    use strait_apiserver::RESOURCES;

    fn resource(plural: &str) -> &'static Resource {
        RESOURCES.iter().find(|r| r.plural == plural).unwrap()
    }

    fn store() -> Arc<Store> {
        let config = ClusterConfig::default()
            .with_service_cidrs(&["10.100.0.0/24".into()])
            .unwrap();
        let store = Arc::new(Store::new(Box::new(LabAdmission::new(config)), 1000));
        for ns in ["default", "kube-system"] {
            with_ctx(|ctx| {
                store
                    .create(
                        resource("namespaces"),
                        "",
                        json!({"metadata": {"name": ns}}),
                        ctx,
                    )
                    .unwrap()
            });
        }
        store
    }

    fn with_ctx<T>(f: impl FnOnce(&mut WriteContext<'_>) -> T) -> T {
        let mut n = 0u8;
        let mut random = move || {
            n = n.wrapping_add(1);
            let mut b = [7u8; 16];
            b[0] = n;
            b
        };
        // Unique enough per call for uids: the time varies the rest.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut random2 = move || {
            let mut b = random();
            b[1..].copy_from_slice(&nanos.to_le_bytes()[..15]);
            b
        };
        let mut ctx = WriteContext {
            now_unix: 0,
            random: &mut random2,
        };
        f(&mut ctx)
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    fn create(store: &Store, object: Value) -> Result<Arc<Value>, ApiError> {
        with_ctx(|ctx| store.create(resource("services"), "default", object, ctx))
    }

    #[test]
    fn a_created_service_has_its_addresses_in_the_response() {
        let store = store();
        let web = create(
            &store,
            svc(
                "web",
                json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
            ),
        )
        .unwrap();
        let ip: IpAddr = web["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!("10.100.0.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&ip));
        assert_eq!(web["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(web["spec"]["ipFamilies"], json!(["IPv4"]));
        let np = web["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np));
        // The very choice the standalone controllers make for it.
        let config = ClusterConfig::default()
            .with_service_cidrs(&["10.100.0.0/24".into()])
            .unwrap();
        let loaded = strait_model::parse_str(
            "t.json",
            &serde_json::to_string(&svc(
                "web",
                json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
            ))
            .unwrap(),
            strait_model::Format::Json,
        )
        .unwrap();
        let state = strait_model::ClusterState::from_objects(
            loaded.objects.into_iter().map(|(o, _)| (o, None)),
        )
        .unwrap();
        let reconciled = strait_model::controllers::reconcile(state, None, &config).unwrap();
        let theirs = reconciled.services.get("default", "web").unwrap();
        let theirs = theirs.spec.as_ref().unwrap();
        assert_eq!(theirs.cluster_ip.as_deref(), Some(ip.to_string().as_str()));
        assert_eq!(theirs.ports.as_ref().unwrap()[0].node_port, Some(np as i32));
        // And the stored object is the response.
        let stored = store.get(resource("services"), "default", "web").unwrap();
        assert_eq!(stored, web);
    }

    #[test]
    fn a_taken_or_foreign_cluster_ip_is_a_422_naming_the_field_and_stores_nothing() {
        let store = store();
        create(
            &store,
            svc(
                "a",
                json!({"clusterIP": "10.100.0.50", "ports": [{"port": 80}]}),
            ),
        )
        .unwrap();
        let before = store.resource_version();
        let e = create(
            &store,
            svc(
                "b",
                json!({"clusterIP": "10.100.0.50", "ports": [{"port": 80}]}),
            ),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        let cause = &e.details.as_ref().unwrap().causes[0];
        // kube-apiserver's words.
        assert_eq!(cause.field, "spec.clusterIPs");
        assert_eq!(
            e.message,
            "Service \"b\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.100.0.50\"}: failed to allocate IP 10.100.0.50: provided IP is already allocated"
        );
        let e = create(
            &store,
            svc(
                "c",
                json!({"clusterIPs": ["10.200.0.5"], "ports": [{"port": 80}]}),
            ),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.details.as_ref().unwrap().causes[0].field,
            "spec.clusterIPs"
        );
        assert!(
            e.message.contains("failed to allocate IP 10.200.0.5: the provided IP (10.200.0.5) is not in the valid range. The range of valid IPs is 10.100.0.0/24"),
            "{}",
            e.message
        );
        // A NodePort another Service holds.
        create(
            &store,
            svc(
                "n1",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
        )
        .unwrap();
        let e = create(
            &store,
            svc(
                "n2",
                json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 30080}]}),
            ),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Service \"n2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        // A NodePort outside the range.
        let e = create(
            &store,
            svc(
                "n3",
                json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 80}]}),
            ),
        )
        .unwrap_err();
        assert!(
            e.message.ends_with("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
            "{}",
            e.message
        );
        // Only n1's create wrote anything.
        assert_eq!(store.resource_version(), before + 1);
        for name in ["b", "c", "n2", "n3"] {
            assert!(store.get(resource("services"), "default", name).is_err());
        }
    }

    #[test]
    fn a_deleted_service_frees_its_address_in_the_same_step() {
        let store = store();
        create(
            &store,
            svc(
                "a",
                json!({"clusterIP": "10.100.0.50", "ports": [{"port": 80}]}),
            ),
        )
        .unwrap();
        with_ctx(|ctx| {
            store
                .delete(
                    resource("services"),
                    "default",
                    "a",
                    &DeleteOptions::default(),
                    ctx,
                )
                .unwrap()
        });
        let b = create(
            &store,
            svc(
                "b",
                json!({"clusterIP": "10.100.0.50", "ports": [{"port": 80}]}),
            ),
        )
        .unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.100.0.50");
        // A namespace's deletion frees what its Services held, too.
        with_ctx(|ctx| {
            store
                .create(
                    resource("namespaces"),
                    "",
                    json!({"metadata": {"name": "gone"}}),
                    ctx,
                )
                .unwrap();
            store
                .create(
                    resource("services"),
                    "gone",
                    json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.100.0.60", "ports": [{"port": 80}]}}),
                    ctx,
                )
                .unwrap();
            store
                .delete(
                    resource("namespaces"),
                    "",
                    "gone",
                    &DeleteOptions::default(),
                    ctx,
                )
                .unwrap();
        });
        create(
            &store,
            svc(
                "y",
                json!({"clusterIP": "10.100.0.60", "ports": [{"port": 80}]}),
            ),
        )
        .unwrap();
    }

    #[test]
    fn an_update_keeps_the_allocations_and_may_not_move_the_address() {
        let store = store();
        let web = create(
            &store,
            svc("web", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .unwrap();
        // A replace without the allocated fields (kubectl replace, or an
        // apply whose ports list replaces the stored one) keeps them.
        let mut again = svc("web", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        again["metadata"]["resourceVersion"] = web["metadata"]["resourceVersion"].clone();
        let kept =
            with_ctx(|ctx| store.update(resource("services"), "default", "web", again, None, ctx))
                .unwrap();
        assert_eq!(kept, web, "nothing changed: nothing written");
        let mut moved = (*web).clone();
        moved["spec"]["clusterIP"] = "10.100.0.77".into();
        moved["spec"]["clusterIPs"] = json!(["10.100.0.77"]);
        let e =
            with_ctx(|ctx| store.update(resource("services"), "default", "web", moved, None, ctx))
                .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.details.as_ref().unwrap().causes[0].field,
            "spec.clusterIPs[0]"
        );
        // A new port gets a NodePort of its own; the old one keeps its.
        let mut more = (*web).clone();
        more["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 81}]);
        let more =
            with_ctx(|ctx| store.update(resource("services"), "default", "web", more, None, ctx))
                .unwrap();
        assert_eq!(
            more["spec"]["ports"][0]["nodePort"],
            web["spec"]["ports"][0]["nodePort"]
        );
        assert!(more["spec"]["ports"][1]["nodePort"].as_i64().is_some());
        assert_ne!(
            more["spec"]["ports"][1]["nodePort"],
            more["spec"]["ports"][0]["nodePort"]
        );
    }

    #[test]
    fn concurrent_creates_never_share_an_address() {
        let store = store();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..40)
                        .map(|i| {
                            create(
                                &store,
                                svc(&format!("s{t}-{i}"), json!({"ports": [{"port": 80}]})),
                            )
                            .unwrap()["spec"]["clusterIP"]
                                .as_str()
                                .unwrap()
                                .to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(all.len(), 160);
        assert_eq!(distinct.len(), 160);
        // kube-dns still finds the tenth address kept for it.
        let dns = with_ctx(|ctx| {
            store.create(
                resource("services"),
                "kube-system",
                json!({"metadata": {"name": "kube-dns"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}}),
                ctx,
            )
        })
        .unwrap();
        assert_eq!(dns["spec"]["clusterIP"], "10.100.0.10");
    }
}
