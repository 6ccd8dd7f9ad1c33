//! The PATCH bodies kubectl v1.37.1 really sends, captured from its requests
//! to a recording server (client-side `apply` of changed manifests against
//! objects carrying `kubectl.kubernetes.io/last-applied-configuration`, and
//! `label`, `annotate`, `patch`, `set image`, `taint`), applied to the live
//! objects they were computed against.

use serde_json::{json, Value};
use strait_apiserver::patch::{patch, PatchType};
use strait_apiserver::RESOURCES;

/// The live objects (as the recording server served them).
const LIVE: &str = r#"{"deployments":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default","labels":{"app":"web"},"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\",\"labels\":{\"app\":\"web\"}},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"type\":\"RollingUpdate\",\"rollingUpdate\":{\"maxSurge\":1}},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"nginx:1.25\",\"ports\":[{\"containerPort\":80}],\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}]},{\"name\":\"sidecar\",\"image\":\"busybox:1.36\"}],\"volumes\":[{\"name\":\"data\",\"emptyDir\":{}}]}}}}\n"},"uid":"u1","resourceVersion":"5","finalizers":["example.com/a","example.com/b"]},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx:1.25","ports":[{"containerPort":80}],"env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]},{"name":"sidecar","image":"busybox:1.36"}],"volumes":[{"name":"data","emptyDir":{}}]}}}},"services":{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"selector\":{\"app\":\"web\"},\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080},{\"name\":\"https\",\"port\":443,\"targetPort\":8443}]}}\n"},"uid":"u2"},"spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":80,"targetPort":8080},{"name":"https","port":443,"targetPort":8443}],"clusterIP":"10.96.0.10","type":"ClusterIP"}},"nodes":{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","finalizers":["example.com/a","example.com/b"],"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"n1\",\"finalizers\":[\"example.com/a\",\"example.com/b\"]},\"spec\":{\"podCIDRs\":[\"10.0.0.0/24\"],\"taints\":[{\"key\":\"a\",\"effect\":\"NoSchedule\"},{\"key\":\"b\",\"effect\":\"NoSchedule\"}]}}\n"},"uid":"u3"},"spec":{"podCIDRs":["10.0.0.0/24"],"taints":[{"key":"a","effect":"NoSchedule"},{"key":"b","effect":"NoSchedule"}]}}}"#;

/// One captured request per line: resource, `Content-Type`, body.
const CAPTURED: &str = r#"{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.27\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]},{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],"containers":[{"image":"nginx:1.27","name":"web"}]}}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"C\",\"value\":\"3\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]},{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],"containers":[{"$setElementOrder/env":[{"name":"A"},{"name":"C"},{"name":"B"}],"env":[{"name":"C","value":"3"}],"name":"web"}]}}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]},{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],"containers":[{"$setElementOrder/env":[{"name":"B"}],"env":[{"$patch":"delete","name":"A"}],"name":"web"}]}}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"}],"containers":[{"$patch":"delete","name":"sidecar"}]}}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"},{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"web"}]}}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]},{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"}],\"volumes\":[{\"configMap\":{\"name\":\"cfg\"},\"name\":\"data\"}]}}}}\n"}},"spec":{"template":{"spec":{"$setElementOrder/volumes":[{"name":"data"}],"volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"cfg"},"emptyDir":null,"name":"data"}]}}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"type\":\"Recreate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]},{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"}},"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"}}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\",\"tier\":\"front\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":3,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"rollingUpdate\":{\"maxSurge\":1},\"type\":\"RollingUpdate\"},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],\"image\":\"nginx:1.25\",\"name\":\"web\",\"ports\":[{\"containerPort\":80}]},{\"image\":\"busybox:1.36\",\"name\":\"sidecar\"}],\"volumes\":[{\"emptyDir\":{},\"name\":\"data\"}]}}}}\n"},"labels":{"tier":"front"}},"spec":{"replicas":3}}}
{"plural":"services","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"annotations\":{},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080},{\"name\":\"https\",\"port\":443,\"targetPort\":8443},{\"name\":\"dns\",\"port\":53,\"protocol\":\"UDP\",\"targetPort\":53}],\"selector\":{\"app\":\"web\"}}}\n"}},"spec":{"$setElementOrder/ports":[{"port":80},{"port":443},{"port":53}],"ports":[{"name":"dns","port":53,"protocol":"UDP","targetPort":53}]}}}
{"plural":"services","type":"application/strategic-merge-patch+json","body":{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"annotations\":{},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080}],\"selector\":{\"app\":\"web\"}}}\n"}},"spec":{"$setElementOrder/ports":[{"port":80}],"ports":[{"$patch":"delete","port":443}]}}}
{"plural":"deployments","type":"application/merge-patch+json","body":{"metadata":{"labels":{"app":null,"tier":"front"}}}}
{"plural":"deployments","type":"application/merge-patch+json","body":{"metadata":{"annotations":{"note":"x"}}}}
{"plural":"deployments","type":"application/merge-patch+json","body":{}}
{"plural":"deployments","type":"application/merge-patch+json","body":{"metadata":{"finalizers":null}}}
{"plural":"nodes","type":"application/strategic-merge-patch+json","body":{"metadata":{"$deleteFromPrimitiveList/finalizers":["example.com/a"],"$setElementOrder/finalizers":["example.com/b"],"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"annotations\":{},\"finalizers\":[\"example.com/b\"],\"name\":\"n1\"},\"spec\":{\"podCIDRs\":[\"10.0.0.0/24\"],\"taints\":[{\"effect\":\"NoSchedule\",\"key\":\"b\"}]}}\n"}},"spec":{"taints":[{"effect":"NoSchedule","key":"b"}]}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"spec":{"replicas":5}}}
{"plural":"deployments","type":"application/strategic-merge-patch+json","body":{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],"containers":[{"image":"nginx:1.28","name":"web"}]}}}}}
{"plural":"nodes","type":"application/strategic-merge-patch+json","body":{"spec":{"taints":[{"effect":"NoExecute","key":"c","value":"d"},{"effect":"NoSchedule","key":"a"},{"effect":"NoSchedule","key":"b"}]}}}"#;

/// Each captured patch applied to the live object it was made against.
fn results() -> Vec<(Value, Value)> {
    let live: Value = serde_json::from_str(LIVE).unwrap();
    CAPTURED
        .lines()
        .map(|line| {
            let request: Value = serde_json::from_str(line).unwrap();
            let plural = request["plural"].as_str().unwrap();
            let resource = RESOURCES.iter().find(|r| r.plural == plural).unwrap();
            let ty = PatchType::from_content_type(request["type"].as_str().unwrap()).unwrap();
            let body = serde_json::to_vec(&request["body"]).unwrap();
            let original = &live[plural];
            let out =
                patch(resource, ty, original, &body).unwrap_or_else(|e| panic!("{line}: {e}"));
            (request["body"].clone(), out)
        })
        .collect()
}

fn containers(d: &Value) -> &Value {
    &d["spec"]["template"]["spec"]["containers"]
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].to_string().trim_matches('"').to_owned())
        .collect()
}

fn no_directives(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .all(|(k, v)| !k.starts_with('$') && no_directives(v)),
        Value::Array(a) => a.iter().all(no_directives),
        _ => true,
    }
}

#[test]
fn kubectl_patches_apply_as_kube_apiserver_applies_them() {
    let live: Value = serde_json::from_str(LIVE).unwrap();
    let results = results();
    assert_eq!(results.len(), 18);
    for (body, out) in &results {
        assert!(no_directives(out), "{body}");
        // apply's patches carry the new last-applied configuration: stored as sent.
        if let Some(applied) =
            body.pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        {
            assert_eq!(
                out.pointer(
                    "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"
                ),
                Some(applied)
            );
        }
    }
    let r = |i: usize| &results[i].1;
    let d = &live["deployments"];

    // apply: image change; only the image differs from the live object.
    assert_eq!(containers(r(0))[0]["image"], "nginx:1.27");
    let mut expected = containers(d).clone();
    expected[0]["image"] = json!("nginx:1.27");
    assert_eq!(containers(r(0)), &expected);
    // apply: env var C added between A and B, then A removed.
    assert_eq!(names(&containers(r(1))[0]["env"], "name"), ["A", "C", "B"]);
    assert_eq!(names(&containers(r(2))[0]["env"], "name"), ["B"]);
    // apply: the sidecar removed; the containers reordered.
    assert_eq!(names(containers(r(3)), "name"), ["web"]);
    assert_eq!(names(containers(r(4)), "name"), ["sidecar", "web"]);
    assert_eq!(containers(r(4))[1], containers(d)[0]);
    // apply: a volume's source switched ($retainKeys drops emptyDir).
    assert_eq!(
        r(5)["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cfg"}}])
    );
    // apply: strategy switched to Recreate ($retainKeys drops rollingUpdate).
    assert_eq!(r(6)["spec"]["strategy"], json!({"type": "Recreate"}));
    // apply: replicas and a label.
    assert_eq!(r(7)["spec"]["replicas"], 3);
    assert_eq!(
        r(7)["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );
    // apply: a Service port added, then one removed, by port.
    assert_eq!(names(&r(8)["spec"]["ports"], "port"), ["80", "443", "53"]);
    assert_eq!(names(&r(9)["spec"]["ports"], "port"), ["80"]);
    assert_eq!(r(9)["spec"]["clusterIP"], "10.96.0.10");
    // label tier=front app-; annotate note=x (merge patches).
    assert_eq!(r(10)["metadata"]["labels"], json!({"tier": "front"}));
    assert_eq!(r(11)["metadata"]["annotations"]["note"], "x");
    assert_eq!(r(12), d);
    // patch --type=merge finalizers: null.
    assert!(r(13)["metadata"].get("finalizers").is_none());
    // apply on a Node: a finalizer dropped ($deleteFromPrimitiveList), the
    // taints (no merge key in kube's types) replaced.
    assert_eq!(r(14)["metadata"]["finalizers"], json!(["example.com/b"]));
    assert_eq!(
        r(14)["spec"]["taints"],
        json!([{"effect": "NoSchedule", "key": "b"}])
    );
    // patch -p '{"spec":{"replicas":5}}' (strategic by default); set image.
    assert_eq!(r(15)["spec"]["replicas"], 5);
    assert_eq!(containers(r(16))[0]["image"], "nginx:1.28");
    assert_eq!(names(containers(r(16)), "name"), ["web", "sidecar"]);
    // taint: kubectl sends the whole list.
    assert_eq!(names(&r(17)["spec"]["taints"], "key"), ["c", "a", "b"]);
}

/// A near-limit body of list elements merges in time linear in its size:
/// merge keys are looked up by hash, never by scanning (a scan per element
/// would be ~10^10 steps here).
#[test]
fn big_merge_lists_merge_in_linear_time() {
    let n = 60_000;
    let env: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("V{i}"), "value": "old"}))
        .collect();
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x", "env": env}]}}},
    });
    // Every variable changed, in reverse order, with kubectl's order list.
    let changed: Vec<Value> = (0..n)
        .rev()
        .map(|i| json!({"name": format!("V{i}"), "value": "new"}))
        .collect();
    let order: Vec<Value> = (0..n)
        .rev()
        .map(|i| json!({"name": format!("V{i}")}))
        .collect();
    let body = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "$setElementOrder/env": order, "env": changed},
    ]}}}});
    let body = serde_json::to_vec(&body).unwrap();
    assert!(body.len() < strait_apiserver::patch::MAX_PATCH_BYTES);
    let deployments = RESOURCES
        .iter()
        .find(|r| r.plural == "deployments")
        .unwrap();
    let start = std::time::Instant::now();
    let out = patch(deployments, PatchType::StrategicMerge, &live, &body).unwrap();
    let elapsed = start.elapsed();
    println!(
        "strategic merge of {n} env vars ({} KiB body): {elapsed:?}",
        body.len() / 1024
    );
    let env = out["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert_eq!(env.len(), n);
    assert_eq!(
        env[0],
        json!({"name": format!("V{}", n - 1), "value": "new"})
    );
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");
}
