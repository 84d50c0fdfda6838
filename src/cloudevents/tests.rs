use super::*;

fn binary(id: &str, kind: &str, body: &str) -> (HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-type", kind),
        ("ce-source", "http://localhost:9081/"),
        ("ce-time", "2026-11-30T12:00:00.000000001Z"),
        ("ce-inferenceservicename", "bc"),
        ("ce-namespace", "models"),
        ("ce-component", "predictor"),
        ("ce-endpoint", ""),
        ("ce-metadata", r#"{"X-Tenant":["acme"]}"#),
        ("content-type", "application/json"),
    ] {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (h, Bytes::from(body.to_string()))
}

const V2_REQ: &str =
    r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1.5,2.5]}]}"#;
const V2_RESP: &str = r#"{"model_name":"bc","outputs":[{"name":"predict","shape":[1],"datatype":"INT64","data":[1]}]}"#;

#[test]
fn binary_and_structured_events_read_the_same() {
    let (h, b) = binary("e1", REQUEST_TYPE, V2_REQ);
    let e = parse(&h, b).unwrap();
    assert_eq!(e.id, "e1");
    assert_eq!(e.half, Half::Request);
    assert_eq!(e.inference_service.as_deref(), Some("bc"));
    assert_eq!(e.namespace.as_deref(), Some("models"));
    assert_eq!(
        e.metadata,
        vec![("X-Tenant".to_string(), "acme".to_string())]
    );
    assert_eq!(path_for(&e), "/v2/models/bc/infer");

    let structured = serde_json::json!({
        "specversion": "1.0", "id": "e1", "type": REQUEST_TYPE, "source": "http://localhost:9081/",
        "datacontenttype": "application/json", "inferenceservicename": "bc",
        "data": serde_json::from_str::<serde_json::Value>(V2_REQ).unwrap()
    });
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json; charset=UTF-8"),
    );
    let s = parse(&h, Bytes::from(structured.to_string())).unwrap();
    assert_eq!(s.id, "e1");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&s.data).unwrap(),
        serde_json::from_str::<serde_json::Value>(V2_REQ).unwrap()
    );
    // data_base64, as SDKs send bytes.
    let b64 = serde_json::json!({
        "specversion": "1.0", "id": "e2", "type": RESPONSE_TYPE, "source": "s",
        "data_base64": base64::engine::general_purpose::STANDARD.encode(V2_RESP)
    });
    let r = parse(&h, Bytes::from(b64.to_string())).unwrap();
    assert_eq!(&r.data[..], V2_RESP.as_bytes());
    assert_eq!(r.half, Half::Response);
}

#[test]
fn bad_events_say_what_is_wrong() {
    let (mut h, b) = binary("e1", "com.example.other", "{}");
    assert_eq!(parse(&h, b.clone()).unwrap_err().kind(), "unsupported_type");
    h.remove("ce-id");
    assert_eq!(
        parse(&h, b.clone()).unwrap_err().kind(),
        "missing_attribute"
    );
    assert_eq!(
        parse(&HeaderMap::new(), b.clone()).unwrap_err().kind(),
        "not_a_cloudevent"
    );
    let mut s = HeaderMap::new();
    s.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    assert_eq!(
        parse(&s, Bytes::from("[1]")).unwrap_err().kind(),
        "malformed"
    );
    s.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents-batch+json"),
    );
    assert_eq!(parse(&s, Bytes::from("[]")).unwrap_err().kind(), "batch");
}

#[test]
fn paths_follow_the_payload() {
    let ev = |body: &str| Event {
        id: "x".into(),
        half: Half::Request,
        source: String::new(),
        content_type: None,
        data: Bytes::from(body.to_string()),
        inference_service: Some("iris".into()),
        namespace: None,
        component: None,
        endpoint: None,
        metadata: Vec::new(),
    };
    assert_eq!(
        path_for(&ev(r#"{"instances":[[1,2]]}"#)),
        "/v1/models/iris:predict"
    );
    assert_eq!(path_for(&ev(V2_REQ)), "/v2/models/iris/infer");
    assert_eq!(
        path_for(&ev(r#"{"model":"m","messages":[]}"#)),
        "/v1/chat/completions"
    );
    assert_eq!(
        path_for(&ev(r#"{"model":"m","prompt":"hi"}"#)),
        "/v1/completions"
    );
}

fn receiver(
    max_pending: usize,
    timeout: Duration,
) -> (Receiver, tokio::sync::mpsc::Receiver<Sample>) {
    let instruments =
        crate::telemetry::Instruments::new(&opentelemetry::global::meter("cloudevents-tests"));
    let (tx, rx) = crate::sample::queue(
        16,
        instruments.clone(),
        std::sync::Arc::new(crate::telemetry::Gauges::default()),
    );
    let config = CloudEventsConfig {
        enabled: true,
        max_pending,
        pair_timeout: timeout,
    };
    (
        Receiver::new(
            tx,
            config,
            1 << 20,
            instruments.cloudevents_received.clone(),
        ),
        rx,
    )
}

fn event(id: &str, kind: &str, body: &str) -> Event {
    let (h, b) = binary(id, kind, body);
    parse(&h, b).unwrap()
}

#[test]
fn halves_pair_in_either_order_and_the_map_stays_bounded() {
    let (r, mut rx) = receiver(2, Duration::from_secs(60));
    // The response first, as KServe's worker pool may send it.
    assert_eq!(
        r.accept(event("a", RESPONSE_TYPE, V2_RESP)),
        EventOutcome::Pending
    );
    assert_eq!(
        r.accept(event("a", REQUEST_TYPE, V2_REQ)),
        EventOutcome::Joined
    );
    let s = rx.try_recv().unwrap();
    assert_eq!(s.source, SampleSource::CloudEvents);
    assert_eq!(s.request_id, "a");
    assert_eq!(s.path, "/v2/models/bc/infer");
    assert_eq!(&s.request_body.bytes[..], V2_REQ.as_bytes());
    assert_eq!(&s.response_body.bytes[..], V2_RESP.as_bytes());
    assert_eq!(s.request_headers.get("x-tenant").unwrap(), "acme");
    // A duplicate half replaces the waiting one.
    assert_eq!(
        r.accept(event("b", REQUEST_TYPE, V2_REQ)),
        EventOutcome::Pending
    );
    assert_eq!(
        r.accept(event("b", REQUEST_TYPE, V2_REQ)),
        EventOutcome::Duplicate
    );
    assert_eq!(r.pending(), 1);
    // Full: the oldest is dropped.
    r.accept(event("c", REQUEST_TYPE, V2_REQ));
    r.accept(event("d", REQUEST_TYPE, V2_REQ));
    assert_eq!(r.pending(), 2);
    assert_eq!(
        r.accept(event("b", RESPONSE_TYPE, V2_RESP)),
        EventOutcome::Pending
    );
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_half_without_its_pair_expires() {
    let (r, mut rx) = receiver(100, Duration::from_millis(100));
    r.accept(event("a", REQUEST_TYPE, V2_REQ));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        r.accept(event("a", RESPONSE_TYPE, V2_RESP)),
        EventOutcome::Pending
    );
    assert!(rx.try_recv().is_err());
    // Many joined pairs leave no unbounded bookkeeping behind.
    let (r, _rx) = receiver(10, Duration::from_secs(60));
    for i in 0..10_000 {
        let id = format!("p{i}");
        r.accept(event(&id, REQUEST_TYPE, V2_REQ));
        r.accept(event(&id, RESPONSE_TYPE, V2_RESP));
    }
    assert!(r.pending.lock().unwrap().order.len() <= 64 + 2 * 10);
}

#[test]
fn a_closed_receiver_lets_go_of_the_queue() {
    // Analysis ends when every sender is gone; the receiver's must go at
    // shutdown, or analysis (and the shutdown) would wait for ever.
    let (r, mut rx) = receiver(10, Duration::from_secs(60));
    r.close();
    assert!(!r.open());
    r.accept(event("a", REQUEST_TYPE, V2_REQ));
    r.accept(event("a", RESPONSE_TYPE, V2_RESP));
    assert_eq!(
        rx.try_recv().unwrap_err(),
        tokio::sync::mpsc::error::TryRecvError::Disconnected
    );
}
