//! NVIDIA GPUs through NVML, loaded at run time (`nvml-wrapper` opens
//! libnvidia-ml.so when modelwatch starts; nothing links against it). With
//! no GPU or no driver, `Gpus::open` says why in one line and modelwatch
//! carries on without GPU figures.

use std::collections::HashMap;
use std::sync::Mutex;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use nvml_wrapper::{Device, Nvml};
use serde::Serialize;

/// One reading of one GPU. A figure the driver does not give is None.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuReading {
    /// The GPU's UUID (`GPU-...`, or `MIG-...` for a MIG device).
    pub id: String,
    pub name: String,
    pub index: u32,
    pub utilization: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<f64>,
    pub power_draw_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub sm_clock_hertz: Option<f64>,
    /// Active clock throttle reasons (NVML's names, snake_case).
    pub throttle_reasons: Vec<String>,
    pub ecc_corrected: Option<u64>,
    pub ecc_uncorrected: Option<u64>,
    /// Critical XID errors seen since modelwatch started (NVML events).
    pub xid_errors: Option<u64>,
}

/// Where a visible device is: a whole GPU, or a MIG device of one.
#[derive(Debug, Clone, Copy)]
enum Handle {
    Gpu(u32),
    Mig(u32, u32),
}

/// The GPUs visible to this pod.
pub struct Gpus {
    /// Loaded once for the life of the process (the event set borrows it).
    nvml: &'static Nvml,
    devices: Vec<Handle>,
    /// Critical XID events, polled without waiting at each reading.
    events: Option<Mutex<EventSet<'static>>>,
    xid: Mutex<HashMap<String, u64>>,
    pub driver_version: String,
    pub cuda_version: String,
}

/// Which devices `NVIDIA_VISIBLE_DEVICES` lets the pod see: None for all
/// (unset, empty or `all`), or the listed indices and UUIDs; `none`/`void`: no GPU.
pub fn visible(var: Option<&str>) -> Option<Vec<String>> {
    match var.map(str::trim) {
        None | Some("") | Some("all") => None,
        Some("none") | Some("void") => Some(Vec::new()),
        Some(list) => Some(list.split(',').map(|s| s.trim().to_string()).collect()),
    }
}

impl Gpus {
    /// Loads NVML and lists the visible devices; Err says why there are none.
    pub fn open() -> Result<Gpus, String> {
        let nvml: &'static Nvml = Box::leak(Box::new(
            Nvml::init().map_err(|e| format!("NVML not available ({e})"))?,
        ));
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let wanted = visible(std::env::var("NVIDIA_VISIBLE_DEVICES").ok().as_deref());
        let keep = |index: &str, uuid: &str| match &wanted {
            None => true,
            Some(list) => list.iter().any(|w| w == index || w == uuid),
        };
        let mut devices = Vec::new();
        for i in 0..count {
            let Ok(d) = nvml.device_by_index(i) else {
                continue;
            };
            // A GPU in MIG mode is read as its MIG devices.
            let migs = d.mig_device_count().unwrap_or(0);
            let mut any_mig = false;
            for m in 0..migs {
                if let Ok(md) = d.mig_device_by_index(m) {
                    any_mig = true;
                    if keep(&format!("{i}:{m}"), &md.uuid().unwrap_or_default()) {
                        devices.push(Handle::Mig(i, m));
                    }
                }
            }
            if !any_mig && keep(&i.to_string(), &d.uuid().unwrap_or_default()) {
                devices.push(Handle::Gpu(i));
            }
        }
        if devices.is_empty() {
            return Err(format!(
                "NVML sees {count} GPU(s), none visible to this pod"
            ));
        }
        let events = register_xid(nvml, &devices).map(Mutex::new);
        let driver_version = nvml.sys_driver_version().unwrap_or_default();
        let cuda_version = nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default();
        Ok(Gpus {
            nvml,
            devices,
            events,
            xid: Mutex::new(HashMap::new()),
            driver_version,
            cuda_version,
        })
    }

    fn device(&self, h: Handle) -> Result<Device<'static>, NvmlError> {
        match h {
            Handle::Gpu(i) => self.nvml.device_by_index(i),
            Handle::Mig(i, m) => self.nvml.device_by_index(i)?.mig_device_by_index(m),
        }
    }

    /// Counts the XID events that arrived since the last reading.
    fn drain_xid(&self) {
        let Some(set) = &self.events else { return };
        let set = set.lock().expect("poisoned");
        let mut counts = self.xid.lock().expect("poisoned");
        for _ in 0..1000 {
            match set.wait(0) {
                Ok(e) if e.event_type.contains(EventTypes::CRITICAL_XID_ERROR) => {
                    let uuid = e.device.uuid().unwrap_or_default();
                    tracing::warn!(gpu = %uuid, xid = ?e.event_data, "GPU XID error");
                    *counts.entry(uuid).or_default() += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    pub fn read(&self) -> Vec<GpuReading> {
        self.drain_xid();
        let xid = self.xid.lock().expect("poisoned").clone();
        let mut out = Vec::with_capacity(self.devices.len());
        for (n, &h) in self.devices.iter().enumerate() {
            let Ok(d) = self.device(h) else {
                continue;
            };
            let i = n as u32;
            let mem = d.memory_info().ok();
            let reasons = d.current_throttle_reasons().ok();
            out.push(GpuReading {
                id: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                index: i,
                utilization: d.utilization_rates().ok().map(|u| u.gpu as f64 / 100.0),
                memory_used_bytes: mem.as_ref().map(|m| m.used),
                memory_total_bytes: mem.as_ref().map(|m| m.total),
                temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                power_draw_watts: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                power_limit_watts: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
                sm_clock_hertz: d.clock_info(Clock::SM).ok().map(|mhz| mhz as f64 * 1e6),
                throttle_reasons: reasons
                    .map(|r| {
                        r.iter_names()
                            .map(|(n, _)| n.to_ascii_lowercase())
                            .filter(|n| n != "gpu_idle" && n != "none")
                            .collect()
                    })
                    .unwrap_or_default(),
                ecc_corrected: d
                    .total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
                    .ok(),
                ecc_uncorrected: d
                    .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
                    .ok(),
                xid_errors: self.events.as_ref().map(|_| 0),
            });
            if let Some(last) = out.last_mut() {
                if let Some(n) = xid.get(&last.id) {
                    last.xid_errors = Some(*n);
                }
            }
        }
        out
    }
}

/// One event set for critical XID errors of every whole GPU (MIG devices
/// report through their parent). None when the driver refuses.
fn register_xid(nvml: &'static Nvml, devices: &[Handle]) -> Option<EventSet<'static>> {
    let mut set = nvml.create_event_set().ok()?;
    let mut parents: Vec<u32> = devices
        .iter()
        .map(|h| match h {
            Handle::Gpu(i) | Handle::Mig(i, _) => *i,
        })
        .collect();
    parents.dedup();
    for i in parents {
        let d = nvml.device_by_index(i).ok()?;
        set = d
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .map_err(|e| tracing::info!(error = %e.error, "GPU XID events not available"))
            .ok()?;
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices_follow_the_nvidia_container_runtime() {
        assert_eq!(visible(None), None);
        assert_eq!(visible(Some("all")), None);
        assert_eq!(visible(Some("none")), Some(vec![]));
        assert_eq!(
            visible(Some("0, GPU-abc")),
            Some(vec!["0".into(), "GPU-abc".into()])
        );
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        // On a machine with a GPU this opens it; without one it must say why.
        match Gpus::open() {
            Ok(g) => assert!(!g.read().is_empty()),
            Err(why) => assert!(!why.is_empty()),
        }
    }
}
