//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes' strategic merge patch with the directives kubectl sends
//! (`$patch`, `$retainKeys`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`),
//! using the merge keys of the built-in types.
//!
//! kube-apiserver is the yardstick (`k8s.io/apiserver/pkg/endpoints/handlers/patch.go`
//! and `k8s.io/apimachinery/pkg/util/strategicpatch`):
//! - a body that is not JSON, or not the shape its type needs, is 400;
//! - a JSON patch operation that cannot be applied (a failed `test`, a path
//!   that names nothing) is 422 `Invalid`, as kube answers it through
//!   `NewGenericServerResponse(422, …)`; more than 10000 operations is 413;
//! - a body over 3 MiB (kube-apiserver's `MaxRequestBodyBytes`) is 413;
//! - server-side apply (`application/apply-patch+yaml`) is not served: 415.
//!
//! Where kube-apiserver's answer to hostile or broken input is a 500 (its
//! strategic merge code returns plain Go errors for e.g. an unknown `$patch`
//! value or a list element without its merge key), this module answers 400
//! naming the field, since the fault is the request's.
//!
//! Objects are kept as JSON here, not decoded into Go structs as kube does;
//! what kube's decoding would throw away (directive keys left in values the
//! patch adds) is removed explicitly, so the stored object never carries a
//! `$patch` or `$setElementOrder/…` key.
//!
//! Where this differs from kube-apiserver, on purpose:
//! - malformed strategic merge patches are 400 where kube answers 500;
//! - a value the patch adds (a new container, a new map) has its directives
//!   applied to nothing and its nulls dropped; kube copies it verbatim and
//!   leaves the rest to Go decoding;
//! - `$deleteFromPrimitiveList/<f>` when the object has no `<f>` deletes
//!   nothing (kube stores the deletion list as the new list);
//! - an emptied map stays as `{}` (kube's Go types omit it when encoding);
//! - a 422 for a JSON patch carries the cause after kube's generic sentence;
//! - no patched object may nest deeper than [`MAX_DEPTH`], and a JSON
//!   patch's depth checks visit at most `MAX_JSON_PATCH_VISITS` values (422).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::{ApiError, Cause};
use crate::resources::{Resource, RESOURCES};

/// The `Content-Type` of a PATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply; not served: 415)
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// kube-apiserver's default `MaxRequestBodyBytes` (3 MiB).
pub const MAX_PATCH_BYTES: usize = 3 * 1024 * 1024;

/// kube-apiserver's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// kube-apiserver's default `JSONPatchMaxCopyBytes`: what all `copy`
/// operations of one JSON patch may add together (3 MiB), so that a small
/// patch cannot double a document ten thousand times.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// The deepest nesting of objects and arrays a patched object may have:
/// what `serde_json` reads back (its recursion limit is 128), so a stored
/// object can always be read again, and every recursion here stays shallow.
pub const MAX_DEPTH: usize = 127;

/// `original` with `patch` applied. Errors are kube-apiserver's: a body that
/// is not a patch is 400, a JSON patch `test` that fails is 422, …
///
/// `resource` is the resource the request addressed; the strategic merge
/// keys are those of the object's own `kind` (a `Scale` patched through
/// `deployments/scale` has none). The result keeps `original`'s `apiVersion`
/// and `kind`: a patch that removes them gets them back, one that changes
/// them is 422 `Invalid`.
pub fn patch(
    resource: &Resource,
    ty: PatchType,
    original: &Value,
    patch: &[u8],
) -> Result<Value, ApiError> {
    if ty == PatchType::Apply {
        return Err(apply_not_served());
    }
    if patch.len() > MAX_PATCH_BYTES {
        return Err(ApiError::request_entity_too_large(format!(
            "Request entity too large: limit is {MAX_PATCH_BYTES}"
        )));
    }
    let body: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let kind = original
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(resource.kind);
    let patched = match ty {
        PatchType::Json => json_patch(original.clone(), body)?,
        PatchType::Merge => {
            let Value::Object(body) = body else {
                return Err(ApiError::bad_request("Invalid JSON Patch"));
            };
            merge_patch(original.clone(), Value::Object(body))
        }
        PatchType::StrategicMerge => {
            let Value::Object(body) = body else {
                return Err(ApiError::bad_request(
                    "error decoding patch: a strategic merge patch must be a JSON object",
                ));
            };
            if has_strategies(kind) {
                let Value::Object(original_map) = original.clone() else {
                    return Err(ApiError::internal("the stored object is not a JSON object"));
                };
                let merged = merge_map(original_map, body, &At::root(kind))
                    .map_err(Fault::into_api_error)?;
                Value::Object(merged)
            } else {
                // A kind without a Go struct to read strategies from:
                // merge patch semantics (as for custom resources).
                merge_patch(original.clone(), Value::Object(body))
            }
        }
        PatchType::Apply => return Err(apply_not_served()),
    };
    finish(resource, original, patched)
}

/// Server-side apply needs managed fields and field ownership, which this
/// server does not keep: 415, as kube-apiserver answers a patch type it
/// does not serve. kubectl's client-side `apply` sends strategic merge
/// patches and is unaffected.
fn apply_not_served() -> ApiError {
    ApiError::unsupported_media_type(
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, \
         application/strategic-merge-patch+json (server-side apply is not served)",
    )
}

/// Whether `kind` is one whose strategic merge keys this module knows: the
/// kinds of the resource table, and `Scale` (autoscaling/v1, no merge keys).
fn has_strategies(kind: &str) -> bool {
    kind == "Scale" || RESOURCES.iter().any(|r| r.kind == kind)
}

/// The checks every patched object passes: still an object, same
/// `apiVersion`/`kind`, not nested beyond what can be read back.
fn finish(resource: &Resource, original: &Value, patched: Value) -> Result<Value, ApiError> {
    let name = original
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Value::Object(mut object) = patched else {
        return Err(invalid(
            resource,
            &name,
            "",
            "Invalid value: the patched object is not a JSON object".to_owned(),
        ));
    };
    let resource_api_version = resource.api_version();
    for (field, fallback) in [
        ("apiVersion", resource_api_version.as_str()),
        ("kind", resource.kind),
    ] {
        let before = original
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or(fallback);
        match object.get(field) {
            // kube decodes the patched object into its Go type, which
            // knows its own apiVersion and kind: removing them is harmless.
            None | Some(Value::Null) => {
                object.insert(field.to_owned(), Value::String(before.to_owned()));
            }
            Some(Value::String(after)) if after == before => {}
            Some(after) => {
                return Err(invalid(
                    resource,
                    &name,
                    field,
                    format!(
                        "Invalid value: {}: a patch cannot change the {field} of a {} (was {before:?})",
                        short(after),
                        resource.kind
                    ),
                ));
            }
        }
    }
    let object = Value::Object(object);
    if depth(&object) > MAX_DEPTH {
        return Err(invalid(
            resource,
            &name,
            "",
            format!("Invalid value: the patched object nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(object)
}

fn invalid(resource: &Resource, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        resource,
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

/// A value for an error message: JSON, cut short so a hostile body is not
/// echoed back whole.
fn short(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 64 {
        let mut cut = 64;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// How deeply objects and arrays nest in `value` (a scalar is 0), counted
/// without recursion so that no input can exhaust the stack.
fn depth(value: &Value) -> usize {
    depth_counting(value, &mut 0)
}

/// [`depth`], adding the number of values visited to `visited`.
fn depth_counting(value: &Value, visited: &mut usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        *visited += 1;
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// Roughly how many bytes `value` takes as JSON, counted without recursion
/// and stopping once `cap` is passed.
fn json_size(value: &Value, cap: usize) -> usize {
    let mut size = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        size += match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(m) => {
                stack.extend(m.values());
                2 + m.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
        if size > cap {
            break;
        }
    }
    size
}

// ---------------------------------------------------------------------------
// JSON merge patch (RFC 7386)

/// `target` with the merge patch `patch` applied: objects merge key by key,
/// `null` deletes, everything else (arrays too) replaces. Recursion follows
/// the patch, whose depth serde_json bounded when reading it.
fn merge_patch(target: Value, patch: Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch;
    };
    let mut target = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            let old = target.remove(&key).unwrap_or(Value::Null);
            target.insert(key, merge_patch(old, value));
        }
    }
    Value::Object(target)
}

// ---------------------------------------------------------------------------
// JSON patch (RFC 6902)

/// kube-apiserver's answer to a JSON patch that cannot be applied: 422
/// `Invalid`, its generic message, then what went wrong.
fn unprocessable(message: impl std::fmt::Display) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "the server rejected our request due to an error in our request: {message}"
        ),
        details: None,
    }
}

/// One operation, read from the body.
enum Operation {
    Add(Vec<String>, Value),
    Remove(Vec<String>),
    Replace(Vec<String>, Value),
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test(Vec<String>, Value),
}

fn json_patch(mut doc: Value, body: Value) -> Result<Value, ApiError> {
    let Value::Array(ops) = body else {
        return Err(ApiError::bad_request(
            "error decoding patch: a JSON patch must be a JSON array of operations",
        ));
    };
    if let Some(i) = ops.iter().position(|op| !op.is_object()) {
        return Err(ApiError::bad_request(format!(
            "error decoding patch: operation {i} is not a JSON object"
        )));
    }
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::request_entity_too_large(format!(
            "Request entity too large: The allowed maximum operations in a JSON patch is \
             {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut spent = Spent::default();
    for (i, op) in ops.into_iter().enumerate() {
        let op = read_operation(op).map_err(|e| unprocessable(format!("operation {i}: {e}")))?;
        apply_operation(&mut doc, op, &mut spent)
            .map_err(|e| unprocessable(format!("operation {i}: {e}")))?;
    }
    Ok(doc)
}

fn read_operation(op: Value) -> Result<Operation, String> {
    let Value::Object(mut op) = op else {
        return Err("not a JSON object".into());
    };
    let name = match op.get("op") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err("missing \"op\"".into()),
    };
    let pointer = |field: &str| -> Result<Vec<String>, String> {
        match op.get(field) {
            Some(Value::String(s)) => parse_pointer(s).map_err(|e| format!("{field} {s:?}: {e}")),
            _ => Err(format!("{name} operation is missing {field:?}")),
        }
    };
    let path = pointer("path")?;
    let from = if name == "move" || name == "copy" {
        pointer("from")?
    } else {
        Vec::new()
    };
    let mut value = || {
        op.remove("value")
            .ok_or_else(|| format!("{name} operation is missing \"value\""))
    };
    Ok(match name.as_str() {
        "add" => Operation::Add(path, value()?),
        "remove" => Operation::Remove(path),
        "replace" => Operation::Replace(path, value()?),
        "move" => Operation::Move { from, path },
        "copy" => Operation::Copy { from, path },
        "test" => Operation::Test(path, value()?),
        other => return Err(format!("unexpected kind of operation {other:?}")),
    })
}

/// The reference tokens of a JSON pointer (RFC 6901), unescaped.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer starts with \"/\"".into());
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err("\"~\" must be followed by 0 or 1".to_string()),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn show_pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The element an array index token names in an array of `len` elements,
/// read as kube's JSON patch library (evanphx/json-patch v4) reads it: a
/// Go integer (`01` and `+1` accepted), negative counting from the end.
/// When `inserting`, one past the end is allowed too (so `-1` appends).
fn array_position(token: &str, len: usize, inserting: bool) -> Option<usize> {
    let index: i64 = token.parse().ok()?;
    let size = i64::try_from(len).ok()? + i64::from(inserting);
    let index = if index < 0 { index + size } else { index };
    if !(0..size).contains(&index) {
        return None;
    }
    usize::try_from(index).ok()
}

/// The value `tokens` names, if any (iterative).
fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => a.get(array_position(t, a.len(), false)?),
        _ => None,
    })
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => {
            let i = array_position(t, a.len(), false)?;
            a.get_mut(i)
        }
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing = || format!("the parent of {} does not exist", show_pointer(path));
    match resolve_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let index = if last == "-" {
                a.len()
            } else {
                array_position(last, a.len(), true)
                    .ok_or_else(|| format!("index out of range at {}", show_pointer(path)))?
            };
            a.insert(index, value);
            Ok(())
        }
        _ => Err(format!(
            "cannot add to {}: its parent is not an object or array",
            show_pointer(path)
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let missing = || format!("the path {} does not exist", show_pointer(path));
    let Some((last, parent)) = path.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match resolve_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let index = array_position(last, a.len(), false).ok_or_else(missing)?;
            Ok(a.remove(index))
        }
        _ => Err(missing()),
    }
}

/// How many values the depth checks of one JSON patch may visit: more than
/// twice the values a 3 MiB body can hold, little enough that ten thousand
/// `move`s of a large subtree cannot keep a core busy.
const MAX_JSON_PATCH_VISITS: usize = 4 * 1024 * 1024;

/// What one JSON patch has cost so far.
#[derive(Default)]
struct Spent {
    copied: usize,
    visited: usize,
}

/// Whether `value` placed at `path` keeps the document within
/// [`MAX_DEPTH`]: pointers are not bounded by the JSON reader's recursion
/// limit, so without this a patch could build an object too deep to drop.
fn fits(path: &[String], value: &Value, spent: &mut Spent) -> Result<(), String> {
    if path.len() + depth_counting(value, &mut spent.visited) > MAX_DEPTH {
        return Err(format!(
            "the value at {} would nest deeper than {MAX_DEPTH} levels",
            show_pointer(path)
        ));
    }
    if spent.visited > MAX_JSON_PATCH_VISITS {
        return Err(format!(
            "the patch moves more than {MAX_JSON_PATCH_VISITS} values around; split it"
        ));
    }
    Ok(())
}

fn apply_operation(doc: &mut Value, op: Operation, spent: &mut Spent) -> Result<(), String> {
    match op {
        Operation::Add(path, value) => {
            fits(&path, &value, spent)?;
            add(doc, &path, value)
        }
        Operation::Remove(path) => remove(doc, &path).map(drop),
        Operation::Replace(path, value) => {
            fits(&path, &value, spent)?;
            let target = resolve_mut(doc, &path)
                .ok_or_else(|| format!("the path {} does not exist", show_pointer(&path)))?;
            *target = value;
            Ok(())
        }
        Operation::Move { from, path } => {
            if from == path {
                return resolve(doc, &from)
                    .map(drop)
                    .ok_or_else(|| format!("the path {} does not exist", show_pointer(&from)));
            }
            if path.starts_with(&from) {
                return Err(format!(
                    "cannot move {} into its own child {}",
                    show_pointer(&from),
                    show_pointer(&path)
                ));
            }
            if path.len() > from.len() {
                let value = resolve(doc, &from)
                    .ok_or_else(|| format!("the path {} does not exist", show_pointer(&from)))?;
                fits(&path, value, spent)?;
            }
            let value = remove(doc, &from)?;
            add(doc, &path, value)
        }
        Operation::Copy { from, path } => {
            let value = resolve(doc, &from)
                .ok_or_else(|| format!("the path {} does not exist", show_pointer(&from)))?
                .clone();
            fits(&path, &value, spent)?;
            spent.copied += json_size(&value, MAX_JSON_PATCH_COPY_BYTES);
            if spent.copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(format!(
                    "unable to copy {}: the copies of this patch would exceed {MAX_JSON_PATCH_COPY_BYTES} bytes",
                    show_pointer(&from)
                ));
            }
            add(doc, &path, value)
        }
        Operation::Test(path, expected) => {
            // evanphx/json-patch v4: testing an absent member of an object
            // against null succeeds.
            let absent_member = || {
                path.split_last()
                    .is_some_and(|(_, parent)| resolve(doc, parent).is_some_and(Value::is_object))
            };
            let actual = match resolve(doc, &path) {
                Some(actual) => actual,
                None if expected.is_null() && absent_member() => return Ok(()),
                None => return Err(format!("the path {} does not exist", show_pointer(&path))),
            };
            if json_equal(actual, &expected) {
                Ok(())
            } else {
                Err(format!(
                    "testing value {} failed: it is {}, not {}",
                    show_pointer(&path),
                    short(actual),
                    short(&expected)
                ))
            }
        }
    }
}

/// Equality as Go's decoded JSON sees it: numbers compare by value (`1`
/// equals `1.0`), everything else structurally.
fn json_equal(a: &Value, b: &Value) -> bool {
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let same = match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                    (Some(x), Some(y), _, _) => x == y,
                    (_, _, Some(x), Some(y)) => x == y,
                    _ => x.as_f64() == y.as_f64(),
                };
                if !same {
                    return false;
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                stack.extend(x.iter().zip(y.iter()));
            }
            (Value::Object(x), Value::Object(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                for (k, xv) in x {
                    match y.get(k) {
                        Some(yv) => stack.push((xv, yv)),
                        None => return false,
                    }
                }
            }
            (x, y) => {
                if x != y {
                    return false;
                }
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------
// Strategic merge patch: the strategies of the built-in types

/// How a field is patched, as the `patchStrategy` / `patchMergeKey` struct
/// tags of kube's Go types say (`x-kubernetes-patch-strategy` /
/// `x-kubernetes-patch-merge-key` in its OpenAPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// No tag: maps merge key by key, lists are replaced whole.
    Default,
    /// `patchStrategy:"merge"` with `patchMergeKey`: a list of objects
    /// merged element by element, matched on the merge key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars: a set-like union;
    /// removal by `$deleteFromPrimitiveList/<field>`.
    MergePrimitives,
    /// `patchStrategy:"replace"` on a map: replaced whole.
    Replace,
    /// `patchStrategy:"retainKeys"` on a map: merged; kubectl sends
    /// `$retainKeys` with it so the members it no longer sets are cleared
    /// (a `$retainKeys` directive is honoured wherever it appears).
    RetainKeys,
}

use Strategy::{MergeByKey, MergePrimitives, Replace, RetainKeys};

/// Every tagged field of the served kinds (k8s.io/api at v1.34, and
/// apimachinery's `ObjectMeta`). The first column is the Go type the field
/// belongs to (`ObjectMeta`, `PodSpec`, `Container`, `ContainerStatus` — the
/// types several kinds share) or the kind; the second the field's JSON path
/// inside it (list elements add no segment). Fields not listed have no tag:
/// in particular `NodeSpec.taints`, `PodSpec.tolerations`,
/// `Endpoints.subsets`, `EndpointSlice.endpoints`/`ports`, RBAC `rules` and
/// `subjects`, and `NetworkPolicy` rules are replaced whole, as in kube.
/// Alpha fields newer than v1.34 (`PodSpec.evictionResponders`, …) are not
/// listed: the served types do not have them.
pub const STRATEGIES: &[(&str, &str, Strategy)] = &[
    // k8s.io/apimachinery pkg/apis/meta/v1 ObjectMeta
    ("ObjectMeta", "finalizers", MergePrimitives),
    ("ObjectMeta", "ownerReferences", MergeByKey("uid")),
    // core/v1 PodSpec (Pod spec, and the pod templates of Deployment and DaemonSet)
    ("PodSpec", "volumes", MergeByKey("name")), // merge,retainKeys
    ("PodSpec", "initContainers", MergeByKey("name")),
    ("PodSpec", "containers", MergeByKey("name")),
    ("PodSpec", "ephemeralContainers", MergeByKey("name")),
    ("PodSpec", "imagePullSecrets", MergeByKey("name")),
    ("PodSpec", "hostAliases", MergeByKey("ip")),
    (
        "PodSpec",
        "topologySpreadConstraints",
        MergeByKey("topologyKey"),
    ),
    ("PodSpec", "schedulingGates", MergeByKey("name")),
    ("PodSpec", "resourceClaims", MergeByKey("name")), // merge,retainKeys
    // core/v1 Container and EphemeralContainer (containers, initContainers, ephemeralContainers)
    ("Container", "ports", MergeByKey("containerPort")),
    ("Container", "env", MergeByKey("name")),
    ("Container", "volumeMounts", MergeByKey("mountPath")),
    ("Container", "volumeDevices", MergeByKey("devicePath")),
    // core/v1 ContainerStatus (Pod status.containerStatuses, …)
    ("ContainerStatus", "volumeMounts", MergeByKey("mountPath")),
    (
        "ContainerStatus",
        "allocatedResourcesStatus",
        MergeByKey("name"),
    ),
    // core/v1 PodStatus
    ("Pod", "status.conditions", MergeByKey("type")),
    ("Pod", "status.hostIPs", MergeByKey("ip")),
    ("Pod", "status.podIPs", MergeByKey("ip")),
    ("Pod", "status.resourceClaimStatuses", MergeByKey("name")), // merge,retainKeys
    // core/v1 Service
    ("Service", "spec.ports", MergeByKey("port")),
    ("Service", "status.conditions", MergeByKey("type")),
    // core/v1 ServiceAccount
    ("ServiceAccount", "secrets", MergeByKey("name")),
    // core/v1 Node
    ("Node", "spec.podCIDRs", MergePrimitives),
    ("Node", "status.conditions", MergeByKey("type")),
    ("Node", "status.addresses", MergeByKey("type")),
    // core/v1 Namespace
    ("Namespace", "status.conditions", MergeByKey("type")),
    // apps/v1 Deployment
    ("Deployment", "spec.strategy", RetainKeys),
    ("Deployment", "status.conditions", MergeByKey("type")),
    // apps/v1 DaemonSet
    ("DaemonSet", "status.conditions", MergeByKey("type")),
    // policy/v1 PodDisruptionBudget
    ("PodDisruptionBudget", "spec.selector", Replace),
    (
        "PodDisruptionBudget",
        "status.conditions",
        MergeByKey("type"),
    ),
];

/// The strategy of the field at `path` (dotted JSON field names from the
/// object's root, list elements adding no segment) of an object of `kind`.
pub fn strategy(kind: &str, path: &str) -> Strategy {
    let (owner, field) = owner_of(kind, path);
    STRATEGIES
        .iter()
        .find(|(o, p, _)| *o == owner && *p == field)
        .map_or(Strategy::Default, |(_, _, s)| *s)
}

/// Which Go type of [`STRATEGIES`] the field at `path` belongs to, and its
/// path inside that type.
fn owner_of<'p>(kind: &'p str, path: &'p str) -> (&'p str, &'p str) {
    if let Some(rest) = path.strip_prefix("metadata.") {
        return ("ObjectMeta", rest);
    }
    let pod_spec = match kind {
        "Pod" => path.strip_prefix("spec."),
        "Deployment" | "DaemonSet" => {
            if let Some(rest) = path.strip_prefix("spec.template.metadata.") {
                return ("ObjectMeta", rest);
            }
            path.strip_prefix("spec.template.spec.")
        }
        _ => None,
    };
    if let Some(rest) = pod_spec {
        for list in ["containers.", "initContainers.", "ephemeralContainers."] {
            if let Some(field) = rest.strip_prefix(list) {
                return ("Container", field);
            }
        }
        return ("PodSpec", rest);
    }
    if kind == "Pod" {
        for list in [
            "status.containerStatuses.",
            "status.initContainerStatuses.",
            "status.ephemeralContainerStatuses.",
        ] {
            if let Some(field) = path.strip_prefix(list) {
                return ("ContainerStatus", field);
            }
        }
    }
    (kind, path)
}

// ---------------------------------------------------------------------------
// Strategic merge patch: applying it (the server side of
// k8s.io/apimachinery/pkg/util/strategicpatch: parallel lists merged, nulls
// that match nothing ignored)

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// A strategic merge patch that cannot be applied: 400 for a malformed
/// directive or list, 422 where kube answers `Invalid` (lists of lists).
#[derive(Debug)]
enum Fault {
    Bad(String),
    Unprocessable(String),
}

impl Fault {
    fn into_api_error(self) -> ApiError {
        match self {
            Fault::Bad(m) => ApiError::bad_request(m),
            Fault::Unprocessable(m) => unprocessable(m),
        }
    }
}

/// Where in the object the merge is: the kind and the dotted field path.
struct At<'k> {
    kind: &'k str,
    path: String,
    /// The path grew past [`MAX_PATH`] and stopped growing: no field of the
    /// strategy table lies that deep, and a body's long keys must not be
    /// copied into a path at every level of nesting.
    cut: bool,
}

/// Longer than any path of [`STRATEGIES`].
const MAX_PATH: usize = 256;

impl<'k> At<'k> {
    fn root(kind: &'k str) -> Self {
        At {
            kind,
            path: String::new(),
            cut: false,
        }
    }

    fn child(&self, field: &str) -> At<'k> {
        if self.cut || self.path.len() + field.len() + 1 > MAX_PATH {
            return At {
                kind: self.kind,
                path: self.path.clone(),
                cut: true,
            };
        }
        let path = if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        };
        At {
            kind: self.kind,
            path,
            cut: false,
        }
    }

    fn strategy(&self) -> Strategy {
        if self.cut {
            return Strategy::Default;
        }
        strategy(self.kind, &self.path)
    }

    fn bad(&self, what: impl std::fmt::Display) -> Fault {
        Fault::Bad(format!("{}: {what}", self.shown()))
    }

    /// The path for a message, cut short: its names come from the body.
    fn shown(&self) -> String {
        if self.path.is_empty() {
            return "the patch".into();
        }
        let shown = short(&Value::String(self.path.clone()))
            .trim_matches('"')
            .to_owned();
        if self.cut {
            format!("{shown}…")
        } else {
            shown
        }
    }
}

/// The JSON type of a value, as Go's `reflect.TypeOf` tells decoded JSON
/// apart (a type change in a patch replaces the value).
fn json_type(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// `patch` merged into the map `original` at `at`.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    at: &At,
) -> Result<Map<String, Value>, Fault> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            // The patch is the new map (its own directives applied to nothing).
            Some("replace") => merge_map(Map::new(), patch, at),
            Some("delete") => Ok(Map::new()),
            _ => Err(at.bad(format!(
                "unknown patch type: {} in a map (use replace or delete)",
                short(&directive)
            ))),
        };
    }

    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        let Value::Array(retain) = retain else {
            return Err(at.bad("invalid patch format of retainKeys"));
        };
        let keeps = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
        for (k, v) in &patch {
            if v.is_null()
                || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                || k.starts_with(SET_ELEMENT_ORDER)
            {
                continue;
            }
            if !keeps(k) {
                return Err(at.bad(format!(
                    "invalid patch format of retainKeys: {k:?} is patched but not retained"
                )));
            }
        }
        original.retain(|k, _| keeps(k));
    }

    // `$setElementOrder/<field>` with its list, before anything else (as kube).
    let orders: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in orders {
        let order = patch.remove(&key).unwrap_or(Value::Null);
        let field = directive_field(&key, SET_ELEMENT_ORDER)
            .ok_or_else(|| at.bad("invalid patch format of setElementOrder list"))?;
        let Value::Array(order) = order else {
            return Err(at.bad(format!("{}: must be a list", short(&Value::String(key)))));
        };
        let child = at.child(field);
        let original_list = match original.remove(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(child.bad("$setElementOrder names a field that is not a list")),
        };
        let patch_list = match patch.remove(field) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(Value::Null) => {
                // Deleting the list and ordering it: the deletion wins.
                continue;
            }
            Some(_) => {
                return Err(child.bad("$setElementOrder given for a value that is not a list"))
            }
        };
        let strategy = child.strategy();
        let merge_key = match strategy {
            MergeByKey(key) => Some(key),
            _ => None,
        };
        if let Some(list) = &patch_list {
            check_order(list, &order, merge_key, &child)?;
        }
        let server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list) {
            (None, None) => continue,
            (Some(list), None) => list,
            (original_list, Some(list)) => {
                merge_list(original_list.unwrap_or_default(), list, &child)?
            }
        };
        let ordered = order_by(merged, &order, &server_order, merge_key, &child)?;
        original.insert(field.to_owned(), Value::Array(ordered));
    }

    for (key, value) in patch {
        let (field, delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or_else(|| at.bad("invalid patch format of primitive list"))?;
            (field.to_owned(), true)
        } else if key.starts_with('$') {
            // Not a directive kube knows, and no field of a built-in type
            // starts with "$": kube's decoding drops it, so does this.
            continue;
        } else {
            (key, false)
        };
        let child = at.child(&field);
        if delete_list {
            let Value::Array(remove) = value else {
                return Err(child.bad("invalid patch format of primitive list"));
            };
            // kube sets an absent list to the deletion list itself; a
            // deletion from nothing leaves nothing here.
            let remove: HashSet<String> = remove.iter().map(identity).collect();
            if let Some(Value::Array(list)) = original.get_mut(&field) {
                list.retain(|v| !remove.contains(&identity(v)));
            }
            continue;
        }
        if value.is_null() {
            original.remove(&field);
            continue;
        }
        let merged = match original.remove(&field) {
            Some(old) if json_type(&old) == json_type(&value) => merge_value(old, value, &child)?,
            _ => fresh(value, &child)?,
        };
        original.insert(field, merged);
    }
    Ok(original)
}

/// The field a `$setElementOrder/<field>` or `$deleteFromPrimitiveList/<field>` key names.
fn directive_field<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    let (head, field) = key.split_once('/')?;
    (head == prefix && !field.is_empty()).then_some(field)
}

/// Two values of the same JSON type merged at `at`.
fn merge_value(original: Value, patch: Value, at: &At) -> Result<Value, Fault> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => {
            if at.strategy() == Replace {
                fresh(Value::Object(p), at)
            } else {
                merge_map(o, p, at).map(Value::Object)
            }
        }
        (Value::Array(o), Value::Array(p)) => merge_list(o, p, at).map(Value::Array),
        (_, patch) => Ok(patch),
    }
}

/// A value the patch adds where the original has none: the patch applied to
/// nothing, so its directives and nulls do not end up in the object.
fn fresh(value: Value, at: &At) -> Result<Value, Fault> {
    match value {
        Value::Object(p) => merge_map(Map::new(), p, at).map(Value::Object),
        Value::Array(p) => merge_list(Vec::new(), p, at).map(Value::Array),
        scalar => Ok(scalar),
    }
}

/// What kind of elements a list has: kube allows one JSON type per list,
/// and no lists of lists.
fn element_type(lists: [&[Value]; 2], at: &At) -> Result<Option<u8>, Fault> {
    let mut seen = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        let t = json_type(v);
        if t == 4 {
            return Err(Fault::Unprocessable(format!(
                "{}: lists of lists are not supported",
                at.shown()
            )));
        }
        match seen {
            None => seen = Some(t),
            Some(s) if s != t => {
                return Err(at.bad("list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(seen)
}

/// `patch` merged into the list `original` at `at` by the field's strategy.
fn merge_list(original: Vec<Value>, patch: Vec<Value>, at: &At) -> Result<Vec<Value>, Fault> {
    let merge_key = match at.strategy() {
        MergeByKey(key) => Some(key),
        MergePrimitives => None,
        // No merge strategy: the patch's list replaces the original's.
        _ => return replace_list(patch, at),
    };
    let Some(ty) = element_type([&original, &patch], at)? else {
        return Ok(original);
    };
    if ty != 5 {
        // Scalars: a set-like union (duplicates dropped), patch items
        // ordered as in the patch.
        let mut seen = HashSet::new();
        let merged: Vec<Value> = original
            .iter()
            .chain(patch.iter())
            .filter(|v| seen.insert(identity(v)))
            .cloned()
            .collect();
        return order_by(merged, &patch, &original, None, at);
    }
    let Some(key) = merge_key else {
        return Err(at.bad("cannot merge lists of objects without a merge key"));
    };

    // First the elements with `$patch`: delete by key, or replace the whole
    // list; then the others merge into the element with their key.
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut deleted = HashSet::new();
    let mut replace = false;
    for item in patch {
        let Value::Object(mut item) = item else {
            return Err(at.bad("list element is not an object"));
        };
        match item.remove(DIRECTIVE) {
            None => plain.push(item),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let value = item.get(key).ok_or_else(|| {
                        at.bad(format!(
                            "an element with $patch: delete lacks the merge key {key:?}"
                        ))
                    })?;
                    deleted.insert(identity(value));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(at.bad("merging lists cannot yet be specified in the patch"))
                }
                _ => {
                    return Err(at.bad(format!("unknown patch type: {} in a list", short(&d))));
                }
            },
        }
    }
    if replace {
        return plain
            .into_iter()
            .map(|item| merge_map(Map::new(), item, at).map(Value::Object))
            .collect();
    }
    let mut index = HashMap::new();
    let mut server_order = Vec::with_capacity(original.len());
    let mut kept = Vec::with_capacity(original.len());
    for o in original.drain(..) {
        let id = identity(o.get(key).ok_or_else(|| {
            at.bad(format!(
                "an element of the object lacks the merge key {key:?}"
            ))
        })?);
        if deleted.contains(&id) {
            continue;
        }
        index.entry(id.clone()).or_insert(kept.len());
        server_order.push(id);
        kept.push(o);
    }
    let mut original = kept;

    let mut patch_order = Vec::with_capacity(plain.len());
    for item in plain {
        let id = identity(item.get(key).ok_or_else(|| {
            at.bad(format!(
                "an element of the patch lacks the merge key {key:?}"
            ))
        })?);
        patch_order.push(id.clone());
        match index.get(&id) {
            Some(&i) => {
                let Value::Object(old) = std::mem::take(&mut original[i]) else {
                    return Err(at.bad("list element is not an object"));
                };
                original[i] = Value::Object(merge_map(old, item, at)?);
            }
            None => {
                index.insert(id, original.len());
                original.push(Value::Object(merge_map(Map::new(), item, at)?));
            }
        }
    }
    order_ids(original, &patch_order, &server_order, Some(key), at)
}

/// A value as a hashable identity: its JSON text (merge keys and list
/// scalars are strings and numbers, whose text is canonical).
fn identity(v: &Value) -> String {
    v.to_string()
}

/// A list without a merge strategy, replaced by the patch's: its elements
/// lose directives and nulls as any new value does.
fn replace_list(patch: Vec<Value>, at: &At) -> Result<Vec<Value>, Fault> {
    let mut out = Vec::with_capacity(patch.len());
    for item in patch {
        match item {
            Value::Object(m) if m.contains_key(DIRECTIVE) => {
                // A `$patch` element in a list that is replaced anyway.
            }
            Value::Array(_) => {
                return Err(Fault::Unprocessable(format!(
                    "{}: lists of lists are not supported",
                    at.shown()
                )))
            }
            other => out.push(fresh(other, at)?),
        }
    }
    Ok(out)
}

/// kube's check that a patch list follows its `$setElementOrder` list: the
/// patch's (non-deleting) items must appear in the order list, in order.
fn check_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    at: &At,
) -> Result<(), Fault> {
    let id = |v: &Value| -> Option<Value> {
        match merge_key {
            Some(k) => v.get(k).cloned(),
            None => Some(v.clone()),
        }
    };
    let mut o = 0;
    for item in patch {
        if item.get(DIRECTIVE).is_some() {
            continue;
        }
        let Some(item_id) = id(item) else {
            return Err(at.bad("an element of the patch lacks its merge key"));
        };
        loop {
            let Some(next) = order.get(o) else {
                return Err(
                    at.bad("the order in the patch list does not match its $setElementOrder list")
                );
            };
            o += 1;
            if id(next).as_ref() == Some(&item_id) {
                break;
            }
        }
    }
    Ok(())
}

/// kube's element order for a merged list: the items named in `patch_order`
/// in that order, the others (server-only) in their `server_order`, the two
/// interleaved so that each keeps its relative order and a server-only item
/// goes before a patch item only when the original list had it before.
fn order_by(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
    at: &At,
) -> Result<Vec<Value>, Fault> {
    let id = |v: &Value| -> Result<String, Fault> {
        match merge_key {
            Some(k) => v
                .get(k)
                .map(identity)
                .ok_or_else(|| at.bad(format!("an element lacks the merge key {k:?}"))),
            None => Ok(identity(v)),
        }
    };
    let patch_ids = patch_order.iter().map(id).collect::<Result<Vec<_>, _>>()?;
    let server_ids = server_order.iter().map(id).collect::<Result<Vec<_>, _>>()?;
    order_ids(merged, &patch_ids, &server_ids, merge_key, at)
}

/// [`order_by`] with the identities of the order lists already taken.
fn order_ids(
    merged: Vec<Value>,
    patch_order: &[String],
    server_order: &[String],
    merge_key: Option<&str>,
    at: &At,
) -> Result<Vec<Value>, Fault> {
    let first_positions = |ids: &[String]| {
        let mut positions = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            positions.entry(id.clone()).or_insert(i);
        }
        positions
    };
    let in_patch = first_positions(patch_order);
    let in_server = first_positions(server_order);
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let item_id = match merge_key {
            Some(k) => item
                .get(k)
                .map(identity)
                .ok_or_else(|| at.bad(format!("an element lacks the merge key {k:?}")))?,
            None => identity(&item),
        };
        let server_position = in_server.get(&item_id).copied();
        match in_patch.get(&item_id) {
            Some(&p) => from_patch.push((p, server_position, item)),
            None => server_only.push((server_position.unwrap_or(usize::MAX), item)),
        }
    }
    from_patch.sort_by_key(|(p, _, _)| *p);
    server_only.sort_by_key(|(s, _)| *s);

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut patch_items = from_patch.into_iter().peekable();
    let mut server_items = server_only.into_iter().peekable();
    loop {
        let take_server = match (server_items.peek(), patch_items.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((s, _)), Some((_, p, _))) => matches!(p, Some(p) if s < p),
        };
        if take_server {
            if let Some((_, item)) = server_items.next() {
                out.push(item);
            }
        } else if let Some((_, _, item)) = patch_items.next() {
            out.push(item);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(plural: &str) -> &'static Resource {
        RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .expect("served resource")
    }

    fn apply(
        plural: &str,
        ty: PatchType,
        original: &Value,
        body: &Value,
    ) -> Result<Value, ApiError> {
        patch(resource(plural), ty, original, body.to_string().as_bytes())
    }

    fn smp(plural: &str, original: &Value, body: Value) -> Value {
        apply(plural, PatchType::StrategicMerge, original, &body).expect("patch applies")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "finalizers": ["example.com/a", "example.com/b"],
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1.25",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            },
                            {"name": "sidecar", "image": "busybox:1.36"},
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "tolerations": [{"key": "a", "operator": "Exists"}],
                    },
                },
            },
            "status": {"conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"},
            ]},
        })
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|c| c["name"].as_str().expect("a name"))
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

    // --- what kubectl apply sends (client-side apply, three-way SMP) ---

    #[test]
    fn kubectl_apply_changes_an_image() {
        let body = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}\n"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.27", "name": "web"}],
            }}},
        });
        let out = smp("deployments", &deployment(), body);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["web", "sidecar"]);
        assert_eq!(containers[0]["image"], "nginx:1.27");
        // Everything else of the container is kept.
        assert_eq!(containers[0]["env"][1]["name"], "B");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"kind\":\"Deployment\"}\n"
        );
        assert!(no_directives(&out));
    }

    #[test]
    fn kubectl_apply_adds_and_removes_an_env_var() {
        let add = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}, {"name": "B"}],
                "env": [{"name": "C", "value": "3"}],
                "name": "web",
            }],
        }}}});
        let out = smp("deployments", &deployment(), add);
        let env = &out["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(names(env), ["A", "C", "B"]);
        assert_eq!(env[1]["value"], "3");

        let remove = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "C"}, {"name": "B"}],
                "env": [{"$patch": "delete", "name": "A"}],
                "name": "web",
            }],
        }}}});
        let out = smp("deployments", &out, remove);
        let env = &out["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(names(env), ["C", "B"]);
        assert!(no_directives(&out));
    }

    #[test]
    fn kubectl_apply_removes_a_container() {
        let body = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}],
        }}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"]),
            ["web"]
        );
    }

    #[test]
    fn kubectl_apply_reorders_containers() {
        let body = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
        }}}});
        let out = smp("deployments", &deployment(), body);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["sidecar", "web"]);
        // Reordering changes nothing inside the elements.
        assert_eq!(
            containers[1],
            deployment()["spec"]["template"]["spec"]["containers"][0]
        );
    }

    #[test]
    fn a_new_list_element_goes_first_without_an_order_and_where_the_order_says_with_one() {
        // kube's mergeSortedSlice puts patch items that the original lacks
        // before the server-only items.
        let body = json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "x"}]}}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"]),
            ["log", "web", "sidecar"]
        );
        let body = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "log"}],
            "containers": [{"name": "log", "image": "x"}],
        }}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"]),
            ["web", "sidecar", "log"]
        );
    }

    #[test]
    fn retain_keys_switches_a_volume_source() {
        let body = json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "data"}],
        }}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cfg"}}])
        );
    }

    #[test]
    fn retain_keys_switches_a_deployment_strategy() {
        let body = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            strategy("Deployment", "spec.strategy"),
            Strategy::RetainKeys
        );
    }

    #[test]
    fn retain_keys_that_omit_a_patched_key_are_a_bad_request() {
        let body =
            json!({"spec": {"strategy": {"$retainKeys": ["rollingUpdate"], "type": "Recreate"}}});
        let err = apply(
            "deployments",
            PatchType::StrategicMerge,
            &deployment(),
            &body,
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("spec.strategy"), "{}", err.message);
        let body = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
        let err = apply(
            "deployments",
            PatchType::StrategicMerge,
            &deployment(),
            &body,
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let body = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "web",
            "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
        }]}}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
        );
        assert_eq!(
            strategy("Pod", "spec.initContainers.ports"),
            Strategy::MergeByKey("containerPort")
        );
        assert_eq!(
            strategy("DaemonSet", "spec.template.spec.containers.volumeMounts"),
            Strategy::MergeByKey("mountPath")
        );
    }

    #[test]
    fn tolerations_have_no_merge_key_and_are_replaced() {
        let body = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
    }

    fn service() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443, "targetPort": 8443}],
            },
        })
    }

    #[test]
    fn service_ports_are_added_and_removed_by_port() {
        let add = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}, {"port": 53}],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}],
        }});
        let out = smp("services", &service(), add);
        let ports: Vec<_> = out["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].clone())
            .collect();
        assert_eq!(ports, [json!(80), json!(443), json!(53)]);

        let remove = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 53}],
            "ports": [{"$patch": "delete", "port": 443}],
        }});
        let out = smp("services", &out, remove);
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            ])
        );
        // Changing one port's target leaves the other alone.
        let out = smp(
            "services",
            &service(),
            json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}),
        );
        assert_eq!(out["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(out["spec"]["ports"][1]["targetPort"], 9443);
    }

    #[test]
    fn labels_and_annotations_are_added_and_removed() {
        // kubectl label web tier=front app- ; kubectl annotate web note=x
        let body = json!({"metadata": {"labels": {"tier": "front", "app": null}, "annotations": {"note": "x"}}});
        for ty in [PatchType::StrategicMerge, PatchType::Merge] {
            let out = apply("deployments", ty, &deployment(), &body).unwrap();
            assert_eq!(out["metadata"]["labels"], json!({"tier": "front"}));
            assert_eq!(out["metadata"]["annotations"]["note"], "x");
            assert!(out["metadata"]["annotations"]
                .get("kubectl.kubernetes.io/last-applied-configuration")
                .is_some());
        }
        // A null for a label that is not there removes nothing (an empty
        // map is left, as RFC 7386 leaves it; kube's Go types omit it).
        let out = smp(
            "services",
            &service(),
            json!({"metadata": {"labels": {"gone": null}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({}));
        assert_eq!(out["spec"], service()["spec"]);
    }

    #[test]
    fn replicas_are_patched_by_every_patch_type() {
        let bodies = [
            (PatchType::StrategicMerge, json!({"spec": {"replicas": 3}})),
            (PatchType::Merge, json!({"spec": {"replicas": 3}})),
            (
                PatchType::Json,
                json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
            ),
        ];
        for (ty, body) in bodies {
            let out = apply("deployments", ty, &deployment(), &body).unwrap();
            assert_eq!(out["spec"]["replicas"], 3, "{ty:?}");
            let mut expected = deployment();
            expected["spec"]["replicas"] = json!(3);
            assert_eq!(out, expected, "{ty:?}");
        }
    }

    #[test]
    fn finalizers_are_a_set_like_list() {
        // kubectl apply removing a finalizer.
        let body = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["example.com/a"],
            "$setElementOrder/finalizers": ["example.com/b"],
        }});
        let out = smp("deployments", &deployment(), body);
        assert_eq!(out["metadata"]["finalizers"], json!(["example.com/b"]));
        // Adding merges (no duplicates), the patch's items in its order.
        let out = smp(
            "deployments",
            &deployment(),
            json!({"metadata": {"finalizers": ["example.com/c", "example.com/a"]}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["example.com/c", "example.com/a", "example.com/b"])
        );
        // The other ways controllers drop finalizers.
        let out = apply(
            "deployments",
            PatchType::Merge,
            &deployment(),
            &json!({"metadata": {"finalizers": null}}),
        )
        .unwrap();
        assert!(out["metadata"].get("finalizers").is_none());
        let out = apply(
            "deployments",
            PatchType::Json,
            &deployment(),
            &json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/a"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["example.com/b"]));
        // Deleting from a list the object does not have leaves it absent.
        let out = smp(
            "services",
            &service(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert!(out["metadata"].get("finalizers").is_none());
    }

    fn node() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.1.0.1"}, {"type": "Hostname", "address": "n1"}]},
        })
    }

    #[test]
    fn node_taints_are_replaced_and_pod_cidrs_merged() {
        // NodeSpec.Taints carries no patchStrategy in k8s.io/api: replaced whole.
        let out = smp(
            "nodes",
            &node(),
            json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}),
        );
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(strategy("Node", "spec.taints"), Strategy::Default);
        let out = smp(
            "nodes",
            &node(),
            json!({"spec": {"podCIDRs": ["fd00::/64"]}}),
        );
        assert_eq!(out["spec"]["podCIDRs"], json!(["fd00::/64", "10.0.0.0/24"]));
        let out = smp(
            "nodes",
            &node(),
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.1.0.2"}]}}),
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.1.0.2"}, {"type": "Hostname", "address": "n1"}])
        );
    }

    #[test]
    fn owner_references_and_conditions_merge_by_key() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "ownerReferences": [{"uid": "1", "name": "rs", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}], "podIPs": [{"ip": "10.0.0.5"}]},
        });
        pod = smp(
            "pods",
            &pod,
            json!({
                "metadata": {"ownerReferences": [{"uid": "2", "name": "other"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]},
            }),
        );
        assert_eq!(
            pod["metadata"]["ownerReferences"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            pod["status"]["conditions"][0],
            json!({"type": "Ready", "status": "True"})
        );
        assert_eq!(pod["status"]["conditions"][1]["type"], "PodScheduled");
        assert_eq!(pod["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
        let dep = smp(
            "deployments",
            &deployment(),
            json!({"status": {"conditions": [{"type": "Progressing", "status": "False"}]}}),
        );
        assert_eq!(
            dep["status"]["conditions"][1],
            json!({"type": "Progressing", "status": "False"})
        );
        assert_eq!(dep["status"]["conditions"][0]["type"], "Available");
    }

    #[test]
    fn a_replace_strategy_map_is_replaced_whole() {
        let pdb = json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 1},
        });
        let out = smp(
            "poddisruptionbudgets",
            &pdb,
            json!({"spec": {"selector": {"matchLabels": {"tier": "x"}}}}),
        );
        assert_eq!(
            out["spec"]["selector"],
            json!({"matchLabels": {"tier": "x"}})
        );
        // Elsewhere the same shape merges.
        let out = smp(
            "deployments",
            &deployment(),
            json!({"spec": {"selector": {"matchLabels": {"tier": "x"}}}}),
        );
        assert_eq!(
            out["spec"]["selector"]["matchLabels"],
            json!({"app": "web", "tier": "x"})
        );
    }

    #[test]
    fn patch_directives_in_maps_and_lists() {
        let out = smp(
            "deployments",
            &deployment(),
            json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(
            "deployments",
            &deployment(),
            json!({"spec": {"strategy": {"$patch": "delete"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({}));
        let out = smp(
            "deployments",
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}],
            }}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        for bad in [
            json!({"spec": {"strategy": {"$patch": "merge"}}}),
            json!({"spec": {"strategy": {"$patch": "explode"}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge", "name": "web"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": ["web"]}}}}),
            json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [{"name": "sidecar", "image": "y"}],
            }}}}),
        ] {
            let err = apply(
                "deployments",
                PatchType::StrategicMerge,
                &deployment(),
                &bad,
            )
            .unwrap_err();
            assert_eq!(err.code, 400, "{bad}: {err}");
        }
        let err = apply(
            "deployments",
            PatchType::StrategicMerge,
            &deployment(),
            &json!({"metadata": {"finalizers": [["a"]]}}),
        )
        .unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
    }

    #[test]
    fn values_the_patch_adds_carry_no_directives_or_nulls() {
        let body = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "new",
            "image": "x",
            "$setElementOrder/env": [{"name": "A"}],
            "env": [{"name": "A", "value": "1"}, {"name": "Z", "$patch": "delete"}],
            "resources": {"limits": {"cpu": "1", "memory": null}},
        }]}}}});
        let out = smp("deployments", &deployment(), body);
        let new = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            new,
            &json!({"name": "new", "image": "x", "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "1"}}})
        );
        assert!(no_directives(&out));
    }

    // --- JSON patch ---

    #[test]
    fn json_patch_operations() {
        let body = json!([
            {"op": "add", "path": "/metadata/labels/a~1b", "value": "slash"},
            {"op": "add", "path": "/metadata/labels/t~0", "value": "tilde"},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
            {"op": "move", "from": "/metadata/labels/copy", "path": "/metadata/labels/moved"},
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "last", "image": "z"}},
            {"op": "add", "path": "/spec/template/spec/containers/0", "value": {"name": "first", "image": "z"}},
            // evanphx/json-patch's integers: negative from the end, leading zeros read.
            {"op": "add", "path": "/spec/template/spec/containers/-1", "value": {"name": "end", "image": "z"}},
            {"op": "test", "path": "/spec/template/spec/containers/-1/name", "value": "end"},
            {"op": "remove", "path": "/spec/template/spec/containers/-1"},
            {"op": "test", "path": "/spec/template/spec/containers/01/name", "value": "web"},
            {"op": "remove", "path": "/spec/template/spec/tolerations"},
            {"op": "test", "path": "/spec/template/spec/tolerations", "value": null},
            {"op": "test", "path": "/spec/replicas", "value": 1.0},
        ]);
        let out = apply("deployments", PatchType::Json, &deployment(), &body).unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "a/b": "slash", "t~": "tilde", "moved": "web"})
        );
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"]),
            ["first", "web", "sidecar", "last"]
        );
        assert!(out["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn json_patch_that_cannot_apply_is_invalid_and_malformed_is_bad() {
        let d = deployment();
        for body in [
            json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
            json!([{"op": "test", "path": "/spec/replicas", "value": null}]),
            json!([{"op": "test", "path": "/spec/nothing/deeper", "value": null}]),
            json!([{"op": "remove", "path": "/spec/nothing"}]),
            json!([{"op": "replace", "path": "/spec/nothing", "value": 1}]),
            json!([{"op": "add", "path": "/spec/no/parent", "value": 1}]),
            json!([{"op": "add", "path": "/spec/template/spec/containers/9", "value": {}}]),
            json!([{"op": "remove", "path": "/spec/template/spec/containers/-3"}]),
            json!([{"op": "remove", "path": "/spec/template/spec/containers/x"}]),
            json!([{"op": "move", "from": "/spec", "path": "/spec/inside"}]),
            json!([{"op": "copy", "from": "/nope", "path": "/x"}]),
            json!([{"op": "frobnicate", "path": "/spec"}]),
            json!([{"op": "add", "path": "spec"}]),
            json!([{"op": "add", "path": "/spec/x"}]),
            json!([{"path": "/spec"}]),
            json!([{"op": "remove", "path": ""}]),
        ] {
            let err = apply("deployments", PatchType::Json, &d, &body).unwrap_err();
            assert_eq!((err.code, err.reason), (422, "Invalid"), "{body}: {err}");
        }
        for body in [json!({"op": "add"}), json!("x"), json!([1])] {
            let err = apply("deployments", PatchType::Json, &d, &body).unwrap_err();
            assert_eq!(err.code, 400, "{body}: {err}");
        }
        // Nothing half-applied leaks: the failed patch's earlier operations
        // are gone with it (the original is never touched).
        let body = json!([{"op": "add", "path": "/metadata/labels/x", "value": "1"}, {"op": "test", "path": "/spec/replicas", "value": 5}]);
        assert!(apply("deployments", PatchType::Json, &d, &body).is_err());
        assert_eq!(d, deployment());
    }

    #[test]
    fn json_patch_limits() {
        let d = deployment();
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/kind", "value": "Deployment"}))
            .collect();
        let err = apply("deployments", PatchType::Json, &d, &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code, 413);
        // Doubling the object with copies stops at kube's copy limit.
        let mut ops = vec![
            json!({"op": "add", "path": "/metadata/annotations/big", "value": "x".repeat(4096)}),
        ];
        for _ in 0..40 {
            ops.push(
                json!({"op": "copy", "from": "/metadata", "path": "/metadata/annotations/more"}),
            );
        }
        let err = apply("deployments", PatchType::Json, &d, &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code, 422, "{err}");
        assert!(err.message.contains("exceed"), "{}", err.message);
        // Pointers are not bounded by the JSON reader: a patch that builds an
        // object deeper than can be read back is refused.
        let mut ops = vec![json!({"op": "add", "path": "/spec/a", "value": {}})];
        let mut path = "/spec/a".to_owned();
        for _ in 0..MAX_DEPTH {
            ops.push(json!({"op": "add", "path": format!("{path}/a"), "value": {}}));
            path.push_str("/a");
        }
        let err = apply("deployments", PatchType::Json, &d, &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code, 422, "{err}");
        assert!(err.message.contains("deeper"), "{}", err.message);
    }

    #[test]
    fn json_patch_moves_of_big_subtrees_are_bounded() {
        // A 20000-element list moved one level deeper and back, again and
        // again: each deeper move walks it to check its depth.
        let mut d = deployment();
        d["spec"]["big"] = Value::Array(vec![json!(0); 20_000]);
        d["spec"]["box"] = json!({});
        let mut ops = Vec::new();
        for _ in 0..2_000 {
            ops.push(json!({"op": "move", "from": "/spec/big", "path": "/spec/box/big"}));
            ops.push(json!({"op": "move", "from": "/spec/box/big", "path": "/spec/big"}));
        }
        let start = std::time::Instant::now();
        let Err(err) = apply("deployments", PatchType::Json, &d, &Value::Array(ops)) else {
            panic!("the patch is refused");
        };
        assert_eq!(err.code, 422);
        assert!(err.message.contains("split it"), "{}", err.message);
        println!("refused after {:?}", start.elapsed());
        // A few such moves are fine.
        let ops = json!([
            {"op": "move", "from": "/spec/big", "path": "/spec/box/big"},
            {"op": "move", "from": "/spec/box/big", "path": "/spec/big"},
        ]);
        assert_eq!(
            apply("deployments", PatchType::Json, &d, &ops).ok(),
            Some(d)
        );
    }

    // --- limits shared by all patch types ---

    #[test]
    fn kind_and_api_version_cannot_change() {
        let d = deployment();
        for (ty, body) in [
            (PatchType::StrategicMerge, json!({"kind": "Pod"})),
            (PatchType::Merge, json!({"apiVersion": "apps/v1beta1"})),
            (
                PatchType::Json,
                json!([{"op": "replace", "path": "/kind", "value": "DaemonSet"}]),
            ),
            (PatchType::Merge, json!({"kind": 7})),
        ] {
            let err = apply("deployments", ty, &d, &body).unwrap_err();
            assert_eq!((err.code, err.reason), (422, "Invalid"), "{body}");
            let field = &err.details.as_ref().unwrap().causes[0].field;
            assert!(field == "kind" || field == "apiVersion", "{field}");
            assert!(
                err.message.starts_with("Deployment \"web\" is invalid"),
                "{}",
                err.message
            );
        }
        // Removing them is harmless: the object keeps its own.
        let out = apply(
            "deployments",
            PatchType::Merge,
            &d,
            &json!({"kind": null, "apiVersion": null}),
        )
        .unwrap();
        assert_eq!(out, d);
        let out = apply(
            "deployments",
            PatchType::Json,
            &d,
            &json!([{"op": "remove", "path": "/kind"}]),
        )
        .unwrap();
        assert_eq!(out, d);
    }

    #[test]
    fn oversized_deep_and_unserved_bodies() {
        let d = deployment();
        let r = resource("deployments");
        let big = format!(
            "{{\"metadata\":{{\"annotations\":{{\"a\":\"{}\"}}}}}}",
            "x".repeat(MAX_PATCH_BYTES)
        );
        let err = patch(r, PatchType::Merge, &d, big.as_bytes()).unwrap_err();
        assert_eq!(err.code, 413);
        let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        for ty in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            let err = patch(r, ty, &d, deep.as_bytes()).unwrap_err();
            assert_eq!(err.code, 400, "{ty:?}");
            let err = patch(r, ty, &d, b"{not json").unwrap_err();
            assert_eq!(err.code, 400, "{ty:?}");
        }
        for ty in [PatchType::Merge, PatchType::StrategicMerge] {
            let err = patch(r, ty, &d, b"[1,2]").unwrap_err();
            assert_eq!(err.code, 400, "{ty:?}");
        }
        let err = patch(r, PatchType::Apply, &d, b"apiVersion: apps/v1").unwrap_err();
        assert_eq!((err.code, err.reason), (415, "UnsupportedMediaType"));
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }

    #[test]
    fn long_keys_do_not_grow_the_path_at_every_level() {
        let key = "k".repeat(20_000);
        let mut body = json!({"x": {"$patch": "explode"}});
        for _ in 0..100 {
            body = json!({ key.clone(): body });
        }
        let Err(err) = apply(
            "deployments",
            PatchType::StrategicMerge,
            &deployment(),
            &json!({"spec": body}),
        ) else {
            panic!("an unknown $patch is refused");
        };
        assert_eq!(err.code, 400);
        assert!(err.message.len() < 300, "{}", short(&json!(err.message)));
        let mut at = At::root("Deployment").child("spec");
        for _ in 0..100 {
            at = at.child(&key);
        }
        assert!(at.cut && at.path.len() <= MAX_PATH);
        assert_eq!(at.strategy(), Strategy::Default);
        // Deep but short paths still find their strategy.
        let at = At::root("Deployment")
            .child("spec")
            .child("template")
            .child("spec")
            .child("containers");
        assert_eq!(at.strategy(), Strategy::MergeByKey("name"));
        assert!(!at.cut);
    }

    #[test]
    fn a_patch_as_deep_as_the_reader_allows_is_applied() {
        // 120 levels of maps: read by serde_json, merged without trouble.
        let mut body = json!("leaf");
        for _ in 0..120 {
            body = json!({"n": body});
        }
        let body = json!({"spec": {"deep": body}});
        for ty in [PatchType::Merge, PatchType::StrategicMerge] {
            let out = apply("deployments", ty, &deployment(), &body).unwrap();
            assert_eq!(depth(&out), 122);
        }
    }

    #[test]
    fn scale_objects_are_patched_as_scale() {
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let out = smp("deployments", &scale, json!({"spec": {"replicas": 4}}));
        assert_eq!(out["spec"]["replicas"], 4);
        assert_eq!(out["kind"], "Scale");
    }

    #[test]
    fn every_table_row_names_a_served_kind_or_shared_type() {
        let shared = ["ObjectMeta", "PodSpec", "Container", "ContainerStatus"];
        for (owner, path, s) in STRATEGIES {
            assert!(
                shared.contains(owner) || RESOURCES.iter().any(|r| r.kind == *owner),
                "{owner}.{path}"
            );
            assert_ne!(*s, Strategy::Default);
        }
    }

    // --- properties ---

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::strategy::Strategy;

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<i32>().prop_map(Value::from),
                "[a-z]{0,4}".prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
            ]
        }

        /// JSON without nulls: maps with a few keys, lists of scalars.
        fn document() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(scalar(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-e]", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = Map<String, Value>> {
            prop::collection::btree_map("[a-e]", document(), 0..5)
                .prop_map(|m| m.into_iter().collect())
        }

        /// A merge patch that turns `a` into `b`.
        fn diff(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
            let mut patch = Map::new();
            for k in a.keys() {
                if !b.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            for (k, bv) in b {
                match (a.get(k), bv) {
                    (Some(Value::Object(ao)), Value::Object(bo)) => {
                        patch.insert(k.clone(), Value::Object(diff(ao, bo)));
                    }
                    (Some(av), bv) if av == bv => {}
                    _ => {
                        patch.insert(k.clone(), bv.clone());
                    }
                }
            }
            patch
        }

        fn configmap(data: Map<String, Value>) -> Value {
            let mut m = data;
            m.insert("apiVersion".into(), json!("v1"));
            m.insert("kind".into(), json!("ConfigMap"));
            Value::Object(m)
        }

        proptest! {
            #[test]
            fn merge_patch_of_a_diff_yields_the_target(a in object(), b in object()) {
                let patch = Value::Object(diff(&a, &b));
                let out = apply("configmaps", PatchType::Merge, &configmap(a.clone()), &patch).unwrap();
                prop_assert_eq!(out, configmap(b));
            }

            #[test]
            fn strategic_merge_without_directives_is_merge_patch(a in object(), b in object(), drop in prop::collection::vec("[a-e]", 0..3)) {
                let mut patch = diff(&a, &b);
                for k in drop {
                    patch.insert(k, Value::Null);
                }
                let patch = Value::Object(patch);
                let original = configmap(a);
                let merged = apply("configmaps", PatchType::Merge, &original, &patch).unwrap();
                let strategic = apply("configmaps", PatchType::StrategicMerge, &original, &patch).unwrap();
                prop_assert_eq!(merged, strategic);
            }

            #[test]
            fn no_body_panics(body in prop::collection::vec(any::<u8>(), 0..64), text in "[\\[\\]{}\"$:,a-z0-9/ -]{0,64}") {
                let d = deployment();
                for ty in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
                    let _ = patch(resource("deployments"), ty, &d, &body);
                    let _ = patch(resource("deployments"), ty, &d, text.as_bytes());
                }
            }
        }
    }
}
