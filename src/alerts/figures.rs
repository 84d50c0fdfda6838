//! Reads modelwatch's own figures back from the Prometheus registry that
//! `/metrics` serves, so that alert rules and the canary gate see exactly
//! the series a scrape sees (names, labels, values).

use std::collections::{BTreeMap, HashMap};

use prometheus::proto::{MetricFamily, MetricType};

use crate::telemetry::names::MetricName;
use crate::telemetry::prometheus_name;

/// A series' labels, by Prometheus label name.
pub type Labels = BTreeMap<String, String>;

/// One reading of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Scalar(f64),
    /// Cumulative counts per upper bound (the last bound is +Inf), sum and count.
    Histogram {
        bounds: Vec<f64>,
        cumulative: Vec<u64>,
        count: u64,
        sum: f64,
    },
}

impl Raw {
    /// Adds another reading: scalars add up, histograms with the same bounds
    /// add bucket by bucket; anything else is left out.
    pub fn add(&mut self, other: &Raw) {
        match (self, other) {
            (Raw::Scalar(x), Raw::Scalar(y)) => *x += y,
            (
                Raw::Histogram {
                    bounds,
                    cumulative,
                    count,
                    sum,
                },
                Raw::Histogram {
                    bounds: b,
                    cumulative: c,
                    count: n,
                    sum: s,
                },
            ) if bounds == b => {
                for (x, y) in cumulative.iter_mut().zip(c) {
                    *x += y;
                }
                *count += n;
                *sum += s;
            }
            _ => {}
        }
    }
}

/// The sum of several readings (e.g. every series of a version), by `Raw::add`.
pub fn sum<'a>(readings: impl IntoIterator<Item = &'a Raw>) -> Option<Raw> {
    readings.into_iter().fold(None, |acc, r| match acc {
        None => Some(r.clone()),
        Some(mut a) => {
            a.add(r);
            Some(a)
        }
    })
}

/// One series of a figure.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub raw: Raw,
}

/// Everything the registry held at one moment, by family name.
pub struct Figures {
    families: HashMap<String, MetricFamily>,
}

/// A label name as the Prometheus exporter writes it (dots become underscores).
pub fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Figures {
    pub fn gather(registry: &prometheus::Registry) -> Figures {
        Figures::from_families(registry.gather())
    }

    pub fn from_families(families: Vec<MetricFamily>) -> Figures {
        Figures {
            families: families
                .into_iter()
                .map(|f| (f.name().to_string(), f))
                .collect(),
        }
    }

    /// Every series of `m` whose labels include all of `matchers`.
    pub fn series(&self, m: &MetricName, matchers: &Labels) -> Vec<Series> {
        let Some(family) = self.families.get(&prometheus_name(m)) else {
            return Vec::new();
        };
        let histogram = family.get_field_type() == MetricType::HISTOGRAM;
        family
            .get_metric()
            .iter()
            .filter_map(|metric| {
                let labels: Labels = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                if !matchers.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    return None;
                }
                let raw = if histogram {
                    let h = metric.get_histogram();
                    let mut bounds = Vec::with_capacity(h.get_bucket().len() + 1);
                    let mut cumulative = Vec::with_capacity(bounds.capacity());
                    for b in h.get_bucket() {
                        bounds.push(b.upper_bound());
                        cumulative.push(b.cumulative_count());
                    }
                    if bounds.last() != Some(&f64::INFINITY) {
                        bounds.push(f64::INFINITY);
                        cumulative.push(h.get_sample_count());
                    }
                    Raw::Histogram {
                        bounds,
                        cumulative,
                        count: h.get_sample_count(),
                        sum: h.get_sample_sum(),
                    }
                } else {
                    Raw::Scalar(match family.get_field_type() {
                        MetricType::COUNTER => metric.get_counter().get_value(),
                        _ => metric.get_gauge().get_value(),
                    })
                };
                Some(Series { labels, raw })
            })
            .collect()
    }
}

/// The difference of two cumulative histogram readings (`newer` - `older`);
/// a counter reset (a smaller count) gives `newer` itself.
pub fn histogram_delta(newer: &Raw, older: Option<&Raw>) -> Option<(Vec<f64>, Vec<u64>, u64, f64)> {
    let Raw::Histogram {
        bounds,
        cumulative,
        count,
        sum,
    } = newer
    else {
        return None;
    };
    match older {
        Some(Raw::Histogram {
            bounds: ob,
            cumulative: oc,
            count: on,
            sum: os,
        }) if ob == bounds && on <= count => Some((
            bounds.clone(),
            cumulative
                .iter()
                .zip(oc)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count - on,
            sum - os,
        )),
        _ => Some((bounds.clone(), cumulative.clone(), *count, *sum)),
    }
}

/// The `q` quantile of a cumulative bucket histogram, interpolated linearly
/// within its bucket: Prometheus' `histogram_quantile`. A quantile in the
/// +Inf bucket is the highest finite bound. None without observations.
pub fn histogram_quantile(q: f64, bounds: &[f64], cumulative: &[u64]) -> Option<f64> {
    let total = *cumulative.last()? as f64;
    if total == 0.0 || bounds.is_empty() {
        return None;
    }
    let rank = q * total;
    let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
    if bounds[i].is_infinite() {
        return bounds.iter().rev().find(|b| b.is_finite()).copied();
    }
    let (lower, below) = if i == 0 {
        (0.0_f64.min(bounds[0]), 0.0)
    } else {
        (bounds[i - 1], cumulative[i - 1] as f64)
    };
    let in_bucket = cumulative[i] as f64 - below;
    if in_bucket <= 0.0 {
        return Some(bounds[i]);
    }
    Some(lower + (bounds[i] - lower) * (rank - below) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 observations in (0, 1], 10 in (1, 2]: the median is 1, p75 is 1.5.
        let bounds = [1.0, 2.0, f64::INFINITY];
        let cum = [10, 20, 20];
        assert_eq!(histogram_quantile(0.5, &bounds, &cum), Some(1.0));
        assert_eq!(histogram_quantile(0.75, &bounds, &cum), Some(1.5));
        // Everything in +Inf: the highest finite bound.
        assert_eq!(histogram_quantile(0.5, &bounds, &[0, 0, 5]), Some(2.0));
        assert_eq!(histogram_quantile(0.5, &bounds, &[0, 0, 0]), None);
    }

    #[test]
    fn a_histogram_delta_survives_a_reset() {
        let h = |c: Vec<u64>, n, s| Raw::Histogram {
            bounds: vec![1.0, f64::INFINITY],
            cumulative: c,
            count: n,
            sum: s,
        };
        let (_, c, n, s) =
            histogram_delta(&h(vec![5, 8], 8, 9.0), Some(&h(vec![2, 3], 3, 4.0))).unwrap();
        assert_eq!((c, n, s), (vec![3, 5], 5, 5.0));
        let (_, c, n, _) =
            histogram_delta(&h(vec![1, 1], 1, 1.0), Some(&h(vec![2, 3], 3, 4.0))).unwrap();
        assert_eq!((c, n), (vec![1, 1], 1));
    }
}
