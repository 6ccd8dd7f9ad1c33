//! JSON text kept instead of a typed object, written back out through any
//! serde serializer (pretty JSON, YAML) exactly as the typed object would be.
//!
//! Why: a typed `PodSpec` with one container takes about 4 KB before its
//! strings; its compact JSON about 150 bytes. A snapshot of a hundred
//! thousand pods keeps the text and re-reads it only to print it.

use std::borrow::Cow;
use std::fmt;

use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde::Deserialize;

/// Compact JSON text, as `serde_json::to_string` writes a value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct JsonText(Box<str>);

impl JsonText {
    pub(crate) fn of<T: Serialize>(value: &T) -> Result<JsonText, serde_json::Error> {
        serde_json::to_string(value).map(|text| JsonText(text.into_boxed_str()))
    }

    pub(crate) fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes the value the text holds. Objects and arrays are split into
/// their members by a scan of the text, with no allocation but the list of
/// members; their lengths are passed on exactly, as a typed value does,
/// because the YAML writer lays out maps by them.
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Member(&self.0).serialize(s)
    }
}

/// One complete JSON value inside a `JsonText`.
struct Member<'a>(&'a str);

impl Serialize for Member<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0;
        let malformed = || S::Error::custom(format_args!("stored JSON is malformed: {text:.80}"));
        match text.as_bytes().first() {
            Some(b'{') => {
                let members = members(text, b'}').ok_or_else(malformed)?;
                let mut map = s.serialize_map(Some(members.len()))?;
                for member in members {
                    let key_end = value_end(member, 0).ok_or_else(malformed)?;
                    let (key, value) = (&member[..key_end], &member[key_end..]);
                    let value = value.strip_prefix(':').ok_or_else(malformed)?;
                    map.serialize_entry(&*string(key).ok_or_else(malformed)?, &Member(value))?;
                }
                map.end()
            }
            Some(b'[') => {
                let items = members(text, b']').ok_or_else(malformed)?;
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Member(item))?;
                }
                seq.end()
            }
            Some(b'"') => s.serialize_str(&string(text).ok_or_else(malformed)?),
            _ => match text {
                "null" => s.serialize_unit(),
                "true" => s.serialize_bool(true),
                "false" => s.serialize_bool(false),
                // The number types serde_json reads a number as.
                _ if text.contains(['.', 'e', 'E']) => {
                    s.serialize_f64(text.parse().map_err(|_| malformed())?)
                }
                _ if text.starts_with('-') => match text.parse::<i64>() {
                    Ok(n) => s.serialize_i64(n),
                    Err(_) => s.serialize_f64(text.parse().map_err(|_| malformed())?),
                },
                _ => match text.parse::<u64>() {
                    Ok(n) => s.serialize_u64(n),
                    Err(_) => s.serialize_f64(text.parse().map_err(|_| malformed())?),
                },
            },
        }
    }
}

/// The members of the object or array `text` (which ends with `close`):
/// `"key":value` or `value`, in order.
fn members(text: &str, close: u8) -> Option<Vec<&str>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 1;
    if bytes.get(at) == Some(&close) {
        return (at + 1 == bytes.len()).then_some(out);
    }
    loop {
        let mut end = value_end(text, at)?;
        if close == b'}' {
            // `"key":value`
            if bytes.get(end) != Some(&b':') {
                return None;
            }
            end = value_end(text, end + 1)?;
        }
        out.push(text.get(at..end)?);
        match bytes.get(end) {
            Some(b',') => at = end + 1,
            Some(c) if *c == close && end + 1 == bytes.len() => return Some(out),
            _ => return None,
        }
    }
}

/// Where the value that starts at `at` ends (exclusive). Compact text has no
/// whitespace, so a scalar ends at the next delimiter.
fn value_end(text: &str, at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => Some(
            bytes[at..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b':'))
                .map_or(bytes.len(), |n| at + n),
        ),
    }
}

/// End (exclusive) of the string whose opening quote is at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A JSON string's value: borrowed unless it has escapes.
fn string(quoted: &str) -> Option<Cow<'_, str>> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The first key that an object of the JSON text `text` (valid JSON, as
/// the parser has already read it) repeats, as the field path to it
/// (`metadata.labels.app`) and the key. JSON parsers keep the last value of a
/// repeated key, so two values of one field would pass unseen; the API server
/// refuses them. One scan of the bytes, allocating only for large objects
/// and escaped keys.
pub(crate) fn duplicate_key(text: &str) -> Option<(String, String)> {
    enum Frame {
        /// Keys of this object are `keys[from..]`; `current` is the index in
        /// `keys` of the key whose value is being read.
        Object {
            from: usize,
            current: usize,
        },
        Array {
            index: usize,
        },
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    // (start, end) of each key's text between its quotes, for open objects.
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i)?;
                if expect_key {
                    keys.push((i + 1, end - 1));
                    if let Some(Frame::Object { current, .. }) = stack.last_mut() {
                        *current = keys.len() - 1;
                    }
                    expect_key = false;
                }
                i = end;
                continue;
            }
            b'{' => {
                stack.push(Frame::Object {
                    from: keys.len(),
                    current: usize::MAX,
                });
                expect_key = true;
            }
            b'[' => stack.push(Frame::Array { index: 0 }),
            b',' => match stack.last_mut() {
                Some(Frame::Object { .. }) => expect_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'}' => {
                let Some(Frame::Object { from, .. }) = stack.pop() else {
                    return None;
                };
                if let Some(key) = repeated(text, &keys[from..]) {
                    let mut path = String::new();
                    for frame in &stack {
                        match frame {
                            Frame::Object { current, .. } => {
                                let (s, e) = keys[*current];
                                if !path.is_empty() {
                                    path.push('.');
                                }
                                path.push_str(&key_text(text, s, e));
                            }
                            Frame::Array { index } => path.push_str(&format!("[{index}]")),
                        }
                    }
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key);
                    return Some((path, key));
                }
                keys.truncate(from);
                expect_key = false;
            }
            b']' => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A key's text, unescaped.
fn key_text(text: &str, start: usize, end: usize) -> Cow<'_, str> {
    let raw = &text[start..end];
    if raw.contains('\\') {
        serde_json::from_str::<String>(&text[start - 1..end + 1])
            .map_or(Cow::Borrowed(raw), Cow::Owned)
    } else {
        Cow::Borrowed(raw)
    }
}

/// The first of `keys` (spans of `text`) that an earlier one repeats.
fn repeated(text: &str, keys: &[(usize, usize)]) -> Option<String> {
    let plain = |&(s, e): &(usize, usize)| !text[s..e].contains('\\');
    if keys.len() <= 16 && keys.iter().all(plain) {
        // Most objects: a few keys, compared as they are.
        for (i, &(s, e)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|&(s2, e2)| text[s2..e2] == text[s..e]) {
                return Some(text[s..e].to_owned());
            }
        }
        return None;
    }
    let mut sorted: Vec<(Cow<'_, str>, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| (key_text(text, s, e), i))
        .collect();
    sorted.sort_unstable();
    // Of the repeated keys, the one whose second appearance comes first.
    sorted
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .min_by_key(|w| w[1].1)
        .map(|w| w[1].0.clone().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, EmptyDirVolumeSource, PodSpec, Volume,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn spec() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "web \"quoted\" \u{e9}".into(),
                args: Some(vec![]),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            node_selector: Some([("zone\\a".to_owned(), String::new())].into()),
            termination_grace_period_seconds: Some(-1),
            volumes: Some(vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("1Gi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            host_network: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn prints_like_the_typed_value_in_json_and_yaml() {
        let typed = spec();
        let text = JsonText::of(&typed).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&text).unwrap(),
            serde_json::to_string_pretty(&typed).unwrap()
        );
        assert_eq!(
            serde_saphyr::to_string(&text).unwrap(),
            serde_saphyr::to_string(&typed).unwrap()
        );
        assert_eq!(text.decode::<PodSpec>().unwrap(), typed);
    }

    #[test]
    fn scalars_escapes_and_nesting_survive() {
        let value = serde_json::json!({
            "numbers": [0, -3, 1.5, -2.5e-8, u64::MAX, i64::MIN],
            "flags": [true, false, null],
            "text": ["", "tab\tquote\"slash\\", "\u{1F600}", "{[,:]}"],
            "nested": {"a": {"b": [[], {}, [{}]]}},
            "key \"escaped\"": {},
        });
        let text = JsonText::of(&value).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&text).unwrap(),
            serde_json::to_string_pretty(&value).unwrap()
        );
        assert_eq!(
            serde_saphyr::to_string(&text).unwrap(),
            serde_saphyr::to_string(&value).unwrap()
        );
    }

    #[test]
    fn repeated_keys_are_found_with_their_path() {
        let found = |t: &str| duplicate_key(t);
        assert_eq!(found(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#), None);
        assert_eq!(found(r#"[{"a":1},{"a":2}]"#), None);
        assert_eq!(
            found(r#"{"metadata":{"labels":{"app":"x", "tier":"y","app":"z"}}}"#),
            Some(("metadata.labels.app".into(), "app".into()))
        );
        assert_eq!(
            found(r#"{"spec":{"ports":[{"port":80},{"port":81,"name":"a","port":82}]}}"#),
            Some(("spec.ports[1].port".into(), "port".into()))
        );
        // Spelled differently, the same key.
        assert_eq!(
            found(r#" { "k" : 1 , "\u006b" : 2 } "#),
            Some(("k".into(), "k".into()))
        );
        // Large objects are sorted, not compared pairwise.
        let many: Vec<String> = (0..100).map(|i| format!(r#""k{}":{i}"#, i % 60)).collect();
        let text = format!("{{{}}}", many.join(","));
        assert_eq!(found(&text), Some(("k0".into(), "k0".into())));
        // Keys inside strings are text, not keys.
        assert_eq!(found(r#"{"a":"{\"a\":1,\"a\":2}","b":"}"}"#), None);
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        for bad in [
            "{",
            "[1,",
            "{\"a\"}",
            "{\"a\":1]",
            "\"open",
            "nope",
            "[1]]",
            "",
        ] {
            let text = JsonText(bad.into());
            assert!(serde_json::to_string(&text).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_maps_and_lists_keep_their_layout() {
        let typed = PodSpec {
            volumes: Some(vec![Volume {
                name: "v".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            node_selector: Some(Default::default()),
            ..Default::default()
        };
        let text = JsonText::of(&typed).unwrap();
        assert_eq!(
            serde_saphyr::to_string(&text).unwrap(),
            serde_saphyr::to_string(&typed).unwrap()
        );
        assert_eq!(
            serde_json::to_string_pretty(&text).unwrap(),
            serde_json::to_string_pretty(&typed).unwrap()
        );
    }
}
