//! modelwatch: a sidecar that watches AI models in production.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod analysis;
pub mod anomaly;
pub mod app;
pub mod cli;
pub mod cloudevents;
pub mod config;
pub mod demo;
pub mod diagnosis;
pub mod drift;
pub mod inject;
pub mod kafka;
pub mod outbound;
pub mod protocol;
pub mod proxy;
pub mod quality;
pub mod reload;
pub mod resources;
pub mod rollout;
pub mod sample;
pub mod serve;
pub mod telemetry;
pub mod tensorboard;
