//! Sidecar injection. `decide` is a pure function from a Pod (plus whether its
//! namespace opted in, plus the injector's config) to a decision: inject, with
//! the RFC 6902 JSON patch that adds modelwatch, or leave the pod alone, with a
//! counted reason and, where the user should hear about it, a warning.
//!
//! No iptables and no NET_ADMIN: the sidecar takes over the model container's
//! *named* port. The model's port is renamed (`http` -> `mw-http`), the sidecar
//! declares a port with the original name on its own number and forwards to the
//! model on localhost, so a Service with `targetPort: http` reaches modelwatch
//! with no change to the Service. The model's probes that used the name are
//! pointed at the number, so they keep reaching the model directly.
//!
//! The patch is the difference between the typed pod and the typed, mutated pod
//! (k8s-openapi objects, `json_patch::diff`); the sidecar is appended, so the
//! patch never rewrites the user's containers wholesale.

pub mod config;
pub mod runtime;
pub mod tls;
pub mod webhook;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use config::InjectorConfig;

use crate::config::ProtocolKind;

/// The injected container's name.
pub const SIDECAR: &str = "modelwatch";
/// The emptyDir (or configured volume) that holds the embedded store.
pub const STORE_VOLUME: &str = "modelwatch-store";
/// The ConfigMap volume named by `modelwatch.io/config`.
pub const CONFIG_VOLUME: &str = "modelwatch-config";
/// The admin port's name.
pub const ADMIN_PORT_NAME: &str = "mw-admin";
/// The proxy port's name when the model's port had none.
pub const PROXY_PORT_NAME: &str = "mw-proxy";
/// Where the store volume is mounted in the sidecar.
pub const STORE_MOUNT: &str = "/var/lib/modelwatch";
/// Where the ConfigMap is mounted; the config file is `modelwatch.yaml` in it.
pub const CONFIG_MOUNT: &str = "/etc/modelwatch";

/// The namespace label that opts every pod in.
pub const NAMESPACE_LABEL: &str = "modelwatch.io/injection";
/// Pod annotations.
pub mod annotations {
    pub const INJECT: &str = "modelwatch.io/inject";
    pub const STATUS: &str = "modelwatch.io/status";
    pub const MODEL_PORT: &str = "modelwatch.io/model-port";
    pub const MODEL_PORT_ARG: &str = "modelwatch.io/model-port-arg";
    pub const MODEL_CONTAINER: &str = "modelwatch.io/model-container";
    pub const MODEL_VERSION: &str = "modelwatch.io/model-version";
    pub const PROTOCOL: &str = "modelwatch.io/protocol";
    pub const CONFIG: &str = "modelwatch.io/config";
    pub const SAMPLE_RATE: &str = "modelwatch.io/sample-rate";
    pub const IMAGE: &str = "modelwatch.io/image";
    pub const CPU_REQUEST: &str = "modelwatch.io/cpu-request";
    pub const CPU_LIMIT: &str = "modelwatch.io/cpu-limit";
    pub const MEMORY_REQUEST: &str = "modelwatch.io/memory-request";
    pub const MEMORY_LIMIT: &str = "modelwatch.io/memory-limit";
    pub const SHARE_PROCESS_NAMESPACE: &str = "modelwatch.io/share-process-namespace";
}
/// The label the injector puts on pods it injected (PodMonitor selects it).
pub const INJECTED_LABEL: &str = "modelwatch.io/injected";

/// Why a pod was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Neither the namespace label nor the pod annotation asked for it.
    NotSelected,
    /// `modelwatch.io/inject: "false"`.
    OptedOut,
    /// The pod already has the sidecar.
    AlreadyInjected,
    /// No container port to take over.
    NoPort,
    /// Several ports and no `modelwatch.io/model-port` to choose.
    AmbiguousPort,
    /// `modelwatch.io/model-port` or `model-container` names nothing in the pod.
    PortNotFound,
    /// The model's port has no name, so a Service can only address the number.
    UnnamedPort,
    /// The model's port is addressed by number (KServe, Knative) and the
    /// server's port setting is unknown or cannot be changed.
    CannotMovePort,
    /// A name or port the sidecar needs is taken.
    Conflict,
    /// hostNetwork pods share the node's ports.
    HostNetwork,
    /// A Job's pod with a regular (non-native) sidecar would never complete.
    JobNeedsNativeSidecar,
    /// An annotation's value is not accepted.
    BadAnnotation,
    /// The object is not a Pod being created.
    NotAPodCreate,
}

impl Skip {
    /// The `reason` label of the injector's counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotSelected => "not_selected",
            Skip::OptedOut => "opted_out",
            Skip::AlreadyInjected => "already_injected",
            Skip::NoPort => "no_port",
            Skip::AmbiguousPort => "ambiguous_port",
            Skip::PortNotFound => "port_not_found",
            Skip::UnnamedPort => "unnamed_port",
            Skip::CannotMovePort => "cannot_move_port",
            Skip::Conflict => "conflict",
            Skip::HostNetwork => "host_network",
            Skip::JobNeedsNativeSidecar => "job_needs_native_sidecar",
            Skip::BadAnnotation => "bad_annotation",
            Skip::NotAPodCreate => "not_a_pod_create",
        }
    }

    /// Whether the user asked for injection and did not get it (so the
    /// response carries a warning). Pods nobody selected, opted-out pods and
    /// pods injected already are left alone silently.
    pub fn warns(self) -> bool {
        !matches!(
            self,
            Skip::NotSelected | Skip::OptedOut | Skip::AlreadyInjected | Skip::NotAPodCreate
        )
    }

    /// Every reason, for documentation and metric pre-registration.
    pub const ALL: [Skip; 13] = [
        Skip::NotSelected,
        Skip::OptedOut,
        Skip::AlreadyInjected,
        Skip::NoPort,
        Skip::AmbiguousPort,
        Skip::PortNotFound,
        Skip::UnnamedPort,
        Skip::CannotMovePort,
        Skip::Conflict,
        Skip::HostNetwork,
        Skip::JobNeedsNativeSidecar,
        Skip::BadAnnotation,
        Skip::NotAPodCreate,
    ];
}

/// What `decide` answers.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `Ok(patch)`: inject. `Err(reason)`: admit unchanged.
    pub outcome: Result<json_patch::Patch, Skip>,
    /// For the AdmissionReview response (shown by kubectl).
    pub warnings: Vec<String>,
}

impl Decision {
    fn skip(reason: Skip, message: impl Into<String>) -> Decision {
        let warnings = if reason.warns() {
            vec![format!(
                "modelwatch: sidecar not injected ({}): {}",
                reason.as_str(),
                message.into()
            )]
        } else {
            Vec::new()
        };
        Decision {
            outcome: Err(reason),
            warnings,
        }
    }
}

/// Decides for one pod. `namespace_enabled`: the namespace carries
/// `modelwatch.io/injection=enabled` (the webhook entry that matched says so).
pub fn decide(pod: &Pod, namespace_enabled: bool, config: &InjectorConfig) -> Decision {
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    // `modelwatch.io/inject` as a label or an annotation; the label wins when
    // both are set (as Istio's `sidecar.istio.io/inject` does).
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(annotations::INJECT))
        .map(|v| (v.trim(), "label"));
    let choice = label.or_else(|| {
        ann.get(annotations::INJECT)
            .map(|v| (v.trim(), "annotation"))
    });
    match choice {
        Some(("false", _)) => return Decision::skip(Skip::OptedOut, ""),
        Some(("true", _)) => {}
        Some((other, kind)) => {
            return Decision::skip(
                Skip::BadAnnotation,
                format!(
                    "{} ({kind}): {other:?} (accepted: \"true\" or \"false\")",
                    annotations::INJECT
                ),
            )
        }
        _ if !namespace_enabled => return Decision::skip(Skip::NotSelected, ""),
        _ => {}
    }
    if already_injected(pod) {
        return Decision::skip(Skip::AlreadyInjected, "");
    }
    let mut mutated = pod.clone();
    match mutate(&mut mutated, &ann, config) {
        Ok(warnings) => {
            let before = serde_json::to_value(pod).unwrap_or_default();
            let after = serde_json::to_value(&mutated).unwrap_or_default();
            Decision {
                outcome: Ok(json_patch::diff(&before, &after)),
                warnings,
            }
        }
        Err((reason, message)) => Decision::skip(reason, message),
    }
}

fn already_injected(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR)
        || pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get(annotations::STATUS).is_some_and(|s| s == "injected"))
}

type Refusal = (Skip, String);

/// The containers service meshes and Knative add to a pod: their ports are
/// not the model's.
const INFRA_CONTAINERS: &[&str] = &["istio-proxy", "linkerd-proxy", "queue-proxy"];

/// The label KServe puts on an InferenceService's pods.
const KSERVE_LABEL: &str = "serving.kserve.io/inferenceservice";
/// KServe's default model port: its Service targets 8080 when the predictor
/// declares none (`constants.InferenceServiceDefaultHttpPort`).
const KSERVE_DEFAULT_PORT: i32 = 8080;

fn is_kserve(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(KSERVE_LABEL))
}

/// Whether a container is the model's candidate: not a mesh's or Knative's
/// proxy, nor KServe's agent (logger and batcher), which forwards to the model.
fn is_infra(pod: &Pod, name: &str) -> bool {
    INFRA_CONTAINERS.contains(&name) || (name == "agent" && is_kserve(pod))
}

/// Why the model's port is addressed by number in this pod, so renaming it
/// would leave modelwatch out of the path:
/// - Knative's queue-proxy (KServe Serverless) forwards to `USER_PORT`, a
///   number (knative.dev/serving `pkg/reconciler/revision/resources/queue.go`);
/// - KServe's RawDeployment Service targets the predictor's first container
///   port by number, or 8080 when it declares none (kserve
///   `pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go`,
///   `createDefaultSvc`).
fn addressed_by_number(pod: &Pod) -> Option<&'static str> {
    let labels = pod.metadata.labels.as_ref();
    let knative = labels.is_some_and(|l| l.contains_key("serving.knative.dev/revision"))
        || pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == "queue-proxy"));
    if knative {
        Some("Knative's queue-proxy forwards to the model's port by number")
    } else if is_kserve(pod) {
        Some("KServe's Service targets the predictor's port by number")
    } else {
        None
    }
}

/// A KServe predictor whose runtime declares no port (KServe's sklearn and
/// xgboost runtimes) still listens on one, and its Service targets 8080:
/// the port is declared, so that it can be taken over.
fn declare_default_port(pod: &mut Pod, ann: &BTreeMap<String, String>) {
    if !is_kserve(pod) || ann.contains_key(annotations::MODEL_PORT) {
        return;
    }
    let infra: Vec<bool> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| is_infra(pod, &c.name))
        .collect();
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let candidates: Vec<usize> = (0..spec.containers.len()).filter(|&i| !infra[i]).collect();
    if candidates.iter().any(|&i| {
        !spec.containers[i]
            .ports
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    }) {
        return;
    }
    let wanted = ann
        .get(annotations::MODEL_CONTAINER)
        .map(|s| s.trim())
        .unwrap_or("kserve-container");
    let Some(&ci) = candidates
        .iter()
        .find(|&&i| spec.containers[i].name == wanted)
        .or((candidates.len() == 1).then_some(&candidates[0]))
    else {
        return;
    };
    let c = &mut spec.containers[ci];
    let number = match runtime::detect(c) {
        runtime::Detected::Movable(rt) => {
            runtime::current(c, &rt.http).unwrap_or(KSERVE_DEFAULT_PORT)
        }
        _ => KSERVE_DEFAULT_PORT,
    };
    c.ports = Some(vec![ContainerPort {
        container_port: number,
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
}

/// A port name that says gRPC (`grpc`, `grpc-…`, `…-grpc`, `h2c`): the second
/// port of a model server that serves REST and gRPC (MLServer, Triton, KServe).
fn is_grpc_port_name(name: &str) -> bool {
    name == "grpc" || name == "h2c" || name.starts_with("grpc-") || name.ends_with("-grpc")
}

/// The model's ports: (container index, port index), the main one first.
/// `modelwatch.io/model-port` names one or several (`http,grpc`); without it,
/// the pod's one TCP port, or its two when one is named for gRPC.
fn find_model_ports(
    pod: &Pod,
    ann: &BTreeMap<String, String>,
) -> Result<Vec<(usize, usize)>, Refusal> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or((Skip::NoPort, "the pod has no spec".into()))?;
    let wanted_container = ann.get(annotations::MODEL_CONTAINER).map(|s| s.trim());
    let candidates: Vec<usize> = match wanted_container {
        Some(name) => {
            let i = spec.containers.iter().position(|c| c.name == name).ok_or((
                Skip::PortNotFound,
                format!(
                    "{}: no container named {name:?}",
                    annotations::MODEL_CONTAINER
                ),
            ))?;
            vec![i]
        }
        // A service mesh's proxy (Istio's and Linkerd's webhooks may run
        // first), Knative's queue-proxy and KServe's agent are never the model.
        None => (0..spec.containers.len())
            .filter(|&i| !is_infra(pod, &spec.containers[i].name))
            .collect(),
    };
    let tcp = |p: &ContainerPort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    if let Some(list) = ann.get(annotations::MODEL_PORT).map(|s| s.trim()) {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for wanted in list.split(',').map(str::trim) {
            let by_number = wanted.parse::<i32>().ok();
            if by_number.is_none() && !is_port_name(wanted) {
                return Err((
                    Skip::BadAnnotation,
                    format!(
                        "{}: {wanted:?} (accepted: a container port number or port name, or several separated by commas, e.g. http,grpc)",
                        annotations::MODEL_PORT
                    ),
                ));
            }
            let found = candidates.iter().find_map(|&ci| {
                let ports = spec.containers[ci].ports.as_deref().unwrap_or_default();
                ports
                    .iter()
                    .position(|p| {
                        tcp(p)
                            && match by_number {
                                Some(n) => p.container_port == n,
                                None => p.name.as_deref() == Some(wanted),
                            }
                    })
                    .map(|pi| (ci, pi))
            });
            match found {
                Some(f) if !out.contains(&f) => out.push(f),
                Some(_) => {}
                None => {
                    return Err((
                        Skip::PortNotFound,
                        format!(
                            "{}: {wanted:?} is not a TCP port of {}",
                            annotations::MODEL_PORT,
                            match wanted_container {
                                Some(c) => format!("container {c:?}"),
                                None => "any container".into(),
                            }
                        ),
                    ))
                }
            }
        }
        return Ok(out);
    }
    let found: Vec<(usize, usize)> = candidates
        .iter()
        .flat_map(|&ci| {
            spec.containers[ci]
                .ports
                .iter()
                .flatten()
                .enumerate()
                .filter(|(_, p)| tcp(p))
                .map(move |(pi, _)| (ci, pi))
        })
        .collect();
    let name = |(ci, pi): (usize, usize)| {
        spec.containers[ci].ports.as_deref().unwrap_or_default()[pi]
            .name
            .as_deref()
            .unwrap_or("")
    };
    match found.as_slice() {
        [] => Err((
            Skip::NoPort,
            "no container declares a TCP port; declare the model's port in its container, named (e.g. ports: [{name: http, containerPort: 8080}]), and have the Service target that name".into(),
        )),
        [one] => Ok(vec![*one]),
        // REST and gRPC of one server: both are taken over, REST first.
        [a, b] if a.0 == b.0 && is_grpc_port_name(name(*a)) != is_grpc_port_name(name(*b)) => {
            Ok(if is_grpc_port_name(name(*a)) {
                vec![*b, *a]
            } else {
                vec![*a, *b]
            })
        }
        many => Err((
            Skip::AmbiguousPort,
            format!(
                "{} TCP ports declared; set modelwatch.io/model-port to the one that serves the model (or several, e.g. http,grpc)",
                many.len()
            ),
        )),
    }
}

/// An IANA service name as Kubernetes accepts for a port: at most 15
/// characters of a-z, 0-9 and '-', with a letter, no leading, trailing or
/// doubled '-'.
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// The name the model's port gets: `mw-` and the original, cut to 15.
fn renamed(name: &str) -> String {
    let mut s: String = format!("mw-{name}").chars().take(15).collect();
    while s.ends_with('-') {
        s.pop();
    }
    s
}

fn quantity_annotation(
    ann: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<Quantity>, Refusal> {
    match ann.get(key).map(|s| s.trim()) {
        None => Ok(None),
        Some(v) if config::is_quantity(v) => Ok(Some(Quantity(v.to_string()))),
        Some(v) => Err((
            Skip::BadAnnotation,
            format!("{key}: {v:?} (accepted: a Kubernetes quantity, e.g. 100m or 128Mi)"),
        )),
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Points the container's probes and lifecycle hooks whose port `is_old`
/// at the number `to`, so they keep reaching the model directly.
fn repoint(container: &mut Container, is_old: impl Fn(&IntOrString) -> bool, to: i32) {
    let set = |p: &mut IntOrString| {
        if is_old(p) {
            *p = IntOrString::Int(to);
        }
    };
    for probe in [
        container.liveness_probe.as_mut(),
        container.readiness_probe.as_mut(),
        container.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        probe.http_get.iter_mut().for_each(|h| set(&mut h.port));
        probe.tcp_socket.iter_mut().for_each(|t| set(&mut t.port));
        if let Some(g) = probe.grpc.as_mut() {
            if is_old(&IntOrString::Int(g.port)) {
                g.port = to;
            }
        }
    }
    if let Some(l) = container.lifecycle.as_mut() {
        for h in [l.post_start.as_mut(), l.pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            h.http_get.iter_mut().for_each(|g| set(&mut g.port));
            h.tcp_socket.iter_mut().for_each(|t| set(&mut t.port));
        }
    }
}

/// The model version: annotation, then the `app.kubernetes.io/version` label,
/// then the image tag.
fn model_version(pod: &Pod, ann: &BTreeMap<String, String>, image: &str) -> String {
    if let Some(v) = ann.get(annotations::MODEL_VERSION) {
        return v.trim().to_string();
    }
    if let Some(v) = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/version"))
    {
        return v.clone();
    }
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':')
        .map(|(_, tag)| tag.to_string())
        .unwrap_or_default()
}

fn mutate(
    pod: &mut Pod,
    ann: &BTreeMap<String, String>,
    config: &InjectorConfig,
) -> Result<Vec<String>, Refusal> {
    let mut warnings = Vec::new();
    declare_default_port(pod, ann);
    let by_number = addressed_by_number(pod);
    let ports = find_model_ports(pod, ann)?;
    let (ci, _) = ports[0];

    // Annotations, all checked before anything changes.
    let protocol = match ann.get(annotations::PROTOCOL).map(|s| s.trim()) {
        None => None,
        Some(v) => match serde_yaml_ng::from_str::<ProtocolKind>(v) {
            Ok(_) => Some(v.to_string()),
            Err(_) => {
                return Err((
                    Skip::BadAnnotation,
                    format!(
                        "{}: {v:?} (accepted: auto, openai, open-inference-v2, kserve-v1, tf-serving or json-paths)",
                        annotations::PROTOCOL
                    ),
                ))
            }
        },
    };
    let sample_rate = match ann.get(annotations::SAMPLE_RATE).map(|s| s.trim()) {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Some(v.to_string()),
            _ => {
                return Err((
                    Skip::BadAnnotation,
                    format!(
                        "{}: {v:?} (accepted: a number from 0 to 1)",
                        annotations::SAMPLE_RATE
                    ),
                ))
            }
        },
    };
    let config_map = match ann.get(annotations::CONFIG).map(|s| s.trim()) {
        None => None,
        Some(v) if is_dns_subdomain(v) => Some(v.to_string()),
        Some(v) => {
            return Err((
                Skip::BadAnnotation,
                format!(
                    "{}: {v:?} (accepted: the name of a ConfigMap in the pod's namespace)",
                    annotations::CONFIG
                ),
            ))
        }
    };
    let image = match ann.get(annotations::IMAGE).map(|s| s.trim()) {
        Some(v) if !v.is_empty() && !v.contains(char::is_whitespace) => v.to_string(),
        Some(v) => {
            return Err((
                Skip::BadAnnotation,
                format!(
                    "{}: {v:?} (accepted: an image reference)",
                    annotations::IMAGE
                ),
            ))
        }
        None => config.image.clone(),
    };
    let custom_settings: Vec<runtime::Setting> =
        match ann.get(annotations::MODEL_PORT_ARG).map(|s| s.trim()) {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|one| {
                    runtime::Setting::parse(one).ok_or((
                        Skip::BadAnnotation,
                        format!(
                            "{}: {one:?} (accepted: the flag that sets the model's port, e.g. --port, or env:NAME, or env:NAME=text with {{port}}; several separated by commas, one per model port)",
                            annotations::MODEL_PORT_ARG
                        ),
                    ))
                })
                .collect::<Result<_, _>>()?,
        };
    let share_pid = match ann
        .get(annotations::SHARE_PROCESS_NAMESPACE)
        .map(|s| s.trim())
    {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(v) => {
            return Err((
                Skip::BadAnnotation,
                format!(
                    "{}: {v:?} (accepted: \"true\" or \"false\")",
                    annotations::SHARE_PROCESS_NAMESPACE
                ),
            ))
        }
    };
    let mut resources: ResourceRequirements = config.resources.clone();
    for (key, kind, name) in [
        (annotations::CPU_REQUEST, "requests", "cpu"),
        (annotations::CPU_LIMIT, "limits", "cpu"),
        (annotations::MEMORY_REQUEST, "requests", "memory"),
        (annotations::MEMORY_LIMIT, "limits", "memory"),
    ] {
        if let Some(q) = quantity_annotation(ann, key)? {
            let map = if kind == "requests" {
                &mut resources.requests
            } else {
                &mut resources.limits
            };
            map.get_or_insert_with(Default::default)
                .insert(name.into(), q);
        }
    }

    let model_image = pod
        .spec
        .as_ref()
        .expect("find_model_ports checked the spec")
        .containers[ci]
        .image
        .clone()
        .unwrap_or_default();
    let version = model_version(pod, ann, &model_image);
    let is_job = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job");
    let spec = pod
        .spec
        .as_mut()
        .expect("find_model_ports checked the spec");
    if spec.host_network == Some(true) {
        return Err((
            Skip::HostNetwork,
            "hostNetwork pods share the node's ports; add modelwatch by hand with ports of its own"
                .into(),
        ));
    }
    if is_job && !config.native_sidecar {
        return Err((
            Skip::JobNeedsNativeSidecar,
            "a Job's pod with a regular sidecar container never completes; on Kubernetes 1.33 and later the chart's sidecar.nativeSidecar: auto (the default) injects a native sidecar, which lets it complete".into(),
        ));
    }

    // Names and ports the sidecar needs must be free.
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let used_ports_owned: Vec<(Option<String>, i32)> = all
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    let used_ports: Vec<(Option<&str>, i32)> = used_ports_owned
        .iter()
        .map(|(n, p)| (n.as_deref(), *p))
        .collect();
    let model_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|&(ci, pi)| spec.containers[ci].ports.as_ref().expect("port found")[pi].clone())
        .collect();
    // Which ports move (the sidecar takes their number) and which are
    // renamed (the sidecar takes their name, on a port of its own).
    let mut moves: Vec<Option<runtime::Setting>> = Vec::new();
    for (k, (&(ci, _), model_port)) in ports.iter().zip(&model_ports).enumerate() {
        moves.push(move_setting(
            &spec.containers[ci],
            model_port,
            k,
            by_number,
            &custom_settings,
        )?);
    }
    // The sidecar's ports: a moved port's own number; else proxy_port for
    // the main one, the next numbers for more.
    let sidecar_ports: Vec<i32> = (0..ports.len())
        .map(|k| match moves[k] {
            Some(_) => model_ports[k].container_port,
            None => config.proxy_port + k as i32,
        })
        .collect();
    for (k, port) in sidecar_ports.iter().enumerate() {
        if moves[k].is_some() {
            continue;
        }
        let what = match k {
            0 => "proxy_port".to_string(),
            k => format!("proxy_port + {k}, for the model's port number {}", k + 1),
        };
        if used_ports.iter().any(|(_, n)| n == port) {
            return Err((
                Skip::Conflict,
                format!("port {port} (the sidecar's {what}) is already declared in the pod; set the chart's sidecar.proxyPort (the injector's proxy_port) to a free port"),
            ));
        }
        if k > 0 && *port == config.admin_port {
            return Err((
                Skip::Conflict,
                format!("port {port} (the sidecar's {what}) is its admin port; set the chart's sidecar.proxyPort or sidecar.adminPort (the injector's proxy_port, admin_port) further apart"),
            ));
        }
    }
    if used_ports.iter().any(|(_, n)| *n == config.admin_port) {
        return Err((
            Skip::Conflict,
            format!("port {} (the sidecar's admin port) is already declared in the pod; set the chart's sidecar.adminPort (the injector's admin_port) to a free port", config.admin_port),
        ));
    }
    if used_ports.iter().any(|(n, _)| *n == Some(ADMIN_PORT_NAME)) {
        return Err((
            Skip::Conflict,
            format!("a port is already named {ADMIN_PORT_NAME}"),
        ));
    }
    for volume in [STORE_VOLUME, CONFIG_VOLUME] {
        if spec.volumes.iter().flatten().any(|v| v.name == volume) {
            return Err((
                Skip::Conflict,
                format!("a volume is already named {volume}"),
            ));
        }
    }

    // Where moved ports go: the first free numbers from moved_port up,
    // avoiding every declared port, the sidecar's, and the ports the server
    // binds without declaring them.
    let mut avoid: Vec<i32> = used_ports.iter().map(|(_, n)| *n).collect();
    avoid.extend(&sidecar_ports);
    avoid.extend((0..ports.len() as i32).map(|k| config.proxy_port + k));
    avoid.push(config.admin_port);
    for &(ci, _) in &ports {
        if let runtime::Detected::Movable(rt) = runtime::detect(&spec.containers[ci]) {
            avoid.extend(runtime::undeclared_ports(&spec.containers[ci], &rt));
        }
    }
    let mut upstreams: Vec<i32> = model_ports.iter().map(|p| p.container_port).collect();

    // The port takeover, for each of the model's ports.
    let mut proxy_port_names = Vec::new();
    for (k, (&(ci, pi), model_port)) in ports.iter().zip(&model_ports).enumerate() {
        let name = match &moves[k] {
            Some(setting) => {
                let mut to = config.moved_port;
                while avoid.contains(&to) {
                    to += 1;
                }
                avoid.push(to);
                upstreams[k] = to;
                move_port(
                    spec,
                    (ci, pi),
                    model_port,
                    k,
                    &used_ports_owned,
                    setting,
                    to,
                    by_number,
                )?
            }
            None => take_over(
                spec,
                (ci, pi),
                model_port,
                k,
                &used_ports_owned,
                ann.contains_key(annotations::MODEL_PORT),
                sidecar_ports[k],
                &mut warnings,
            )?,
        };
        proxy_port_names.push(name);
    }

    // The sidecar.
    let mut env_vars = vec![
        env("MODELWATCH_LISTEN", format!("0.0.0.0:{}", sidecar_ports[0])),
        env(
            "MODELWATCH_UPSTREAM",
            format!("http://127.0.0.1:{}", upstreams[0]),
        ),
        env(
            "MODELWATCH_ADMIN_LISTEN",
            format!("0.0.0.0:{}", config.admin_port),
        ),
        env("MODELWATCH_STORE_PATH", format!("{STORE_MOUNT}/store.redb")),
        env("MODELWATCH_LOG_FORMAT", config.log_format.clone()),
        env("MODELWATCH_MODEL_IMAGE", model_image.clone()),
        field_env("K8S_POD_NAME", "metadata.name"),
        field_env("K8S_NAMESPACE_NAME", "metadata.namespace"),
        field_env("K8S_NODE_NAME", "spec.nodeName"),
    ];
    if ports.len() > 1 {
        // The gRPC port (and any more): the same sidecar, one listener each.
        let pairs: Vec<String> = upstreams[1..]
            .iter()
            .zip(&sidecar_ports[1..])
            .map(|(m, s)| format!("0.0.0.0:{s}=http://127.0.0.1:{m}"))
            .collect();
        env_vars.push(env("MODELWATCH_EXTRA_PORTS", pairs.join(",")));
    }
    if !version.is_empty() {
        env_vars.push(env("MODELWATCH_MODEL_VERSION", version));
    }
    if let Some(p) = protocol {
        env_vars.push(env("MODELWATCH_PROTOCOL", p));
    }
    if let Some(r) = sample_rate {
        env_vars.push(env("MODELWATCH_SAMPLE_RATE", r));
    }
    let mut mounts = vec![VolumeMount {
        name: STORE_VOLUME.into(),
        mount_path: STORE_MOUNT.into(),
        ..Default::default()
    }];
    if config_map.is_some() {
        env_vars.push(env(
            "MODELWATCH_CONFIG",
            format!("{CONFIG_MOUNT}/modelwatch.yaml"),
        ));
        mounts.push(VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: CONFIG_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // The injector's extra environment does not override what is set per pod.
    for extra in &config.env {
        if !env_vars.iter().any(|e| e.name == extra.name) {
            env_vars.push(extra.clone());
        }
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let sidecar = Container {
        name: SIDECAR.into(),
        image: Some(image),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec!["run".into()]),
        ports: Some(
            proxy_port_names
                .into_iter()
                .zip(&sidecar_ports)
                .map(|(name, number)| ContainerPort {
                    name: Some(name),
                    container_port: *number,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .chain([ContainerPort {
                    name: Some(ADMIN_PORT_NAME.into()),
                    container_port: config.admin_port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }])
                .collect(),
        ),
        env: Some(env_vars),
        resources: Some(resources),
        volume_mounts: Some(mounts),
        // Native sidecars gate the model's start on this; regular ones only
        // delay their own liveness checks.
        startup_probe: Some(probe("/healthz", 1, 60)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(config.run_as_user),
            run_as_group: Some(config.run_as_user),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: config.native_sidecar.then(|| "Always".to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    if config.native_sidecar {
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(sidecar);
    } else {
        spec.containers.push(sidecar);
    }

    let store = match &config.store_volume {
        Some(v) => Volume {
            name: STORE_VOLUME.into(),
            ..v.clone()
        },
        None => Volume {
            name: STORE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(config.store_size_limit.clone())),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(store);
    if let Some(name) = config_map {
        volumes.push(Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if share_pid {
        spec.share_process_namespace = Some(true);
    }

    let annotations_map = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations_map.insert(annotations::STATUS.into(), "injected".into());
    let istio_merges = annotations_map
        .get("prometheus.io/path")
        .is_some_and(|p| p == ISTIO_MERGED_PATH);
    if config.prometheus_annotations
        && !annotations_map
            .keys()
            .any(|k| k.starts_with("prometheus.io/"))
    {
        annotations_map.insert("prometheus.io/scrape".into(), "true".into());
        annotations_map.insert("prometheus.io/port".into(), config.admin_port.to_string());
        annotations_map.insert("prometheus.io/path".into(), "/metrics".into());
    }
    if config.prometheus_annotations && istio_merges {
        if let Some(w) = join_istio_metrics_merge(pod, config.admin_port) {
            warnings.push(w);
        }
    }
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED_LABEL.into(), "true".into());
    Ok(warnings)
}

/// Where Istio's metrics merging serves the pod's metrics (with
/// `prometheus.io/port: "15020"`).
const ISTIO_MERGED_PATH: &str = "/stats/prometheus";

/// Istio's injector (when it ran first, with metrics merging on, the
/// default) has pointed the pod's `prometheus.io/*` annotations at its agent
/// and keeps the application's scrape target in `ISTIO_PROMETHEUS_ANNOTATIONS`
/// on `istio-proxy`; the agent serves the target's metrics with its own
/// (istio `pkg/kube/inject/webhook.go` `applyPrometheusMerge`,
/// `pilot/cmd/pilot-agent/status/server.go`). The variable holds one
/// target: modelwatch's admin port when the model had none, so that the
/// annotation-based scrape sees modelwatch; else a warning. When Istio runs
/// after modelwatch, it moves modelwatch's annotations into the variable
/// itself.
fn join_istio_metrics_merge(pod: &mut Pod, admin_port: i32) -> Option<String> {
    const VAR: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
    let proxy = istio_proxies(pod.spec.as_mut()?).next()?;
    let env = proxy.env.get_or_insert_with(Vec::new);
    match env.iter().find(|e| e.name == VAR) {
        None => {
            env.push(EnvVar {
                name: VAR.into(),
                value: Some(
                    serde_json::json!({"scrape": "true", "path": "/metrics", "port": admin_port.to_string()})
                        .to_string(),
                ),
                ..Default::default()
            });
            None
        }
        Some(e) if e.value.as_deref().is_some_and(|v| v.contains(&format!("\"{admin_port}\""))) => None,
        Some(_) => Some(format!(
            "modelwatch: Istio merges the model's own metrics into its port 15020 ({VAR}), and it merges one target only, so modelwatch's metrics (port {admin_port}, /metrics) are not in the annotation-based scrape; scrape them with the chart's podMonitor.enabled or a scrape job for the port named {ADMIN_PORT_NAME}"
        )),
    }
}

/// Takes over one of the model's ports: a named port is renamed (`http` ->
/// `mw-http`) and its name goes to the sidecar's port `sidecar_port`; probes
/// and hooks that used the name are pointed at the number. An unnamed port is
/// taken only when the annotation asked for it (Services address it by
/// number and bypass the sidecar: said in a warning). Returns the sidecar
/// port's name.
#[allow(clippy::too_many_arguments)]
fn take_over(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    (ci, pi): (usize, usize),
    model_port: &ContainerPort,
    k: usize,
    used_ports: &[(Option<String>, i32)],
    annotated: bool,
    sidecar_port: i32,
    warnings: &mut Vec<String>,
) -> Result<String, Refusal> {
    let taken = |name: &str| used_ports.iter().any(|(n, _)| n.as_deref() == Some(name));
    match &model_port.name {
        Some(name) => {
            let new_name = renamed(name);
            if taken(&new_name) {
                return Err((
                    Skip::Conflict,
                    format!(
                        "the model's port {name:?} would be renamed {new_name:?}, which is taken"
                    ),
                ));
            }
            let container = &mut spec.containers[ci];
            container.ports.as_mut().expect("port found")[pi].name = Some(new_name);
            repoint(
                container,
                |p| matches!(p, IntOrString::String(s) if s == name),
                model_port.container_port,
            );
            Ok(name.clone())
        }
        None => {
            if !annotated {
                return Err((
                    Skip::UnnamedPort,
                    format!(
                        "port {} has no name, so Services address the model by number and would bypass the sidecar; name the port (e.g. http) and have the Service target the name, or set modelwatch.io/model-port-arg to the flag or variable that sets the model server's port (e.g. --port or env:PORT) so that modelwatch takes the number",
                        model_port.container_port
                    ),
                ));
            }
            let proxy_name = if k == 0 {
                PROXY_PORT_NAME.to_string()
            } else {
                format!("{PROXY_PORT_NAME}-{k}")
            };
            if taken(&proxy_name) {
                return Err((
                    Skip::Conflict,
                    format!("a port is already named {proxy_name}"),
                ));
            }
            warnings.push(format!(
                "modelwatch: port {} has no name; traffic reaches modelwatch only through port {proxy_name} ({sidecar_port}); Services that target {} bypass it",
                model_port.container_port, model_port.container_port
            ));
            Ok(proxy_name)
        }
    }
}

/// How the model's port `k` is moved, if it must be: the annotation's
/// setting, or, where the port is addressed by number (KServe, Knative, an
/// unnamed port), the setting of the server `runtime::detect` recognises.
/// `None`: the port is renamed instead. A port addressed by number whose
/// server cannot be moved is refused, with the way to opt in.
fn move_setting(
    c: &Container,
    port: &ContainerPort,
    k: usize,
    by_number: Option<&str>,
    custom: &[runtime::Setting],
) -> Result<Option<runtime::Setting>, Refusal> {
    if let Some(s) = custom.get(k) {
        return Ok(Some(s.clone()));
    }
    if by_number.is_none() && port.name.is_some() {
        return Ok(None);
    }
    let number = port.container_port;
    let advice = format!(
        "set {} to the flag or variable that sets its port (e.g. --port, or env:PORT)",
        annotations::MODEL_PORT_ARG
    );
    let refuse = |detail: String| {
        Err((
            Skip::CannotMovePort,
            format!(
                "{}, so modelwatch must take the number {number} and move the model server in container {:?} to another port, but {detail}",
                by_number.unwrap_or("the port has no name"),
                c.name
            ),
        ))
    };
    match runtime::detect(c) {
        runtime::Detected::Movable(rt) => {
            let grpc = port.name.as_deref().is_some_and(is_grpc_port_name);
            let setting = match (k, grpc) {
                (0, false) => Some(rt.http),
                (_, true) => rt.grpc,
                _ => None,
            };
            match setting {
                Some(s) => Ok(Some(s)),
                None if by_number.is_some() => refuse(format!(
                    "{} has no setting known for port {number}; {advice}",
                    rt.name
                )),
                None => Ok(None),
            }
        }
        runtime::Detected::Unmovable { name, advice } if by_number.is_some() => {
            refuse(format!("{name}'s port is not a flag or variable: {advice}"))
        }
        runtime::Detected::Unknown if by_number.is_some() => refuse(format!(
            "its server is not one whose port setting modelwatch knows; {advice}"
        )),
        // An unnamed port of a server that cannot be moved: `take_over`
        // decides (refused unless `modelwatch.io/model-port` chose it).
        _ => Ok(None),
    }
}

/// Moves the model's port `model_port` to `to`: the server's setting is
/// rewritten, the declared port gets the new number (and, if named, the
/// name `mw-<name>`), and probes and hooks that used the old number or the
/// name are pointed at the new number, so they keep reaching the model
/// directly (in Istio's rewritten probes too). Returns the name of the
/// sidecar's port on the old number.
#[allow(clippy::too_many_arguments)]
fn move_port(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    (ci, pi): (usize, usize),
    model_port: &ContainerPort,
    k: usize,
    used_ports: &[(Option<String>, i32)],
    setting: &runtime::Setting,
    to: i32,
    by_number: Option<&str>,
) -> Result<String, Refusal> {
    let taken = |name: &str| used_ports.iter().any(|(n, _)| n.as_deref() == Some(name));
    let from = model_port.container_port;
    let (proxy_name, model_name) = match &model_port.name {
        Some(name) => (name.clone(), Some(renamed(name))),
        None if k == 0 => (PROXY_PORT_NAME.to_string(), None),
        None => (format!("{PROXY_PORT_NAME}-{k}"), None),
    };
    for name in model_name
        .iter()
        .chain(model_port.name.is_none().then_some(&proxy_name))
    {
        if taken(name) {
            return Err((
                Skip::Conflict,
                format!("port {from} would need the name {name:?}, which is taken"),
            ));
        }
    }
    let container = &mut spec.containers[ci];
    let container_name = container.name.clone();
    runtime::apply(container, setting, to).map_err(|why| {
        (
            Skip::CannotMovePort,
            format!(
                "{}, so modelwatch must take the number {from}, but the model server in container {container_name:?} cannot be moved with {}: {why}; set {} to the flag or variable that sets its port",
                by_number.unwrap_or("the port has no name"),
                setting.describe(),
                annotations::MODEL_PORT_ARG
            ),
        )
    })?;
    let port = &mut container.ports.as_mut().expect("port found")[pi];
    port.container_port = to;
    port.name = model_name;
    repoint(
        container,
        |p| match p {
            IntOrString::Int(n) => *n == from,
            IntOrString::String(s) => Some(s) == model_port.name.as_ref(),
        },
        to,
    );
    repoint_istio_probes(spec, &container_name, from, to);
    Ok(proxy_name)
}

/// Istio's proxy: a container, or a native sidecar where Istio uses those.
fn istio_proxies(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
) -> impl Iterator<Item = &mut Container> {
    spec.containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .filter(|c| c.name == "istio-proxy")
}

/// Istio's injector rewrites the application's HTTP probes to its agent
/// (port 15020) and keeps the originals, with numeric ports, in the
/// `ISTIO_KUBE_APP_PROBERS` variable of `istio-proxy`
/// (istio `pkg/kube/inject/app_probe.go`), keyed `/app-health/<container>/…`.
/// The model's entries on the moved number follow it.
fn repoint_istio_probes(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    container: &str,
    from: i32,
    to: i32,
) {
    let prefix = format!("/app-health/{container}/");
    for proxy in istio_proxies(spec) {
        for e in proxy.env.iter_mut().flatten() {
            if e.name != "ISTIO_KUBE_APP_PROBERS" {
                continue;
            }
            let Some(mut probers) = e
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            else {
                continue;
            };
            let mut changed = false;
            for (key, probe) in probers.as_object_mut().into_iter().flatten() {
                if !key.starts_with(&prefix) {
                    continue;
                }
                for action in ["httpGet", "tcpSocket", "grpc"] {
                    if let Some(p) = probe.get_mut(action).and_then(|a| a.get_mut("port")) {
                        if p.as_i64() == Some(from as i64) {
                            *p = to.into();
                            changed = true;
                        }
                    }
                }
            }
            if changed {
                e.value = Some(probers.to_string());
            }
        }
    }
}

/// A DNS subdomain name (what a ConfigMap's name must be).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn model_pod(annotations: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "m", "annotations": annotations},
            "spec": {"containers": [{
                "name": "model", "image": "reg.example/team/model:2.1@sha256:abc",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                "lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": "http"}}}
            }]}
        }))
    }

    fn apply(p: &Pod, patch: &json_patch::Patch) -> serde_json::Value {
        let mut v = serde_json::to_value(p).unwrap();
        json_patch::patch(&mut v, patch).unwrap();
        v
    }

    #[test]
    fn port_names_and_renaming() {
        assert!(is_port_name("http") && is_port_name("user-port") && is_port_name("h2c"));
        for bad in [
            "",
            "HTTP",
            "-a",
            "a-",
            "a--b",
            "8080",
            "a-very-long-port-name",
        ] {
            assert!(!is_port_name(bad), "{bad}");
        }
        assert_eq!(renamed("http"), "mw-http");
        assert_eq!(renamed("abcdefghijk-mn"), "mw-abcdefghijk");
        assert!(is_port_name(&renamed("abcdefghijk-mnop")));
    }

    #[test]
    fn selection_and_opt_out() {
        let c = InjectorConfig::default();
        let p = model_pod(serde_json::json!({}));
        assert_eq!(
            decide(&p, false, &c).outcome.unwrap_err(),
            Skip::NotSelected
        );
        assert!(decide(&p, true, &c).outcome.is_ok());
        let p = model_pod(serde_json::json!({"modelwatch.io/inject": "true"}));
        assert!(decide(&p, false, &c).outcome.is_ok());
        let p = model_pod(serde_json::json!({"modelwatch.io/inject": "false"}));
        let d = decide(&p, true, &c);
        assert_eq!(d.outcome.unwrap_err(), Skip::OptedOut);
        assert!(d.warnings.is_empty());
        let p = model_pod(serde_json::json!({"modelwatch.io/inject": "yes"}));
        assert_eq!(
            decide(&p, false, &c).outcome.unwrap_err(),
            Skip::BadAnnotation
        );
        // The label form opts in and out too, and wins over the annotation.
        let labelled = |label: &str, annotations: serde_json::Value| {
            let mut p = model_pod(annotations);
            p.metadata.labels =
                Some([("modelwatch.io/inject".to_string(), label.to_string())].into());
            p
        };
        assert!(decide(&labelled("true", serde_json::json!({})), false, &c)
            .outcome
            .is_ok());
        let p = labelled("false", serde_json::json!({"modelwatch.io/inject": "true"}));
        assert_eq!(decide(&p, true, &c).outcome.unwrap_err(), Skip::OptedOut);
        let p = labelled("true", serde_json::json!({"modelwatch.io/inject": "false"}));
        assert!(decide(&p, false, &c).outcome.is_ok());
        let d = decide(&labelled("on", serde_json::json!({})), true, &c);
        assert_eq!(d.outcome.unwrap_err(), Skip::BadAnnotation);
        assert!(d.warnings[0].contains("(label)"), "{:?}", d.warnings);
    }

    #[test]
    fn takes_over_the_named_port_and_repoints_probes_and_hooks() {
        let p = model_pod(serde_json::json!({}));
        let d = decide(&p, true, &InjectorConfig::default());
        let v = apply(&p, &d.outcome.unwrap());
        let model = &v["spec"]["containers"][0];
        assert_eq!(model["ports"][0]["name"], "mw-http");
        assert_eq!(model["readinessProbe"]["httpGet"]["port"], 8080);
        assert_eq!(model["lifecycle"]["preStop"]["httpGet"]["port"], 8080);
        let mw = &v["spec"]["initContainers"][0];
        assert_eq!(mw["name"], SIDECAR);
        assert_eq!(mw["restartPolicy"], "Always");
        assert_eq!(mw["ports"][0]["name"], "http");
        assert_eq!(mw["ports"][0]["containerPort"], 17080);
        let env: BTreeMap<String, serde_json::Value> = mw["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect();
        assert_eq!(env["MODELWATCH_UPSTREAM"], "http://127.0.0.1:8080");
        // The tag, without the registry's port or the digest.
        assert_eq!(env["MODELWATCH_MODEL_VERSION"], "2.1");
        // Injecting the result again changes nothing.
        let again: Pod = serde_json::from_value(v).unwrap();
        assert_eq!(
            decide(&again, true, &InjectorConfig::default())
                .outcome
                .unwrap_err(),
            Skip::AlreadyInjected
        );
    }

    #[test]
    fn an_istio_meshed_pod_is_injected() {
        // As Istio's injector leaves it: its proxy's ports, its probe rewrite
        // and its merged-metrics annotations.
        let p = pod(serde_json::json!({
            "metadata": {"name": "m", "annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": "15020",
                "prometheus.io/path": "/stats/prometheus",
                "sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"}},
            "spec": {"containers": [
                {"name": "model", "image": "m:1", "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/app-health/model/readyz", "port": 15020}}},
                {"name": "istio-proxy", "image": "istio/proxyv2:1.24.2",
                 "ports": [{"name": "http-envoy-prom", "containerPort": 15090}],
                 "env": [{"name": "ISTIO_KUBE_APP_PROBERS",
                          "value": "{\"/app-health/model/readyz\":{\"httpGet\":{\"path\":\"/ready\",\"port\":8080}}}"}]}
            ]}
        }));
        let d = decide(&p, true, &InjectorConfig::default());
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        let v = apply(&p, &d.outcome.unwrap());
        assert_eq!(v["spec"]["containers"][0]["ports"][0]["name"], "mw-http");
        let proxy = &v["spec"]["containers"][1];
        assert_eq!(proxy["ports"][0]["name"], "http-envoy-prom");
        // Istio's agent now merges modelwatch's metrics into 15020.
        let merged = proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS")
            .unwrap();
        let target: serde_json::Value =
            serde_json::from_str(merged["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            target,
            serde_json::json!({"scrape": "true", "path": "/metrics", "port": "17090"})
        );
        assert_eq!(v["metadata"]["annotations"]["prometheus.io/port"], "15020");

        // The model's own metrics already merged: a warning, nothing changed.
        let mut q = p.clone();
        q.spec.as_mut().unwrap().containers[1]
            .env
            .as_mut()
            .unwrap()
            .push(EnvVar {
                name: "ISTIO_PROMETHEUS_ANNOTATIONS".into(),
                value: Some(r#"{"scrape":"true","path":"/metrics","port":"8080"}"#.into()),
                ..Default::default()
            });
        let d = decide(&q, true, &InjectorConfig::default());
        assert!(d.outcome.is_ok());
        assert!(
            d.warnings[0].contains("podMonitor.enabled"),
            "{:?}",
            d.warnings
        );

        // An admin port that collides is still refused, by its chart value.
        let config = InjectorConfig {
            admin_port: 15090,
            ..Default::default()
        };
        let d = decide(&p, true, &config);
        assert_eq!(d.outcome.unwrap_err(), Skip::Conflict);
        assert!(
            d.warnings[0].contains("sidecar.adminPort"),
            "{:?}",
            d.warnings
        );
    }

    fn containers(v: &serde_json::Value) -> &Vec<serde_json::Value> {
        v["spec"]["containers"].as_array().unwrap()
    }

    fn sidecar_env(v: &serde_json::Value) -> BTreeMap<String, String> {
        v["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == SIDECAR)
            .unwrap()["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_string(),
                    e["value"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    #[test]
    fn kserve_raw_deployment_moves_the_model_and_takes_the_number() {
        // KServe's sklearn runtime declares no port; its Service targets 8080.
        let p = pod(serde_json::json!({
            "metadata": {"name": "iris-predictor-0", "labels": {"serving.kserve.io/inferenceservice": "iris"}},
            "spec": {"containers": [{
                "name": "kserve-container", "image": "kserve/sklearnserver:v0.14.0",
                "args": ["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"],
                "readinessProbe": {"httpGet": {"path": "/v1/models/iris", "port": 8080}}
            }]}
        }));
        let d = decide(&p, false, &InjectorConfig::default());
        assert!(matches!(d.outcome, Err(Skip::NotSelected)));
        let d = decide(&p, true, &InjectorConfig::default());
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        let v = apply(&p, &d.outcome.unwrap());
        let model = &containers(&v)[0];
        // 8081 is the server's undeclared gRPC port: the model moves to 17100.
        assert_eq!(model["args"][2], "--http_port=17100");
        assert_eq!(model["ports"][0]["containerPort"], 17100);
        assert_eq!(model["readinessProbe"]["httpGet"]["port"], 17100);
        let env = sidecar_env(&v);
        assert_eq!(env["MODELWATCH_LISTEN"], "0.0.0.0:8080");
        assert_eq!(env["MODELWATCH_UPSTREAM"], "http://127.0.0.1:17100");
        let mw = &v["spec"]["initContainers"][0];
        assert_eq!(mw["ports"][0]["containerPort"], 8080);
        assert_eq!(mw["ports"][0]["name"], PROXY_PORT_NAME);

        // The moved port avoids what the server binds undeclared.
        let config = InjectorConfig {
            moved_port: 8081,
            ..Default::default()
        };
        let v = apply(&p, &decide(&p, true, &config).outcome.unwrap());
        assert_eq!(containers(&v)[0]["args"][2], "--http_port=8082");
    }

    #[test]
    fn kserve_serverless_pod_is_injected_behind_the_queue_proxy() {
        // As Knative renders a KServe Serverless predictor: user-port 8080,
        // the queue-proxy with its four ports forwarding to USER_PORT.
        let p = pod(serde_json::json!({
            "metadata": {"name": "iris-predictor-00001-deployment-x", "labels": {
                "serving.kserve.io/inferenceservice": "iris",
                "serving.knative.dev/revision": "iris-predictor-00001"}},
            "spec": {"containers": [
                {"name": "kserve-container", "image": "docker.io/seldonio/mlserver:1.7.1",
                 "ports": [{"name": "user-port", "containerPort": 8080}],
                 "env": [{"name": "MLSERVER_HTTP_PORT", "value": "8080"}, {"name": "MLSERVER_GRPC_PORT", "value": "9000"}]},
                {"name": "queue-proxy", "image": "gcr.io/knative-releases/knative.dev/serving/cmd/queue",
                 "ports": [{"name": "http-queueadm", "containerPort": 8022}, {"name": "http-autometric", "containerPort": 9090},
                           {"name": "http-usermetric", "containerPort": 9091}, {"name": "queue-port", "containerPort": 8012}],
                 "env": [{"name": "USER_PORT", "value": "8080"}]}
            ]}
        }));
        let d = decide(&p, true, &InjectorConfig::default());
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        let v = apply(&p, &d.outcome.unwrap());
        let model = &containers(&v)[0];
        assert_eq!(model["env"][0]["value"], "17100");
        assert_eq!(
            model["ports"][0],
            serde_json::json!({"name": "mw-user-port", "containerPort": 17100})
        );
        let env = sidecar_env(&v);
        assert_eq!(env["MODELWATCH_LISTEN"], "0.0.0.0:8080");
        assert_eq!(env["MODELWATCH_UPSTREAM"], "http://127.0.0.1:17100");

        // A server whose port setting is unknown: refused, with the way in.
        let mut q = p.clone();
        let c = &mut q.spec.as_mut().unwrap().containers[0];
        c.image = Some("example/custom:1".into());
        c.env = None;
        let d = decide(&q, true, &InjectorConfig::default());
        assert_eq!(d.outcome.unwrap_err(), Skip::CannotMovePort);
        assert!(
            d.warnings[0].contains("queue-proxy") && d.warnings[0].contains("model-port-arg"),
            "{:?}",
            d.warnings
        );
        q.metadata.annotations = Some(
            [(
                annotations::MODEL_PORT_ARG.to_string(),
                "--listen-port".to_string(),
            )]
            .into(),
        );
        q.spec.as_mut().unwrap().containers[0].args = Some(vec!["serve".into()]);
        let v = apply(
            &q,
            &decide(&q, true, &InjectorConfig::default())
                .outcome
                .unwrap(),
        );
        assert_eq!(
            containers(&v)[0]["args"],
            serde_json::json!(["serve", "--listen-port=17100"])
        );
    }

    #[test]
    fn an_unnamed_port_of_a_known_server_is_moved() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "llm"},
            "spec": {"containers": [{
                "name": "vllm", "image": "vllm/vllm-openai:v0.6.3",
                "args": ["--model", "m", "--port", "8000"],
                "ports": [{"containerPort": 8000}],
                "livenessProbe": {"tcpSocket": {"port": 8000}}
            }]}
        }));
        let v = apply(
            &p,
            &decide(&p, true, &InjectorConfig::default())
                .outcome
                .unwrap(),
        );
        let model = &containers(&v)[0];
        assert_eq!(model["args"][3], "17100");
        assert_eq!(model["livenessProbe"]["tcpSocket"]["port"], 17100);
        assert_eq!(sidecar_env(&v)["MODELWATCH_LISTEN"], "0.0.0.0:8000");
        // A bad annotation is refused with what is accepted.
        let mut q = p.clone();
        q.metadata.annotations =
            Some([(annotations::MODEL_PORT_ARG.to_string(), "port".to_string())].into());
        let d = decide(&q, true, &InjectorConfig::default());
        assert_eq!(d.outcome.unwrap_err(), Skip::BadAnnotation);
        assert!(d.warnings[0].contains("env:NAME"), "{:?}", d.warnings);
    }

    #[test]
    fn rest_and_grpc_ports_are_both_taken_over() {
        // MLServer's shape: REST and gRPC ports, gRPC named for what it is.
        let p = |annotations: serde_json::Value, ports: serde_json::Value| {
            pod(serde_json::json!({
                "metadata": {"name": "m", "annotations": annotations},
                "spec": {"containers": [{"name": "model", "image": "mlserver:1.7", "ports": ports}]}
            }))
        };
        let two = serde_json::json!([
            {"name": "grpc", "containerPort": 8081},
            {"name": "http", "containerPort": 8080}
        ]);
        let pod = p(serde_json::json!({}), two.clone());
        let d = decide(&pod, true, &InjectorConfig::default());
        let v = apply(&pod, &d.outcome.unwrap());
        let model = &v["spec"]["containers"][0];
        assert_eq!(model["ports"][0]["name"], "mw-grpc");
        assert_eq!(model["ports"][1]["name"], "mw-http");
        let mw = &v["spec"]["initContainers"][0];
        let ports: Vec<(String, i64)> = mw["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            vec![
                ("http".into(), 17080),
                ("grpc".into(), 17081),
                (ADMIN_PORT_NAME.into(), 17090)
            ]
        );
        let env: BTreeMap<String, serde_json::Value> = mw["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect();
        assert_eq!(env["MODELWATCH_UPSTREAM"], "http://127.0.0.1:8080");
        assert_eq!(
            env["MODELWATCH_EXTRA_PORTS"],
            "0.0.0.0:17081=http://127.0.0.1:8081"
        );

        // Two ports neither of which says gRPC: the annotation chooses, and
        // may name both.
        let other = serde_json::json!([
            {"name": "http", "containerPort": 8080},
            {"name": "metrics", "containerPort": 8082}
        ]);
        let d = decide(
            &p(serde_json::json!({}), other.clone()),
            true,
            &InjectorConfig::default(),
        );
        assert_eq!(d.outcome.unwrap_err(), Skip::AmbiguousPort);
        assert!(d.warnings[0].contains("http,grpc"), "{:?}", d.warnings);
        let pod = p(
            serde_json::json!({"modelwatch.io/model-port": "http, 8082"}),
            other,
        );
        let v = apply(
            &pod,
            &decide(&pod, true, &InjectorConfig::default())
                .outcome
                .unwrap(),
        );
        assert_eq!(
            v["spec"]["initContainers"][0]["ports"][1]["name"],
            "metrics"
        );
        let pod = p(
            serde_json::json!({"modelwatch.io/model-port": "http,nope"}),
            two,
        );
        assert_eq!(
            decide(&pod, true, &InjectorConfig::default())
                .outcome
                .unwrap_err(),
            Skip::PortNotFound
        );
    }

    #[test]
    fn regular_container_mode_appends_to_containers() {
        let c = InjectorConfig {
            native_sidecar: false,
            ..Default::default()
        };
        let p = model_pod(serde_json::json!({}));
        let v = apply(&p, &decide(&p, true, &c).outcome.unwrap());
        assert_eq!(v["spec"]["containers"][1]["name"], SIDECAR);
        assert!(v["spec"]["containers"][1].get("restartPolicy").is_none());
        assert!(v["spec"].get("initContainers").is_none());
    }
}
