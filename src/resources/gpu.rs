//! NVIDIA GPUs through NVML, loaded at run time (`nvml-wrapper` opens
//! libnvidia-ml.so when modelwatch starts; nothing links against it). With
//! no GPU or no driver, `Gpus::open` says why in one line and modelwatch
//! carries on without GPU figures.

use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::Nvml;
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
}

/// The GPUs visible to this pod.
pub struct Gpus {
    nvml: Nvml,
    /// Device indices to read.
    indices: Vec<u32>,
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
        let nvml = Nvml::init().map_err(|e| format!("NVML not available ({e})"))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let wanted = visible(std::env::var("NVIDIA_VISIBLE_DEVICES").ok().as_deref());
        let mut indices = Vec::new();
        for i in 0..count {
            let Ok(d) = nvml.device_by_index(i) else {
                continue;
            };
            let uuid = d.uuid().unwrap_or_default();
            let keep = match &wanted {
                None => true,
                Some(list) => list.iter().any(|w| *w == i.to_string() || *w == uuid),
            };
            if keep {
                indices.push(i);
            }
        }
        if indices.is_empty() {
            return Err(format!(
                "NVML sees {count} GPU(s), none visible to this pod"
            ));
        }
        let driver_version = nvml.sys_driver_version().unwrap_or_default();
        let cuda_version = nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default();
        Ok(Gpus {
            nvml,
            indices,
            driver_version,
            cuda_version,
        })
    }

    pub fn read(&self) -> Vec<GpuReading> {
        let mut out = Vec::with_capacity(self.indices.len());
        for &i in &self.indices {
            let Ok(d) = self.nvml.device_by_index(i) else {
                continue;
            };
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
            });
        }
        out
    }
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
