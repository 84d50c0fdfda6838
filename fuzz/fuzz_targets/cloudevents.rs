#![no_main]
use libfuzzer_sys::fuzz_target;

// POST /v1/cloudevents: a payload logger's event, binary or structured. The
// first byte picks the mode and the type; the rest is split at 0xFF bytes
// into ce-id, ce-source, ce-metadata, ce-inferenceservicename and the body.
// An event that parses is paired with itself as the other half and made a
// sample, as the receiver does.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(5, |b| *b == 0xff);
    let mut field = || parts.next().unwrap_or(&[]);
    let (id, source, metadata, isvc, body) = (field(), field(), field(), field(), field());
    let mut headers = http::HeaderMap::new();
    let mut set = |name: &'static str, value: &[u8]| {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    };
    if mode & 1 == 1 {
        set("content-type", b"application/cloudevents+json");
    } else {
        set("content-type", b"application/json");
        set("ce-specversion", if mode & 2 == 0 { b"1.0" } else { b"0.2" });
        set("ce-id", id);
        set("ce-source", source);
        set("ce-metadata", metadata);
        set("ce-inferenceservicename", isvc);
        let kind: &[u8] = match (mode >> 2) & 3 {
            0 => b"org.kubeflow.serving.inference.request",
            1 => b"org.kubeflow.serving.inference.response",
            _ => b"dev.example.other",
        };
        set("ce-type", kind);
    }
    if let Ok(event) = modelwatch::cloudevents::parse(&headers, bytes::Bytes::copy_from_slice(body)) {
        let _ = modelwatch::cloudevents::path_for(&event);
        let _ = modelwatch::cloudevents::sample(
            event.clone(),
            event,
            std::time::SystemTime::now(),
            1024,
        );
    }
});
