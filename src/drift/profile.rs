//! Reference profiles: what the training or validation data looked like,
//! per feature. Built by `modelwatch profile` from CSV or JSON Lines, or from
//! the first live records; read at start.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::stats;

pub const FORMAT: &str = "modelwatch-profile";
pub const VERSION: u32 = 1;

/// A profile file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: String,
    pub version: u32,
    pub rows: u64,
    pub features: Vec<FeatureProfile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Numeric,
    Categorical,
}

/// One feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    pub kind: Kind,
    /// Rows with a value (not missing).
    pub count: u64,
    pub missing: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Numeric: a uniform sample of the values (all of them up to the sample
    /// size), sorted; KS and Wasserstein compare with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<f64>,
    /// Numeric: inner bin edges at the sample's quantiles (PSI, Jensen-Shannon, Hellinger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<f64>,
    /// Counts per bin (numeric: of the sample; categorical: per category, then `other`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bin_counts: Vec<f64>,
    /// Categorical: the most frequent categories, in bin order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Numeric: a mergeable quantile sketch of every value (not only the
    /// sample); `quantiles` in `/v1/status` come from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<super::sketch::Sketch>,
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("profile {path} is not a modelwatch profile: {message}")]
    Corrupt { path: String, message: String },
    #[error("profile {path} was written by a newer modelwatch (profile version {found}; this one reads {VERSION}): rebuild it with `modelwatch profile`")]
    Newer { path: String, found: u32 },
    #[error("cannot read input {path}: {message}")]
    Input { path: String, message: String },
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &[u8], shown: &str) -> Result<Profile, ProfileError> {
        let corrupt = |message: String| ProfileError::Corrupt {
            path: shown.to_string(),
            message,
        };
        let head: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
        if head["format"] != FORMAT {
            return Err(corrupt(format!("`format` is not {FORMAT:?}")));
        }
        let version = head["version"].as_u64().unwrap_or(0) as u32;
        if version > VERSION {
            return Err(ProfileError::Newer {
                path: shown.to_string(),
                found: version,
            });
        }
        let p: Profile = serde_json::from_value(head).map_err(|e| corrupt(e.to_string()))?;
        for f in &p.features {
            let sorted = f.sample.windows(2).all(|w| w[0] <= w[1]);
            let bins_ok = match f.kind {
                Kind::Numeric => f.bin_counts.len() == f.edges.len() + 1,
                Kind::Categorical => f.bin_counts.len() == f.categories.len() + 1,
            };
            if !sorted || !bins_ok || f.sample.iter().any(|v| !v.is_finite()) {
                return Err(corrupt(format!(
                    "feature {:?}: its sample, edges and bin counts do not agree",
                    f.name
                )));
            }
        }
        Ok(p)
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// Settings of a profile build.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Values kept per numeric feature (a uniform reservoir sample beyond it).
    pub sample_size: usize,
    /// Quantile bins per numeric feature.
    pub bins: usize,
    /// Categories kept per categorical feature (the rest is `other`).
    pub top_categories: usize,
    /// Seed of the reservoir sample (builds are reproducible).
    pub seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            sample_size: 5000,
            bins: 10,
            top_categories: 50,
            seed: 1,
        }
    }
}

/// Distinct categories counted per column while building; beyond it new
/// ones are counted together.
const MAX_DISTINCT: usize = 100_000;

/// Accumulates one column.
#[derive(Debug, Default)]
struct Column {
    name: String,
    missing: u64,
    numbers: u64,
    texts: u64,
    seen: u64,
    reservoir: Vec<f64>,
    min: f64,
    max: f64,
    sum: f64,
    sum_sq: f64,
    categories: HashMap<String, u64>,
    overflow: u64,
    sketch: super::sketch::Sketch,
}

/// Builds a profile from rows of named values, one at a time.
pub struct Builder {
    options: BuildOptions,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    rows: u64,
    rng: fastrand::Rng,
}

/// One cell of input.
pub enum Cell<'a> {
    Missing,
    Number(f64),
    Text(&'a str),
}

impl Builder {
    pub fn new(options: BuildOptions) -> Builder {
        Builder {
            rng: fastrand::Rng::with_seed(options.seed),
            options,
            columns: Vec::new(),
            index: HashMap::new(),
            rows: 0,
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Adds one cell of the current row.
    pub fn add(&mut self, name: &str, cell: Cell<'_>) {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.columns.push(Column {
                    name: name.to_string(),
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    ..Column::default()
                });
                self.index.insert(name.to_string(), self.columns.len() - 1);
                self.columns.len() - 1
            }
        };
        let sample_size = self.options.sample_size;
        let c = &mut self.columns[i];
        match cell {
            Cell::Missing => c.missing += 1,
            Cell::Number(x) if !x.is_finite() => c.missing += 1,
            Cell::Number(x) => {
                c.numbers += 1;
                c.seen += 1;
                c.min = c.min.min(x);
                c.max = c.max.max(x);
                c.sum += x;
                c.sum_sq += x * x;
                c.sketch.add(x);
                // Algorithm R.
                if c.reservoir.len() < sample_size {
                    c.reservoir.push(x);
                } else {
                    let j = self.rng.u64(0..c.seen) as usize;
                    if j < sample_size {
                        c.reservoir[j] = x;
                    }
                }
                count_category(c, &format_number(x));
            }
            Cell::Text(s) => {
                c.texts += 1;
                count_category(c, s);
            }
        }
    }

    /// The profile of everything added.
    pub fn finish(self) -> Profile {
        let options = self.options;
        let mut columns = self.columns;
        columns.sort_by(|a, b| a.name.cmp(&b.name));
        let features = columns
            .into_iter()
            .map(|c| {
                let count = c.numbers + c.texts;
                if c.texts == 0 && c.numbers > 0 {
                    let mut sample = c.reservoir;
                    sample.sort_by(f64::total_cmp);
                    let edges = stats::quantile_edges(&sample, options.bins);
                    let bin_counts = stats::bin_counts(&sample, &edges);
                    let n = c.numbers as f64;
                    let mean = c.sum / n;
                    FeatureProfile {
                        name: c.name,
                        kind: Kind::Numeric,
                        count,
                        missing: c.missing,
                        min: Some(c.min),
                        max: Some(c.max),
                        mean: Some(mean),
                        std: Some((c.sum_sq / n - mean * mean).max(0.0).sqrt()),
                        sample,
                        edges,
                        bin_counts,
                        categories: Vec::new(),
                        sketch: Some(c.sketch),
                    }
                } else {
                    let mut cats: Vec<(String, u64)> = c.categories.into_iter().collect();
                    cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    let other: u64 = c.overflow
                        + cats
                            .iter()
                            .skip(options.top_categories)
                            .map(|(_, n)| n)
                            .sum::<u64>();
                    cats.truncate(options.top_categories);
                    let mut bin_counts: Vec<f64> = cats.iter().map(|(_, n)| *n as f64).collect();
                    bin_counts.push(other as f64);
                    FeatureProfile {
                        name: c.name,
                        kind: Kind::Categorical,
                        count,
                        missing: c.missing,
                        min: None,
                        max: None,
                        mean: None,
                        std: None,
                        sample: Vec::new(),
                        edges: Vec::new(),
                        bin_counts,
                        categories: cats.into_iter().map(|(s, _)| s).collect(),
                        sketch: None,
                    }
                }
            })
            .collect();
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            rows: self.rows,
            features,
        }
    }
}

fn count_category(c: &mut Column, s: &str) {
    if let Some(n) = c.categories.get_mut(s) {
        *n += 1;
    } else if c.categories.len() < MAX_DISTINCT {
        c.categories.insert(s.to_string(), 1);
    } else {
        c.overflow += 1;
    }
}

/// A number as a category name: integers without a fraction.
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Input formats of `modelwatch profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    JsonLines,
}

impl InputFormat {
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(InputFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(InputFormat::JsonLines),
            _ => None,
        }
    }
}

/// Reads `input` and builds its profile. `progress` is called now and then
/// with (bytes read, rows).
pub fn build_from_file(
    input: &Path,
    format: InputFormat,
    options: BuildOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Profile, ProfileError> {
    let shown = input.display().to_string();
    let err = |message: String| ProfileError::Input {
        path: shown.clone(),
        message,
    };
    let file = std::fs::File::open(input).map_err(|e| err(e.to_string()))?;
    let counter = CountingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        read: 0,
    };
    let mut builder = Builder::new(options);
    match format {
        InputFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(counter);
            let headers: Vec<String> = reader
                .headers()
                .map_err(|e| err(e.to_string()))?
                .iter()
                .map(str::to_string)
                .collect();
            let mut record = csv::StringRecord::new();
            while reader
                .read_record(&mut record)
                .map_err(|e| err(e.to_string()))?
            {
                for (name, value) in headers.iter().zip(record.iter()) {
                    let v = value.trim();
                    let cell = if v.is_empty()
                        || v.eq_ignore_ascii_case("nan")
                        || v.eq_ignore_ascii_case("null")
                    {
                        Cell::Missing
                    } else if let Ok(x) = v.parse::<f64>() {
                        Cell::Number(x)
                    } else {
                        Cell::Text(v)
                    };
                    builder.add(name, cell);
                }
                builder.end_row();
                if builder.rows() % 10_000 == 0 {
                    progress(reader.position().byte(), builder.rows());
                }
            }
        }
        InputFormat::JsonLines => {
            use std::io::BufRead;
            let mut reader = counter;
            let mut line = String::new();
            let mut n = 0u64;
            loop {
                line.clear();
                let read = reader
                    .read_line(&mut line)
                    .map_err(|e| err(e.to_string()))?;
                if read == 0 {
                    break;
                }
                n += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let row: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&line)
                        .map_err(|e| err(format!("line {n}: not a JSON object: {e}")))?;
                for (name, value) in &row {
                    let cell = match value {
                        serde_json::Value::Null => Cell::Missing,
                        serde_json::Value::Number(x) => {
                            Cell::Number(x.as_f64().unwrap_or(f64::NAN))
                        }
                        serde_json::Value::Bool(b) => Cell::Text(if *b { "true" } else { "false" }),
                        serde_json::Value::String(s) => Cell::Text(s),
                        _ => Cell::Missing,
                    };
                    builder.add(name, cell);
                }
                builder.end_row();
                if builder.rows() % 10_000 == 0 {
                    progress(reader.read, builder.rows());
                }
            }
        }
    }
    if builder.rows() == 0 {
        return Err(err("no rows".into()));
    }
    Ok(builder.finish())
}

struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: std::io::BufRead> std::io::BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.read += amt as u64;
        self.inner.consume(amt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_give_the_same_profile() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        let jsonl = dir.path().join("d.jsonl");
        let mut c = String::from("x,color\n");
        let mut j = String::new();
        for i in 0..100 {
            let color = ["red", "green", "blue"][i % 3];
            c.push_str(&format!("{i},{color}\n"));
            j.push_str(&format!("{{\"x\": {i}, \"color\": \"{color}\"}}\n"));
        }
        c.push_str(",red\n");
        j.push_str("{\"x\": null, \"color\": \"red\"}\n");
        std::fs::write(&csv, c).unwrap();
        std::fs::write(&jsonl, j).unwrap();
        let a =
            build_from_file(&csv, InputFormat::Csv, BuildOptions::default(), |_, _| {}).unwrap();
        let b = build_from_file(
            &jsonl,
            InputFormat::JsonLines,
            BuildOptions::default(),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(a, b);
        let x = a.feature("x").unwrap();
        assert_eq!((x.kind, x.count, x.missing), (Kind::Numeric, 100, 1));
        assert_eq!(x.edges.len(), 9);
        assert_eq!(x.bin_counts.iter().sum::<f64>(), 100.0);
        let color = a.feature("color").unwrap();
        assert_eq!(color.kind, Kind::Categorical);
        assert_eq!(color.categories, vec!["red", "blue", "green"]);
        assert_eq!(color.bin_counts, vec![35.0, 33.0, 33.0, 0.0]);
        // Round trip.
        let text = serde_json::to_vec(&a).unwrap();
        assert_eq!(Profile::parse(&text, "p").unwrap(), a);
    }

    #[test]
    fn bad_profiles_are_refused_with_a_reason() {
        let e = Profile::parse(b"{oops", "p.json").unwrap_err().to_string();
        assert!(
            e.contains("p.json") && e.contains("not a modelwatch profile"),
            "{e}"
        );
        let e = Profile::parse(
            br#"{"format": "modelwatch-profile", "version": 9, "rows": 1, "features": []}"#,
            "p.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("newer") && e.contains("version 9"), "{e}");
        let e = Profile::parse(br#"{"format": "other"}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("format"), "{e}");
        let bad = br#"{"format": "modelwatch-profile", "version": 1, "rows": 1, "features": [
            {"name": "x", "kind": "numeric", "count": 2, "missing": 0, "sample": [2, 1], "edges": [], "bin_counts": [2]}]}"#;
        assert!(Profile::parse(bad, "p.json")
            .unwrap_err()
            .to_string()
            .contains("do not agree"));
    }

    #[test]
    fn the_reservoir_bounds_the_sample() {
        let mut b = Builder::new(BuildOptions {
            sample_size: 50,
            ..BuildOptions::default()
        });
        for i in 0..10_000 {
            b.add("x", Cell::Number(i as f64));
            b.end_row();
        }
        let p = b.finish();
        let x = p.feature("x").unwrap();
        assert_eq!(x.sample.len(), 50);
        assert_eq!((x.min, x.max, x.count), (Some(0.0), Some(9999.0), 10_000));
    }
}
