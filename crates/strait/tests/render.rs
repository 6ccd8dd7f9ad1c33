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
