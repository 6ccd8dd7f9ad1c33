//! `strait render` as a user runs it: the binary, real files, real output.
//! Golden files live in `tests/snapshots/`; review changes with `cargo insta review`.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{repo, strait_ok as render, TempDir, EXAMPLES};

fn strait(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strait runs");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn every_example_renders_to_its_golden_file() {
    for example in EXAMPLES {
        let path = format!("examples/{example}.yaml");
        insta::assert_snapshot!(
            format!("example-{example}"),
            render(&["render", "-f", &path])
        );
    }
}

#[test]
fn a_kubectl_cluster_dump_renders_to_its_golden_file() {
    let out = strait(&["render", "-f", "tests/fixtures/cluster-dump.yaml"], None);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ignoring 1 object(s) of kind ConfigMap"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ignoring 1 object(s) of kind ReplicaSet"),
        "{stderr}"
    );
    insta::assert_snapshot!("cluster-dump", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn json_output_is_the_same_list() {
    let yaml = render(&["render", "-f", "examples/service-demo.yaml"]);
    let json = render(&["render", "-f", "examples/service-demo.yaml", "-o", "json"]);
    let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let from_json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_json["kind"], "List");
    assert_eq!(from_json["apiVersion"], "v1");
}

#[test]
fn a_directory_is_read_in_name_order_and_stdin_works() {
    let all = render(&["render", "-f", "examples/"]);
    let stdin = strait(
        &["render", "-f", "-"],
        Some(&std::fs::read_to_string(repo().join("examples/maker.yaml")).unwrap()),
    );
    assert!(stdin.status.success());
    let stdin = String::from_utf8(stdin.stdout).unwrap();
    assert!(
        stdin.contains("name: maker")
            && all.contains("name: maker")
            && all.contains("name: my-exter")
    );
    // Output is sorted by kind, namespace, name whatever the input order.
    let kinds: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("  kind: "))
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(kinds, sorted);
}

#[test]
fn a_malformed_manifest_stops_with_file_document_object_and_field() {
    let dir = TempDir::new("render");
    let file = dir.0.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: \"eighty\"\n",
    )
    .unwrap();
    let out = strait(&["render", "-f", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing is printed when the input is bad"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: {}: document 2 (Service shop/web): spec.ports[0].port: ",
        file.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");

    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: 70000\n",
    )
    .unwrap();
    let stderr =
        String::from_utf8(strait(&["render", "-f", file.to_str().unwrap()], None).stderr).unwrap();
    assert!(stderr.contains("document 1 (Service default/web): spec.ports[0].port: 70000 is not a port number (1-65535)"), "{stderr}");

    let missing = strait(&["render", "-f", "no/such/file.yaml"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read no/such/file.yaml"));
}

#[test]
fn conflicting_objects_are_refused_with_both_names() {
    let dir = TempDir::new("render");
    let file = dir.0.join("conflict.yaml");
    let svc = |name: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: NodePort, ports: [{{port: 80, nodePort: 30080}}]}}\n---\n")
    };
    std::fs::write(&file, svc("a") + &svc("b")).unwrap();
    let out = strait(&["render", "-f", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Service default/b")
            && stderr.contains("document 2")
            && stderr.contains("30080 is already allocated to Service default/a"),
        "{stderr}"
    );
}

#[test]
fn help_speaks_kubernetes() {
    let help = render(&["render", "--help"]);
    assert!(
        help.contains("EndpointSlices")
            && help.contains("--filename")
            && help.contains("--service-cidr")
    );
}

/// `strait render` of `text` (read from stdin): exit code, stdout, stderr.
fn render_stdin(text: &str) -> (Option<i32>, String, String) {
    let out = strait(&["render", "-f", "-"], Some(text));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Refused with exit code 1, nothing on stdout, and `expected` in the error.
fn assert_refused(text: &str, expected: &str) {
    let (code, stdout, stderr) = render_stdin(text);
    assert_eq!(code, Some(1), "accepted:\n{text}\n{stdout}");
    assert!(
        stdout.is_empty(),
        "nothing is printed when the input is bad"
    );
    assert!(
        stderr.contains(expected),
        "wanted {expected:?} in:\n{stderr}"
    );
}

#[test]
fn hostile_namespaces_are_refused_naming_the_object_and_field() {
    let svc = |ns: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\nspec: {{ports: [{{port: 80}}]}}\n")
    };
    let long = "a".repeat(300);
    for (ns, why) in [
        (
            r#"'x" } flush ruleset'"#,
            "must consist of lower case alphanumeric",
        ),
        ("'a b'", "must consist of lower case alphanumeric"),
        (long.as_str(), "is longer than 63 characters"),
    ] {
        assert_refused(&svc(ns), "error: <stdin>: document 1 (Service ");
        assert_refused(&svc(ns), "): metadata.namespace: ");
        assert_refused(&svc(ns), why);
    }
    // A good Service beside a bad one does not get through either: nothing
    // half-rendered.
    let both = format!("{}---\n{}", svc("shop"), svc("'a b'"));
    assert_refused(
        &both,
        "document 2 (Service \"a b\"/web): metadata.namespace: \"a b\"",
    );
}

#[test]
fn special_addresses_and_unbounded_replicas_are_refused() {
    let lb = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: lb}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}], {spec}}}\n")
    };
    assert_refused(
        &lb("externalIPs: [127.0.0.1]"),
        "(Service default/lb): spec.externalIPs[0]: \"127.0.0.1\" may not be in the loopback range",
    );
    assert_refused(
        &lb("loadBalancerSourceRanges: [10.0.0.0/8, junk]"),
        "spec.loadBalancerSourceRanges[1]: \"junk\" is not an IP range",
    );
    assert_refused(
        &format!(
            "{}status: {{loadBalancer: {{ingress: [{{ip: junk}}]}}}}\n",
            lb("")
        ),
        "status.loadBalancer.ingress[0].ip: \"junk\" must be an IP address",
    );
    assert_refused(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: [169.254.169.254]}]\n",
        "(EndpointSlice default/s): endpoints[0].addresses[0]: \"169.254.169.254\" may not be in the link-local range",
    );
    // Refused before a single pod is made (this once ran out of memory).
    assert_refused(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: big}\nspec:\n  replicas: 2000000000\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c}]}\n",
        "(Deployment default/big): spec.replicas: 2000000000 is more than the 10000 pods",
    );
}

#[test]
fn prometheus_operator_objects_render_as_the_api_server_takes_them() {
    // `reloader-web` in an init (sidecar) and a main container; the
    // selector-less headless `kubelet` Service asking for both families on a
    // single-stack cluster.
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: prometheus-k8s-0, namespace: monitoring}\nspec:\n  initContainers:\n  - name: init-config-reloader\n    ports: [{name: reloader-web, containerPort: 8081}]\n  containers:\n  - name: prometheus\n    ports: [{name: web, containerPort: 9090}]\n  - name: config-reloader\n    ports: [{name: reloader-web, containerPort: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: kubelet, namespace: kube-system}\nspec:\n  clusterIP: None\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{name: https-metrics, port: 10250}]\n";
    let (code, stdout, stderr) = render_stdin(text);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("Pod monitoring/prometheus-k8s-0")
            && stderr.contains("port name \"reloader-web\" is also used by"),
        "a warning, as kube-apiserver gives: {stderr}"
    );
    let list: serde_json::Value = serde_saphyr::from_str(&stdout).unwrap();
    let kubelet = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "kubelet")
        .expect("the kubelet Service is rendered");
    assert_eq!(
        kubelet["spec"]["ipFamilies"],
        serde_json::json!(["IPv4", "IPv6"])
    );
    assert_eq!(kubelet["spec"]["clusterIPs"], serde_json::json!(["None"]));
}

// ---- issue 10: hostile and real-world input (manifest reading) ----

/// Nine levels of nine aliases of a 4 KB string: 4.6 KB that expand to
/// 1.6 GB.
fn alias_bomb() -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n  a0: &a0 \"{}\"\n",
        "x".repeat(4096)
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!("  a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
    }
    text
}

/// `strait args…` run to its end: exit status, stderr, and the child's peak
/// RSS in KiB (from wait4, so nothing else's memory counts).
// Reaped with wait4, not Child::wait, to get the child's own rusage.
#[allow(clippy::zombie_processes)]
// wait4 is the only call that returns a child's own peak RSS.
#[allow(unsafe_code)]
fn strait_measured(args: &[&str]) -> (bool, String, i64) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strait runs");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data, filled in by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, which std has not reaped.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (success, stderr, usage.ru_maxrss)
}

#[test]
fn a_yaml_alias_bomb_fails_fast_in_bounded_memory_naming_file_and_document() {
    let dir = TempDir::new("bomb");
    let path = format!("{}/bomb.yaml", dir.path());
    let bomb = alias_bomb();
    assert!(bomb.len() < 5000, "{}", bomb.len());
    std::fs::write(&path, &bomb).unwrap();
    let started = std::time::Instant::now();
    let (success, stderr, peak_kib) = strait_measured(&["render", "-f", &path]);
    let elapsed = started.elapsed();
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains(&format!("{path}: document 2: line ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("YAML aliases may repeat at most"),
        "{stderr}"
    );
    // It grew past 1.9 GB before; the budget stops it within megabytes.
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");
}

#[test]
fn a_nested_directory_says_what_it_skips_and_minus_r_reads_it() {
    let dir = TempDir::new("nested");
    let root = dir.path();
    let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
    // A must-gather: everything below the top directory.
    std::fs::create_dir_all(format!("{root}/namespaces/shop/core")).unwrap();
    std::fs::write(format!("{root}/namespaces/shop/shop.yaml"), ns("shop")).unwrap();
    std::fs::write(
        format!("{root}/namespaces/shop/core/services.yaml"),
        "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: web, namespace: shop}\n  spec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    std::fs::write(format!("{root}/timestamp"), "2026-11-30").unwrap();

    let out = strait(&["render", "-f", root], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("not reading 1 subdirectory ({root}/namespaces)"))
            && stderr.contains("-R reads them too"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not reading 1 file(s) whose name does not end in .yaml, .yml or .json")
            && stderr.contains(&format!("{root}/timestamp")),
        "{stderr}"
    );
    assert!(
        stderr.contains("the input holds no object that strait reads"),
        "{stderr}"
    );

    let out = strait(&["render", "-R", "-f", root, "-o", "json"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("subdirector"), "{stderr}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(names.contains(&"Namespace/shop".to_owned()), "{names:?}");
    assert!(names.contains(&"Service/web".to_owned()), "{names:?}");

    // The proxy reads the same tree with -R, and only with it.
    let web = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "web")
        .unwrap();
    let cluster_ip = web["spec"]["clusterIP"].as_str().unwrap();
    let dry_run = |recursive: bool| {
        let mut args = vec!["proxy", "--dry-run", "--node", "node-1", "-f", root];
        if recursive {
            args.push("-R");
        }
        let out = strait(&args, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(dry_run(true).contains(cluster_ip), "{cluster_ip}");
    assert!(!dry_run(false).contains(cluster_ip), "{cluster_ip}");
}

#[test]
fn a_dump_of_services_and_slices_without_pods_keeps_its_slices_and_says_so() {
    // `kubectl get svc,endpointslices -o json` of an RKE2 cluster: its DNS
    // Service holds the tenth address, one endpoint is serving while
    // terminating, items carry no kind (as cluster-info dump writes them).
    let dump = r#"{"apiVersion":"v1","kind":"ServiceList","items":[
      {"metadata":{"name":"rke2-coredns-rke2-coredns","namespace":"kube-system"},
       "spec":{"clusterIP":"10.96.0.10","selector":{"app":"coredns"},"ports":[{"name":"udp-53","port":53,"protocol":"UDP"}]}},
      {"metadata":{"name":"web","namespace":"shop"},
       "spec":{"selector":{"app":"web"},"ports":[{"port":80}]}}]}
    {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList","items":[
      {"metadata":{"name":"web-8fz2q","namespace":"shop","labels":{"kubernetes.io/service-name":"web","endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io"}},
       "addressType":"IPv4","ports":[{"name":"","port":80,"protocol":"TCP"}],
       "endpoints":[{"addresses":["10.244.1.7"],"conditions":{"ready":false,"serving":true,"terminating":true}}]}]}
    {"apiVersion":"v1","kind":"PodList","items":null}"#;
    let out = strait(&["render", "-f", "-", "-o", "json"], Some(dump));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("keeping 1 controller-managed EndpointSlice(s) of the input as they are: the input holds no Pods"),
        "{stderr}"
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    let slice = items
        .iter()
        .find(|o| o["metadata"]["name"] == "web-8fz2q")
        .expect("the dump's slice is kept");
    assert_eq!(slice["endpoints"][0]["conditions"]["serving"], true);
    let dns = items
        .iter()
        .find(|o| o["metadata"]["name"] == "rke2-coredns-rke2-coredns")
        .unwrap();
    assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");
}
