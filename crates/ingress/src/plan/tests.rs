use super::*;
use strait_model::{parse_str, Format};

/// A snapshot of `yaml` (objects as a manifest gives them, admitted).
fn state(yaml: &str) -> ClusterState {
    let loaded = parse_str("test.yaml", yaml, Format::Yaml).expect("test manifest");
    ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .expect("test snapshot")
}

const CLASS: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: strait
  annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}
spec: {controller: strait.dev/ingress}
";

/// Service `name` (port 80 named http, and 8443 unnamed) with one ready
/// endpoint 10.0.0.`n` (port 8080 for http, 9443 for the other).
fn service(name: &str, n: u8) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: 10.96.0.{n}
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: other, port: 8443, targetPort: 9443}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: other, port: 9443, protocol: TCP}}]
endpoints: [{{addresses: [10.0.0.{n}]}}]
"
    )
}

/// An Ingress whose rule for `host` has `paths` (type, path), the i-th to
/// Service `s{i}` port 80.
fn ingress(name: &str, host: &str, paths: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  rules:
  - host: '{host}'
    http:
      paths:
"
    );
    for (i, (t, p)) in paths.iter().enumerate() {
        out += &format!(
            "      - {{pathType: {t}, path: '{p}', backend: {{service: {{name: s{i}, port: {{number: 80}}}}}}}}\n"
        );
    }
    out
}

fn services(n: u8) -> String {
    (0..n).map(|i| service(&format!("s{i}"), i + 1)).collect()
}

fn backend_index(table: &RouteTable, host: &str, path: &str) -> Option<usize> {
    let b = table.route(host, path)?;
    let svc = b.name.strip_prefix("default/s")?.strip_suffix(":80")?;
    svc.parse().ok()
}

/// The API reference's table of path matches (Ingress v1, "Examples"),
/// row by row: the paths of one Ingress, a request path, which path takes
/// it (`None`: none, the default backend).
/// (the paths of an Ingress as (pathType, path), a request path, the index
/// of the path that takes it).
type Row<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<usize>);

#[test]
fn path_matching_follows_the_api_reference_table() {
    #[rustfmt::skip]
    let rows: &[Row] = &[
        (&[("Prefix", "/")], "/", Some(0)),
        (&[("Prefix", "/")], "/any/path", Some(0)),
        (&[("Exact", "/foo")], "/foo", Some(0)),
        (&[("Exact", "/foo")], "/bar", None),
        (&[("Exact", "/foo")], "/foo/", None),
        (&[("Exact", "/foo/")], "/foo", None),
        (&[("Prefix", "/foo")], "/foo", Some(0)),
        (&[("Prefix", "/foo")], "/foo/", Some(0)),
        (&[("Prefix", "/foo/")], "/foo", Some(0)),
        (&[("Prefix", "/foo/")], "/foo/", Some(0)),
        (&[("Prefix", "/aaa/bb")], "/aaa/bbb", None),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbb", Some(0)),
        (&[("Prefix", "/aaa/bbb/")], "/aaa/bbb", Some(0)),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbb/", Some(0)),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbb/ccc", Some(0)),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
        (&[("Prefix", "/"), ("Prefix", "/aaa")], "/aaa/ccc", Some(1)),
        (&[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/aaa/bbb", Some(2)),
        (&[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/ccc", Some(0)),
        (&[("Prefix", "/aaa")], "/ccc", None),
        (&[("Prefix", "/foo"), ("Exact", "/foo")], "/foo", Some(1)),
        // Beyond the table: the order of the paths in the object does not
        // matter, the longest one wins; case matters.
        (&[("Prefix", "/aaa/bbb"), ("Prefix", "/aaa")], "/aaa/bbb/c", Some(0)),
        (&[("Exact", "/foo"), ("Prefix", "/foo")], "/foo", Some(0)),
        (&[("Exact", "/foo"), ("Prefix", "/foo")], "/foo/x", Some(1)),
        (&[("Prefix", "/Foo")], "/foo", None),
        // ImplementationSpecific is an element-wise prefix, after Prefix.
        (&[("ImplementationSpecific", "/foo")], "/foo/bar", Some(0)),
        (&[("ImplementationSpecific", "/foo")], "/foobar", None),
        (&[("ImplementationSpecific", "/foo"), ("Prefix", "/foo")], "/foo", Some(1)),
        (&[("ImplementationSpecific", "/foo/bar"), ("Prefix", "/foo")], "/foo/bar", Some(0)),
    ];
    for (i, (paths, request, want)) in rows.iter().enumerate() {
        let yaml = format!(
            "{CLASS}{}{}",
            services(paths.len() as u8),
            ingress("web", "", paths)
        );
        let table = plan(&state(&yaml), CONTROLLER);
        assert!(table.problems.is_empty(), "row {i}: {:?}", table.problems);
        assert_eq!(
            backend_index(&table, "example.com", request),
            *want,
            "row {i}: paths {paths:?}, request {request}"
        );
    }
}

#[test]
fn exact_host_before_wildcard_before_any_host() {
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        services(1),
        ingress("exact", "foo.bar.com", &[("Prefix", "/")]),
        ingress("wild", "*.bar.com", &[("Prefix", "/"), ("Prefix", "/w")]),
        ingress(
            "any",
            "",
            &[("Prefix", "/"), ("Prefix", "/a"), ("Prefix", "/b")]
        ),
    ) + &service("s1", 2)
        + &service("s2", 3);
    let table = plan(&state(&yaml), CONTROLLER);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
    let ingress_of = |host: &str, path: &str| {
        table
            .host_routes(host)
            .find(path)
            .map(|r| r.ingress.name.clone())
    };
    #[rustfmt::skip]
    let rows = [
        ("foo.bar.com", "/x", Some("exact")),
        // The exact host's rules only: no fall-through to /w of the wildcard.
        ("foo.bar.com", "/w", Some("exact")),
        ("baz.bar.com", "/w", Some("wild")),
        // One label only: neither the bare domain nor two labels.
        ("bar.com", "/", Some("any")),
        ("a.baz.bar.com", "/", Some("any")),
        (".bar.com", "/", Some("any")),
        ("other.org", "/b", Some("any")),
    ];
    for (host, path, want) in rows {
        assert_eq!(ingress_of(host, path).as_deref(), want, "{host}{path}");
    }
    assert_eq!(backend_index(&table, "baz.bar.com", "/w/x"), Some(1));
    assert_eq!(backend_index(&table, "other.org", "/b"), Some(2));
}

#[test]
fn ingress_classes_decide_what_is_ours() {
    let named = |class: &str| {
        ingress("named", "a.com", &[("Prefix", "/")]).replace(
            "spec:\n  rules:",
            &format!("spec:\n  ingressClassName: {class}\n  rules:"),
        )
    };
    let other_class = "---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
";
    let not_default = CLASS.replace("'true'", "'false'");
    // (objects, served Ingresses)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{CLASS}{}{}", services(1), named("strait")),
            vec!["named"],
        ),
        (
            format!("{CLASS}{other_class}{}{}", services(1), named("nginx")),
            vec![],
        ),
        // A class nobody has: not ours.
        (
            format!("{CLASS}{}{}", services(1), named("missing")),
            vec![],
        ),
        // Without a class: ours only through our default class.
        (
            format!(
                "{CLASS}{}{}",
                services(1),
                ingress("bare", "a.com", &[("Prefix", "/")])
            ),
            vec!["bare"],
        ),
        (
            format!(
                "{not_default}{}{}",
                services(1),
                ingress("bare", "a.com", &[("Prefix", "/")])
            ),
            vec![],
        ),
        (
            format!("{not_default}{}{}", services(1), named("strait")),
            vec!["named"],
        ),
        // The deprecated annotation counts when the field is unset.
        (
            format!(
                "{not_default}{}{}",
                services(1),
                ingress("old", "a.com", &[("Prefix", "/")]).replace(
                    "namespace: default}",
                    "namespace: default, annotations: {kubernetes.io/ingress.class: strait}}"
                )
            ),
            vec!["old"],
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let table = plan(&state(yaml), CONTROLLER);
        let served: Vec<&str> = table.ingresses.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(&served, want, "case {i}");
        assert!(table.problems.is_empty(), "case {i}: {:?}", table.problems);
    }
    // Another controller's class is default too: a classless Ingress is
    // not served, and that is said.
    let two_defaults = format!(
        "{CLASS}{}{}{}",
        other_class.replace(
            "name: nginx}",
            "name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}"
        ),
        services(1),
        ingress("bare", "a.com", &[("Prefix", "/")])
    );
    let table = plan(&state(&two_defaults), CONTROLLER);
    assert!(table.ingresses.is_empty());
    assert_eq!(table.problems.len(), 1);
    assert!(
        table.problems[0]
            .to_string()
            .starts_with("Ingress default/bare: spec.ingressClassName: unset, and 2 IngressClasses are marked default (nginx, strait)"),
        "{}",
        table.problems[0]
    );
    // Another controller name serves the other class.
    let table = plan(
        &state(&format!("{other_class}{}{}", services(1), named("nginx"))),
        "k8s.io/ingress-nginx",
    );
    assert_eq!(table.ingresses.len(), 1);
}

#[test]
fn backends_resolve_to_ready_endpoints_by_port_number_or_name() {
    let yaml = format!(
        "{CLASS}{}{}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ports, namespace: default}}
spec:
  rules:
  - http:
      paths:
      - {{pathType: Prefix, path: /by-number, backend: {{service: {{name: s0, port: {{number: 8443}}}}}}}}
      - {{pathType: Prefix, path: /by-name, backend: {{service: {{name: s0, port: {{name: http}}}}}}}}
      - {{pathType: Prefix, path: /mixed, backend: {{service: {{name: mixed, port: {{number: 80}}}}}}}}
      - {{pathType: Prefix, path: /draining, backend: {{service: {{name: draining, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: mixed, namespace: default}}
spec: {{clusterIP: 10.96.1.1, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: mixed-a, namespace: default, labels: {{kubernetes.io/service-name: mixed}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints:
- {{addresses: [10.1.0.2], conditions: {{ready: false, serving: false, terminating: false}}}}
- {{addresses: [10.1.0.1]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: mixed-b, namespace: default, labels: {{kubernetes.io/service-name: mixed}}}}
addressType: IPv6
ports: [{{port: 8080}}]
endpoints: [{{addresses: ['fd00::1'], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: draining, namespace: default}}
spec: {{clusterIP: 10.96.1.2, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: draining-a, namespace: default, labels: {{kubernetes.io/service-name: draining}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints:
- {{addresses: [10.2.0.1], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.2.0.2], conditions: {{ready: false, serving: false, terminating: true}}}}
",
        services(1),
        service("unused", 9),
    );
    let table = plan(&state(&yaml), CONTROLLER);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
    let endpoints = |path: &str| -> Vec<String> {
        table
            .route("x", path)
            .unwrap()
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(endpoints("/by-number"), ["10.0.0.1:9443"]);
    assert_eq!(endpoints("/by-name"), ["10.0.0.1:8080"]);
    assert_eq!(endpoints("/mixed"), ["10.1.0.1:8080", "[fd00::1]:8080"]);
    // No ready endpoint: those serving while terminating.
    assert_eq!(endpoints("/draining"), ["10.2.0.1:8080"]);
    // Round robin over the ready ones.
    let mixed = table.route("x", "/mixed").unwrap();
    let picks: Vec<_> = (0..4).map(|_| mixed.pick().unwrap().to_string()).collect();
    assert_eq!(
        picks,
        [
            "10.1.0.1:8080",
            "[fd00::1]:8080",
            "10.1.0.1:8080",
            "[fd00::1]:8080"
        ]
    );
}

#[test]
fn a_bad_ingress_hurts_only_itself_and_is_reported() {
    let bad_path = ingress("bad-path", "a.com", &[("Prefix", "relative")]);
    let bad_type = ingress("bad-type", "b.com", &[("Regex", "/x")]);
    let bad_host = ingress("bad-host", "10.0.0.1", &[("Prefix", "/")]);
    let dots = ingress("dots", "d.com", &[("Exact", "/a/../b")]);
    let missing = ingress("missing", "c.com", &[("Prefix", "/"), ("Prefix", "/gone")]).replace(
        "name: s1, port: {number: 80}",
        "name: gone, port: {number: 80}",
    );
    let no_port = ingress("no-port", "e.com", &[("Prefix", "/")])
        .replace("port: {number: 80}", "port: {name: nope}");
    let good = ingress("good", "ok.com", &[("Prefix", "/")]);
    let yaml = format!(
        "{CLASS}{}{bad_path}{bad_type}{bad_host}{dots}{missing}{no_port}{good}",
        services(2)
    );
    let table = plan(&state(&yaml), CONTROLLER);
    let problems: Vec<String> = table.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "Ingress default/bad-host: spec.rules[0].host: \"10.0.0.1\" must be a DNS name, not an IP address",
            "Ingress default/bad-path: spec.rules[0].http.paths[0].path: \"relative\" must be an absolute path",
            "Ingress default/bad-type: spec.rules[0].http.paths[0].pathType: \"Regex\" is not supported: Exact, Prefix or ImplementationSpecific",
            "Ingress default/dots: spec.rules[0].http.paths[0].path: \"/a/../b\" must not contain \"/../\"",
            "Ingress default/missing: spec.rules[0].http.paths[1].backend.service.name: Service default/gone not found",
            "Ingress default/no-port: spec.rules[0].http.paths[0].backend.service.port.name: Service default/s0 has no TCP port named \"nope\"",
        ]
    );
    let served: Vec<&str> = table.ingresses.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(served, ["good", "missing", "no-port"]);
    assert_eq!(table.route("ok.com", "/").unwrap().endpoints.len(), 1);
    // The missing Service's path is kept, without endpoints (503), rather
    // than falling through to a shorter path.
    assert!(table
        .route("c.com", "/gone/x")
        .unwrap()
        .endpoints
        .is_empty());
    assert_eq!(table.route("c.com", "/x").unwrap().endpoints.len(), 1);
    assert!(table.route("a.com", "/").is_none());
}

#[test]
fn default_backend_and_conflicts_go_to_the_oldest() {
    let with_default = |name: &str, created: &str, svc: &str| {
        format!(
            "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}
spec:
  defaultBackend: {{service: {{name: {svc}, port: {{number: 80}}}}}}
  rules:
  - host: same.com
    http:
      paths: [{{pathType: Exact, path: /x, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]
"
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}",
        services(2),
        // Named so that name order and age order differ.
        with_default("a-newer", "2026-02-01T00:00:00Z", "s1"),
        with_default("b-older", "2026-01-01T00:00:00Z", "s0"),
    );
    let table = plan(&state(&yaml), CONTROLLER);
    assert_eq!(backend_index(&table, "anything", "/nowhere"), Some(0));
    assert_eq!(backend_index(&table, "same.com", "/x"), Some(0));
    let problems: Vec<String> = table.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "Ingress default/a-newer: spec.defaultBackend: not used: Ingress default/b-older is older and has one too",
            "Ingress default/a-newer: spec.rules[0].http.paths[0]: Exact \"/x\" is not served: Ingress default/b-older is older and has the same path for this host",
        ]
    );
}

#[test]
fn tls_certificates_come_from_tls_secrets() {
    let secret = |name: &str, kind: &str| {
        format!(
            "---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: {kind}
stringData: {{tls.crt: CERT-{name}, tls.key: KEY-{name}}}
"
        )
    };
    let tls = |name: &str, host: &str, tls: &str| {
        ingress(name, host, &[("Prefix", "/")])
            .replace("spec:\n", &format!("spec:\n  tls: {tls}\n"))
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}{}{}{}",
        services(1),
        secret("site", "kubernetes.io/tls"),
        secret("opaque", "Opaque"),
        tls(
            "site",
            "a.com",
            "[{hosts: [a.com, '*.a.com'], secretName: site}]"
        ),
        tls("fallback", "b.com", "[{secretName: site}]"),
        tls(
            "wrong-type",
            "c.com",
            "[{hosts: [c.com], secretName: opaque}]"
        ),
        tls("absent", "d.com", "[{hosts: [d.com], secretName: nope}]"),
    );
    let table = plan(&state(&yaml), CONTROLLER);
    let problems: Vec<String> = table.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "Ingress default/absent: spec.tls[0].secretName: Secret default/nope not found",
            "Ingress default/wrong-type: spec.tls[0].secretName: Secret default/opaque is of type \"Opaque\", not kubernetes.io/tls",
        ]
    );
    // Still routed, without TLS.
    assert!(table.route("c.com", "/").is_some());
    let certs: Vec<(Vec<String>, String)> = table
        .certificates
        .iter()
        .map(|c| {
            (
                c.hosts.clone(),
                String::from_utf8(c.cert_pem.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        certs,
        [
            (vec![], "CERT-site".to_owned()),
            (
                vec!["a.com".to_owned(), "*.a.com".to_owned()],
                "CERT-site".to_owned()
            ),
        ]
    );
}
