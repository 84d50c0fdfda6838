//! Integration tests: the real `modelwatch` binary between real clients, a
//! test upstream, real model-serving protocols (gRPC) and real backends
//! (Prometheus, VictoriaMetrics). One test binary, so it links once.

mod admin;
mod alerts;
mod cli;
mod cloudevents;
mod common;
mod dashboards;
mod diagnosis;
mod drift;
mod egress;
mod export;
mod figures;
mod fleet;
mod grpc;
mod grpc_models;
mod kibana;
mod kubernetes;
mod models;
mod proxy;
mod quality;
mod reload;
mod resources;
mod rollout;
mod rules;
mod status_page;
mod takeover;
mod tensorboard;
mod traces;
mod upstream_tls;
