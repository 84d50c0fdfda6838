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
    pub const ALL: [Skip; 12] = [
        Skip::NotSelected,
        Skip::OptedOut,
        Skip::AlreadyInjected,
        Skip::NoPort,
        Skip::AmbiguousPort,
        Skip::PortNotFound,
        Skip::UnnamedPort,
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

/// The containers service meshes add to a pod: their ports are not the model's.
const MESH_CONTAINERS: &[&str] = &["istio-proxy", "linkerd-proxy"];

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
        // first) is never the model.
        None => (0..spec.containers.len())
            .filter(|&i| !MESH_CONTAINERS.contains(&spec.containers[i].name.as_str()))
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

/// Points a probe or hook that used the port's name at its number.
fn repoint(
    get: Option<&mut HTTPGetAction>,
    tcp: Option<&mut IntOrString>,
    name: &str,
    number: i32,
) {
    let named = |p: &IntOrString| matches!(p, IntOrString::String(s) if s == name);
    if let Some(h) = get {
        if named(&h.port) {
            h.port = IntOrString::Int(number);
        }
    }
    if let Some(p) = tcp {
        if named(p) {
            *p = IntOrString::Int(number);
        }
    }
}

fn repoint_probe(probe: &mut Option<Probe>, name: &str, number: i32) {
    if let Some(p) = probe {
        repoint(
            p.http_get.as_mut(),
            p.tcp_socket.as_mut().map(|t| &mut t.port),
            name,
            number,
        );
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
            "a Job's pod with a regular sidecar container never completes; enable native sidecars (Kubernetes 1.29+)".into(),
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
    // The sidecar's ports: proxy_port for the main one, the next numbers for more.
    let sidecar_ports: Vec<i32> = (0..ports.len() as i32)
        .map(|k| config.proxy_port + k)
        .collect();
    for (k, port) in sidecar_ports.iter().enumerate() {
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

    // The port takeover, for each of the model's ports.
    let mut proxy_port_names = Vec::new();
    for (k, (&(ci, pi), model_port)) in ports.iter().zip(&model_ports).enumerate() {
        proxy_port_names.push(take_over(
            spec,
            (ci, pi),
            model_port,
            k,
            &used_ports_owned,
            ann.contains_key(annotations::MODEL_PORT),
            sidecar_ports[k],
            &mut warnings,
        )?);
    }

    // The sidecar.
    let mut env_vars = vec![
        env(
            "MODELWATCH_LISTEN",
            format!("0.0.0.0:{}", config.proxy_port),
        ),
        env(
            "MODELWATCH_UPSTREAM",
            format!("http://127.0.0.1:{}", model_ports[0].container_port),
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
        let pairs: Vec<String> = model_ports[1..]
            .iter()
            .zip(&sidecar_ports[1..])
            .map(|(m, s)| format!("0.0.0.0:{s}=http://127.0.0.1:{}", m.container_port))
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
    if config.prometheus_annotations
        && !annotations_map
            .keys()
            .any(|k| k.starts_with("prometheus.io/"))
    {
        annotations_map.insert("prometheus.io/scrape".into(), "true".into());
        annotations_map.insert("prometheus.io/port".into(), config.admin_port.to_string());
        annotations_map.insert("prometheus.io/path".into(), "/metrics".into());
    }
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED_LABEL.into(), "true".into());
    Ok(warnings)
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
            let number = model_port.container_port;
            repoint_probe(&mut container.liveness_probe, name, number);
            repoint_probe(&mut container.readiness_probe, name, number);
            repoint_probe(&mut container.startup_probe, name, number);
            if let Some(l) = container.lifecycle.as_mut() {
                for h in [l.post_start.as_mut(), l.pre_stop.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    repoint(
                        h.http_get.as_mut(),
                        h.tcp_socket.as_mut().map(|t| &mut t.port),
                        name,
                        number,
                    );
                }
            }
            Ok(name.clone())
        }
        None => {
            if !annotated {
                return Err((
                    Skip::UnnamedPort,
                    format!(
                        "port {} has no name, so Services address the model by number and would bypass the sidecar; name the port (e.g. http) or set modelwatch.io/model-port to inject anyway",
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
        assert_eq!(mw["ports"][0]["containerPort"], 15080);
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
    fn a_mesh_proxy_is_not_the_model() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "m"},
            "spec": {"containers": [
                {"name": "model", "image": "m:1", "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "istio-proxy", "image": "istio/proxyv2:1.24.2",
                 "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}
            ]}
        }));
        // Envoy holds 15090, the default admin port: skipped, named by its chart value.
        let d = decide(&p, true, &InjectorConfig::default());
        assert_eq!(d.outcome.unwrap_err(), Skip::Conflict);
        assert!(
            d.warnings[0].contains("sidecar.adminPort"),
            "{:?}",
            d.warnings
        );
        let config = InjectorConfig {
            admin_port: 15099,
            ..Default::default()
        };
        let v = apply(&p, &decide(&p, true, &config).outcome.unwrap());
        assert_eq!(v["spec"]["containers"][0]["ports"][0]["name"], "mw-http");
        assert_eq!(
            v["spec"]["containers"][1]["ports"][0]["name"],
            "http-envoy-prom"
        );
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
                ("http".into(), 15080),
                ("grpc".into(), 15081),
                (ADMIN_PORT_NAME.into(), 15090)
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
            "0.0.0.0:15081=http://127.0.0.1:8081"
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
