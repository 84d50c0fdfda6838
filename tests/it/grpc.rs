//! gRPC over h2c through modelwatch with a real tonic client and server (the
//! standard gRPC health service): unary calls, server streaming, and error
//! statuses carried in trailers.

use std::time::Duration;

use futures_util::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_with_trailers() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            "inference.GRPCInferenceService",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_listener(listener)),
    );

    let mw = Modelwatch::start(Options::new(format!("http://{grpc_addr}"))).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mw.proxy))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    // Unary.
    let resp = client
        .check(HealthCheckRequest {
            service: "inference.GRPCInferenceService".into(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);

    // An error status travels in the trailers (grpc-status) and must survive.
    let err = client
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Server streaming: a status change reaches the watching client.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "inference.GRPCInferenceService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status(
            "inference.GRPCInferenceService",
            tonic_health::ServingStatus::NotServing,
        )
        .await;
    let second = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("streamed update held back")
        .unwrap()
        .unwrap();
    assert_eq!(second.status, ServingStatus::NotServing as i32);
    drop(watch);

    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "http_server_request_duration_seconds_count",
            &[
                ("http_route", "/grpc.health.v1.Health/{method}"),
                ("network_protocol_version", "2")
            ]
        )
        .map(|v| v >= 2.0),
        Some(true),
        "{m}"
    );
    // Health calls are no inferences: not decoded, not a decode error; the
    // NOT_FOUND answer is the client's error, not a failure of the server.
    let m = eventually(
        "the sampled calls analysed",
        Duration::from_secs(10),
        || async {
            let m = mw.metrics().await;
            (prom_value(&m, "modelwatch_samples_analyzed_total", &[]).unwrap_or(0.0) >= 3.0)
                .then_some(m)
        },
    )
    .await;
    assert_eq!(
        prom_value(&m, "modelwatch_decode_errors_total", &[]),
        None,
        "{m}"
    );
    assert!(!m.contains("error_type=\"NOT_FOUND\""), "{m}");
    server.abort();
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
