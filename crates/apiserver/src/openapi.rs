//! OpenAPI documents, which kubectl downloads before `create -f` and
//! `apply -f` (validation, and whether the server validates fields itself).
//!
//! What kubectl 1.37 reads, and why the documents look as they do (from
//! kubectl's `factory_client_access.go`, cli-runtime's
//! `query_param_verifier_v3.go` and kubectl's `apply/patcher.go`):
//!
//! - **Validation** (`--validate=strict`, the default): kubectl asks the
//!   OpenAPI v3 document of the object's group version (`GET /openapi/v3`,
//!   then the listed `serverRelativeURL`, `Accept: application/json`)
//!   whether a `PATCH` operation tagged with the object's
//!   `x-kubernetes-group-version-kind` has a `fieldValidation` query
//!   parameter. The first such `PATCH` it meets decides (Go map order, so
//!   every `PATCH` of the kind must carry it, `/status` too). Then it sends
//!   `fieldValidation=Strict` and validates nothing itself. Only when v3
//!   fails does it fall back to OpenAPI v2, which client-go fetches as
//!   protobuf only; that is where "failed to download openapi" comes from.
//!   A `kind: List` document always takes that v2 path (cli-runtime treats
//!   `v1/List` as unsupported); [`v2_protobuf`] is what it then reads.
//! - **apply** (client-side): kubectl computes its strategic merge patch
//!   from the v3 schemas only when the kind's `PATCH` lists
//!   `application/strategic-merge-patch+json` in its request body. These
//!   documents carry compact schemas without the patch merge keys, so the
//!   `PATCH` bodies list JSON patch and merge patch only: kubectl then asks
//!   v2 for the PATCH media types, finds none in [`v2_protobuf`], and uses
//!   the merge keys compiled into it for the built-in kinds — the same
//!   patches it sends a kube-apiserver — instead of a wrong patch computed
//!   from schemas that lack them (lists replaced instead of merged by
//!   `name`). The server still takes strategic merge patches (`patch.rs`).
//! - **explain** finds a kind's schema by the `x-kubernetes-group-version-kind`
//!   list in `components.schemas`; the compact schemas name each kind's
//!   top-level fields and accept anything below them.
//!
//! k8s-openapi's `schemars` feature was not used: its generated schemas
//! carry neither `x-kubernetes-group-version-kind` nor the patch strategy
//! extensions, so kubectl could use them for neither of the above.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::resources::{groups, Resource, Subresource, RESOURCES};

const SCHEMAS: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// One group version's document, its index key and hash.
struct Document {
    /// `api/v1`, `apis/apps/v1`.
    path: String,
    doc: Value,
    /// `doc` as served.
    bytes: Vec<u8>,
    hash: String,
}

/// The documents are made from constant tables: build them once.
fn documents() -> &'static [Document] {
    static DOCS: OnceLock<Vec<Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        groups()
            .into_iter()
            .map(|(group, version)| {
                let doc = build_v3(group, version);
                // serde_json writes a `Value` the same way every time, so
                // the hash changes exactly when the document does.
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                Document {
                    path: gv_path(group, version),
                    doc,
                    hash: content_hash(&bytes),
                    bytes,
                }
            })
            .collect()
    })
}

/// `api/v1`, `apis/apps/v1`: client-go's key for a group version.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A 128-bit FNV-1a digest in hex: two 64-bit lanes with different offset
/// bases. Not cryptographic, and need not be: the hash only tells a client
/// cache (kubectl keeps `?hash=` URLs on disk as immutable) that the
/// document changed; nobody is trying to collide it.
fn content_hash(bytes: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64];
    for lane in &mut lanes {
        for b in bytes {
            *lane ^= u64::from(*b);
            *lane = lane.wrapping_mul(PRIME);
        }
    }
    format!("{:016X}{:016X}", lanes[0], lanes[1])
}

/// `GET /openapi/v3`: the index of group-version documents.
pub fn v3_index() -> Value {
    let mut paths = Map::new();
    for d in documents() {
        paths.insert(
            d.path.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.path, d.hash) }),
        );
    }
    json!({ "paths": paths })
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1` (`path` without the
/// leading `/openapi/v3/`), or `None` for one not served.
pub fn v3_document(path: &str) -> Option<Value> {
    documents()
        .iter()
        .find(|d| d.path == path)
        .map(|d| d.doc.clone())
}

/// [`v3_document`] serialized once, for serving without a copy.
pub fn v3_document_bytes(path: &str) -> Option<&'static [u8]> {
    documents()
        .iter()
        .find(|d| d.path == path)
        .map(|d| d.bytes.as_slice())
}

/// The current `hash` of a v3 document, as the index lists it. A request
/// whose `?hash=` equals it may be answered `Cache-Control: public,
/// immutable`; kube-apiserver redirects (301) a stale hash to the current
/// URL, and answers `no-cache` without one.
pub fn v3_hash(path: &str) -> Option<&'static str> {
    documents()
        .iter()
        .find(|d| d.path == path)
        .map(|d| d.hash.as_str())
}

/// `GET /openapi/v2` as JSON: every group version in one Swagger 2.0
/// document. No client of this server reads it: client-go (kubectl) asks
/// for v2 as protobuf only (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`)
/// and kube-rs reads no OpenAPI. It is for people and tools fetching JSON
/// (`curl`, Swagger UI through `kubectl proxy`). A request that accepts
/// [`V2_PROTOBUF`] (client-go's only `Accept` there) gets [`v2_protobuf`].
pub fn v2() -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for d in documents() {
        if let Some(p) = d.doc.get("paths").and_then(Value::as_object) {
            for (url, item) in p {
                paths.insert(url.clone(), v2_path_item(item));
            }
        }
        if let Some(s) = d
            .doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, schema) in s {
                definitions.insert(name.clone(), v2_refs(schema.clone()));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "strait" },
        "paths": paths,
        "definitions": definitions,
    })
}

/// The media type client-go asks `/openapi/v2` for, and the only one.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The `Content-Type` to answer it with: kube-apiserver's dotted form. The
/// `@` of the requested form is no MIME token character, and client-go's
/// `mime.ParseMediaType` fails on a response that carries it.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether an `Accept` header at `/openapi/v2` asks for protobuf before
/// JSON (either spelling of the protobuf type, as kube-apiserver takes).
pub fn v2_wants_protobuf(accept: &str) -> bool {
    for range in accept.split(',') {
        let essence = range.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case(V2_PROTOBUF)
            || essence.eq_ignore_ascii_case(V2_PROTOBUF_CONTENT_TYPE)
        {
            return true;
        }
        if essence.eq_ignore_ascii_case("application/json") {
            return false;
        }
    }
    false
}

/// `GET /openapi/v2` as client-go asks for it ([`V2_PROTOBUF`]): a gnostic
/// `openapi.v2.Document` with `swagger` and `info` and nothing else — no
/// paths, no definitions. Its schemas are in v3; this is what keeps the v2
/// readers of kubectl from failing:
/// - validating a `kind: List` (always the v2 path, see the module
///   comment): kubectl finds no schema for the items and leaves them to the
///   server, which it still sends `fieldValidation=Strict`;
/// - `apply` looking up the PATCH media types: none found, so it uses its
///   built-in strategic merge keys, as it does without any v2.
///
/// Without it both fail or fall back after a 404, and a List cannot be
/// created without `--validate=false`.
pub fn v2_protobuf() -> Vec<u8> {
    // Protocol buffers by hand, two fields deep: a length-delimited field
    // is (number << 3 | 2), the length as a varint, the bytes.
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes"); // Info.title
    field(&mut info, 2, b"unversioned"); // Info.version
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0"); // Document.swagger
    field(&mut doc, 2, &info); // Document.info
    doc
}

/// Rewrites `#/components/schemas/X` to `#/definitions/X` throughout.
fn v2_refs(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "$ref" {
                    if let Some(name) = child.as_str().and_then(|s| s.strip_prefix(SCHEMAS)) {
                        *child = format!("#/definitions/{name}").into();
                    }
                } else {
                    *child = v2_refs(std::mem::take(child));
                }
            }
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                *child = v2_refs(std::mem::take(child));
            }
        }
        _ => {}
    }
    v
}

/// A v3 path item as Swagger 2.0: parameters lose their `schema` wrapper,
/// request bodies become `in: body` parameters, content types become
/// `consumes`/`produces`.
fn v2_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(item) = item.as_object() else {
        return Value::Object(out);
    };
    for (key, value) in item {
        if key == "parameters" {
            out.insert(key.clone(), v2_parameters(value));
            continue;
        }
        let Some(op) = value.as_object() else {
            continue;
        };
        let mut o = Map::new();
        for (k, v) in op {
            match k.as_str() {
                "parameters" => {
                    o.insert(k.clone(), v2_parameters(v));
                }
                "requestBody" => {
                    let consumes: Vec<Value> = v
                        .get("content")
                        .and_then(Value::as_object)
                        .map(|c| c.keys().map(|k| Value::from(k.as_str())).collect())
                        .unwrap_or_default();
                    let schema = v
                        .get("content")
                        .and_then(Value::as_object)
                        .and_then(|c| c.values().next())
                        .and_then(|m| m.get("schema"))
                        .cloned()
                        .unwrap_or(json!({}));
                    o.insert("consumes".into(), Value::Array(consumes));
                    let body = json!({
                        "name": "body",
                        "in": "body",
                        "required": v.get("required").cloned().unwrap_or(Value::Bool(false)),
                        "schema": v2_refs(schema),
                    });
                    match o.get_mut("parameters").and_then(Value::as_array_mut) {
                        Some(list) => list.push(body),
                        None => {
                            o.insert("parameters".into(), json!([body]));
                        }
                    }
                }
                "responses" => {
                    let mut produces: Vec<Value> = Vec::new();
                    let mut responses = Map::new();
                    for (code, resp) in v.as_object().into_iter().flatten() {
                        let mut r = Map::new();
                        r.insert(
                            "description".into(),
                            resp.get("description").cloned().unwrap_or_default(),
                        );
                        if let Some(content) = resp.get("content").and_then(Value::as_object) {
                            for (media, m) in content {
                                if !produces.iter().any(|p| p == media.as_str()) {
                                    produces.push(media.as_str().into());
                                }
                                if let Some(schema) = m.get("schema") {
                                    r.insert("schema".into(), v2_refs(schema.clone()));
                                }
                            }
                        }
                        responses.insert(code.clone(), Value::Object(r));
                    }
                    o.insert("produces".into(), Value::Array(produces));
                    o.insert("responses".into(), Value::Object(responses));
                }
                _ => {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        // `parameters` may have been added by the body after the others.
        out.insert(key.clone(), Value::Object(o));
    }
    Value::Object(out)
}

fn v2_parameters(list: &Value) -> Value {
    let params: Vec<Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut p = p.as_object().cloned().unwrap_or_default();
            if let Some(Value::Object(schema)) = p.remove("schema") {
                for (k, v) in schema {
                    p.insert(k, v);
                }
            }
            Value::Object(p)
        })
        .collect();
    Value::Array(params)
}

// ---------------------------------------------------------------------------
// Names in Kubernetes' OpenAPI words.

/// `io.k8s.api.apps.v1`: the Go package a group's types live in, which
/// kube-apiserver's definition names are made of (the group's first label;
/// the core group is `core`).
fn package(group: &str, version: &str) -> String {
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{short}.{version}")
}

fn definition(r: &Resource) -> String {
    format!("{}.{}", package(r.group, r.version), r.kind)
}

fn list_definition(r: &Resource) -> String {
    format!("{}.{}List", package(r.group, r.version), r.kind)
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the group version in
/// operation IDs (`listCoreV1NamespacedPod`).
fn operation_group(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    let mut out = String::new();
    for word in group.trim_end_matches(".k8s.io").split('.') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    let mut chars = version.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    out
}

/// `core_v1`, `rbacAuthorization_v1`: the operations' tag.
fn tag(group: &str, version: &str) -> String {
    let camel = operation_group(group, "");
    let mut chars = camel.chars();
    let lower: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS}{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

// ---------------------------------------------------------------------------
// Parameters.

fn query(name: &str, description: &str, kind: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": kind, "uniqueItems": true },
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty() -> Value {
    query(
        "pretty",
        "If 'true', then the output is pretty printed.",
        "string",
    )
}

/// The parameters of every write (create, update, patch): `dryRun`,
/// `fieldManager` and `fieldValidation`, the last the one kubectl looks for.
fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. The only valid value is All: every stage of the request is processed, nothing is stored.",
            "string",
        ),
        query(
            "fieldManager",
            "A name for the actor making these changes, recorded in managedFields.",
            "string",
        ),
        query(
            "fieldValidation",
            "What to do with unknown or duplicate fields in the object: Ignore drops them, Warn drops them and answers a warning per field, Strict fails the request naming them.",
            "string",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "Ask for BOOKMARK events in a watch.",
            "boolean",
        ),
        query(
            "continue",
            "The continue token of the previous page of a list.",
            "string",
        ),
        query(
            "fieldSelector",
            "Only objects whose fields match, e.g. metadata.name=web or spec.nodeName=n1.",
            "string",
        ),
        query(
            "labelSelector",
            "Only objects whose labels match.",
            "string",
        ),
        query(
            "limit",
            "At most this many objects; the list's metadata.continue fetches the rest.",
            "integer",
        ),
        query("resourceVersion", "Where a list or watch starts.", "string"),
        query(
            "resourceVersionMatch",
            "How resourceVersion applies to a list: Exact or NotOlderThan.",
            "string",
        ),
        query(
            "sendInitialEvents",
            "With watch: begin with ADDED events for the current objects.",
            "boolean",
        ),
        query(
            "timeoutSeconds",
            "End a list or watch after this many seconds.",
            "integer",
        ),
        query("watch", "Watch for changes instead of listing.", "boolean"),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. The only valid value is All.",
            "string",
        ),
        query(
            "gracePeriodSeconds",
            "Seconds before the object is deleted; 0 deletes at once.",
            "integer",
        ),
        query(
            "propagationPolicy",
            "Whether and how dependents are deleted: Orphan, Background or Foreground.",
            "string",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Operations.

struct Op<'a> {
    id: String,
    tag: &'a str,
    action: &'static str,
    gvk: Value,
    params: Vec<Value>,
    /// Request body media types and schema.
    body: Option<(&'static [&'static str], String)>,
    /// Response codes, media types, schema (`None`: plain string).
    responses: Vec<(&'static str, &'static [&'static str], Option<String>)>,
}

const JSON: &[&str] = &["application/json"];
const LIST_MEDIA: &[&str] = &["application/json", "application/json;stream=watch"];
/// See the module comment: no strategic merge patch here, on purpose.
const PATCH_MEDIA: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
];

impl Op<'_> {
    fn into_value(self) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.tag]));
        op.insert("operationId".into(), self.id.into());
        if !self.params.is_empty() {
            op.insert("parameters".into(), Value::Array(self.params));
        }
        if let Some((media, schema)) = self.body {
            let content: Map<String, Value> = media
                .iter()
                .map(|m| ((*m).to_owned(), json!({ "schema": reference(&schema) })))
                .collect();
            op.insert(
                "requestBody".into(),
                json!({ "content": content, "required": true }),
            );
        }
        let mut responses = Map::new();
        for (code, media, schema) in self.responses {
            let schema = match schema {
                Some(name) => reference(&name),
                None => json!({ "type": "string" }),
            };
            let content: Map<String, Value> = media
                .iter()
                .map(|m| ((*m).to_owned(), json!({ "schema": schema.clone() })))
                .collect();
            let description = match code {
                "201" => "Created",
                "202" => "Accepted",
                _ => "OK",
            };
            responses.insert(
                code.into(),
                json!({ "description": description, "content": content }),
            );
        }
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), self.action.into());
        op.insert("x-kubernetes-group-version-kind".into(), self.gvk);
        Value::Object(op)
    }
}

fn path_item(params: Vec<Value>, ops: Vec<(&'static str, Op<'_>)>) -> Value {
    let mut item = Map::new();
    for (method, op) in ops {
        item.insert(method.into(), op.into_value());
    }
    item.insert("parameters".into(), Value::Array(params));
    Value::Object(item)
}

/// The paths of one resource: collection, item, subresources and (for a
/// namespaced resource) the list across namespaces.
fn resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let og = operation_group(r.group, r.version);
    let tag = tag(r.group, r.version);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let me = gvk(r.group, r.version, kind);
    let def = definition(r);
    let base = r.group_version_path();
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let namespace = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name = path_param("name", &format!("name of the {kind}"));
    let mut scope_params = Vec::new();
    if r.namespaced {
        scope_params.push(namespace.clone());
    }
    scope_params.push(pretty());
    let mut item_params = vec![name.clone()];
    if r.namespaced {
        item_params.push(namespace);
    }
    item_params.push(pretty());

    let mut patch_params = write_params();
    patch_params.push(query(
        "force",
        "Force an apply patch to take fields other managers own.",
        "boolean",
    ));

    paths.insert(
        collection,
        path_item(
            scope_params.clone(),
            vec![
                (
                    "get",
                    Op {
                        id: format!("list{og}{scope}{kind}"),
                        tag: &tag,
                        action: "list",
                        gvk: me.clone(),
                        params: list_params(),
                        body: None,
                        responses: vec![("200", LIST_MEDIA, Some(list_definition(r)))],
                    },
                ),
                (
                    "post",
                    Op {
                        id: format!("create{og}{scope}{kind}"),
                        tag: &tag,
                        action: "post",
                        gvk: me.clone(),
                        params: write_params(),
                        body: Some((JSON, def.clone())),
                        responses: vec![
                            ("200", JSON, Some(def.clone())),
                            ("201", JSON, Some(def.clone())),
                            ("202", JSON, Some(def.clone())),
                        ],
                    },
                ),
                (
                    "delete",
                    Op {
                        id: format!("deletecollection{og}{scope}{kind}"),
                        tag: &tag,
                        action: "deletecollection",
                        gvk: me.clone(),
                        params: [delete_params(), list_params()].concat(),
                        body: Some((JSON, DELETE_OPTIONS.into())),
                        responses: vec![("200", JSON, Some(STATUS.into()))],
                    },
                ),
            ],
        ),
    );
    paths.insert(
        item.clone(),
        path_item(
            item_params.clone(),
            vec![
                (
                    "get",
                    Op {
                        id: format!("read{og}{scope}{kind}"),
                        tag: &tag,
                        action: "get",
                        gvk: me.clone(),
                        params: Vec::new(),
                        body: None,
                        responses: vec![("200", JSON, Some(def.clone()))],
                    },
                ),
                (
                    "put",
                    Op {
                        id: format!("replace{og}{scope}{kind}"),
                        tag: &tag,
                        action: "put",
                        gvk: me.clone(),
                        params: write_params(),
                        body: Some((JSON, def.clone())),
                        responses: vec![
                            ("200", JSON, Some(def.clone())),
                            ("201", JSON, Some(def.clone())),
                        ],
                    },
                ),
                (
                    "patch",
                    Op {
                        id: format!("patch{og}{scope}{kind}"),
                        tag: &tag,
                        action: "patch",
                        gvk: me.clone(),
                        params: patch_params.clone(),
                        body: Some((PATCH_MEDIA, PATCH.into())),
                        responses: vec![
                            ("200", JSON, Some(def.clone())),
                            ("201", JSON, Some(def.clone())),
                        ],
                    },
                ),
                (
                    "delete",
                    Op {
                        id: format!("delete{og}{scope}{kind}"),
                        tag: &tag,
                        action: "delete",
                        gvk: me.clone(),
                        params: delete_params(),
                        body: Some((JSON, DELETE_OPTIONS.into())),
                        responses: vec![
                            ("200", JSON, Some(STATUS.into())),
                            ("202", JSON, Some(STATUS.into())),
                        ],
                    },
                ),
            ],
        ),
    );
    if r.namespaced {
        paths.insert(
            format!("{base}/{}", r.plural),
            path_item(
                vec![pretty()],
                vec![(
                    "get",
                    Op {
                        id: format!("list{og}{kind}ForAllNamespaces"),
                        tag: &tag,
                        action: "list",
                        gvk: me.clone(),
                        params: list_params(),
                        body: None,
                        responses: vec![("200", LIST_MEDIA, Some(list_definition(r)))],
                    },
                )],
            ),
        );
    }
    for sub in r.subresources {
        let suffix = match sub {
            Subresource::Status => "Status",
            Subresource::Scale => "Scale",
            Subresource::Log => "Log",
        };
        let url = format!("{item}/{}", sub.name());
        let (sub_gvk, sub_def) = match sub {
            Subresource::Scale => (gvk("autoscaling", "v1", "Scale"), SCALE.to_owned()),
            _ => (me.clone(), def.clone()),
        };
        let mut ops = vec![(
            "get",
            Op {
                id: format!("read{og}{scope}{kind}{suffix}"),
                tag: &tag,
                action: "get",
                gvk: sub_gvk.clone(),
                params: if *sub == Subresource::Log {
                    log_params()
                } else {
                    Vec::new()
                },
                body: None,
                responses: if *sub == Subresource::Log {
                    vec![("200", &["text/plain"], None)]
                } else {
                    vec![("200", JSON, Some(sub_def.clone()))]
                },
            },
        )];
        if *sub != Subresource::Log {
            ops.push((
                "put",
                Op {
                    id: format!("replace{og}{scope}{kind}{suffix}"),
                    tag: &tag,
                    action: "put",
                    gvk: sub_gvk.clone(),
                    params: write_params(),
                    body: Some((JSON, sub_def.clone())),
                    responses: vec![
                        ("200", JSON, Some(sub_def.clone())),
                        ("201", JSON, Some(sub_def.clone())),
                    ],
                },
            ));
            ops.push((
                "patch",
                Op {
                    id: format!("patch{og}{scope}{kind}{suffix}"),
                    tag: &tag,
                    action: "patch",
                    gvk: sub_gvk,
                    params: patch_params.clone(),
                    body: Some((PATCH_MEDIA, PATCH.into())),
                    responses: vec![
                        ("200", JSON, Some(sub_def.clone())),
                        ("201", JSON, Some(sub_def)),
                    ],
                },
            ));
        }
        paths.insert(url, path_item(item_params.clone(), ops));
    }
}

fn log_params() -> Vec<Value> {
    vec![
        query(
            "container",
            "The container whose log to return; may be omitted for a pod of one container.",
            "string",
        ),
        query("follow", "Stream the log as it is written.", "boolean"),
        query("limitBytes", "At most this many bytes.", "integer"),
        query(
            "previous",
            "The log of the container's previous run.",
            "boolean",
        ),
        query("sinceSeconds", "Only lines this recent.", "integer"),
        query("tailLines", "Only the last lines.", "integer"),
        query(
            "timestamps",
            "Prefix each line with its RFC3339 timestamp.",
            "boolean",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Schemas: compact, naming each kind's top-level fields.

/// The coarse type of a top-level field.
#[derive(Clone, Copy)]
enum Field {
    /// An object whose contents the server validates.
    Object,
    /// A list of objects.
    Objects,
    /// A map of strings (`data`, `labels`).
    Strings,
    /// A list of strings.
    StringList,
    String,
    Boolean,
    Integer,
    /// An RFC 3339 time.
    Time,
}

impl Field {
    fn schema(self) -> Value {
        match self {
            Field::Object => {
                json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
            }
            Field::Objects => json!({
                "type": "array",
                "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
            }),
            Field::Strings => {
                json!({ "type": "object", "additionalProperties": { "type": "string" } })
            }
            Field::StringList => json!({ "type": "array", "items": { "type": "string" } }),
            Field::String => json!({ "type": "string" }),
            Field::Boolean => json!({ "type": "boolean" }),
            Field::Integer => json!({ "type": "integer", "format": "int64" }),
            Field::Time => json!({ "type": "string", "format": "date-time" }),
        }
    }
}

const SPEC_STATUS: &[(&str, Field)] = &[("spec", Field::Object), ("status", Field::Object)];

/// A kind's top-level fields besides `apiVersion`, `kind` and `metadata`
/// (Kubernetes 1.34).
fn kind_fields(kind: &str) -> &'static [(&'static str, Field)] {
    match kind {
        "ConfigMap" => &[
            ("binaryData", Field::Strings),
            ("data", Field::Strings),
            ("immutable", Field::Boolean),
        ],
        "Endpoints" => &[("subsets", Field::Objects)],
        "Event" => &[
            ("action", Field::String),
            ("count", Field::Integer),
            ("eventTime", Field::Time),
            ("firstTimestamp", Field::Time),
            ("involvedObject", Field::Object),
            ("lastTimestamp", Field::Time),
            ("message", Field::String),
            ("reason", Field::String),
            ("related", Field::Object),
            ("reportingComponent", Field::String),
            ("reportingInstance", Field::String),
            ("series", Field::Object),
            ("source", Field::Object),
            ("type", Field::String),
        ],
        "Secret" => &[
            ("data", Field::Strings),
            ("immutable", Field::Boolean),
            ("stringData", Field::Strings),
            ("type", Field::String),
        ],
        "ServiceAccount" => &[
            ("automountServiceAccountToken", Field::Boolean),
            ("imagePullSecrets", Field::Objects),
            ("secrets", Field::Objects),
        ],
        "Lease" | "IngressClass" | "NetworkPolicy" => &[("spec", Field::Object)],
        "EndpointSlice" => &[
            ("addressType", Field::String),
            ("endpoints", Field::Objects),
            ("ports", Field::Objects),
        ],
        "ClusterRole" => &[
            ("aggregationRule", Field::Object),
            ("rules", Field::Objects),
        ],
        "Role" => &[("rules", Field::Objects)],
        "ClusterRoleBinding" | "RoleBinding" => {
            &[("roleRef", Field::Object), ("subjects", Field::Objects)]
        }
        _ => SPEC_STATUS,
    }
}

fn type_meta_properties() -> Map<String, Value> {
    let mut props = Map::new();
    props.insert(
        "apiVersion".into(),
        json!({ "type": "string", "description": "The versioned schema of this object: v1, apps/v1." }),
    );
    props.insert(
        "kind".into(),
        json!({ "type": "string", "description": "The REST resource this object represents, in CamelCase." }),
    );
    props
}

fn meta_property(name: &str) -> Value {
    json!({ "allOf": [reference(name)], "default": {} })
}

fn kind_schema(group: &str, version: &str, kind: &str, fields: &[(&str, Field)]) -> Value {
    let mut props = type_meta_properties();
    props.insert("metadata".into(), meta_property(OBJECT_META));
    for (name, field) in fields {
        props.insert((*name).into(), field.schema());
    }
    json!({
        "description": format!("{kind} ({}). Top-level fields only: the server validates the contents.", if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") }),
        "type": "object",
        "properties": props,
        "x-kubernetes-group-version-kind": [gvk(group, version, kind)],
    })
}

fn list_schema(r: &Resource) -> Value {
    let mut props = type_meta_properties();
    props.insert(
        "items".into(),
        json!({ "type": "array", "items": meta_property(&definition(r)) }),
    );
    props.insert("metadata".into(), meta_property(LIST_META));
    json!({
        "description": format!("A list of {}.", r.plural),
        "type": "object",
        "required": ["items"],
        "properties": props,
        "x-kubernetes-group-version-kind": [gvk(r.group, r.version, &format!("{}List", r.kind))],
    })
}

fn object(fields: &[(&str, Field)], description: &str) -> Value {
    let props: Map<String, Value> = fields
        .iter()
        .map(|(n, f)| ((*n).to_owned(), f.schema()))
        .collect();
    json!({ "description": description, "type": "object", "properties": props })
}

/// `metav1` types every document refers to.
fn meta_schemas(schemas: &mut Map<String, Value>) {
    schemas.insert(
        OBJECT_META.into(),
        object(
            &[
                ("annotations", Field::Strings),
                ("creationTimestamp", Field::Time),
                ("deletionGracePeriodSeconds", Field::Integer),
                ("deletionTimestamp", Field::Time),
                ("finalizers", Field::StringList),
                ("generateName", Field::String),
                ("generation", Field::Integer),
                ("labels", Field::Strings),
                ("managedFields", Field::Objects),
                ("name", Field::String),
                ("namespace", Field::String),
                ("ownerReferences", Field::Objects),
                ("resourceVersion", Field::String),
                ("selfLink", Field::String),
                ("uid", Field::String),
            ],
            "Metadata every persisted object has.",
        ),
    );
    schemas.insert(
        LIST_META.into(),
        object(
            &[
                ("continue", Field::String),
                ("remainingItemCount", Field::Integer),
                ("resourceVersion", Field::String),
                ("selfLink", Field::String),
            ],
            "Metadata of a list: its resourceVersion and continue token.",
        ),
    );
    let mut status = object(
        &[
            ("apiVersion", Field::String),
            ("code", Field::Integer),
            ("details", Field::Object),
            ("kind", Field::String),
            ("message", Field::String),
            ("reason", Field::String),
            ("status", Field::String),
        ],
        "The answer of a call that returns no object, and of every failure.",
    );
    if let Some(props) = status.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("metadata".into(), meta_property(LIST_META));
    }
    status["x-kubernetes-group-version-kind"] = json!([gvk("", "v1", "Status")]);
    schemas.insert(STATUS.into(), status);
    let mut delete = object(
        &[
            ("apiVersion", Field::String),
            ("dryRun", Field::StringList),
            ("gracePeriodSeconds", Field::Integer),
            ("kind", Field::String),
            ("orphanDependents", Field::Boolean),
            ("preconditions", Field::Object),
            ("propagationPolicy", Field::String),
        ],
        "Options of a delete.",
    );
    // kube-apiserver registers DeleteOptions in every group version.
    delete["x-kubernetes-group-version-kind"] = groups()
        .into_iter()
        .map(|(g, v)| gvk(g, v, "DeleteOptions"))
        .collect();
    schemas.insert(DELETE_OPTIONS.into(), delete);
    schemas.insert(
        PATCH.into(),
        json!({
            "description": "A patch body: a JSON patch, a merge patch or a strategic merge patch, as Content-Type says.",
            "type": "object",
        }),
    );
}

fn build_v3(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    meta_schemas(&mut schemas);
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resource_paths(r, &mut paths);
        schemas.insert(
            definition(r),
            kind_schema(r.group, r.version, r.kind, kind_fields(r.kind)),
        );
        schemas.insert(list_definition(r), list_schema(r));
        if r.has(Subresource::Scale) {
            let mut scale = kind_schema(
                "autoscaling",
                "v1",
                "Scale",
                &[("spec", Field::Object), ("status", Field::Object)],
            );
            scale["description"] =
                "Scale (autoscaling/v1): spec.replicas wanted, status.replicas and status.selector observed."
                    .into();
            schemas.insert(SCALE.into(), scale);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gvk_of(ext: &Value) -> (String, String, String) {
        let s = |k: &str| ext.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
        (s("group"), s("version"), s("kind"))
    }

    /// cli-runtime's supportsQueryParamV3, step for step: the first PATCH
    /// operation tagged with the GVK decides. Run over the paths in every
    /// order kubectl might meet them (Go maps iterate randomly): here,
    /// every rotation of the list.
    fn kubectl_sees_field_validation(doc: &Value, want: (&str, &str, &str)) -> Result<(), String> {
        let paths: Vec<(&String, &Value)> = doc["paths"].as_object().unwrap().iter().collect();
        for start in 0..paths.len() {
            let mut verdict = Err(format!("Path not found for GVK {want:?}"));
            for (_, item) in paths.iter().cycle().skip(start).take(paths.len()) {
                let Some(op) = item.get("patch") else {
                    continue;
                };
                let (g, v, k) = gvk_of(&op["x-kubernetes-group-version-kind"]);
                if (g.as_str(), v.as_str(), k.as_str()) != want {
                    continue;
                }
                let found = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
                verdict = if found {
                    Ok(())
                } else {
                    Err("paramUnsupported".into())
                };
                break;
            }
            verdict?;
        }
        Ok(())
    }

    fn every_ref(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    if k == "$ref" {
                        out.push(c.as_str().unwrap_or("").to_owned());
                    } else {
                        every_ref(c, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| every_ref(c, out)),
            _ => {}
        }
    }

    #[test]
    fn the_index_lists_every_group_version() {
        let index = v3_index();
        let paths = index["paths"].as_object().unwrap();
        assert_eq!(paths.len(), groups().len());
        for (group, version) in groups() {
            let key = gv_path(group, version);
            let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
            let (doc_path, hash) = url.split_once("?hash=").unwrap();
            assert_eq!(doc_path, format!("/openapi/v3/{key}"));
            assert_eq!(Some(hash), v3_hash(&key));
            assert_eq!(hash.len(), 32);
            let doc = v3_document(&key).unwrap();
            assert_eq!(content_hash(&serde_json::to_vec(&doc).unwrap()), hash);
            let bytes = v3_document_bytes(&key).unwrap();
            assert_eq!(serde_json::from_slice::<Value>(bytes).unwrap(), doc);
            // kubectl downloads one per group version it touches; keep
            // them small (kube-apiserver's apps/v1 is ~700 KB).
            assert!(bytes.len() < 200_000, "{key}: {} bytes", bytes.len());
            eprintln!("{key}: {} bytes", bytes.len());
        }
        assert!(v3_document("api/v2").is_none());
        assert!(v3_document("apis/apps").is_none());
        assert!(v3_document("../../etc/passwd").is_none());
        assert!(v3_hash("").is_none());
    }

    #[test]
    fn hashes_differ_between_documents_and_follow_content() {
        let hashes: std::collections::BTreeSet<_> = groups()
            .into_iter()
            .map(|(g, v)| v3_hash(&gv_path(g, v)).unwrap())
            .collect();
        assert_eq!(hashes.len(), groups().len());
        assert_ne!(content_hash(b"{}"), content_hash(b"{ }"));
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
    }

    #[test]
    fn kubectl_finds_field_validation_for_every_kind() {
        for r in RESOURCES {
            let doc = v3_document(&gv_path(r.group, r.version)).unwrap();
            kubectl_sees_field_validation(&doc, (r.group, r.version, r.kind))
                .unwrap_or_else(|e| panic!("{}: {e}", r.kind));
        }
        let apps = v3_document("apis/apps/v1").unwrap();
        assert!(kubectl_sees_field_validation(&apps, ("apps", "v1", "ReplicaSet")).is_err());
    }

    #[test]
    fn every_resource_has_its_operations() {
        for r in RESOURCES {
            let doc = v3_document(&gv_path(r.group, r.version)).unwrap();
            let base = r.group_version_path();
            let collection = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{base}/{}", r.plural)
            };
            let item = format!("{collection}/{{name}}");
            let expect = [
                (&collection, "get", "list"),
                (&collection, "post", "post"),
                (&collection, "delete", "deletecollection"),
                (&item, "get", "get"),
                (&item, "put", "put"),
                (&item, "patch", "patch"),
                (&item, "delete", "delete"),
            ];
            for (path, method, action) in expect {
                let op = &doc["paths"][path.as_str()][method];
                assert_eq!(op["x-kubernetes-action"], action, "{method} {path}");
                assert_eq!(
                    gvk_of(&op["x-kubernetes-group-version-kind"]),
                    (r.group.to_owned(), r.version.to_owned(), r.kind.to_owned())
                );
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                if matches!(method, "post" | "put" | "patch") {
                    for p in ["dryRun", "fieldManager", "fieldValidation"] {
                        assert!(names.contains(&p), "{method} {path} lacks {p}");
                    }
                }
            }
            let scope_list = format!("{base}/{}", r.plural);
            assert_eq!(
                doc["paths"][scope_list.as_str()]["get"]["x-kubernetes-action"],
                "list"
            );
            for sub in r.subresources {
                let url = format!("{item}/{}", sub.name());
                let p = &doc["paths"][url.as_str()];
                assert_eq!(p["get"]["x-kubernetes-action"], "get", "{url}");
                assert_eq!(p["patch"].is_null(), *sub == Subresource::Log, "{url}");
            }
        }
        let scale = &v3_document("apis/apps/v1").unwrap()["paths"]
            ["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
        assert_eq!(
            gvk_of(&scale["x-kubernetes-group-version-kind"]),
            ("autoscaling".into(), "v1".into(), "Scale".into())
        );
    }

    #[test]
    fn kind_schemas_carry_their_gvk_and_refs_resolve() {
        for (group, version) in groups() {
            let doc = v3_document(&gv_path(group, version)).unwrap();
            assert_eq!(doc["openapi"], "3.0.0");
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for r in RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
            {
                for (def, kind) in [
                    (definition(r), r.kind.to_owned()),
                    (list_definition(r), format!("{}List", r.kind)),
                ] {
                    let gvks = schemas[&def]["x-kubernetes-group-version-kind"]
                        .as_array()
                        .unwrap();
                    assert!(gvks
                        .iter()
                        .any(|g| gvk_of(g)
                            == (r.group.to_owned(), r.version.to_owned(), kind.clone())));
                }
                // kubectl explain shows these fields.
                let props = schemas[&definition(r)]["properties"].as_object().unwrap();
                for field in ["apiVersion", "kind", "metadata"] {
                    assert!(props.contains_key(field));
                }
            }
            let mut refs = Vec::new();
            every_ref(&doc, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let name = r.strip_prefix(SCHEMAS).unwrap();
                assert!(
                    schemas.contains_key(name),
                    "{r} unresolved in {group}/{version}"
                );
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        for (group, version) in groups() {
            let doc = v3_document(&gv_path(group, version)).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for item in doc["paths"].as_object().unwrap().values() {
                for (method, op) in item.as_object().unwrap() {
                    if method == "parameters" {
                        continue;
                    }
                    let id = op["operationId"].as_str().unwrap().to_owned();
                    assert!(seen.insert(id.clone()), "{id} twice");
                }
            }
        }
        assert_eq!(
            operation_group("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(operation_group("", "v1"), "CoreV1");
        assert_eq!(tag("networking.k8s.io", "v1"), "networking_v1");
        assert_eq!(
            package("coordination.k8s.io", "v1"),
            "io.k8s.api.coordination.v1"
        );
    }

    /// kubectl's gvkSupportsPatchOpenAPIV3: with no strategic merge patch in
    /// the PATCH body, kubectl's apply uses its built-in merge keys rather
    /// than these compact schemas, which have none.
    #[test]
    fn apply_does_not_compute_patches_from_compact_schemas() {
        for (group, version) in groups() {
            let doc = v3_document(&gv_path(group, version)).unwrap();
            for item in doc["paths"].as_object().unwrap().values() {
                if let Some(op) = item.get("patch") {
                    let content = op["requestBody"]["content"].as_object().unwrap();
                    assert!(!content.contains_key("application/strategic-merge-patch+json"));
                    assert!(content.contains_key("application/merge-patch+json"));
                }
            }
        }
    }

    #[test]
    fn v2_protobuf_is_a_gnostic_document_with_swagger_and_info() {
        let doc = v2_protobuf();
        // Document{swagger: "2.0" (1), info (2): Info{title (1), version (2)}}
        let mut want = vec![0x0a, 3];
        want.extend_from_slice(b"2.0");
        want.extend_from_slice(&[0x12, 25, 0x0a, 10]);
        want.extend_from_slice(b"Kubernetes");
        want.extend_from_slice(&[0x12, 11]);
        want.extend_from_slice(b"unversioned");
        assert_eq!(doc, want);
        assert!(v2_wants_protobuf(V2_PROTOBUF));
        assert!(v2_wants_protobuf(
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf, application/json"
        ));
        assert!(!v2_wants_protobuf(
            "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(!v2_wants_protobuf("application/json"));
        assert!(!v2_wants_protobuf(""));
    }

    #[test]
    fn v2_is_swagger_with_resolvable_definitions() {
        let doc = v2();
        assert_eq!(doc["swagger"], "2.0");
        let defs = doc["definitions"].as_object().unwrap();
        let mut refs = Vec::new();
        every_ref(&doc, &mut refs);
        for r in &refs {
            let name = r
                .strip_prefix("#/definitions/")
                .unwrap_or_else(|| panic!("{r}"));
            assert!(defs.contains_key(name), "{r}");
        }
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        let params = patch["parameters"].as_array().unwrap();
        assert!(params
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["type"] == "string"));
        assert!(params.iter().any(|p| p["in"] == "body"));
        assert!(patch["consumes"]
            .as_array()
            .unwrap()
            .contains(&json!("application/merge-patch+json")));
        for r in RESOURCES {
            assert!(defs.contains_key(&definition(r)));
        }
    }
}
