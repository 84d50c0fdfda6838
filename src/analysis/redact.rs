//! Redaction of text before it leaves the process: built-in patterns for
//! e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IP
//! addresses and bearer tokens, plus the user's own regular expressions.

use std::borrow::Cow;

use regex::Regex;

/// One pattern and the label that replaces what it matches (`[REDACTED:label]`).
struct Pattern {
    regex: Regex,
    label: String,
    /// Extra check on a match (the Luhn sum for card numbers).
    check: Option<fn(&str) -> bool>,
}

/// Applies every pattern in order.
pub struct Redactor {
    patterns: Vec<Pattern>,
}

/// A bad user pattern: its index and the regex error.
#[derive(Debug, thiserror::Error)]
#[error("payload_logs.redact_patterns[{index}] is not a valid regular expression: {message}")]
pub struct PatternError {
    pub index: usize,
    pub message: String,
}

fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                *d
            }
        })
        .sum();
    sum % 10 == 0
}

const BUILTIN: &[(&str, &str)] = &[
    ("bearer_token", r"(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}"),
    (
        "email",
        r"(?i)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}",
    ),
    ("card_number", r"\b(?:\d[ -]?){12,18}\d\b"),
    (
        "ip_address",
        r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    ),
    (
        "ip_address",
        r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4}\b",
    ),
    (
        "phone",
        r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\b\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}\b",
    ),
];

impl Redactor {
    /// The built-in patterns (when `builtin`), then the user's.
    pub fn new(builtin: bool, user: &[String]) -> Result<Redactor, PatternError> {
        let mut patterns = Vec::new();
        if builtin {
            for (label, re) in BUILTIN {
                patterns.push(Pattern {
                    regex: Regex::new(re).expect("built-in pattern"),
                    label: label.to_string(),
                    check: (*label == "card_number").then_some(luhn as fn(&str) -> bool),
                });
            }
        }
        for (index, re) in user.iter().enumerate() {
            patterns.push(Pattern {
                regex: Regex::new(re).map_err(|e| PatternError {
                    index,
                    message: e.to_string(),
                })?,
                label: "custom".to_string(),
                check: None,
            });
        }
        Ok(Redactor { patterns })
    }

    /// `text` with every match replaced by `[REDACTED:label]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for p in &self.patterns {
            if !p.regex.is_match(&out) {
                continue;
            }
            let replaced = p
                .regex
                .replace_all(&out, |caps: &regex::Captures<'_>| {
                    let m = caps.get(0).map(|m| m.as_str()).unwrap_or("");
                    match p.check {
                        Some(check) if !check(m) => m.to_string(),
                        _ => format!("[REDACTED:{}]", p.label),
                    }
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realistic_payloads() {
        let r = Redactor::new(true, &["(?i)acct-\\d{6}".to_string()]).unwrap();
        for (input, want) in [
            (
                "Contact jane.doe+ml@example.co.uk or J.Smith@corp-mail.example.com about the refund.",
                "Contact [REDACTED:email] or [REDACTED:email] about the refund.",
            ),
            ("Card 4111 1111 1111 1111 exp 12/29", "Card [REDACTED:card_number] exp 12/29"),
            ("order 1234567890123 shipped", "order 1234567890123 shipped"), // fails Luhn: kept
            ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "Authorization: [REDACTED:bearer_token]"),
            ("client 10.12.0.7 and fe80:0:0:0:200:f8ff:fe21:67cf", "client [REDACTED:ip_address] and [REDACTED:ip_address]"),
            ("call +1 415-555-0132 or (030) 1234 5678", "call [REDACTED:phone] or [REDACTED:phone]"),
            ("account ACCT-123456 is late", "account [REDACTED:custom] is late"),
            ("temperature 0.7, max tokens 256", "temperature 0.7, max tokens 256"),
        ] {
            assert_eq!(r.redact(input), want, "{input}");
        }
    }

    #[test]
    fn bad_user_pattern_names_its_index() {
        let e = Redactor::new(false, &["ok".into(), "(".into()])
            .err()
            .unwrap();
        assert_eq!(e.index, 1);
    }
}
