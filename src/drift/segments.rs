//! Feature bins for segment analysis. Each stored prediction keeps, per
//! reference feature, the bin its value fell in (the reference profile's
//! bins): one byte a feature, at most `drift.max_features` of them. The
//! diagnosis compares accuracy per bin now with the reference period.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::profile::{format_number, Kind, Profile};
use crate::protocol::Value;

/// The bin of a value that is missing, not finite, or of a feature the
/// record did not carry.
pub const MISSING: u8 = u8::MAX;

/// How one feature's values fall into bins.
#[derive(Debug, Clone, PartialEq)]
pub enum Bins {
    /// Inner edges: bin `i` holds `edges[i-1] <= x < edges[i]`.
    Numeric(Vec<f64>),
    /// One bin per category, then `other`.
    Categorical(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFeature {
    pub name: String,
    pub bins: Bins,
}

/// The features of one model's reference, in bin-byte order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub features: Vec<SegmentFeature>,
}

/// The layout of each model (by model name), published by the drift
/// analyzer when a reference is loaded or taken from live traffic.
pub type Layouts = Arc<RwLock<HashMap<String, Arc<Layout>>>>;

impl Layout {
    /// The input features of a profile (not the model's own outputs), at
    /// most `max_features`, each with fewer than 255 bins.
    pub fn from_profile(p: &Profile, max_features: usize) -> Layout {
        let features = p
            .features
            .iter()
            .filter(|f| f.name != "prediction" && !f.name.starts_with("llm."))
            .filter_map(|f| {
                let bins = match f.kind {
                    Kind::Numeric => Bins::Numeric(f.edges.clone()),
                    Kind::Categorical => Bins::Categorical(f.categories.clone()),
                };
                (bin_count(&bins) < MISSING as usize).then(|| SegmentFeature {
                    name: f.name.clone(),
                    bins,
                })
            })
            .take(max_features.min(MISSING as usize))
            .collect();
        Layout { features }
    }

    /// The bins of `features` (a record's named inputs), one byte each in
    /// layout order.
    pub fn bins_of(&self, features: &[(String, Value)]) -> Vec<u8> {
        self.features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                // Records usually carry the features in the reference's order.
                let v = match features.get(i) {
                    Some((n, v)) if *n == f.name => Some(v),
                    _ => features.iter().find(|(n, _)| *n == f.name).map(|(_, v)| v),
                };
                v.map_or(MISSING, |v| bin_of(&f.bins, v))
            })
            .collect()
    }

    /// The rows a bin holds, in words: `mean radius >= 17.8`,
    /// `12.1 <= mean radius < 13.4`, `color = red`, `color: other`.
    pub fn describe(&self, feature: usize, bin: u8) -> String {
        let Some(f) = self.features.get(feature) else {
            return String::new();
        };
        let name = &f.name;
        if bin == MISSING {
            return format!("{name} missing");
        }
        let b = bin as usize;
        match &f.bins {
            Bins::Numeric(e) if e.is_empty() => format!("{name}: all values"),
            Bins::Numeric(e) if b == 0 => format!("{name} < {}", short(e[0])),
            Bins::Numeric(e) if b >= e.len() => format!("{name} >= {}", short(e[e.len() - 1])),
            Bins::Numeric(e) => format!("{} <= {name} < {}", short(e[b - 1]), short(e[b])),
            Bins::Categorical(c) => match c.get(b) {
                Some(c) => format!("{name} = {c}"),
                None => format!("{name}: other"),
            },
        }
    }
}

/// Bins of a feature (the last categorical one is `other`).
pub fn bin_count(bins: &Bins) -> usize {
    match bins {
        Bins::Numeric(e) => e.len() + 1,
        Bins::Categorical(c) => c.len() + 1,
    }
}

fn bin_of(bins: &Bins, v: &Value) -> u8 {
    match (bins, v) {
        (Bins::Numeric(e), Value::Number(x)) if x.is_finite() => super::stats::bin_of(*x, e) as u8,
        (Bins::Numeric(e), Value::Bool(b)) => {
            super::stats::bin_of(f64::from(u8::from(*b)), e) as u8
        }
        (Bins::Categorical(c), v) => {
            let name = match v {
                Value::Text(s) => s.clone(),
                Value::Number(x) => format_number(*x),
                Value::Bool(b) => b.to_string(),
                Value::Missing => return MISSING,
            };
            c.iter().position(|x| *x == name).unwrap_or(c.len()) as u8
        }
        _ => MISSING,
    }
}

/// Four significant digits: edges are quantiles of a sample.
fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::profile::FeatureProfile;

    fn feature(name: &str, kind: Kind, edges: Vec<f64>, categories: &[&str]) -> FeatureProfile {
        FeatureProfile {
            name: name.into(),
            kind,
            count: 10,
            missing: 0,
            min: None,
            max: None,
            mean: None,
            std: None,
            sample: Vec::new(),
            bin_counts: vec![1.0; edges.len().max(categories.len()) + 1],
            edges,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            sketch: None,
        }
    }

    #[test]
    fn values_fall_into_the_reference_bins() {
        let p = Profile {
            format: "modelwatch-profile".into(),
            version: 1,
            rows: 10,
            features: vec![
                feature("radius", Kind::Numeric, vec![10.0, 17.8], &[]),
                feature("color", Kind::Categorical, Vec::new(), &["red", "blue"]),
                feature("prediction", Kind::Numeric, vec![0.5], &[]),
            ],
        };
        let l = Layout::from_profile(&p, 200);
        assert_eq!(l.features.len(), 2, "the model's output is no segment");
        let row = |r: f64, c: &str| {
            vec![
                ("color".to_string(), Value::Text(c.into())),
                ("radius".to_string(), Value::Number(r)),
            ]
        };
        assert_eq!(l.bins_of(&row(9.0, "red")), vec![0, 0]);
        assert_eq!(l.bins_of(&row(10.0, "blue")), vec![1, 1]);
        assert_eq!(l.bins_of(&row(17.8, "green")), vec![2, 2]);
        assert_eq!(l.bins_of(&row(f64::NAN, "red")), vec![MISSING, 0]);
        assert_eq!(l.bins_of(&[]), vec![MISSING, MISSING]);
        assert_eq!(l.describe(0, 2), "radius >= 17.8");
        assert_eq!(l.describe(0, 1), "10 <= radius < 17.8");
        assert_eq!(l.describe(0, 0), "radius < 10");
        assert_eq!(l.describe(1, 1), "color = blue");
        assert_eq!(l.describe(1, 2), "color: other");
        assert_eq!(l.describe(1, MISSING), "color missing");
        assert_eq!(short(0.0123456), "0.01235");
        assert_eq!(short(1234.5678), "1235");
    }
}
