//! The scenarios of gateway-api's `conformance/tests` (GATEWAY-HTTP
//! profile), ported as strait's own planner-level tests: manifests in, the
//! route decision of each request and the status conditions out. The
//! manifests follow the conformance suite's base (namespaces
//! gateway-conformance-infra/-app-backend/-web-backend, Services
//! infra-backend-v1..v3), written here; each test names the conformance
//! test it ports. A backend is told by its Service (`ns/name:port`).

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use strait_ingress::gateway::{condition, Cond, Decision, GatewayStatuses, RequestHead};
use strait_ingress::{plan_all, RouteTable, CONTROLLER, GATEWAY_CONTROLLER};
use strait_model::{parse_str, ClusterState, Format, Kind, ObjectKey};

const INFRA: &str = "gateway-conformance-infra";

fn base() -> String {
    let mut out = String::from(
        "
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-app-backend}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-web-backend, labels: {gateway-conformance: web-backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: strait}
spec: {controllerName: strait.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/not-strait}
",
    );
    for (ns, name, n) in [
        (INFRA, "infra-backend-v1", 1),
        (INFRA, "infra-backend-v2", 2),
        (INFRA, "infra-backend-v3", 3),
        ("gateway-conformance-app-backend", "app-backend-v1", 4),
        ("gateway-conformance-web-backend", "web-backend", 5),
    ] {
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: 10.96.0.{n}
  ports: [{{port: 8080, targetPort: 3000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{port: 3000, protocol: TCP}}]
endpoints: [{{addresses: [10.0.0.{n}]}}]
"
        ));
    }
    out
}

/// The conformance base's `same-namespace` Gateway (one HTTP listener,
/// routes from its own namespace).
const SAME_NAMESPACE: &str = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
";

const ALL_NAMESPACES: &str = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: all-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
";

fn state(extra: &str) -> ClusterState {
    let text = format!("{}{extra}", base());
    let loaded = parse_str("conformance.yaml", &text, Format::Yaml).expect("manifests");
    ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .expect("snapshot")
}

fn plan(extra: &str) -> (RouteTable, GatewayStatuses) {
    plan_all(&state(extra), CONTROLLER, GATEWAY_CONTROLLER, None)
}

/// What became of one request.
#[derive(Debug, PartialEq)]
struct Got {
    /// `ns/service:port`, or the status of our own reply.
    to: String,
    location: Option<String>,
    /// The path and query the backend gets.
    path: String,
    request_headers: HeaderMap,
    response_headers: HeaderMap,
}

fn send(
    table: &RouteTable,
    host: &str,
    target: &str,
    method: &str,
    headers: &[(&str, &str)],
    https: bool,
) -> Got {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let head = RequestHead {
        host,
        path,
        query,
        method,
        headers: &map,
        https,
        listener_port: 0,
    };
    let mut got = Got {
        to: String::new(),
        location: None,
        path: target.to_owned(),
        request_headers: HeaderMap::new(),
        response_headers: HeaderMap::new(),
    };
    match table.decide(&head) {
        Decision::NotFound => got.to = "404".into(),
        Decision::Reply(r) => {
            got.to = r.status.to_string();
            got.location = r.location;
        }
        Decision::Forward(f) => {
            got.to = f.backend.name.clone();
            if let Some(p) = f.rewritten_path(&head) {
                got.path = p;
            }
            let mut h = map.clone();
            f.apply_request_headers(&mut h);
            got.request_headers = h;
            let mut r = HeaderMap::new();
            r.insert("x-header-set", HeaderValue::from_static("from-backend"));
            r.insert("x-header-add", HeaderValue::from_static("from-backend"));
            r.insert("x-header-remove", HeaderValue::from_static("from-backend"));
            f.apply_response(&mut r);
            got.response_headers = r;
        }
    }
    got
}

fn to(table: &RouteTable, host: &str, target: &str) -> String {
    send(table, host, target, "GET", &[], false).to
}

const V1: &str = "gateway-conformance-infra/infra-backend-v1:8080";
const V2: &str = "gateway-conformance-infra/infra-backend-v2:8080";
const V3: &str = "gateway-conformance-infra/infra-backend-v3:8080";

fn route_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::HTTPRoute, INFRA, name)
}

/// The conditions of a route for its `i`-th parentRef.
fn route_conditions(status: &GatewayStatuses, key: &ObjectKey, i: usize) -> Vec<Cond> {
    status
        .routes
        .get(key)
        .unwrap_or_else(|| panic!("no status for {key}: {status:#?}"))[i]
        .conditions
        .clone()
}

#[track_caller]
fn assert_condition(list: &[Cond], type_: &str, status: bool, reason: &str) {
    let c = condition(list, type_).unwrap_or_else(|| panic!("no {type_} in {list:#?}"));
    assert_eq!((c.status, c.reason), (status, reason), "{type_}: {c:#?}");
}

fn route(name: &str, ns: &str, parent: &str, body: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{parent}]
{body}"
    )
}

/// httproute-simple-same-namespace
#[test]
fn simple_same_namespace() {
    let r = route(
        "gateway-conformance-infra-test",
        INFRA,
        "{name: same-namespace}",
        "  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let (table, status) = plan(&format!("{SAME_NAMESPACE}{r}"));
    assert_eq!(to(&table, "any.example", "/"), V1);
    assert_eq!(to(&table, "any.example", "/some/path"), V1);
    let c = route_conditions(&status, &route_key("gateway-conformance-infra-test"), 0);
    assert_condition(&c, "Accepted", true, "Accepted");
    assert_condition(&c, "ResolvedRefs", true, "ResolvedRefs");
    let gw = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "same-namespace")];
    assert_condition(&gw.conditions, "Accepted", true, "Accepted");
    assert_condition(&gw.conditions, "Programmed", true, "Programmed");
    let l = gw.listener("http").unwrap();
    assert_eq!(l.attached_routes, 1);
    for (t, r) in [
        ("Accepted", "Accepted"),
        ("Programmed", "Programmed"),
        ("ResolvedRefs", "ResolvedRefs"),
    ] {
        assert_condition(&l.conditions, t, true, r);
    }
    assert_condition(&l.conditions, "Conflicted", false, "NoConflicts");
    assert_eq!(status.classes["strait"][0].reason, "Accepted");
    // As the API would hold it.
    let now = strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-12-01T00:00:00Z".parse().unwrap(),
    );
    let gw_status = status
        .gateway_status(
            &ObjectKey::new(Kind::Gateway, INFRA, "same-namespace"),
            &now,
        )
        .unwrap();
    let json = serde_json::to_value(&gw_status).unwrap();
    assert_eq!(json["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(
        json["listeners"][0]["supportedKinds"][0]["kind"],
        "HTTPRoute"
    );
    assert!(json["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Programmed" && c["status"] == "True"));
    let parents = status.route_parents(
        &route_key("gateway-conformance-infra-test"),
        GATEWAY_CONTROLLER,
        &now,
    );
    let json = serde_json::to_value(&parents).unwrap();
    assert_eq!(json[0]["controllerName"], "strait.dev/gateway-controller");
    assert_eq!(json[0]["parentRef"]["name"], "same-namespace");
    assert_eq!(
        json[0]["conditions"][0]["lastTransitionTime"],
        "2026-12-01T00:00:00Z"
    );
    assert!(
        !status.classes.contains_key("other"),
        "another controller's class is not ours to report"
    );
}

/// httproute-matching
#[test]
fn matching() {
    let r = route(
        "matching",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let get =
        |path: &str, headers: &[(&str, &str)]| send(&table, "x", path, "GET", headers, false).to;
    assert_eq!(get("/", &[]), V1);
    assert_eq!(get("/example", &[]), V1);
    assert_eq!(get("/", &[("version", "one")]), V1);
    assert_eq!(get("/v2", &[]), V2);
    assert_eq!(get("/v2/example", &[]), V2);
    assert_eq!(get("/", &[("version", "two")]), V2);
    assert_eq!(get("/v2x", &[]), V1, "a PathPrefix matches whole elements");
}

/// httproute-matching-across-routes
#[test]
fn matching_across_routes() {
    let a = route(
        "matching-part1",
        INFRA,
        "{name: same-namespace}",
        "  hostnames: [example.com, example.net]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
",
    );
    let b = route(
        "matching-part2",
        INFRA,
        "{name: same-namespace}",
        "  hostnames: [example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}, headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{a}{b}"));
    let get = |host: &str, path: &str, headers: &[(&str, &str)]| {
        send(&table, host, path, "GET", headers, false).to
    };
    assert_eq!(get("example.com", "/", &[]), V1);
    assert_eq!(get("example.net", "/", &[]), V1);
    assert_eq!(get("example.com", "/v2", &[]), V2);
    assert_eq!(get("example.com", "/v2/example", &[]), V2);
    // Part 2's header matches are more specific than part 1's bare prefix.
    assert_eq!(get("example.com", "/v2", &[("version", "two")]), V3);
    assert_eq!(get("example.com", "/", &[("version", "one")]), V3);
    // Part 2 does not cover example.net.
    assert_eq!(get("example.net", "/v2", &[("version", "two")]), V2);
    assert_eq!(get("example.org", "/", &[]), "404");
}

/// httproute-exact-path-matching
#[test]
fn exact_path_matching() {
    let r = route(
        "exact-matching",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{path: {type: Exact, value: /one}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /two}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    assert_eq!(to(&table, "x", "/one"), V1);
    assert_eq!(to(&table, "x", "/two"), V2);
    for path in ["/", "/one/example", "/two/", "/One", "/onetwo"] {
        assert_eq!(to(&table, "x", path), "404", "{path}");
    }
}

/// The precedence rules across routes: Exact over the longest prefix over
/// method over header count over query count, then the oldest route, then
/// namespace/name, then rule order.
#[test]
fn precedence_across_routes() {
    let mut extra = String::from(SAME_NAMESPACE);
    let rules = [
        ("a-prefix", "matches: [{path: {type: PathPrefix, value: /p}}]", "infra-backend-v1"),
        ("b-longer", "matches: [{path: {type: PathPrefix, value: /p/q}}]", "infra-backend-v2"),
        ("c-exact", "matches: [{path: {type: Exact, value: /p/q}}]", "infra-backend-v3"),
        ("d-method", "matches: [{path: {type: PathPrefix, value: /m}, method: POST}]", "infra-backend-v2"),
        ("e-headers", "matches: [{path: {type: PathPrefix, value: /m}, headers: [{name: a, value: x}, {name: b, value: x}]}]", "infra-backend-v3"),
        ("f-plain", "matches: [{path: {type: PathPrefix, value: /m}}]", "infra-backend-v1"),
        ("g-query", "matches: [{path: {type: PathPrefix, value: /q}, queryParams: [{name: k, value: v}]}]", "infra-backend-v2"),
        ("h-query-plain", "matches: [{path: {type: PathPrefix, value: /q}}]", "infra-backend-v1"),
    ];
    for (name, m, backend) in rules {
        extra.push_str(&route(
            name,
            INFRA,
            "{name: same-namespace}",
            &format!("  rules:\n  - {m}\n    backendRefs: [{{name: {backend}, port: 8080}}]\n"),
        ));
    }
    // Two routes alike but for age: the older wins; alike in age: by name.
    extra.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: z-older, namespace: {INFRA}, creationTimestamp: '2020-01-01T00:00:00Z'}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules: [{{matches: [{{path: {{type: Exact, value: /age}}}}], backendRefs: [{{name: infra-backend-v2, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a-newer, namespace: {INFRA}, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules: [{{matches: [{{path: {{type: Exact, value: /age}}}}], backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]
"
    ));
    extra.push_str(&route("n-second", INFRA, "{name: same-namespace}", "  rules: [{matches: [{path: {type: Exact, value: /name}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n"));
    extra.push_str(&route("m-first", INFRA, "{name: same-namespace}", "  rules: [{matches: [{path: {type: Exact, value: /name}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}, {matches: [{path: {type: Exact, value: /rule}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}, {matches: [{path: {type: Exact, value: /rule}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n"));
    let (table, _) = plan(&extra);
    let get = |method: &str, target: &str, headers: &[(&str, &str)]| {
        send(&table, "x", target, method, headers, false).to
    };
    assert_eq!(get("GET", "/p/q", &[]), V3, "Exact first");
    assert_eq!(get("GET", "/p/q/r", &[]), V2, "then the longest prefix");
    assert_eq!(get("GET", "/p/r", &[]), V1);
    assert_eq!(
        get("POST", "/m", &[("a", "x"), ("b", "x")]),
        V2,
        "a method match before header matches"
    );
    assert_eq!(
        get("GET", "/m", &[("a", "x"), ("b", "x")]),
        V3,
        "then the most header matches"
    );
    assert_eq!(get("GET", "/m", &[("a", "x")]), V1);
    assert_eq!(get("GET", "/q?k=v", &[]), V2, "then the most query matches");
    assert_eq!(get("GET", "/q?k=w", &[]), V1);
    assert_eq!(get("GET", "/age", &[]), V2, "then the oldest route");
    assert_eq!(get("GET", "/name", &[]), V1, "then namespace/name order");
    assert_eq!(get("GET", "/rule", &[]), V1, "then the first rule");
}

/// httproute-hostname-intersection (and httproute-listener-hostname-matching)
#[test]
fn hostname_intersection() {
    let gw = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, hostname: very.specific.com}
  - {name: listener-2, port: 80, protocol: HTTP, hostname: '*.wildcard.io'}
  - {name: listener-3, port: 80, protocol: HTTP, hostname: '*.anotherwildcard.io'}
";
    let parent = "{name: httproute-hostname-intersection}";
    let r1 = route("specific-host-matches-listener-specific-host", INFRA, parent, "  hostnames: [non.matching.com, '*.nonmatchingwildcard.io', very.specific.com]\n  rules: [{matches: [{path: {type: PathPrefix, value: /s1}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n");
    let r2 = route("specific-host-matches-listener-wildcard-host", INFRA, parent, "  hostnames: [non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]\n  rules: [{matches: [{path: {type: PathPrefix, value: /s2}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n");
    let r3 = route("wildcard-host-matches-listener-specific-host", INFRA, parent, "  hostnames: [non.matching.com, '*.specific.com']\n  rules: [{matches: [{path: {type: PathPrefix, value: /s3}}], backendRefs: [{name: infra-backend-v3, port: 8080}]}]\n");
    let r4 = route("wildcard-host-matches-listener-wildcard-host", INFRA, parent, "  hostnames: ['*.anotherwildcard.io']\n  rules: [{matches: [{path: {type: PathPrefix, value: /s4}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n");
    let r5 = route("no-intersecting-hosts", INFRA, parent, "  hostnames: [specific.but.wrong.com, wildcard.io]\n  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n");
    let (table, status) = plan(&format!("{gw}{r1}{r2}{r3}{r4}{r5}"));
    let cases = [
        ("very.specific.com", "/s1", V1),
        ("non.matching.com", "/s1", "404"),
        ("foo.nonmatchingwildcard.io", "/s1", "404"),
        ("foo.wildcard.io", "/s2", V2),
        ("bar.wildcard.io", "/s2", V2),
        ("foo.bar.wildcard.io", "/s2", V2),
        ("wildcard.io", "/s2", "404"),
        ("baz.wildcard.io", "/s2", "404"),
        ("very.specific.com", "/s3", V3),
        ("foo.specific.com", "/s3", "404"),
        ("foo.anotherwildcard.io", "/s4", V1),
        ("foo.bar.anotherwildcard.io", "/s4", V1),
        ("anotherwildcard.io", "/s4", "404"),
        ("specific.but.wrong.com", "/", "404"),
    ];
    for (host, path, want) in cases {
        assert_eq!(to(&table, host, path), want, "{host}{path}");
    }
    let c = route_conditions(&status, &route_key("no-intersecting-hosts"), 0);
    assert_condition(&c, "Accepted", false, "NoMatchingListenerHostname");
    let gw =
        &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "httproute-hostname-intersection")];
    assert_eq!(gw.listener("listener-1").unwrap().attached_routes, 2);
    assert_eq!(gw.listener("listener-2").unwrap().attached_routes, 1);
    assert_eq!(gw.listener("listener-3").unwrap().attached_routes, 1);
}

/// httproute-header-matching
#[test]
fn header_matching() {
    let r = route(
        "header-matching",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: grade, type: RegularExpression, value: '[A-C]'}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let get = |headers: &[(&str, &str)]| send(&table, "x", "/", "GET", headers, false).to;
    assert_eq!(get(&[("Version", "one")]), V1, "names are case-insensitive");
    assert_eq!(get(&[("version", "two")]), V2);
    assert_eq!(get(&[("version", "two"), ("color", "orange")]), V1);
    assert_eq!(get(&[("color", "blue")]), V1);
    assert_eq!(get(&[("color", "green")]), V1);
    assert_eq!(get(&[("color", "red")]), V2);
    assert_eq!(get(&[("color", "yellow")]), V2);
    assert_eq!(get(&[("grade", "B")]), V3);
    assert_eq!(
        get(&[("grade", "BB")]),
        "404",
        "a regular expression matches the whole value"
    );
    assert_eq!(
        get(&[("version", "ONE")]),
        "404",
        "values are case-sensitive"
    );
    assert_eq!(get(&[("color", "purple")]), "404");
    assert_eq!(get(&[]), "404");
}

/// httproute-query-param-matching
#[test]
fn query_param_matching() {
    let r = route(
        "query-param-matching",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}, {queryParams: [{name: ANIMAL, value: Whale}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{queryParams: [{name: id, type: RegularExpression, value: '[0-9]+'}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    assert_eq!(to(&table, "x", "/?animal=whale"), V1);
    assert_eq!(to(&table, "x", "/?animal=dolphin"), V2);
    assert_eq!(to(&table, "x", "/?animal=dolphin&color=blue"), V3);
    assert_eq!(to(&table, "x", "/?color=blue&animal=dolphin"), V3);
    assert_eq!(
        to(&table, "x", "/?ANIMAL=Whale"),
        V3,
        "names are case-sensitive"
    );
    assert_eq!(
        to(&table, "x", "/?animal=whale&animal=dolphin"),
        V1,
        "the first value counts"
    );
    assert_eq!(to(&table, "x", "/?id=42"), V2);
    assert_eq!(to(&table, "x", "/?id=4x2"), "404");
    assert_eq!(to(&table, "x", "/?animal=shark"), "404");
    assert_eq!(to(&table, "x", "/"), "404");
}

/// httproute-method-matching
#[test]
fn method_matching() {
    let r = route(
        "method-matching",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: GET}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path1}, method: GET}, {path: {type: PathPrefix, value: /path2}, method: POST}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let get = |method: &str, path: &str| send(&table, "x", path, method, &[], false).to;
    assert_eq!(get("POST", "/"), V1);
    assert_eq!(get("GET", "/"), V2);
    assert_eq!(get("GET", "/path1"), V3);
    assert_eq!(get("POST", "/path2"), V3);
    assert_eq!(get("POST", "/path1"), V1);
    assert_eq!(get("HEAD", "/"), "404");
}

/// httproute-invalid-backendref-nonexistent, -invalid-backendref-kind,
/// -invalid-cross-namespace-backend-ref, -invalid-backendref-unknown-kind
#[test]
fn invalid_backend_refs() {
    let cases = [
        ("nonexistent", "{name: nonexistent, port: 8080}", "BackendNotFound"),
        ("unknown-kind", "{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}", "InvalidKind"),
        ("cross-namespace", "{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}", "RefNotPermitted"),
        ("wrong-port", "{name: infra-backend-v1, port: 9999}", "BackendNotFound"),
    ];
    for (name, backend, reason) in cases {
        let r = route(
            name,
            INFRA,
            "{name: same-namespace}",
            &format!("  rules: [{{backendRefs: [{backend}]}}]\n"),
        );
        let (table, status) = plan(&format!("{SAME_NAMESPACE}{r}"));
        assert_eq!(to(&table, "x", "/"), "500", "{name}");
        let c = route_conditions(&status, &route_key(name), 0);
        assert_condition(&c, "Accepted", true, "Accepted");
        assert_condition(&c, "ResolvedRefs", false, reason);
    }
}

/// httproute-reference-grant (and the grant not covering another name)
#[test]
fn reference_grant() {
    let r = route("reference-grant", INFRA, "{name: same-namespace}", "  rules: [{backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]}]\n");
    let grant = |to_name: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: reference-grant, namespace: gateway-conformance-web-backend}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]
  to: [{{group: '', kind: Service{to_name}}}]
"
        )
    };
    let (table, status) = plan(&format!(
        "{SAME_NAMESPACE}{r}{}",
        grant(", name: web-backend")
    ));
    assert_eq!(
        to(&table, "x", "/"),
        "gateway-conformance-web-backend/web-backend:8080"
    );
    assert_condition(
        &route_conditions(&status, &route_key("reference-grant"), 0),
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
    let (table, status) = plan(&format!(
        "{SAME_NAMESPACE}{r}{}",
        grant(", name: not-web-backend")
    ));
    assert_eq!(to(&table, "x", "/"), "500");
    assert_condition(
        &route_conditions(&status, &route_key("reference-grant"), 0),
        "ResolvedRefs",
        false,
        "RefNotPermitted",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}{}", grant("")));
    assert_eq!(
        to(&table, "x", "/"),
        "gateway-conformance-web-backend/web-backend:8080",
        "a grant without a name covers every Service"
    );
}

/// httproute-invalid-parentref-not-matching-section-name,
/// -invalid-parentref-not-matching-listener-port,
/// -disallowed-kind, httproute-invalid-cross-namespace-parent-ref,
/// httproute-invalid-reference-grant
#[test]
fn invalid_parent_refs() {
    let cases = [
        (
            "section",
            INFRA,
            "{name: same-namespace, sectionName: unknown}",
            "NoMatchingParent",
        ),
        (
            "port",
            INFRA,
            "{name: same-namespace, port: 81}",
            "NoMatchingParent",
        ),
        (
            "cross-namespace",
            "gateway-conformance-web-backend",
            "{name: same-namespace, namespace: gateway-conformance-infra}",
            "NotAllowedByListeners",
        ),
    ];
    for (name, ns, parent, reason) in cases {
        let r = route(
            name,
            ns,
            parent,
            "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
        );
        let (table, status) = plan(&format!("{SAME_NAMESPACE}{r}"));
        assert_eq!(to(&table, "x", "/"), "404", "{name}");
        let c = route_conditions(&status, &ObjectKey::new(Kind::HTTPRoute, ns, name), 0);
        assert_condition(&c, "Accepted", false, reason);
        let gw = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "same-namespace")];
        assert_eq!(gw.listener("http").unwrap().attached_routes, 0);
    }
    // From All, the same route attaches.
    let r = route(
        "cross",
        "gateway-conformance-web-backend",
        "{name: all-namespaces, namespace: gateway-conformance-infra}",
        "  rules: [{backendRefs: [{name: web-backend, port: 8080}]}]\n",
    );
    let (table, status) = plan(&format!("{ALL_NAMESPACES}{r}"));
    assert_eq!(
        to(&table, "x", "/"),
        "gateway-conformance-web-backend/web-backend:8080"
    );
    assert_condition(
        &route_conditions(
            &status,
            &ObjectKey::new(Kind::HTTPRoute, "gateway-conformance-web-backend", "cross"),
            0,
        ),
        "Accepted",
        true,
        "Accepted",
    );
    // A route whose parent is another controller's Gateway gets no status of ours.
    let other = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: elsewhere, namespace: gateway-conformance-infra}\nspec:\n  gatewayClassName: other\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
    let r = route("elsewhere", INFRA, "{name: elsewhere}", "");
    let (table, status) = plan(&format!("{other}{r}"));
    assert!(!status.routes.contains_key(&route_key("elsewhere")));
    assert!(table.gateway.is_empty());
}

/// Selector namespaces (gateway-conformance base's backend-namespaces).
#[test]
fn allowed_routes_by_namespace_selector() {
    let gw = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: backend-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-conformance: web-backend}}}}
";
    let parent = "{name: backend-namespaces, namespace: gateway-conformance-infra}";
    let good = route(
        "web",
        "gateway-conformance-web-backend",
        parent,
        "  hostnames: [web.example]\n  rules: [{backendRefs: [{name: web-backend, port: 8080}]}]\n",
    );
    let bad = route("app", "gateway-conformance-app-backend", parent, "  hostnames: [app.example]\n  rules: [{backendRefs: [{name: app-backend-v1, port: 8080}]}]\n");
    let (table, status) = plan(&format!("{gw}{good}{bad}"));
    assert_eq!(
        to(&table, "web.example", "/"),
        "gateway-conformance-web-backend/web-backend:8080"
    );
    assert_eq!(to(&table, "app.example", "/"), "404");
    let c = route_conditions(
        &status,
        &ObjectKey::new(Kind::HTTPRoute, "gateway-conformance-app-backend", "app"),
        0,
    );
    assert_condition(&c, "Accepted", false, "NotAllowedByListeners");
}

/// httproute-request-header-modifier, httproute-response-header-modifier
/// (and the backendRef-level filter)
#[test]
fn header_modifiers() {
    let r = route(
        "header-modifiers",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: add-appends-values}]
        remove: [X-Header-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: add-appends-values}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    backendRefs:
    - name: infra-backend-v2
      port: 8080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: X-Backend, value: v2}]}}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let got = send(
        &table,
        "x",
        "/set",
        "GET",
        &[
            ("x-header-set", "old"),
            ("x-header-add", "old"),
            ("x-header-remove", "gone"),
            ("x-other", "kept"),
        ],
        false,
    );
    assert_eq!(got.to, V1);
    let h = &got.request_headers;
    assert_eq!(h["x-header-set"], "set-overwrites-values");
    assert_eq!(h["x-header-add"], "old,add-appends-values");
    assert!(!h.contains_key("x-header-remove"));
    assert_eq!(h["x-other"], "kept");
    let r = &got.response_headers;
    assert_eq!(r["x-header-set"], "set-overwrites-values");
    assert_eq!(r["x-header-add"], "from-backend,add-appends-values");
    assert!(!r.contains_key("x-header-remove"));
    let got = send(&table, "x", "/backend", "GET", &[], false);
    assert_eq!(got.to, V2);
    assert_eq!(got.request_headers["x-backend"], "v2");
}

/// httproute-redirect-host-and-status, -redirect-path, -redirect-port,
/// -redirect-scheme, -redirect-port-and-scheme
#[test]
fn redirects() {
    let rule = |prefix: &str, redirect: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]\n")
    };
    let mut body = String::from("  rules:\n");
    body.push_str(&rule("/hostname-redirect", "{hostname: example.org}"));
    body.push_str(&rule(
        "/host-and-status",
        "{hostname: example.org, statusCode: 301}",
    ));
    body.push_str(&rule(
        "/full",
        "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
    ));
    body.push_str(&rule(
        "/prefix",
        "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
    ));
    body.push_str(&rule("/port", "{port: 8083}"));
    body.push_str(&rule("/scheme", "{scheme: https}"));
    body.push_str(&rule("/scheme-and-port", "{scheme: https, port: 8443}"));
    body.push_str(&rule("/scheme-http-443", "{scheme: http, port: 443}"));
    let (table, _) = plan(&format!(
        "{SAME_NAMESPACE}{}",
        route("redirect", INFRA, "{name: same-namespace}", &body)
    ));
    let cases = [
        (
            "/hostname-redirect",
            "302",
            "http://example.org/hostname-redirect",
        ),
        (
            "/host-and-status",
            "301",
            "http://example.org/host-and-status",
        ),
        (
            "/full/a?x=1",
            "302",
            "http://example.com/full-path-replacement?x=1",
        ),
        (
            "/prefix/one",
            "302",
            "http://example.com/replacement-prefix/one",
        ),
        ("/prefix", "302", "http://example.com/replacement-prefix"),
        ("/port", "302", "http://example.com:8083/port"),
        ("/scheme", "302", "https://example.com/scheme"),
        (
            "/scheme-and-port",
            "302",
            "https://example.com:8443/scheme-and-port",
        ),
        (
            "/scheme-http-443",
            "302",
            "http://example.com:443/scheme-http-443",
        ),
    ];
    for (path, status, location) in cases {
        let got = send(&table, "example.com", path, "GET", &[], false);
        assert_eq!(
            (got.to.as_str(), got.location.as_deref()),
            (status, Some(location)),
            "{path}"
        );
    }
}

/// httproute-rewrite-host, httproute-rewrite-path
#[test]
fn rewrites() {
    let r = route(
        "rewrite",
        INFRA,
        "{name: same-namespace}",
        "  rules:
  - matches: [{path: {type: PathPrefix, value: /one}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let got = send(&table, "x", "/one", "GET", &[("host", "x")], false);
    assert_eq!(got.request_headers["host"], "one.example.org");
    let cases = [
        ("/prefix/one/two", "/one/two"),
        ("/prefix/one", "/one"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two?a=b", "/one?a=b"),
    ];
    for (path, want) in cases {
        assert_eq!(
            send(&table, "x", path, "GET", &[], false).path,
            want,
            "{path}"
        );
    }
}

/// httproute-weight: 70/30/0 split, exact over every 100 requests; an
/// invalid backendRef's share is answered 500.
#[test]
fn weights() {
    let r = route("weighted-backends", INFRA, "{name: same-namespace}", "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080, weight: 70}, {name: infra-backend-v2, port: 8080, weight: 30}, {name: infra-backend-v3, port: 8080, weight: 0}]}]\n");
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        *counts.entry(to(&table, "x", "/")).or_insert(0) += 1;
    }
    assert_eq!(counts.get(V1), Some(&700));
    assert_eq!(counts.get(V2), Some(&300));
    assert_eq!(counts.get(V3), None, "weight 0 takes nothing");
    let r = route("half-invalid", INFRA, "{name: same-namespace}", "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}, {name: missing, port: 8080}]}]\n");
    let (table, status) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..100 {
        *counts.entry(to(&table, "x", "/")).or_insert(0) += 1;
    }
    assert_eq!((counts.get(V1), counts.get("500")), (Some(&50), Some(&50)));
    assert_condition(
        &route_conditions(&status, &route_key("half-invalid"), 0),
        "ResolvedRefs",
        false,
        "BackendNotFound",
    );
    // Every weight 0 (or no backendRefs): 500.
    let r = route(
        "all-zero",
        INFRA,
        "{name: same-namespace}",
        "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080, weight: 0}]}]\n",
    );
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    assert_eq!(to(&table, "x", "/"), "500");
}

/// A bad route (a regex that does not compile) gets its condition and
/// breaks no other; a partly bad one serves its good rules.
#[test]
fn bad_routes_hurt_only_themselves() {
    let bad = route("bad-regex", INFRA, "{name: same-namespace}", "  rules: [{matches: [{path: {type: RegularExpression, value: '/(unclosed'}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n");
    let partly = route("partly", INFRA, "{name: same-namespace}", "  rules:\n  - matches: [{headers: [{name: x, type: RegularExpression, value: '[z-a]'}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{path: {type: Exact, value: /partly}}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n");
    let good = route(
        "good",
        INFRA,
        "{name: same-namespace}",
        "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
    );
    let missing = route("missing-service", INFRA, "{name: same-namespace}", "  rules: [{matches: [{path: {type: Exact, value: /missing}}], backendRefs: [{name: gone, port: 8080}]}]\n");
    let (table, status) = plan(&format!("{SAME_NAMESPACE}{bad}{partly}{good}{missing}"));
    assert_eq!(to(&table, "x", "/anything"), V1);
    assert_eq!(to(&table, "x", "/partly"), V3);
    assert_eq!(to(&table, "x", "/missing"), "500");
    let c = route_conditions(&status, &route_key("bad-regex"), 0);
    assert_condition(&c, "Accepted", false, "UnsupportedValue");
    assert!(condition(&c, "Accepted")
        .unwrap()
        .message
        .contains("does not compile"));
    let c = route_conditions(&status, &route_key("partly"), 0);
    assert_condition(&c, "Accepted", true, "Accepted");
    assert_condition(&c, "PartiallyInvalid", true, "UnsupportedValue");
    assert_condition(
        &route_conditions(&status, &route_key("good"), 0),
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
    let gw = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "same-namespace")];
    assert_eq!(
        gw.listener("http").unwrap().attached_routes,
        3,
        "the route with no usable rule is not attached"
    );
}

/// Regular expression path matches (extended: httproute-path-match-order
/// and the regex cases).
#[test]
fn regular_expression_paths() {
    let r = route("regex", INFRA, "{name: same-namespace}", "  rules:\n  - matches: [{path: {type: RegularExpression, value: '/items/[0-9]+'}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n");
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    assert_eq!(to(&table, "x", "/items/42"), V2);
    assert_eq!(
        to(&table, "x", "/items/42/more"),
        V1,
        "the whole path must match"
    );
    assert_eq!(to(&table, "x", "/items/x"), V1);
}

/// RequestMirror: the mirror is named with the backend; timeouts read.
#[test]
fn mirrors_and_timeouts() {
    let r = route("mirror", INFRA, "{name: same-namespace}", "  rules:\n  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n    timeouts: {request: 2s, backendRequest: 500ms}\n");
    let (table, _) = plan(&format!("{SAME_NAMESPACE}{r}"));
    let map = HeaderMap::new();
    let head = RequestHead {
        host: "x",
        path: "/",
        query: None,
        method: "GET",
        headers: &map,
        https: false,
        listener_port: 0,
    };
    let Decision::Forward(f) = table.decide(&head) else {
        panic!("not forwarded")
    };
    assert_eq!(f.backend.name, V1);
    let mirrors: Vec<String> = f.mirrors().iter().map(|b| b.name.clone()).collect();
    assert_eq!(mirrors, [V2]);
    assert_eq!(f.timeout(), Some(std::time::Duration::from_millis(500)));
}

fn tls_secret(ns: &str, name: &str, host: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n",
        b64(&cert.cert.pem()),
        b64(&cert.key_pair.serialize_pem())
    )
}

/// gateway-invalid-tls-configuration, gateway-secret-reference-grant-*,
/// gateway-secret-invalid-reference-grant
#[test]
fn listener_certificates() {
    let gw = |cert_ref: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: strait
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example
    tls: {{certificateRefs: [{cert_ref}]}}
"
        )
    };
    let good = tls_secret(INFRA, "cert", "secure.example");
    let elsewhere = tls_secret("gateway-conformance-web-backend", "cert", "secure.example");
    let opaque = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: gateway-conformance-infra}\ndata: {a: YQ==}\n";
    let malformed = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: malformed, namespace: gateway-conformance-infra}\ntype: kubernetes.io/tls\ndata: {tls.crt: bm90IGEgY2VydA==, tls.key: bm90IGEga2V5}\n";
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: certs, namespace: gateway-conformance-web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]\n  to: [{group: '', kind: Secret}]\n";
    let cases: Vec<(String, Option<&str>)> = vec![
        (format!("{}{good}", gw("{name: cert}")), None),
        (gw("{name: nonexistent}"), Some("InvalidCertificateRef")),
        (
            format!("{}{opaque}", gw("{name: opaque}")),
            Some("InvalidCertificateRef"),
        ),
        (
            format!("{}{malformed}", gw("{name: malformed}")),
            Some("InvalidCertificateRef"),
        ),
        (
            format!(
                "{}{good}",
                gw("{group: example.com, kind: Vault, name: cert}")
            ),
            Some("InvalidCertificateRef"),
        ),
        (
            format!(
                "{}{elsewhere}",
                gw("{name: cert, namespace: gateway-conformance-web-backend}")
            ),
            Some("RefNotPermitted"),
        ),
        (
            format!(
                "{}{elsewhere}{grant}",
                gw("{name: cert, namespace: gateway-conformance-web-backend}")
            ),
            None,
        ),
    ];
    let r = route(
        "secure",
        INFRA,
        "{name: tls}",
        "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
    );
    for (manifests, reason) in cases {
        let (table, status) = plan(&format!("{manifests}{r}"));
        let gw = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "tls")];
        let l = gw.listener("https").unwrap();
        match reason {
            None => {
                assert_condition(&l.conditions, "ResolvedRefs", true, "ResolvedRefs");
                assert_condition(&l.conditions, "Programmed", true, "Programmed");
                assert_eq!(table.certificates.len(), 1);
                assert_eq!(table.certificates[0].hosts, ["secure.example"]);
                assert_eq!(send(&table, "secure.example", "/", "GET", &[], true).to, V1);
                assert_eq!(
                    send(&table, "secure.example", "/", "GET", &[], false).to,
                    "404",
                    "HTTPS listeners serve HTTPS"
                );
            }
            Some(reason) => {
                assert_condition(&l.conditions, "ResolvedRefs", false, reason);
                assert_condition(&l.conditions, "Programmed", false, "Invalid");
                assert_condition(&gw.conditions, "Programmed", false, "Invalid");
                assert!(table.certificates.is_empty());
                assert_eq!(
                    send(&table, "secure.example", "/", "GET", &[], true).to,
                    "404"
                );
            }
        }
    }
}

/// gateway-invalid-route-kind, gateway-with-attached-routes,
/// gateway-modify-listeners (a listener changed), listener conflicts,
/// unsupported protocols and addresses.
#[test]
fn gateway_listener_status() {
    let gw = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kinds, namespace: gateway-conformance-infra, generation: 3}
spec:
  gatewayClassName: strait
  listeners:
  - {name: only-invalid, port: 80, hostname: a.example, protocol: HTTP, allowedRoutes: {kinds: [{kind: FooRoute}]}}
  - {name: mixed, port: 80, hostname: b.example, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: FooRoute}]}}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: other-port, port: 8080, protocol: HTTP, hostname: f.example, allowedRoutes: {namespaces: {from: All}}}
";
    let r = route(
        "attach",
        INFRA,
        "{name: kinds}",
        "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
    );
    let (table, status) = plan(&format!("{gw}{r}"));
    let g = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "kinds")];
    assert_condition(&g.conditions, "Accepted", true, "ListenersNotValid");
    assert_condition(&g.conditions, "Programmed", true, "Programmed");
    assert_eq!(
        condition(&g.conditions, "Accepted")
            .unwrap()
            .observed_generation,
        Some(3)
    );
    let only = g.listener("only-invalid").unwrap();
    assert_condition(&only.conditions, "ResolvedRefs", false, "InvalidRouteKinds");
    assert!(only.supported_kinds.is_empty());
    assert_eq!(only.attached_routes, 0);
    let mixed = g.listener("mixed").unwrap();
    assert_condition(
        &mixed.conditions,
        "ResolvedRefs",
        false,
        "InvalidRouteKinds",
    );
    assert_eq!(mixed.supported_kinds.len(), 1);
    assert_eq!(mixed.supported_kinds[0].kind, "HTTPRoute");
    assert_eq!(mixed.attached_routes, 1);
    assert_condition(
        &g.listener("tcp").unwrap().conditions,
        "Accepted",
        false,
        "UnsupportedProtocol",
    );
    assert_eq!(g.listener("other-port").unwrap().attached_routes, 1);
    assert_eq!(to(&table, "b.example", "/"), V1);
    assert_eq!(to(&table, "a.example", "/"), "404");

    // Two Gateways of strait's with the same port and hostname: strait
    // serves them on one address, so the newer listener is Conflicted.
    let two = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: first, namespace: gateway-conformance-infra, creationTimestamp: '2020-01-01T00:00:00Z'}
spec:
  gatewayClassName: strait
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: c.example}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: second, namespace: gateway-conformance-infra, creationTimestamp: '2021-01-01T00:00:00Z'}
spec:
  gatewayClassName: strait
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: c.example}, {name: https-on-80, port: 80, protocol: HTTPS, hostname: d.example, tls: {certificateRefs: [{name: x}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: addressed, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  addresses: [{value: 192.0.2.1}]
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: e.example}]
";
    let (_, status) = plan(two);
    let first = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "first")];
    assert_condition(
        &first.listener("http").unwrap().conditions,
        "Conflicted",
        false,
        "NoConflicts",
    );
    let second = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "second")];
    assert_condition(
        &second.listener("http").unwrap().conditions,
        "Conflicted",
        true,
        "HostnameConflict",
    );
    assert_condition(
        &second.listener("https-on-80").unwrap().conditions,
        "Conflicted",
        true,
        "ProtocolConflict",
    );
    assert_condition(&second.conditions, "Programmed", false, "Invalid");
    let addressed = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "addressed")];
    assert_condition(
        &addressed.conditions,
        "Accepted",
        false,
        "UnsupportedAddress",
    );
}

/// Several listeners, one route per listener by sectionName
/// (httproute-listener-hostname-matching, httproute-https-listener).
#[test]
fn section_names_and_listener_hostnames() {
    let gw = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}
  - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}
  - {name: listener-3, port: 80, protocol: HTTP, hostname: '*.bar.com'}
  - {name: listener-4, port: 80, protocol: HTTP, hostname: '*.foo.com'}
";
    let n = "httproute-listener-hostname-matching";
    let r1 = route(
        "backend-v1",
        INFRA,
        &format!("{{name: {n}, sectionName: listener-1}}"),
        "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
    );
    let r2 = route(
        "backend-v2",
        INFRA,
        &format!("{{name: {n}, sectionName: listener-2}}"),
        "  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n",
    );
    let r3 = route(
        "backend-v3",
        INFRA,
        &format!("{{name: {n}, sectionName: listener-3}}, {{name: {n}, sectionName: listener-4}}"),
        "  rules: [{backendRefs: [{name: infra-backend-v3, port: 8080}]}]\n",
    );
    let (table, status) = plan(&format!("{gw}{r1}{r2}{r3}"));
    let cases = [
        ("bar.com", V1),
        ("foo.bar.com", V2),
        ("baz.bar.com", V3),
        ("boo.bar.com", V3),
        ("multiple.prefixes.bar.com", V3),
        ("multiple.prefixes.foo.com", V3),
        ("foo.com", "404"),
        ("no.matching.host", "404"),
    ];
    for (host, want) in cases {
        assert_eq!(to(&table, host, "/"), want, "{host}");
    }
    assert_eq!(status.routes[&route_key("backend-v3")].len(), 2);
}

/// The README's example plans without a problem and routes as it says.
#[test]
fn the_example_manifest_plans_cleanly() {
    let text = include_str!("../../../examples/gateway-demo.yaml");
    let loaded = parse_str("gateway-demo.yaml", text, Format::Yaml).expect("the example loads");
    let state = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap();
    let (table, status) = plan_all(&state, CONTROLLER, GATEWAY_CONTROLLER, None);
    for parents in status.routes.values() {
        for p in parents {
            for c in &p.conditions {
                assert!(c.status, "{c:?}");
            }
        }
    }
    let got = send(&table, "shop.demo.test", "/old/a", "GET", &[], false);
    assert_eq!(
        (got.to.as_str(), got.location.as_deref()),
        ("301", Some("http://shop.demo.test/new/a"))
    );
    assert_eq!(
        send(
            &table,
            "shop.demo.test",
            "/api",
            "GET",
            &[("x-canary", "yes")],
            false
        )
        .request_headers["x-via"],
        "canary"
    );
    assert_eq!(to(&table, "shop.demo.test", "/"), "default/shop:80");
    assert_eq!(to(&table, "other.demo.test", "/"), "404");
}

/// Two HTTP listeners of one Gateway on different ports with the same
/// hostname share strait's one HTTP socket: the routes of both are served.
#[test]
fn listeners_on_other_ports_are_served_together() {
    let gw = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ports, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http-alt, port: 8080, protocol: HTTP}
";
    let a = route("on-80", INFRA, "{name: ports, sectionName: http}", "  rules: [{matches: [{path: {type: PathPrefix, value: /a}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n");
    let b = route("on-8080", INFRA, "{name: ports, port: 8080}", "  rules: [{matches: [{path: {type: PathPrefix, value: /b}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n");
    let (table, status) = plan(&format!("{gw}{a}{b}"));
    assert_eq!(to(&table, "x", "/a"), V1);
    assert_eq!(to(&table, "x", "/b"), V2);
    assert_eq!(to(&table, "x", "/c"), "404");
    let g = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "ports")];
    assert_eq!(g.listener("http").unwrap().attached_routes, 1);
    assert_eq!(g.listener("http-alt").unwrap().attached_routes, 1);
}

/// Held to the ports the process listens on (cluster mode): a listener on
/// another port is not accepted (`PortUnavailable`) and its routes are not
/// served on a port it does not name; the others are.
#[test]
fn listeners_on_ports_not_listened_on_are_refused_when_ports_are_held() {
    let gw = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ports, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http-alt, port: 8080, protocol: HTTP, hostname: alt.example}
";
    let a = route("on-80", INFRA, "{name: ports, sectionName: http}", "  rules: [{matches: [{path: {type: PathPrefix, value: /a}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n");
    let b = route("on-8080", INFRA, "{name: ports, sectionName: http-alt}", "  rules: [{matches: [{path: {type: PathPrefix, value: /b}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]\n");
    let ports = strait_ingress::ListenerPorts {
        http: Some(80),
        https: Some(443),
    };
    let (table, status) = strait_ingress::plan_all_on(
        &state(&format!("{gw}{a}{b}")),
        CONTROLLER,
        GATEWAY_CONTROLLER,
        None,
        Some(ports),
    );
    assert_eq!(to(&table, "x", "/a"), V1);
    assert_eq!(to(&table, "alt.example", "/b"), "404");
    let g = &status.gateways[&ObjectKey::new(Kind::Gateway, INFRA, "ports")];
    let alt = g.listener("http-alt").unwrap();
    let accepted = condition(&alt.conditions, "Accepted").unwrap();
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "PortUnavailable"),
        "{accepted:?}"
    );
    assert!(accepted.message.contains("port 80"), "{accepted:?}");
    assert!(!condition(&alt.conditions, "Programmed").unwrap().status);
    let ok = g.listener("http").unwrap();
    assert!(condition(&ok.conditions, "Programmed").unwrap().status);
    // The Gateway is accepted (some listeners are valid) and programmed.
    assert!(condition(&g.conditions, "Programmed").unwrap().status);
    // The same manifests unheld (manifest mode) serve both on the one socket.
    let (table, _) = plan(&format!("{gw}{a}{b}"));
    assert_eq!(to(&table, "alt.example", "/b"), V2);
}
