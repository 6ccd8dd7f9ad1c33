use crate::{Kind, Object};

fn admit(kind: Kind, yaml: &str) -> Result<Object, (String, String)> {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    Object::admit_json(kind, &value)
}

fn refused(kind: Kind, yaml: &str, field: &str, says: &str) {
    match admit(kind, yaml) {
        Ok(o) => panic!("admitted: {}", serde_json::to_string(&o).unwrap()),
        Err((f, why)) => {
            assert_eq!(f, field, "{why}");
            assert!(why.contains(says), "{field}: {why:?} does not say {says:?}");
        }
    }
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: strait
  listeners:
";

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: infra}]
";

#[test]
fn a_route_is_defaulted_as_the_crd_defaults_it() {
    let route = admit(
        Kind::HTTPRoute,
        &format!("{ROUTE}  rules:\n  - backendRefs: [{{name: web, port: 80}}]\n    matches: [{{headers: [{{name: x, value: v1}}]}}]\n"),
    )
    .unwrap();
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(json["kind"], "HTTPRoute");
    let parent = &json["spec"]["parentRefs"][0];
    assert_eq!(parent["group"], "gateway.networking.k8s.io");
    assert_eq!(parent["kind"], "Gateway");
    let rule = &json["spec"]["rules"][0];
    assert_eq!(rule["matches"][0]["path"]["type"], "PathPrefix");
    assert_eq!(rule["matches"][0]["path"]["value"], "/");
    assert_eq!(rule["matches"][0]["headers"][0]["type"], "Exact");
    assert_eq!(rule["backendRefs"][0]["weight"], 1);
    assert_eq!(rule["backendRefs"][0]["kind"], "Service");
    assert_eq!(rule["backendRefs"][0]["group"], "");
    // No rules at all: one rule that matches everything.
    let bare = admit(Kind::HTTPRoute, ROUTE).unwrap();
    let json = serde_json::to_value(&bare).unwrap();
    assert_eq!(json["spec"]["rules"][0]["matches"][0]["path"]["value"], "/");
}

#[test]
fn a_gateway_is_defaulted_and_its_listeners_checked() {
    let gw = admit(
        Kind::Gateway,
        &format!("{GATEWAY}  - {{name: http, port: 80, protocol: HTTP}}\n  - name: https\n    port: 443\n    protocol: HTTPS\n    tls: {{certificateRefs: [{{name: cert}}]}}\n"),
    )
    .unwrap();
    let json = serde_json::to_value(&gw).unwrap();
    let l = &json["spec"]["listeners"];
    assert_eq!(l[0]["allowedRoutes"]["namespaces"]["from"], "Same");
    assert_eq!(l[1]["tls"]["mode"], "Terminate");
    assert_eq!(l[1]["tls"]["certificateRefs"][0]["kind"], "Secret");

    let cases: &[(&str, &str, &str)] = &[
        ("  - {name: a, port: 80, protocol: HTTP}\n  - {name: a, port: 81, protocol: HTTP}\n", "spec.listeners[1].name", "must be unique"),
        ("  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 80, protocol: HTTP}\n", "spec.listeners[1]", "Combination of port, protocol and hostname"),
        ("  - {name: a, port: 0, protocol: HTTP}\n", "spec.listeners[0].port", "between 1 and 65535"),
        ("  - {name: a, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}\n", "spec.listeners[0].tls", "tls must not be specified"),
        ("  - {name: a, port: 443, protocol: HTTPS}\n", "spec.listeners[0].tls", "tls mode must be set"),
        ("  - {name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}\n", "spec.listeners[0].tls", "certificateRefs or options"),
        ("  - {name: a, port: 80, protocol: TCP, hostname: a.example}\n", "spec.listeners[0].hostname", "must not be specified"),
        ("  - {name: a, port: 80, protocol: HTTP, hostname: '*.*.example'}\n", "spec.listeners[0].hostname", "Invalid value"),
        ("  - {name: a, port: 80, protocol: HTTP, hostname: 10.0.0.1}\n", "spec.listeners[0].hostname", "not an IP"),
        ("  - {name: A_b, port: 80, protocol: HTTP}\n", "spec.listeners[0].name", "Invalid value"),
        ("  - {name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Others}}}\n", "spec.listeners[0].allowedRoutes.namespaces.from", "Unsupported value"),
        ("  - {name: a, port: 80, protocol: 'HTTP 2'}\n", "spec.listeners[0].protocol", "Invalid value"),
    ];
    for (listeners, field, says) in cases {
        refused(Kind::Gateway, &format!("{GATEWAY}{listeners}"), field, says);
    }
    refused(Kind::Gateway, "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: d}\nspec: {gatewayClassName: c}\n", "spec.listeners", "Required");
}

#[test]
fn what_the_httproute_crd_refuses_is_refused_with_the_field_named() {
    let rule = |body: &str| format!("{ROUTE}  rules:\n  - {body}\n");
    let cases: &[(String, &str, &str)] = &[
        (rule("matches: [{path: {type: Exact, value: foo}}]"), "spec.rules[0].matches[0].path.value", "absolute path"),
        (rule("matches: [{path: {type: PathPrefix, value: '/a//b'}}]"), "spec.rules[0].matches[0].path.value", "'//'"),
        (rule("matches: [{path: {type: Prefix, value: /}}]"), "spec.rules[0].matches[0].path.type", "Unsupported value"),
        (rule("matches: [{method: FETCH}]"), "spec.rules[0].matches[0].method", "Unsupported value"),
        (rule("matches: [{headers: [{name: 'a b', value: x}]}]"), "spec.rules[0].matches[0].headers[0].name", "HTTP token"),
        (rule("matches: [{headers: [{name: X, value: a}, {name: x, value: b}]}]"), "spec.rules[0].matches[0].headers[1].name", "Duplicate"),
        (rule("backendRefs: [{name: web}]"), "spec.rules[0].backendRefs[0].port", "Must have port for Service reference"),
        (rule("backendRefs: [{name: web, port: 80, weight: -1}]"), "spec.rules[0].backendRefs[0].weight", "between 0 and 1000000"),
        (rule("filters: [{type: RequestHeaderModifier}]"), "spec.rules[0].filters[0].requestHeaderModifier", "must be specified"),
        (rule("filters: [{type: RequestRedirect, requestHeaderModifier: {set: [{name: a, value: b}]}}]"), "spec.rules[0].filters[0].requestHeaderModifier", "must be nil"),
        (rule("filters: [{type: URLRewrite, urlRewrite: {hostname: a}}, {type: URLRewrite, urlRewrite: {hostname: b}}]"), "spec.rules[0].filters[1].type", "cannot be repeated"),
        (rule("filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]"), "spec.rules[0].filters[0].requestRedirect.statusCode", "Unsupported value"),
        (rule("matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]"), "spec.rules[0].filters[0].urlRewrite.path", "exactly one PathPrefix match"),
        (rule("filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]"), "spec.rules[0].filters[0].urlRewrite.path", "replaceFullPath must be specified"),
        (rule("timeouts: {request: 1s, backendRequest: 2s}"), "spec.rules[0].timeouts", "cannot be longer"),
        (rule("timeouts: {request: 1d}"), "spec.rules[0].timeouts.request", "Invalid value"),
        (rule("filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 10, fraction: {numerator: 1}}}]"), "spec.rules[0].filters[0].requestMirror", "Only one of percent or fraction"),
        (format!("{ROUTE}  hostnames: ['Foo.example']\n"), "spec.hostnames[0]", "Invalid value"),
        ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec:\n  parentRefs: [{name: gw}, {name: gw}]\n".into(), "spec.parentRefs", "sectionName or port must be specified"),
        ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec:\n  parentRefs: [{name: gw, sectionName: a}, {name: gw, sectionName: a}]\n".into(), "spec.parentRefs", "must be unique"),
    ];
    for (yaml, field, says) in cases {
        refused(Kind::HTTPRoute, yaml, field, says);
    }
    // The same rules, written right, are admitted.
    admit(Kind::HTTPRoute, &rule("matches: [{path: {type: PathPrefix, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}, {type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}}}, {type: RequestMirror, requestMirror: {backendRef: {name: mirror-b, port: 80}}}]\n    timeouts: {request: 10s, backendRequest: 1s500ms}")).unwrap();
    admit(
        Kind::HTTPRoute,
        &rule("matches: [{path: {type: RegularExpression, value: '^/a/[0-9]+$'}}]"),
    )
    .unwrap();
}

#[test]
fn classes_and_grants_are_checked() {
    let class = |name: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: strait}}\nspec: {{controllerName: '{name}'}}\n")
    };
    admit(Kind::GatewayClass, &class("strait.dev/gateway-controller")).unwrap();
    refused(
        Kind::GatewayClass,
        &class("strait"),
        "spec.controllerName",
        "domain",
    );
    refused(
        Kind::GatewayClass,
        &class(""),
        "spec.controllerName",
        "Required",
    );
    let grant = |spec: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: back}}\nspec:\n{spec}")
    };
    admit(Kind::ReferenceGrant, &grant("  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]\n  to: [{group: '', kind: Service}]\n")).unwrap();
    refused(
        Kind::ReferenceGrant,
        &grant("  from: []\n  to: [{group: '', kind: Service}]\n"),
        "spec.from",
        "Required",
    );
    refused(Kind::ReferenceGrant, &grant("  from: [{group: '', kind: HTTPRoute, namespace: Bad_NS}]\n  to: [{group: '', kind: Service}]\n"), "spec.from[0].namespace", "Invalid value");
}

#[test]
fn durations_read_as_the_gep_says() {
    use super::parse_duration;
    assert_eq!(parse_duration("1s"), Some(1000));
    assert_eq!(parse_duration("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration("500ms"), Some(500));
    assert_eq!(parse_duration("0s"), Some(0));
    assert_eq!(parse_duration("1m1s1ms1h"), Some(3_661_001));
    for bad in ["", "1", "s", "1.5s", "1d", "123456s", "1s1s1s1s1s", "-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
