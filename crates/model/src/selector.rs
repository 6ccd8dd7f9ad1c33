//! Label selectors: the `matchLabels` + `matchExpressions` form
//! (Deployments, NetworkPolicies) and the plain map form (Services).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error(
        "matchExpressions[{index}]: operator {operator:?} is not In, NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator { index: usize, operator: String },
    #[error("matchExpressions[{index}]: operator {operator} needs at least one value")]
    NeedsValues { index: usize, operator: String },
    #[error("matchExpressions[{index}]: operator {operator} takes no values")]
    TakesNoValues { index: usize, operator: String },
    #[error("label key {key:?} is not valid: {why}")]
    BadKey { key: String, why: &'static str },
    #[error("label value {value:?} is not valid: {why}")]
    BadValue { value: String, why: &'static str },
}

/// One condition on one label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            // NotIn also matches objects without the label, as in Kubernetes.
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed selector: all requirements must hold. An empty selector matches
/// everything (what `podSelector: {}` means); whether a *missing* selector
/// means "nothing" is for the caller to decide, as it differs by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The map form of `Service.spec.selector`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::with_capacity(map.len());
        for (k, v) in map {
            check_key(k)?;
            check_value(v)?;
            requirements.push(Requirement::In(k.clone(), BTreeSet::from([v.clone()])));
        }
        Ok(Selector { requirements })
    }

    pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut s = Selector::from_map(selector.match_labels.as_ref().unwrap_or(&BTreeMap::new()))?;
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            check_key(&expr.key)?;
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            for v in &values {
                check_value(v)?;
            }
            let operator = expr.operator.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::NeedsValues { index, operator })
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::TakesNoValues { index, operator })
                }
                "In" => Requirement::In(expr.key.clone(), values),
                "NotIn" => Requirement::NotIn(expr.key.clone(), values),
                "Exists" => Requirement::Exists(expr.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(expr.key.clone()),
                _ => return Err(SelectorError::UnknownOperator { index, operator }),
            };
            s.requirements.push(requirement);
        }
        Ok(s)
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// `matches` for an object whose labels may be absent.
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(labels) => self.matches(labels),
            None => self.matches(&BTreeMap::new()),
        }
    }

    /// One `key=value` that every match must carry, if there is one: what an
    /// index lookup can narrow the candidates with.
    pub fn equality(&self) -> Option<(&str, &str)> {
        self.requirements.iter().find_map(|r| match r {
            Requirement::In(k, values) if values.len() == 1 => {
                Some((k.as_str(), values.iter().next()?.as_str()))
            }
            _ => None,
        })
    }
}

/// `[prefix/]name`: name up to 63 characters of alphanumerics, `-`, `_`, `.`
/// starting and ending alphanumeric; prefix a DNS subdomain.
fn check_key(key: &str) -> Result<(), SelectorError> {
    let bad = |why| SelectorError::BadKey {
        key: key.to_owned(),
        why,
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        crate::names::dns_subdomain(p).map_err(|_| bad("the prefix must be a DNS subdomain"))?;
    }
    if name.is_empty() || name.len() > 63 || !qualified(name) {
        return Err(bad(
            "a name of at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || (value.len() <= 63 && qualified(value)) {
        Ok(())
    } else {
        Err(SelectorError::BadValue {
            value: value.to_owned(),
            why: "at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
        })
    }
}

fn qualified(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn map_form_requires_every_pair() {
        let s = Selector::from_map(&labels(&[("app", "web"), ("tier", "front")])).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "front")])));
    }

    #[test]
    fn expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("env", "In", &["prod", "staging"]),
                expr("canary", "DoesNotExist", &[]),
                expr("zone", "NotIn", &["b"]),
                expr("team", "Exists", &[]),
            ]),
        };
        let s = Selector::from_label_selector(&sel).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "x")])));
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("env", "staging"),
            ("team", "x"),
            ("zone", "a")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "x")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "x"),
            ("canary", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "x"),
            ("zone", "b")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert_eq!(s.equality(), Some(("app", "web")));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::from_label_selector(&LabelSelector::default()).unwrap();
        assert!(s.is_empty());
        assert!(s.matches_opt(None));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn invalid_expressions_are_errors() {
        let bad = |e| {
            Selector::from_label_selector(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![e]),
            })
        };
        assert!(matches!(
            bad(expr("a", "Equals", &["x"])),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(matches!(
            bad(expr("a", "In", &[])),
            Err(SelectorError::NeedsValues { .. })
        ));
        assert!(matches!(
            bad(expr("a", "Exists", &["x"])),
            Err(SelectorError::TakesNoValues { .. })
        ));
        assert!(matches!(
            bad(expr("-a", "Exists", &[])),
            Err(SelectorError::BadKey { .. })
        ));
        assert!(Selector::from_map(&labels(&[("app", "bad value")])).is_err());
        assert!(Selector::from_map(&labels(&[("example.com/app", "")])).is_ok());
    }
}
