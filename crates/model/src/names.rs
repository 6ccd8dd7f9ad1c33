//! The name rules of Kubernetes (RFC 1123 and RFC 1035 labels, DNS
//! subdomains): the lowest layer of the model, used by admission and by
//! label selectors alike.

/// RFC 1123 label: what Service and Namespace names must be.
pub fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.len() > 63 {
        return Err("is longer than 63 characters");
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err("must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character")
    }
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter.
pub fn dns1035_label(s: &str) -> Result<(), &'static str> {
    dns_label(s)?;
    if s.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err("must start with a lower case letter, and consist of lower case alphanumeric characters or '-' ending with an alphanumeric character")
    }
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for part in s.split('.') {
        dns_label(part).map_err(|_| {
            "must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
        })?;
    }
    Ok(())
}
