//! Small text helpers every stage uses for what it shows people: one-line messages, error chains,
//! bounded excerpts. Kept below the stages so none of them imports another stage's helpers.

/// Log lines and summaries are one line each; AWS messages and HTTP bodies sometimes carry newlines.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error and its sources, each once (wrappers often repeat their source's text), joined by `: `.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// At most `max` bytes of `s` (trimmed, cut at a character boundary, `…` where cut), on one line.
pub fn excerpt(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_bounded_line() {
        assert_eq!(excerpt("  a\nb  ", 10), "a b");
        assert_eq!(excerpt("ééé", 3), "é…");
    }

    #[test]
    fn chains_skip_repeats() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E("send failed: refused", Some(Box::new(E("refused", None))));
        assert_eq!(error_chain(&e), "send failed: refused");
    }
}
