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

use crate::kind::{Kind, ObjectKey};
use crate::object::{Object, TypedDoc};
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
    /// What a directory held that was not read, for the user to be told.
    pub skipped: Vec<Skipped>,
    /// Objects refused by admission, with why, in input order. Only ever
    /// filled when reading with [`Admission::PerObject`]: otherwise the
    /// first refusal is the error of the whole read.
    pub refused: Vec<Refused>,
}

/// An object (or a document, or a whole file) that admission refused.
#[derive(Debug)]
pub struct Refused {
    /// The file and document; document 0 when the whole file is refused
    /// (unreadable, not valid YAML or JSON as a whole).
    pub origin: Origin,
    /// The object, when its kind and name could be read: what a follower
    /// keeps the previous version of.
    pub key: Option<ObjectKey>,
    /// Why, naming the file, document, object and field.
    pub error: Error,
}

/// What one object that fails admission does to a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// The read fails with the first refusal: what one-shot commands
    /// (`strait render`) want, so that a mistake is never silently left out.
    #[default]
    AllOrNothing,
    /// A refused object is refused alone, as the API server refuses one
    /// request: it goes to [`Loaded::refused`] and every other object is
    /// still read. A document that is not valid YAML refuses that document
    /// when the file's documents can still be told apart, else the file.
    PerObject,
}

/// An entry of a directory that was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A subdirectory, without `recursive` (kubectl's `-R`).
    Directory,
    /// A file whose name does not end in `.yaml`, `.yml` or `.json`.
    NotAManifest,
}

impl Loaded {
    fn merge(&mut self, other: Loaded) {
        self.objects.extend(other.objects);
        for (kind, n) in other.ignored {
            *self.ignored.entry(kind).or_default() += n;
        }
        self.skipped.extend(other.skipped);
        self.refused.extend(other.refused);
    }
}

impl Loaded {
    /// What a follower does with refusals, as the API server does with a
    /// refused request: the object stored `before` stays. For each refusal
    /// in [`Loaded::refused`] this adds to [`Loaded::objects`] what was read
    /// `before` in its place: the object of the same kind, namespace and
    /// name; for a document that could not be read, the object that document
    /// held; for a file, the objects of that file. Never an object whose key
    /// was read now. Returns, for each refusal in order, the keys kept.
    pub fn keep_refused(&mut self, before: &[(Object, Origin)]) -> Vec<Vec<ObjectKey>> {
        if self.refused.is_empty() {
            return Vec::new();
        }
        let mut present: std::collections::HashSet<ObjectKey> =
            self.objects.iter().map(|(o, _)| ObjectKey::of(o)).collect();
        let by_key: std::collections::HashMap<ObjectKey, &(Object, Origin)> = before
            .iter()
            .map(|entry| (ObjectKey::of(&entry.0), entry))
            .collect();
        let mut kept_for = Vec::with_capacity(self.refused.len());
        for refusal in &self.refused {
            let candidates: Vec<&(Object, Origin)> = match (&refusal.key, refusal.origin.index) {
                (Some(key), _) => by_key.get(key).copied().into_iter().collect(),
                (None, 0) => before
                    .iter()
                    .filter(|(_, o)| o.file == refusal.origin.file)
                    .collect(),
                (None, _) => before
                    .iter()
                    .filter(|(_, o)| *o == refusal.origin)
                    .collect(),
            };
            let mut kept = Vec::new();
            for (object, origin) in candidates {
                let key = ObjectKey::of(object);
                if present.insert(key.clone()) {
                    kept.push(key);
                    self.objects.push((object.clone(), origin.clone()));
                }
            }
            kept_for.push(kept);
        }
        kept_for
    }
}

/// How much strait reads at most, over all sources of one command: far more
/// than the dump of a large cluster (110k objects are about 150 MB of JSON),
/// far less than what would run a node out of memory once parsed.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// How manifests are read.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Read the subdirectories of a directory too, as kubectl's `-R` does.
    pub recursive: bool,
    /// At most this many bytes over every source.
    pub max_bytes: u64,
    /// Whether one refused object fails the read or only itself.
    pub admission: Admission,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            recursive: false,
            max_bytes: MAX_INPUT_BYTES,
            admission: Admission::AllOrNothing,
        }
    }
}

/// Read every source in order. A directory contributes its `*.yaml`, `*.yml`
/// and `*.json` files in name order. Nothing is returned unless every
/// document of every file is valid.
pub fn load_paths(sources: &[Source]) -> Result<Loaded> {
    load_paths_with(sources, &ReadOptions::default())
}

/// [`load_paths`] with options: subdirectories, a smaller size limit, and
/// whether a refused object fails the read ([`Admission`]). With
/// [`Admission::PerObject`] a file that cannot be read is refused (as a
/// whole) too; a directory that cannot be listed and the size limit still
/// fail the read, since what they leave out is unknown.
pub fn load_paths_with(sources: &[Source], options: &ReadOptions) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut left = options.max_bytes;
    let admission = options.admission;
    for source in sources {
        match source {
            Source::Stdin => {
                let name = Path::new("<stdin>");
                let text = read_at_most(name, std::io::stdin().lock(), &mut left, options)?;
                loaded.merge(parse_str_with("<stdin>", &text, sniff(&text), admission)?);
            }
            Source::Path(path) => {
                for file in files_of(path, options.recursive, &mut loaded.skipped)? {
                    match read_file(&file, &mut left, options) {
                        Ok((text, format)) => loaded.merge(parse_str_with(
                            &file.display().to_string(),
                            &text,
                            format,
                            admission,
                        )?),
                        Err(error @ Error::Read { .. }) if admission == Admission::PerObject => {
                            loaded.refused.push(Refused {
                                origin: Origin {
                                    file: file.display().to_string().into(),
                                    index: 0,
                                },
                                key: None,
                                error,
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(loaded)
}

/// The text of one manifest file and its format, within what is `left` of
/// the size limit.
fn read_file(file: &Path, left: &mut u64, options: &ReadOptions) -> Result<(String, Format)> {
    let read_error = |source| Error::Read {
        path: file.to_owned(),
        source,
    };
    let handle = std::fs::File::open(file).map_err(read_error)?;
    // Refused before reading when the size is known.
    let size = handle.metadata().map_err(read_error)?.len();
    if size > *left {
        return Err(too_much(file, options));
    }
    let text = read_at_most(file, handle, left, options)?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => sniff(&text),
    };
    Ok((text, format))
}

fn too_much(file: &Path, options: &ReadOptions) -> Error {
    Error::Limit {
        file: file.display().to_string(),
        message: format!(
            "the input is larger than {} bytes in all, the most strait reads at once",
            options.max_bytes
        ),
    }
}

/// The text of `reader`, refused once the sources so far pass the limit
/// (`left` is what remains of it): never more than the limit in memory,
/// whatever a pipe or a special file would give.
fn read_at_most(
    name: &Path,
    reader: impl Read,
    left: &mut u64,
    options: &ReadOptions,
) -> Result<String> {
    let mut text = String::new();
    reader
        .take(left.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|source| Error::Read {
            path: name.to_owned(),
            source,
        })?;
    let len = text.len() as u64;
    if len > *left {
        return Err(too_much(name, options));
    }
    *left -= len;
    Ok(text)
}

/// The manifest files of `path`: itself if it is a file; a directory's
/// `*.yaml`, `*.yml` and `*.json` files in name order (and, `recursive`,
/// those of its subdirectories, depth first in name order, as kubectl -R
/// walks). What is left out is added to `skipped`.
fn files_of(path: &Path, recursive: bool, skipped: &mut Vec<Skipped>) -> Result<Vec<PathBuf>> {
    let read_error = |path: &Path, source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut walked = std::collections::HashSet::new();
    walk(path, recursive, &mut walked, &mut files, skipped)?;
    Ok(files)
}

/// The entries of `dir` in name order, descending into subdirectories
/// where they come when `recursive` (as Go's `filepath.Walk`, which kubectl
/// uses). `walked` holds the real paths of the directories seen: a symbolic
/// link back up the tree is walked once, not forever.
fn walk(
    dir: &Path,
    recursive: bool,
    walked: &mut std::collections::HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<Skipped>,
) -> Result<()> {
    let read_error = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    if !walked.insert(std::fs::canonicalize(dir).map_err(read_error)?) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        entries.push(entry.map_err(read_error)?.path());
    }
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                walk(&entry, recursive, walked, files, skipped)?;
            } else {
                skipped.push(Skipped {
                    path: entry,
                    reason: SkipReason::Directory,
                });
            }
            continue;
        }
        let wanted = matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if wanted && entry.is_file() {
            files.push(entry);
        } else {
            skipped.push(Skipped {
                path: entry,
                reason: SkipReason::NotAManifest,
            });
        }
    }
    Ok(())
}

/// JSON if the text starts like JSON; YAML otherwise.
fn sniff(text: &str) -> Format {
    match text.trim_start().chars().next() {
        Some('{' | '[') => Format::Json,
        _ => Format::Yaml,
    }
}

/// Parse the documents of one file named `file` (used in messages only);
/// the first refused object is the error.
pub fn parse_str(file: &str, text: &str, format: Format) -> Result<Loaded> {
    parse_str_with(file, text, format, Admission::AllOrNothing)
}

/// [`parse_str`], refusing objects alone with [`Admission::PerObject`]:
/// then the only error is none, and what was refused is in
/// [`Loaded::refused`].
pub fn parse_str_with(
    file: &str,
    text: &str,
    format: Format,
    admission: Admission,
) -> Result<Loaded> {
    let mut collector = Collector::default();
    let per_object = admission == Admission::PerObject;
    match format {
        Format::Json => {
            // Objects are typed straight from the text: no intermediate tree,
            // which halves the time and memory of reading a large dump.
            let mut docs = Vec::new();
            for raw in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
                let raw = match raw {
                    Ok(raw) => raw,
                    Err(e) => {
                        let error = Error::Syntax {
                            file: file.to_owned(),
                            format: "JSON",
                            message: e.to_string(),
                        };
                        // After a syntax error JSON gives no way to find
                        // where the next document starts: the file is refused.
                        return if per_object {
                            Ok(file_refused(file, error))
                        } else {
                            Err(error)
                        };
                    }
                };
                docs.push(Doc::Raw(raw));
                // In runs: a file of a billion `{}` never has a billion
                // documents in memory at once.
                if docs.len() == JSON_DOCUMENTS_PER_RUN {
                    collector.documents(std::mem::take(&mut docs));
                    if !per_object && !collector.loaded.refused.is_empty() {
                        break;
                    }
                }
            }
            collector.documents(docs);
        }
        Format::Yaml => {
            collector = match read_yaml_in_parts(text, crate::parallel::threads()) {
                Some(collector) => collector,
                None => match read_yaml(text) {
                    Ok(collector) => collector,
                    Err(e) if per_object => match read_yaml_documents_alone(file, text) {
                        Some(collector) => collector,
                        None => return Ok(file_refused(file, yaml_error(file, text, &e, false))),
                    },
                    Err(e) => return Err(yaml_error(file, text, &e, false)),
                },
            };
        }
    }
    let mut loaded = collector.loaded;
    let file: Arc<str> = file.into();
    for refused in &mut loaded.refused {
        refused.origin.file = file.clone();
        if let Error::Document { file: named, .. } = &mut refused.error {
            *named = file.to_string();
        }
    }
    if !per_object && !loaded.refused.is_empty() {
        return Err(loaded.refused.swap_remove(0).error);
    }
    for (_, origin) in &mut loaded.objects {
        origin.file = file.clone();
    }
    Ok(loaded)
}

/// What a file that is refused as a whole reads as.
fn file_refused(file: &str, error: Error) -> Loaded {
    Loaded {
        refused: vec![Refused {
            origin: Origin {
                file: file.into(),
                index: 0,
            },
            key: None,
            error,
        }],
        ..Loaded::default()
    }
}

/// A YAML file that is not valid as a whole, read one document at a time
/// (cut before each `---` line, which no content may hold), so that only
/// the documents that are not valid are refused. `None` when the documents
/// cannot be told apart: one document only, or directives (`%YAML`), which
/// belong to the document after them. The documents share the file's
/// alias budget: reading them apart makes aliases repeat no more in all.
fn read_yaml_documents_alone(file: &str, text: &str) -> Option<Collector> {
    let parts = yaml_documents(text)?;
    let mut all = Collector::default();
    let mut line = 0u64;
    // Re-reading a bad document after as many empty lines as come before
    // it gives its error the line of the file; bounded, so that a file of
    // many bad documents is not read over and over.
    let mut padding_left: usize = 16 << 20;
    let shares = parts.len();
    for part in parts {
        match read_yaml_sharing(part, shares) {
            Ok(read) => all.append(read),
            Err(e) => {
                let before = usize::try_from(line).unwrap_or(usize::MAX);
                let message = if before <= padding_left {
                    padding_left -= before;
                    let padded = format!("{}{part}", "\n".repeat(before));
                    let e = read_yaml_sharing(&padded, shares).err().unwrap_or(e);
                    without_file(yaml_error(file, &padded, &e, true))
                } else {
                    format!(
                        "{} (lines counted from the document's start)",
                        without_file(yaml_error(file, part, &e, true))
                    )
                };
                all.index += 1;
                all.loaded.refused.push(Refused {
                    origin: Origin {
                        file: all.unnamed.clone(),
                        index: all.index,
                    },
                    key: None,
                    error: Error::Document {
                        file: String::new(),
                        index: all.index,
                        object: String::new(),
                        field: "(document)".into(),
                        message,
                    },
                });
            }
        }
        line += part.bytes().filter(|&b| b == b'\n').count() as u64;
    }
    Some(all)
}

/// How many events YAML aliases may repeat in all, in one file. Manifests
/// use anchors to share a few labels or a container; an alias bomb (each
/// anchor a list of aliases of the one before) wants billions.
const MAX_ALIAS_REPLAYED_EVENTS: usize = 100_000;
/// How many bytes of text aliases may repeat in all, in one file: a short
/// anchored string repeated a hundred thousand times is still small.
const MAX_ALIAS_REPLAYED_BYTES: usize = 16 << 20;
/// Nesting of a YAML document: as deep as the parser lets flow collections
/// go. Kubernetes objects go about twenty deep.
const MAX_YAML_DEPTH: usize = 255;

fn read_yaml(text: &str) -> Result<Collector, serde_saphyr::Error> {
    read_yaml_sharing(text, 1)
}

/// [`read_yaml`] of one of `shares` parts of a file read apart: the file's
/// alias budget is split among them, so reading a file's documents one by
/// one lets aliases repeat no more than reading it at once.
fn read_yaml_sharing(text: &str, shares: usize) -> Result<Collector, serde_saphyr::Error> {
    serde_saphyr::from_str_multiple_with_options::<Value, Collector>(
        text,
        yaml_options(text.len(), shares.max(1)),
    )
}

/// The parser's budget, measured by the text: without aliases no document
/// holds more events, nodes or scalar bytes than the text has bytes (every
/// event takes at least one), so a budget of the text's size plus what
/// aliases may add lets a dump of any size through and stops what only
/// aliases can make. (The parser's default budget is for config files: 1024
/// documents, 250,000 nodes — a cluster dump has far more.)
fn yaml_options(len: usize, shares: usize) -> serde_saphyr::Options {
    let (alias_events, alias_bytes) = (
        MAX_ALIAS_REPLAYED_EVENTS / shares,
        MAX_ALIAS_REPLAYED_BYTES / shares,
    );
    let events = len
        .saturating_mul(2)
        .saturating_add(2 * alias_events)
        .saturating_add(64);
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: None,
            max_events: events,
            max_nodes: events,
            max_documents: usize::MAX,
            max_depth: MAX_YAML_DEPTH,
            max_total_scalar_bytes: len.saturating_add(alias_bytes),
            max_recorded_anchor_bytes: alias_bytes,
            // The replay limits below bound what aliases make; the ratio
            // heuristic would refuse a label anchor used a hundred times.
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: alias_events,
        },
    }
}

/// A YAML file that could not be read: past a limit (named with the
/// document it is in, unless `one_document`: the text is one document,
/// named by the caller) or not valid YAML.
fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error, one_document: bool) -> Error {
    use serde_saphyr::Error as E;
    // The error itself, without the snippets and alias locations around it.
    let mut inner = e;
    while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = inner {
        inner = error;
    }
    let over_limit = matches!(
        inner,
        E::Budget { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
            | E::AliasReplayCounterOverflow { .. }
    );
    if !over_limit {
        return Error::Syntax {
            file: file.to_owned(),
            format: "YAML",
            message: e.to_string(),
        };
    }
    let place = match e.location() {
        Some(at) if at.line() > 0 && one_document => format!("line {}: ", at.line()),
        Some(at) if at.line() > 0 => format!(
            "document {}: line {}: ",
            document_at_line(text, at.line()),
            at.line()
        ),
        _ => String::new(),
    };
    Error::Limit {
        file: file.to_owned(),
        message: format!(
            "{place}refused: the YAML expands past what strait reads ({}); \
             YAML aliases may repeat at most {MAX_ALIAS_REPLAYED_EVENTS} nodes \
             and {MAX_ALIAS_REPLAYED_BYTES} bytes in a file, and documents nest \
             at most {MAX_YAML_DEPTH} deep",
            inner
        ),
    }
}

/// The document that line `line` (1-based) of `text` is in, counted as
/// the reader counts them: 1-based, empty documents left out.
fn document_at_line(text: &str, line: u64) -> usize {
    let mut before = 0;
    let mut has_content = false;
    for text_line in text
        .split_inclusive('\n')
        .take(line.saturating_sub(1) as usize)
    {
        let rest = if is_document_start(text_line) {
            if has_content {
                before += 1;
            }
            has_content = false;
            &text_line[3..]
        } else {
            text_line
        };
        let rest = rest.trim();
        if !rest.is_empty() && !rest.starts_with('#') {
            has_content = true;
        }
    }
    before + 1
}

fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// JSON documents are read in runs of this many (many times the size
/// that is split among threads).
const JSON_DOCUMENTS_PER_RUN: usize = 1 << 16;

/// The most items a List may have: a hundred times a large cluster's
/// objects, and a bound on the memory their list takes before any is read.
const MAX_LIST_ITEMS: usize = 10_000_000;

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
    let starts = document_starts(text)?;
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

/// `text` cut before every document start marker but the first line's;
/// `None` as for [`yaml_parts`].
fn yaml_documents(text: &str) -> Option<Vec<&str>> {
    let mut cuts = vec![0];
    cuts.extend(document_starts(text)?);
    if cuts.len() < 2 {
        return None;
    }
    cuts.push(text.len());
    Some(cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect())
}

/// Where the lines that start a document (after the first line) start;
/// `None` when the text has directives.
fn document_starts(text: &str) -> Option<Vec<usize>> {
    let mut starts = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('%') {
            return None;
        }
        if is_document_start(line) && line_start > 0 {
            starts.push(line_start);
        }
        line_start += line.len();
    }
    Some(starts)
}

/// The message of an error about a whole file, for one of its documents.
fn without_file(error: Error) -> String {
    match error {
        Error::Syntax {
            format, message, ..
        } => format!("not valid {format}: {message}"),
        Error::Limit { message, .. } => message,
        other => other.to_string(),
    }
}

/// A document that did not make a valid object.
struct DocError {
    index: usize,
    /// The object, when its kind and name are known (boxed: refusals are
    /// rare, and this keeps every document's result small).
    key: Option<Box<ObjectKey>>,
    object: String,
    field: String,
    message: String,
}

impl DocError {
    /// The refusal of the document at `origin`; the file is named later.
    fn refused(self, origin: &Origin) -> Refused {
        Refused {
            origin: origin.clone(),
            key: self.key.map(|k| *k),
            error: Error::Document {
                file: String::new(),
                index: self.index,
                object: self.object,
                field: self.field,
                message: self.message,
            },
        }
    }
}

/// Turns documents into objects as the parser yields them, so that a large
/// file never exists twice in memory. What admission refuses is collected
/// in order with the objects.
#[derive(Default)]
struct Collector {
    loaded: Loaded,
    index: usize,
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
        for (object, mut origin) in later.loaded.objects {
            origin.index += offset;
            self.loaded.objects.push((object, origin));
        }
        for mut refused in later.loaded.refused {
            refused.origin.index += offset;
            if let Error::Document { index, .. } = &mut refused.error {
                *index += offset;
            }
            self.loaded.refused.push(refused);
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
        let unnamed = &self.unnamed;
        let place = |i: usize| {
            let origin = Origin {
                file: unnamed.clone(),
                index: first + i,
            };
            (origin, String::new())
        };
        add_documents(&mut self.loaded, docs, None, place);
    }

    fn document(&mut self, doc: Doc<'_>) {
        self.index += 1;
        let origin = Origin {
            file: self.unnamed.clone(),
            index: self.index,
        };
        if let Err(e) = add_document(&mut self.loaded, doc, &origin, "", None) {
            self.loaded.refused.push(e.refused(&origin));
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

/// `items` of a List: `None` when absent, `Some(None)` when null (recent
/// kubectl writes empty lists so).
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    items: Option<Option<Items<'a>>>,
}

/// The items of a List, at most [`MAX_LIST_ITEMS`] of them.
struct Items<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Items<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Items<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Items<'a>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX_LIST_ITEMS {
                        return Err(serde::de::Error::custom(TOO_MANY_ITEMS));
                    }
                    items.push(item);
                }
                Ok(Items(items))
            }
        }
        de.deserialize_seq(Visitor(std::marker::PhantomData))
    }
}

const TOO_MANY_ITEMS: &str = "more items than strait reads in a List";

fn present<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(de).map(Some)
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

impl TypedDoc for Doc<'_> {
    fn typed<T: DeserializeOwned>(&self) -> Result<T, (String, String)> {
        Doc::typed(self)
    }
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

    /// `items` of a List (`None` when absent; null is empty), or why they
    /// are unusable.
    fn items(self) -> Result<Option<Vec<Doc<'static>>>, String> {
        match self {
            Doc::Value(Value::Object(mut map)) => match map.remove("items") {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(Vec::new())),
                Some(Value::Array(items)) if items.len() > MAX_LIST_ITEMS => Err(format!(
                    "more than {MAX_LIST_ITEMS}, the most strait reads in a List"
                )),
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
        // Integral numbers spelled as floats (`sizeBytes: 1.194914199e+09`,
        // `priority: 2e+09`, as Rancher's support bundles have them) are
        // integers to kubectl, whose YAML to JSON conversion writes them so:
        // read again with them as integers. 1.5 stays a float, refused
        // where an integer is wanted. Only documents that failed pay.
        let integral = match self {
            Doc::Raw(raw) => serde_json::from_str::<Value>(raw.get()).ok(),
            Doc::Value(v) => Some(v.clone()),
        }
        .and_then(|mut v| integral_floats_as_integers(&mut v).then_some(v));
        if let Some(t) = integral.as_ref().and_then(|v| T::deserialize(v).ok()) {
            return Ok(t);
        }
        // Only failures pay for tracking the path to the bad field.
        let at_path = |e: serde_path_to_error::Error<serde_json::Error>| {
            (e.path().to_string(), e.into_inner().to_string())
        };
        let result = match (self, &integral) {
            (_, Some(v)) => serde_path_to_error::deserialize::<_, T>(v).map_err(at_path),
            (Doc::Raw(raw), None) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                serde_path_to_error::deserialize::<_, T>(&mut de).map_err(at_path)
            }
            (Doc::Value(v), None) => serde_path_to_error::deserialize::<_, T>(v).map_err(at_path),
        };
        result.map_err(|(path, message)| (if path == "." { String::new() } else { path }, message))
    }
}

/// Replace every float of `value` that is a whole number within the range
/// of i64 with that integer; whether any was.
fn integral_floats_as_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(n) => match n.as_f64() {
            // -2^63 ..< 2^63: exactly the floats that convert without loss.
            Some(f)
                if n.is_f64()
                    && f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
            {
                *n = serde_json::Number::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| integral_floats_as_integers(v) | any),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, v| integral_floats_as_integers(v) | any),
        _ => false,
    }
}

/// Below this many documents one thread reads them all.
const PARALLEL_MIN_DOCUMENTS: usize = 2048;

/// `add_document` for each of `docs` in order, each refusal collected;
/// `place(i)` gives the origin and field prefix of the i-th. Large inputs
/// are read on every core: each document is read on its own, so the outcome
/// (objects and refusals in input order) is the same as reading them one by
/// one.
fn add_documents(
    loaded: &mut Loaded,
    docs: Vec<Doc<'_>>,
    implied: Option<&Implied>,
    place: impl Fn(usize) -> (Origin, String) + Sync,
) {
    let read = |loaded: &mut Loaded, first: usize, docs: Vec<Doc<'_>>| {
        for (i, doc) in docs.into_iter().enumerate() {
            let (origin, prefix) = place(first + i);
            if let Err(e) = add_document(loaded, doc, &origin, &prefix, implied) {
                loaded.refused.push(e.refused(&origin));
            }
        }
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
        read(&mut part, first, docs);
        part
    });
    for part in results {
        loaded.merge(part);
    }
}

/// The type of the items of a typed List (`ServiceList` → `v1`, `Service`):
/// apimachinery gives it to items that leave out `kind` and `apiVersion`, as
/// `kubectl cluster-info dump` writes them.
struct Implied {
    api_version: String,
    kind: String,
}

fn add_document(
    loaded: &mut Loaded,
    doc: Doc<'_>,
    origin: &Origin,
    prefix: &str,
    implied: Option<&Implied>,
) -> Result<(), DocError> {
    let index = origin.index;
    let fail =
        |(object, key): (String, Option<Box<ObjectKey>>), field: &str, message: String| DocError {
            index,
            key,
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
            (String::new(), None),
            "",
            "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
        ));
    };
    let kind_missing = head.kind.is_none();
    let kind_name = match head.kind {
        Some(Value::String(k)) if !k.is_empty() => k,
        None if implied.is_some() => implied.map(|t| t.kind.clone()).unwrap_or_default(),
        Some(_) => {
            return Err(fail(
                (String::new(), None),
                "kind",
                "must be a non-empty string".into(),
            ))
        }
        None => return Err(fail((String::new(), None), "kind", "missing".into())),
    };
    let api_version = match (head.api_version, implied) {
        (Some(Value::String(v)), _) if !v.is_empty() => v,
        // The List's own apiVersion, for items of its kind only.
        (None, Some(t)) if kind_missing || kind_name == t.kind => t.api_version.clone(),
        (Some(_), _) => {
            return Err(fail(
                (String::new(), None),
                "apiVersion",
                "must be a non-empty string".into(),
            ))
        }
        (None, _) => return Err(fail((String::new(), None), "apiVersion", "missing".into())),
    };

    // `kind: List` and typed lists (`ServiceList`, …) as `kubectl get -o yaml` writes them.
    if let Some(item_kind) = kind_name.strip_suffix("List") {
        let items: Option<Vec<Doc<'_>>> = match &doc {
            Doc::Raw(raw) => serde_json::from_str::<RawList<'_>>(raw.get())
                .map_err(|e| {
                    let message = if e.to_string().starts_with(TOO_MANY_ITEMS) {
                        format!("more than {MAX_LIST_ITEMS}, the most strait reads in a List")
                    } else {
                        "must be a list".into()
                    };
                    fail((String::new(), None), "items", message)
                })?
                .items
                .map(|items| {
                    items
                        .map(|i| i.0)
                        .unwrap_or_default()
                        .into_iter()
                        .map(Doc::Raw)
                        .collect()
                }),
            Doc::Value(_) => doc
                .items()
                .map_err(|message| fail((String::new(), None), "items", message))?,
        };
        // `kind: List` holds any kinds, each item naming its own.
        let implied = (!item_kind.is_empty()).then(|| Implied {
            api_version: api_version.clone(),
            kind: item_kind.to_owned(),
        });
        if let Some(items) = items {
            add_documents(loaded, items, implied.as_ref(), |j| {
                (origin.clone(), format!("{prefix}items[{j}]."))
            });
            return Ok(());
        }
        return Err(fail(
            (String::new(), None),
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
            (format!(" ({kind})"), None)
        } else {
            // The key the object would have once admitted: cluster-scoped
            // kinds lose a namespace given to them.
            let key = ObjectKey::new(
                kind,
                if kind.is_namespaced() { namespace } else { "" },
                name,
            );
            (
                format!(" ({})", ObjectKey::new(kind, namespace, name)),
                Some(Box::new(key)),
            )
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
    // YAML's parser refuses repeated keys itself; JSON's keeps the last.
    if let Doc::Raw(raw) = &doc {
        if let Some((field, key)) = crate::json::duplicate_key(raw.get()) {
            return Err(fail(
                described_doc(),
                &field,
                format!("the key {key:?} is given twice; each key may appear once"),
            ));
        }
    }
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
    object.admit().map_err(|(field, message)| {
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

    fn per_object(text: &str) -> Loaded {
        parse_str_with("test.yaml", text, sniff(text), Admission::PerObject)
            .expect("reading object by object has no error of its own")
    }

    fn names(loaded: &Loaded) -> Vec<(String, usize)> {
        loaded
            .objects
            .iter()
            .map(|(o, origin)| (o.metadata().name.clone().unwrap(), origin.index))
            .collect()
    }

    const GOOD: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}\n";
    const BAD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\nspec: {ports: [{port: 70000}]}\n";

    #[test]
    fn a_refused_object_is_refused_alone_naming_object_and_field() {
        let text = format!("{GOOD}---\n{BAD}---\n{}", GOOD.replace("good", "also"));
        let loaded = per_object(&text);
        assert_eq!(names(&loaded), [("good".into(), 1), ("also".into(), 3)]);
        assert_eq!(loaded.refused.len(), 1);
        let refused = &loaded.refused[0];
        assert_eq!(&*refused.origin.file, "test.yaml");
        assert_eq!(refused.origin.index, 2);
        assert_eq!(
            refused.key,
            Some(ObjectKey::new(Kind::Service, "shop", "bad"))
        );
        let message = refused.error.to_string();
        assert!(
            message.starts_with("test.yaml: document 2 (Service shop/bad): spec.ports[0].port: "),
            "{message}"
        );
        // All or nothing, as before: the same refusal is the error.
        let err = parse(&text).unwrap_err().to_string();
        assert_eq!(err, message);
    }

    #[test]
    fn a_refused_list_item_leaves_the_other_items() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":80}]}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"b"},"spec":{"ports":[{"port":-1}]}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"c"},"spec":{"ports":[{"port":81}]}}]}"#;
        let loaded = per_object(text);
        assert_eq!(names(&loaded), [("a".into(), 1), ("c".into(), 1)]);
        let message = loaded.refused[0].error.to_string();
        assert!(
            message.contains("(Service default/b): items[1].spec.ports[0].port: "),
            "{message}"
        );
    }

    #[test]
    fn a_yaml_document_that_does_not_parse_refuses_itself_only() {
        // Line 7 holds the unclosed flow sequence.
        let text = format!(
            "{GOOD}---\napiVersion: v1\nkind: [Service\n---\n{}",
            GOOD.replace("good", "after")
        );
        let loaded = per_object(&text);
        assert_eq!(names(&loaded), [("good".into(), 1), ("after".into(), 3)]);
        assert_eq!(loaded.refused.len(), 1);
        let refused = &loaded.refused[0];
        assert_eq!((refused.origin.index, &refused.key), (2, &None));
        let message = refused.error.to_string();
        assert!(
            message.starts_with("test.yaml: document 2: (document): not valid YAML: "),
            "{message}"
        );
        assert!(
            message.contains("line 7"),
            "the line of the file: {message}"
        );
        assert!(parse(&text).is_err());
    }

    #[test]
    fn a_file_that_does_not_parse_at_all_is_refused_as_a_whole() {
        for text in [
            "apiVersion: v1\nkind: [Service\n",
            "%YAML 1.2\n---\nkind: [x\n---\na: 1\n",
            "{\"apiVersion\": \"v1\"} {\"kind\": ",
        ] {
            let loaded = per_object(text);
            assert!(loaded.objects.is_empty(), "{text}");
            assert_eq!(loaded.refused.len(), 1, "{text}");
            let refused = &loaded.refused[0];
            assert_eq!((refused.origin.index, &refused.key), (0, &None));
            assert!(
                refused
                    .error
                    .to_string()
                    .starts_with("test.yaml: not valid "),
                "{}",
                refused.error
            );
        }
    }

    #[test]
    fn an_unreadable_file_is_refused_alone_when_reading_object_by_object() {
        let dir = temp_dir("unreadable");
        std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
        // Not UTF-8: listed, but it cannot be read as text.
        std::fs::write(dir.join("b.yaml"), b"\xff\xfe").unwrap();
        std::fs::write(dir.join("c.yaml"), BAD).unwrap();
        let sources = [Source::Path(dir.clone())];
        let options = ReadOptions {
            admission: Admission::PerObject,
            ..ReadOptions::default()
        };
        let loaded = load_paths_with(&sources, &options);
        let strict = load_paths(&sources);
        std::fs::remove_dir_all(&dir).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(names(&loaded), [("good".into(), 1)]);
        let refused: Vec<_> = loaded
            .refused
            .iter()
            .map(|r| {
                (
                    r.origin.file.rsplit('/').next().unwrap().to_owned(),
                    r.origin.index,
                )
            })
            .collect();
        assert_eq!(refused, [("b.yaml".into(), 0), ("c.yaml".into(), 1)]);
        assert!(strict.is_err());
    }

    #[test]
    fn refused_objects_keep_what_was_admitted_before_in_their_place() {
        let service = |name: &str, port: u32| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s-{name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        let read = |file: &str, text: &str| {
            parse_str_with(file, text, Format::Yaml, Admission::PerObject).unwrap()
        };
        let mut before = read(
            "a.yaml",
            &format!(
                "{}---\n{}---\n{}",
                service("x", 80),
                service("y", 80),
                service("z", 80)
            ),
        );
        before.merge(read(
            "b.yaml",
            &format!("{}---\n{}", service("w", 80), service("v", 80)),
        ));
        assert!(before.refused.is_empty());
        let before = before.objects;

        // a.yaml: x updated; y's new version refused; z's document unreadable;
        // a new object n refused. b.yaml: unreadable as a whole.
        let mut now = read(
            "a.yaml",
            &format!(
                "{}---\n{}---\nkind: [z\n---\n{}",
                service("x", 81),
                service("y", 70000),
                service("n", 70000)
            ),
        );
        now.merge(read("b.yaml", "kind: [\n"));
        assert_eq!(now.refused.len(), 4);
        let kept = now.keep_refused(&before);
        let key = |name: &str| ObjectKey::new(Kind::Service, "default", format!("s-{name}"));
        assert_eq!(
            kept,
            [
                vec![key("y")],
                vec![key("z")],
                vec![],
                vec![key("w"), key("v")]
            ]
        );
        let port = |name: &str| -> Option<i32> {
            now.objects.iter().find_map(|(o, _)| match o {
                Object::Service(s) if s.metadata.name.as_deref() == Some(&format!("s-{name}")) => {
                    Some(s.spec.as_ref()?.ports.as_ref()?[0].port)
                }
                _ => None,
            })
        };
        assert_eq!(
            ["x", "y", "z", "n", "w", "v"].map(port),
            [Some(81), Some(80), Some(80), None, Some(80), Some(80)]
        );

        // What is read now under a key is never doubled by what was kept.
        let mut moved = read("a.yaml", &format!("{}---\nkind: [\n", service("y", 90)));
        assert_eq!(moved.keep_refused(&before), [Vec::<ObjectKey>::new()]);
        assert_eq!(moved.objects.len(), 1);
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
        let refusals = |c: Collector| -> Vec<_> {
            c.loaded
                .refused
                .into_iter()
                .map(|r| (r.origin.index, r.key, r.error.to_string()))
                .collect()
        };
        let whole = refusals(read_yaml(&bad).unwrap());
        let parts = refusals(read_yaml_in_parts(&bad, 4).unwrap());
        assert_eq!(whole.len(), 2);
        assert_eq!(parts, whole);

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

    /// Nine levels of nine aliases of a 4 KB string: 1.6 GB once expanded.
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

    #[test]
    fn an_alias_bomb_is_refused_quickly_naming_file_and_document() {
        let text = alias_bomb();
        assert!(text.len() < 5000);
        let started = std::time::Instant::now();
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.starts_with("test.yaml: document 2: line "), "{err}");
        assert!(err.contains("YAML aliases may repeat at most"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn an_alias_bomb_read_object_by_object_refuses_its_document_only() {
        let text = format!("{}---\n{GOOD}", alias_bomb());
        let started = std::time::Instant::now();
        let loaded = per_object(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let kinds: Vec<_> = loaded
            .objects
            .iter()
            .map(|(o, i)| (o.kind(), i.index))
            .collect();
        assert_eq!(kinds, [(Kind::Namespace, 1), (Kind::Service, 3)]);
        assert_eq!(loaded.refused.len(), 1);
        let message = loaded.refused[0].error.to_string();
        assert!(
            message.starts_with("test.yaml: document 2: (document): line ")
                && message.contains("refused: the YAML expands past what strait reads"),
            "{message}"
        );
    }

    #[test]
    fn documents_read_apart_share_the_files_alias_budget() {
        // A syntax error first makes the file be read document by document;
        // each document then repeats 3,000 nodes: 3 million in all if each
        // had the whole file's budget, more than a file may make.
        let mut text = String::from("kind: [\n");
        let doc = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  a: &a [x,x,x,x,x,x,x,x,x,x]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: [*c,*c,*c]\n";
        for _ in 0..1000 {
            text.push_str(doc);
        }
        let started = std::time::Instant::now();
        let loaded = per_object(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Every document is refused: its share of the budget is too small.
        assert_eq!(loaded.refused.len(), 1001);
        let message = loaded.refused[1].error.to_string();
        assert!(
            message.contains("expands past what strait reads"),
            "{message}"
        );
        // The same document alone in a file is read.
        assert!(per_object(&doc[4..]).refused.is_empty());
    }

    #[test]
    fn anchors_and_aliases_within_reason_still_work() {
        let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
        text.push_str("- &svc {apiVersion: v1, kind: Service, metadata: {name: s0, labels: &l {app: web, tier: front}}, spec: {selector: *l, ports: [{port: 80}]}}\n");
        for i in 1..300 {
            text.push_str(&format!(
                "- {{apiVersion: v1, kind: Service, metadata: {{name: s{i}, labels: *l}}, spec: {{selector: *l, ports: [{{port: 80}}]}}}}\n"
            ));
        }
        assert_eq!(parse(&text).unwrap().objects.len(), 300);
    }

    #[test]
    fn document_numbers_of_lines_leave_out_empty_documents() {
        let text = "# c\n---\n---\na: 1\n---\n\nb: 2\nc: 3\n";
        assert_eq!(document_at_line(text, 4), 1);
        assert_eq!(document_at_line(text, 8), 2);
    }

    #[test]
    fn json_repeated_keys_are_refused_with_key_and_path() {
        let err = parse(r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","labels":{"app":"a","app":"b"}},"spec":{"ports":[{"port":80}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("document 1 (Service default/web): metadata.labels.app: the key \"app\" is given twice"),
            "{err}"
        );
        let err = parse(r#"{"apiVersion":"v1","kind":"ServiceList","items":[{"metadata":{"name":"web"},"spec":{"ports":[{"port":80,"port":81}]}}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(Service default/web): items[0].spec.ports[0].port: the key \"port\" is given twice"),
            "{err}"
        );
        // YAML refuses them too, in the parser.
        assert!(parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nmetadata: {name: b}\n"
        )
        .is_err());
    }

    #[test]
    fn typed_list_items_take_their_kind_from_the_list() {
        // As `kubectl cluster-info dump` writes them.
        let text = r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[
              {"metadata":{"name":"web","namespace":"shop"},"spec":{"ports":[{"port":80}]}}]}
            {"kind":"DeploymentList","apiVersion":"apps/v1","items":[
              {"metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c"}]}}}}]}
            {"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","items":[
              {"metadata":{"name":"web-abc","namespace":"shop"},"addressType":"IPv4","endpoints":[]}]}
            {"kind":"PodList","apiVersion":"v1","items":null}
            {"kind":"List","apiVersion":"v1","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}]}"#;
        let loaded = parse(text).unwrap();
        let kinds: Vec<_> = loaded
            .objects
            .iter()
            .map(|(o, _)| (o.kind(), o.metadata().name.clone().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Kind::Service, "web".to_owned()),
                (Kind::Deployment, "d".to_owned()),
                (Kind::EndpointSlice, "web-abc".to_owned()),
                (Kind::Namespace, "shop".to_owned()),
            ]
        );
        // The same in YAML, and `items: null` there too.
        let yaml = "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: web}\n  spec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: PodList\nitems: null\n";
        assert_eq!(parse(yaml).unwrap().objects.len(), 1);
        // `kind: List` implies nothing: its items name their kind.
        let err = parse(r#"{"kind":"List","apiVersion":"v1","items":[{"metadata":{"name":"x"}}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("items[0].kind: missing"), "{err}");
        // An item of another kind keeps its own, and needs its apiVersion.
        let err = parse(r#"{"kind":"ServiceList","apiVersion":"v1","items":[{"kind":"Deployment","metadata":{"name":"x"}}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("items[0].apiVersion: missing"), "{err}");
    }

    #[test]
    fn integral_numbers_in_exponent_notation_are_integers() {
        let pod = |priority: &str| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p"}},"spec":{{"priority":{priority},"containers":[{{"name":"c"}}]}}}}"#
            )
        };
        let priority = |loaded: Loaded| match &loaded.objects[0].0 {
            Object::Pod(p) => p.to_pod().unwrap().spec.and_then(|s| s.priority),
            _ => None,
        };
        assert_eq!(priority(parse(&pod("2e+09")).unwrap()), Some(2_000_000_000));
        assert_eq!(priority(parse(&pod("1.0")).unwrap()), Some(1));
        let err = parse(&pod("1.5")).unwrap_err().to_string();
        assert!(err.contains("spec.priority: "), "{err}");
        assert!(parse(&pod("1e300")).is_err());
        let yaml = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus:\n  images:\n  - names: [a]\n    sizeBytes: 1.194914199e+09\n";
        match &parse(yaml).unwrap().objects[0].0 {
            Object::Node(n) => assert_eq!(
                n.status.as_ref().unwrap().images.as_ref().unwrap()[0].size_bytes,
                Some(1_194_914_199)
            ),
            other => panic!("{other:?}"),
        }
        let yaml =
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 8.0e+1}]}\n";
        assert!(parse(yaml).unwrap().objects.len() == 1);
        let yaml =
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80.5}]}\n";
        assert!(parse(yaml)
            .unwrap_err()
            .to_string()
            .contains("spec.ports[0].port"));
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strait-model-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn directories_report_what_they_skip_and_recurse_on_request() {
        let dir = temp_dir("walk");
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.join("b.yaml"), ns("b")).unwrap();
        std::fs::write(dir.join("notes.txt"), "hello").unwrap();
        std::fs::create_dir_all(dir.join("a/deeper")).unwrap();
        std::fs::write(
            dir.join("a/x.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ax"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("a/deeper/y.yml"), ns("ay")).unwrap();
        std::fs::write(dir.join("c.yaml"), ns("c")).unwrap();
        // A link back up the tree is walked once.
        std::os::unix::fs::symlink(&dir, dir.join("a/deeper/loop")).unwrap();
        let sources = [Source::Path(dir.clone())];
        let names = |l: &Loaded| -> Vec<String> {
            l.objects
                .iter()
                .map(|(o, _)| o.metadata().name.clone().unwrap())
                .collect()
        };
        let flat = load_paths(&sources).unwrap();
        assert_eq!(names(&flat), ["b", "c"]);
        assert_eq!(
            flat.skipped,
            [
                Skipped {
                    path: dir.join("a"),
                    reason: SkipReason::Directory
                },
                Skipped {
                    path: dir.join("notes.txt"),
                    reason: SkipReason::NotAManifest
                },
            ]
        );
        let options = ReadOptions {
            recursive: true,
            ..ReadOptions::default()
        };
        let deep = load_paths_with(&sources, &options).unwrap();
        assert_eq!(names(&deep), ["ay", "ax", "b", "c"]);
        assert_eq!(deep.skipped.len(), 1, "{:?}", deep.skipped);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn input_past_the_size_limit_is_refused_before_it_is_read() {
        let dir = temp_dir("size");
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.join("a.yaml"), ns("a")).unwrap();
        std::fs::write(dir.join("b.yaml"), ns("b")).unwrap();
        let one = ns("a").len() as u64;
        let sources = [Source::Path(dir.clone())];
        let fits = ReadOptions {
            max_bytes: 2 * one,
            ..ReadOptions::default()
        };
        assert_eq!(load_paths_with(&sources, &fits).unwrap().objects.len(), 2);
        let tight = ReadOptions {
            max_bytes: 2 * one - 1,
            ..ReadOptions::default()
        };
        let err = load_paths_with(&sources, &tight).unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err:?}");
        assert!(
            err.to_string().contains("b.yaml: the input is larger than"),
            "{err}"
        );
        // A file that never ends is read no further than the limit.
        let endless = [Source::Path("/dev/zero".into())];
        let err = load_paths_with(&endless, &tight).unwrap_err().to_string();
        assert!(
            err.starts_with("/dev/zero: the input is larger than"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nesting_past_the_parsers_limits_is_an_error_not_a_crash() {
        // With the main thread's stack, as strait reads.
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(nesting_past_the_limits)
            .unwrap()
            .join()
            .unwrap();
    }

    fn nesting_past_the_limits() {
        let deep = 100_000;
        // JSON: in a kind strait reads, in one it skips, and as a List item.
        let nested = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
        for text in [
            format!(
                r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"a","x":{nested}}}}}"#
            ),
            format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"a"}},"data":{nested}}}"#
            ),
            format!(
                r#"{{"apiVersion":"v1","kind":"List","items":[{{"apiVersion":"v1","kind":"Namespace","x":{nested}}}]}}"#
            ),
        ] {
            let _ = parse(&text);
        }
        // YAML: flow and block nesting.
        assert!(parse(&format!("a: {nested}\n")).is_err());
        let mut block = String::new();
        for i in 0..1000 {
            block.push_str(&" ".repeat(i));
            block.push_str("a:\n");
        }
        let err = parse(&block).unwrap_err();
        assert!(
            matches!(err, Error::Limit { .. } | Error::Syntax { .. }),
            "{err}"
        );
    }

    #[test]
    fn many_empty_json_documents_fail_at_the_first() {
        let text = "{}".repeat(200_000);
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("test.yaml: document 1: kind: missing"),
            "{err}"
        );
    }
}
