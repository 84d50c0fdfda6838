//! Server-sent events: split a captured stream into the `data` of each event.

/// The events of a captured SSE body.
#[derive(Debug, Default, PartialEq)]
pub struct Events<'a> {
    /// Each event's data lines joined with `\n`, as bytes (UTF-8 is checked later).
    pub data: Vec<std::borrow::Cow<'a, [u8]>>,
    /// Bytes after the last complete event (a stream cut off mid-event).
    pub trailing: usize,
}

/// Splits `body` into events. Lines may end with `\n` or `\r\n`; an event ends
/// at a blank line. Comment lines (`:`) and other fields are skipped.
pub fn parse(body: &[u8]) -> Events<'_> {
    let mut events = Events::default();
    let mut current: Option<std::borrow::Cow<'_, [u8]>> = None;
    let mut pos = 0;
    let mut event_start = 0;
    while pos < body.len() {
        let Some(nl) = memchr::memchr(b'\n', &body[pos..]) else {
            break;
        };
        let mut line = &body[pos..pos + nl];
        pos += nl + 1;
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.is_empty() {
            if let Some(d) = current.take() {
                events.data.push(d);
            }
            event_start = pos;
            continue;
        }
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            current = Some(match current.take() {
                None => std::borrow::Cow::Borrowed(rest),
                Some(prev) => {
                    let mut v = prev.into_owned();
                    v.push(b'\n');
                    v.extend_from_slice(rest);
                    std::borrow::Cow::Owned(v)
                }
            });
        }
    }
    events.trailing = body.len() - event_start;
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_lines_and_leftovers() {
        let body = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: x\r\ndata: y\r\n\r\nevent: e\ndata: [DONE]\n\ndata: {\"cut";
        let e = parse(body);
        let data: Vec<&[u8]> = e.data.iter().map(|d| d.as_ref()).collect();
        assert_eq!(data, vec![&b"{\"a\":1}"[..], b"x\ny", b"[DONE]"]);
        assert_eq!(e.trailing, b"data: {\"cut".len());
    }
}
