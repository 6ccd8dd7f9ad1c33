//! Reading manifests the way users have them: files, directories or stdin;
//! multi-document YAML or JSON; `kind: List` wrappers from `kubectl get -o yaml`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::object::{Kind, Object, ObjectKey};
use crate::validate;
use crate::{Error, Result};

/// Where manifests come from: a path (file or directory) or standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Stdin,
}

impl Source {
    /// `-` is standard input, as for kubectl.
    pub fn from_arg(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::Path(PathBuf::from(arg))
        }
    }
}

/// Where an object was read from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Shared by every object of the file.
    pub file: Arc<str>,
    /// 1-based index of the document in the file.
    pub index: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file, self.index)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// The objects read from a set of sources, in input order.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<(Object, Origin)>,
    /// Kinds strait does not use, with how many objects of each were skipped.
    pub ignored: BTreeMap<String, usize>,
}

impl Loaded {
    fn merge(&mut self, other: Loaded) {
        self.objects.extend(other.objects);
        for (kind, n) in other.ignored {
            *self.ignored.entry(kind).or_default() += n;
        }
    }
}

/// Read every source in order. A directory contributes its `*.yaml`, `*.yml`
/// and `*.json` files in name order. Nothing is returned unless every
/// document of every file is valid.
pub fn load_paths(sources: &[Source]) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    for source in sources {
        match source {
            Source::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|source| Error::Read {
                        path: PathBuf::from("<stdin>"),
                        source,
                    })?;
                loaded.merge(parse_str("<stdin>", &text, sniff(&text))?);
            }
            Source::Path(path) => {
                for file in files_of(path)? {
                    let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
                        path: file.clone(),
                        source,
                    })?;
                    let format = match file.extension().and_then(|e| e.to_str()) {
                        Some("json") => Format::Json,
                        _ => sniff(&text),
                    };
                    loaded.merge(parse_str(&file.display().to_string(), &text, format)?);
                }
            }
        }
    }
    Ok(loaded)
}

fn files_of(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = entry.path();
        let wanted = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if wanted && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// JSON if the text starts like JSON; YAML otherwise.
fn sniff(text: &str) -> Format {
    match text.trim_start().chars().next() {
        Some('{' | '[') => Format::Json,
        _ => Format::Yaml,
    }
}

/// Parse the documents of one file named `file` (used in messages only).
pub fn parse_str(file: &str, text: &str, format: Format) -> Result<Loaded> {
    let mut collector = Collector::default();
    match format {
        Format::Json => {
            // Objects are typed straight from the text: no intermediate tree,
            // which halves the time and memory of reading a large dump.
            let mut docs = Vec::new();
            for raw in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
                let raw = raw.map_err(|e| Error::Syntax {
                    file: file.to_owned(),
                    format: "JSON",
                    message: e.to_string(),
                })?;
                docs.push(Doc::Raw(raw));
            }
            collector.documents(docs);
        }
        Format::Yaml => {
            collector = match read_yaml_in_parts(text, crate::parallel::threads()) {
                Some(collector) => collector,
                None => read_yaml(text).map_err(|e| Error::Syntax {
                    file: file.to_owned(),
                    format: "YAML",
                    message: e.to_string(),
                })?,
            };
        }
    }
    if let Some(e) = collector.error {
        return Err(Error::Document {
            file: file.to_owned(),
            index: e.index,
            object: e.object,
            field: e.field,
            message: e.message,
        });
    }
    let mut loaded = collector.loaded;
    let file: Arc<str> = file.into();
    for (_, origin) in &mut loaded.objects {
        origin.file = file.clone();
    }
    Ok(loaded)
}

fn read_yaml(text: &str) -> Result<Collector, serde_saphyr::Error> {
    // Manifests of tens of thousands of objects are normal for strait
    // (a cluster dump); the parser's default budget is for config files.
    let options = serde_saphyr::options! { budget: None };
    serde_saphyr::from_str_multiple_with_options::<Value, Collector>(text, options)
}

/// Below this size one thread reads a YAML file.
const PARALLEL_MIN_YAML_BYTES: usize = 1 << 20;

/// A large multi-document YAML file read on every core, one run of whole
/// documents per thread, with the same result as reading it at once. `None`
/// when that cannot be done or a part has a syntax error: the caller then
/// reads the file at once, which reports the error with its true line.
fn read_yaml_in_parts(text: &str, threads: usize) -> Option<Collector> {
    if threads < 2 || text.len() < PARALLEL_MIN_YAML_BYTES {
        return None;
    }
    let parts = yaml_parts(text, threads)?;
    let read = crate::parallel::map(parts, 2, |part| read_yaml(part).ok());
    let mut all = Collector::default();
    for part in read {
        all.append(part?);
    }
    Some(all)
}

/// `text` cut before document start markers (`---` at the start of a line,
/// which YAML forbids inside any content) into about `count` parts. `None`
/// when there is only one part, or the text has directives (`%YAML`,
/// `%TAG`), which belong to the document after them.
fn yaml_parts(text: &str, count: usize) -> Option<Vec<&str>> {
    let mut starts = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('%') {
            return None;
        }
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
        if marker && line_start > 0 {
            starts.push(line_start);
        }
        line_start += line.len();
    }
    let mut cuts = vec![0];
    for i in 1..count {
        let target = text.len() / count * i;
        let last = cuts[cuts.len() - 1];
        if let Some(&cut) = starts.iter().find(|&&s| s >= target && s > last) {
            cuts.push(cut);
        }
    }
    if cuts.len() < 2 {
        return None;
    }
    cuts.push(text.len());
    Some(cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect())
}

/// A document that did not make a valid object.
struct DocError {
    index: usize,
    object: String,
    field: String,
    message: String,
}

/// Turns documents into objects as the parser yields them, so that a large
/// file never exists twice in memory. Keeps the first error.
#[derive(Default)]
struct Collector {
    loaded: Loaded,
    index: usize,
    error: Option<DocError>,
    /// The file is named once all documents are in (the YAML parser makes
    /// the collector); until then objects share this empty name.
    unnamed: Arc<str>,
}

impl Extend<Value> for Collector {
    fn extend<I: IntoIterator<Item = Value>>(&mut self, iter: I) {
        for value in iter {
            // The YAML parser hands over empty documents as null.
            if !value.is_null() {
                self.document(Doc::Value(value));
            }
        }
    }
}

impl Collector {
    /// Add the documents `later` read from the text that follows.
    fn append(&mut self, later: Collector) {
        let offset = self.index;
        self.index += later.index;
        if self.error.is_none() {
            self.error = later.error.map(|e| DocError {
                index: e.index + offset,
                ..e
            });
        }
        for (object, mut origin) in later.loaded.objects {
            origin.index += offset;
            self.loaded.objects.push((object, origin));
        }
        for (kind, n) in later.loaded.ignored {
            *self.loaded.ignored.entry(kind).or_default() += n;
        }
    }

    /// Documents already split from the text (JSON): read together, so
    /// that large files are read on every core.
    fn documents(&mut self, docs: Vec<Doc<'_>>) {
        let first = self.index + 1;
        self.index += docs.len();
        if self.error.is_some() {
            return;
        }
        let unnamed = &self.unnamed;
        let place = |i: usize| {
            let origin = Origin {
                file: unnamed.clone(),
                index: first + i,
            };
            (origin, String::new())
        };
        if let Err(e) = add_documents(&mut self.loaded, docs, place) {
            self.error = Some(e);
        }
    }

    fn document(&mut self, doc: Doc<'_>) {
        self.index += 1;
        if self.error.is_some() {
            return;
        }
        let origin = Origin {
            file: self.unnamed.clone(),
            index: self.index,
        };
        if let Err(e) = add_document(&mut self.loaded, doc, &origin, "") {
            self.error = Some(e);
        }
    }
}

/// One document or list item: parsed text (JSON) or a parsed tree (YAML).
pub(crate) enum Doc<'a> {
    Raw(&'a RawValue),
    Value(Value),
}

/// Just enough of an object to know what it is.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Head {
    api_version: Option<Value>,
    kind: Option<Value>,
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeadMeta {
    name: Option<Value>,
    namespace: Option<Value>,
}

#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// `apiVersion` and `kind` only, borrowed from the text: read for every
/// document, so it allocates nothing.
#[derive(Deserialize)]
struct TypeMeta<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

impl Doc<'_> {
    fn head(&self) -> Option<Head> {
        match self {
            Doc::Raw(raw) => {
                // The common case, a well-formed object, needs no more than
                // its type; the full head is for errors and lists.
                match serde_json::from_str::<TypeMeta<'_>>(raw.get()) {
                    Ok(TypeMeta {
                        api_version: Some(v),
                        kind: Some(k),
                    }) if !v.is_empty() && !k.is_empty() => Some(Head {
                        api_version: Some(Value::String(v.into_owned())),
                        kind: Some(Value::String(k.into_owned())),
                        metadata: None,
                    }),
                    _ => serde_json::from_str(raw.get()).ok(),
                }
            }
            Doc::Value(v @ Value::Object(_)) => Head::deserialize(v).ok(),
            Doc::Value(_) => None,
        }
    }

    /// Name and namespace for messages, read only when they are needed.
    fn names(&self) -> (String, String) {
        let head: Option<Head> = match self {
            Doc::Raw(raw) => serde_json::from_str(raw.get()).ok(),
            Doc::Value(v) => Head::deserialize(v).ok(),
        };
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let meta = head.and_then(|h| h.metadata).unwrap_or_default();
        (text(meta.name), text(meta.namespace))
    }

    /// `items` of a List (`None` when absent), or why they are unusable.
    fn items(self) -> Result<Option<Vec<Doc<'static>>>, String> {
        match self {
            Doc::Value(Value::Object(mut map)) => match map.remove("items") {
                None => Ok(None),
                Some(Value::Array(items)) => Ok(Some(items.into_iter().map(Doc::Value).collect())),
                Some(_) => Err("must be a list".to_owned()),
            },
            _ => Ok(None),
        }
    }

    pub(crate) fn typed<T: DeserializeOwned>(&self) -> Result<T, (String, String)> {
        let fast = match self {
            Doc::Raw(raw) => serde_json::from_str::<T>(raw.get()).ok(),
            Doc::Value(v) => T::deserialize(v).ok(),
        };
        if let Some(t) = fast {
            return Ok(t);
        }
        // Only failures pay for tracking the path to the bad field.
        let result = match self {
            Doc::Raw(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                serde_path_to_error::deserialize::<_, T>(&mut de)
                    .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))
            }
            Doc::Value(v) => serde_path_to_error::deserialize::<_, T>(v)
                .map_err(|e| (e.path().to_string(), e.into_inner().to_string())),
        };
        result.map_err(|(path, message)| (if path == "." { String::new() } else { path }, message))
    }
}

/// Below this many documents one thread reads them all.
const PARALLEL_MIN_DOCUMENTS: usize = 2048;

/// `add_document` for each of `docs` in order; `place(i)` gives the origin
/// and field prefix of the i-th. Large inputs are read on every core: each
/// document is read on its own, so the outcome (objects in input order, the
/// error of the first bad document) is the same as reading them one by one.
fn add_documents(
    loaded: &mut Loaded,
    docs: Vec<Doc<'_>>,
    place: impl Fn(usize) -> (Origin, String) + Sync,
) -> Result<(), DocError> {
    let read = |loaded: &mut Loaded, first: usize, docs: Vec<Doc<'_>>| {
        for (i, doc) in docs.into_iter().enumerate() {
            let (origin, prefix) = place(first + i);
            add_document(loaded, doc, &origin, &prefix)?;
        }
        Ok(())
    };
    let threads = crate::parallel::threads();
    if threads < 2 || docs.len() < PARALLEL_MIN_DOCUMENTS {
        return read(loaded, 0, docs);
    }
    // Runs of documents, each read into its own part, merged in order.
    let per_thread = docs.len().div_ceil(threads);
    let mut runs = Vec::new();
    let mut rest = docs;
    let mut first = 0;
    while !rest.is_empty() {
        let tail = rest.split_off(per_thread.min(rest.len()));
        let len = rest.len();
        runs.push((first, rest));
        first += len;
        rest = tail;
    }
    let results = crate::parallel::map(runs, 2, |(first, docs)| {
        let mut part = Loaded::default();
        let result = read(&mut part, first, docs);
        (part, result)
    });
    for (part, result) in results {
        loaded.merge(part);
        result?;
    }
    Ok(())
}

fn add_document(
    loaded: &mut Loaded,
    doc: Doc<'_>,
    origin: &Origin,
    prefix: &str,
) -> Result<(), DocError> {
    let index = origin.index;
    let fail = |object: String, field: &str, message: String| DocError {
        index,
        object,
        field: if field.is_empty() {
            if prefix.is_empty() {
                "(document)".to_owned()
            } else {
                prefix.trim_end_matches('.').to_owned()
            }
        } else {
            format!("{prefix}{field}")
        },
        message,
    };
    let Some(head) = doc.head() else {
        return Err(fail(
            String::new(),
            "",
            "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
        ));
    };
    let kind_name = match head.kind {
        Some(Value::String(k)) if !k.is_empty() => k,
        Some(_) => {
            return Err(fail(
                String::new(),
                "kind",
                "must be a non-empty string".into(),
            ))
        }
        None => return Err(fail(String::new(), "kind", "missing".into())),
    };
    let api_version = match head.api_version {
        Some(Value::String(v)) if !v.is_empty() => v,
        Some(_) => {
            return Err(fail(
                String::new(),
                "apiVersion",
                "must be a non-empty string".into(),
            ))
        }
        None => return Err(fail(String::new(), "apiVersion", "missing".into())),
    };

    // `kind: List` and typed lists (`ServiceList`, …) as `kubectl get -o yaml` writes them.
    if kind_name.ends_with("List") {
        let items: Option<Vec<Doc<'_>>> = match &doc {
            Doc::Raw(raw) => serde_json::from_str::<RawList<'_>>(raw.get())
                .map_err(|_| fail(String::new(), "items", "must be a list".into()))?
                .items
                .map(|items| items.into_iter().map(Doc::Raw).collect()),
            Doc::Value(_) => doc
                .items()
                .map_err(|message| fail(String::new(), "items", message))?,
        };
        if let Some(items) = items {
            return add_documents(loaded, items, |j| {
                (origin.clone(), format!("{prefix}items[{j}]."))
            });
        }
        return Err(fail(
            String::new(),
            "items",
            "missing: a List needs items".into(),
        ));
    }

    let Some(kind) = Kind::from_name(&kind_name) else {
        *loaded.ignored.entry(kind_name).or_default() += 1;
        return Ok(());
    };

    let describe = |name: &str, namespace: &str| {
        let namespace = if kind.is_namespaced() && namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        if name.is_empty() {
            format!(" ({kind})")
        } else {
            format!(" ({})", ObjectKey::new(kind, namespace, name))
        }
    };
    let described_doc = || {
        let (name, namespace) = doc.names();
        describe(&name, &namespace)
    };

    if api_version != kind.api_version() {
        return Err(fail(
            described_doc(),
            "apiVersion",
            format!(
                "{kind} is read as {}, not {api_version}",
                kind.api_version()
            ),
        ));
    }

    let mut object = Object::from_doc(kind, &doc)
        .map_err(|(field, message)| fail(described_doc(), &field, message))?;
    // Defaulting, as the API server does on create.
    let meta = object.metadata();
    let wanted = if kind.is_namespaced() {
        Some(
            meta.namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
        )
    } else {
        None
    };
    if meta.namespace != wanted {
        object.metadata_mut().namespace = wanted;
    }
    validate::object(&mut object).map_err(|(field, message)| {
        let meta = object.metadata();
        let described = describe(
            meta.name.as_deref().unwrap_or_default(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        fail(described, &field, message)
    })?;
    loaded.objects.push((object, origin.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded> {
        parse_str("test.yaml", text, sniff(text))
    }

    #[test]
    fn multi_document_yaml_with_default_namespace() {
        let loaded = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: dev, namespace: x}\n",
        )
        .unwrap();
        assert_eq!(loaded.objects.len(), 2);
        assert_eq!(
            loaded.objects[0].0.metadata().namespace.as_deref(),
            Some("default")
        );
        assert_eq!(loaded.objects[1].0.metadata().namespace, None);
    }

    #[test]
    fn list_wrappers_and_json() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"n"},"spec":{"containers":[{"name":"c"}]}},
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}},
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"}}]}
           {"apiVersion":"v1","kind":"ServiceList","items":[]}"#;
        let loaded = parse(text).unwrap();
        assert_eq!(loaded.objects.len(), 1);
        assert_eq!(loaded.ignored.get("ConfigMap"), Some(&2));
    }

    #[test]
    fn wrong_field_type_names_file_document_object_and_path() {
        let err = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports:\n  - port: eighty\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("test.yaml: document 2 (Service shop/web): spec.ports[0].port: "),
            "{err}"
        );
    }

    #[test]
    fn error_inside_a_list_names_the_item() {
        let err = parse(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec: {containers: 3}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("document 1 (Pod default/p): items[0].spec.containers: "),
            "{err}"
        );
    }

    #[test]
    fn large_inputs_read_in_parallel_keep_order_and_the_first_error() {
        let pod = |i: usize| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p{i}"}},"spec":{{"containers":[{{"name":"c"}}]}}}}"#
            )
        };
        let count = 3 * PARALLEL_MIN_DOCUMENTS;
        let docs: Vec<String> = (0..count).map(pod).collect();
        let loaded = parse(&docs.join("\n")).unwrap();
        let names: Vec<_> = loaded
            .objects
            .iter()
            .map(|(o, origin)| (o.metadata().name.clone().unwrap(), origin.index))
            .collect();
        let expected: Vec<_> = (0..count).map(|i| (format!("p{i}"), i + 1)).collect();
        assert_eq!(names, expected);

        let mut bad = docs.clone();
        bad[count - 10] = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"late"}}"#.into();
        bad[2500] = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"early"}}"#.into();
        let err = parse(&bad.join("\n")).unwrap_err().to_string();
        assert!(
            err.contains("document 2501 (Pod default/early): spec: missing"),
            "{err}"
        );
        let list = format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
            bad.join(",")
        );
        let err = parse(&list).unwrap_err().to_string();
        assert!(
            err.contains("document 1 (Pod default/early): items[2500].spec: missing"),
            "{err}"
        );
    }

    #[test]
    fn large_yaml_read_in_parts_is_read_as_a_whole() {
        let mut text = String::from("# a comment\n");
        for i in 0..20_000 {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n"
            ));
            if i % 1000 == 0 {
                text.push_str(
                    "---\n# empty\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
                );
            }
        }
        assert!(text.len() > PARALLEL_MIN_YAML_BYTES);
        assert!(yaml_parts(&text, 4).unwrap().len() == 4);
        let whole = read_yaml(&text).unwrap();
        let parts = read_yaml_in_parts(&text, 4).unwrap();
        let summary = |c: &Collector| {
            let objects: Vec<_> = c
                .loaded
                .objects
                .iter()
                .map(|(o, origin)| (o.metadata().name.clone(), origin.index))
                .collect();
            (objects, c.index, c.loaded.ignored.clone())
        };
        assert_eq!(summary(&parts), summary(&whole));

        let bad = text.replacen("metadata: {name: s15000}", "metadata: {name: S}", 1);
        let bad = bad.replacen("metadata: {name: s19000}", "metadata: {name: T}", 1);
        let whole = read_yaml(&bad).unwrap().error.unwrap();
        let parts = read_yaml_in_parts(&bad, 4).unwrap().error.unwrap();
        assert_eq!((parts.index, parts.object), (whole.index, whole.object));

        // A syntax error is left to the reading at once, for its line number.
        let broken = text.replacen("kind: Service\n", "kind: [Service\n", 1);
        assert!(read_yaml_in_parts(&broken, 4).is_none());
        assert!(yaml_parts("%YAML 1.2\n---\na: 1\n---\nb: 2\n", 2).is_none());
    }

    #[test]
    fn deeply_nested_documents_read_in_parts_as_on_the_main_thread() {
        // 200 levels: within the parser's limit, but more than a thread with
        // Rust's default 2 MiB stack survives in a debug build.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n"
            ));
        }
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {{x: {deep}}}\n"
        ));
        // Read from a thread with the main thread's stack, as strait does.
        let read = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || read_yaml_in_parts(&text, 4).map(|c| c.loaded.objects.len()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(read, Some(20_000));
    }

    #[test]
    fn wrong_api_version_is_explained() {
        let err = parse("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: d}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apiVersion: Deployment is read as apps/v1, not extensions/v1beta1"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = parse("apiVersion: v1\nkind: [unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.yaml: not valid YAML"), "{err}");
    }

    #[test]
    fn missing_kind_and_non_objects() {
        assert!(parse("apiVersion: v1\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string()
            .contains("kind: missing"));
        assert!(parse("- 1\n- 2\n")
            .unwrap_err()
            .to_string()
            .contains("expected a Kubernetes object"));
    }
}
