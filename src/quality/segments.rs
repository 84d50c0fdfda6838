//! Accuracy per feature bin: the rows behind the diagnosis's segments.
//! A prediction's bins (`drift::segments`) travel with it into the store;
//! counts are kept for the reference period (the first labelled rows of a
//! model version, the same ones CBPE calibrates on) and made for each
//! window from its rows.

use serde::{Deserialize, Serialize};

use crate::drift::segments::MISSING;

/// Labelled rows and correct predictions, in all and per feature bin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentCounts {
    pub labelled: u64,
    pub correct: u64,
    /// Labelled rows that carried bins (a prediction made before its
    /// model's drift reference existed carries none).
    pub binned: u64,
    /// Per feature (the layout's order), per bin: `[labelled, correct]`.
    /// Rows whose feature was missing are in no bin.
    pub bins: Vec<Vec<[u64; 2]>>,
}

impl SegmentCounts {
    /// Counts one labelled row, in all and in its bins.
    pub fn add(&mut self, bins: &[u8], correct: bool) {
        self.count(correct);
        self.count_bins(bins, correct);
    }

    /// Counts one labelled row in all.
    pub fn count(&mut self, correct: bool) {
        self.labelled += 1;
        self.correct += u64::from(correct);
    }

    /// Counts one labelled row in its bins (none: nothing to count).
    pub fn count_bins(&mut self, bins: &[u8], correct: bool) {
        if bins.is_empty() {
            return;
        }
        self.binned += 1;
        if self.bins.len() < bins.len() {
            self.bins.resize(bins.len(), Vec::new());
        }
        for (f, b) in bins.iter().enumerate() {
            if *b == MISSING {
                continue;
            }
            let v = &mut self.bins[f];
            let b = *b as usize;
            if v.len() <= b {
                v.resize(b + 1, [0, 0]);
            }
            v[b][0] += 1;
            v[b][1] += u64::from(correct);
        }
    }

    pub fn accuracy(&self) -> Option<f64> {
        (self.labelled > 0).then(|| self.correct as f64 / self.labelled as f64)
    }

    /// `[labelled, correct]` of one bin (zeros where nothing fell).
    pub fn bin(&self, feature: usize, bin: usize) -> [u64; 2] {
        self.bins
            .get(feature)
            .and_then(|v| v.get(bin))
            .copied()
            .unwrap_or([0, 0])
    }
}

/// What the store keeps as a model version's reference: CBPE's rows (actual
/// class and scores) and the segment counts of the same period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceState {
    pub rows: Vec<(u16, Vec<f64>)>,
    pub segments: SegmentCounts,
}

impl ReferenceState {
    /// Reads a reference written by this version or by one that kept only
    /// CBPE's rows.
    pub fn decode(bytes: &[u8]) -> Result<ReferenceState, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|_| {
            Ok(ReferenceState {
                rows: postcard::from_bytes(bytes)?,
                segments: SegmentCounts::default(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_bin_and_the_older_reference_format() {
        let mut c = SegmentCounts::default();
        c.add(&[0, 2], true);
        c.add(&[0, MISSING], false);
        c.add(&[1, 2], true);
        c.add(&[], false);
        assert_eq!((c.labelled, c.correct, c.binned), (4, 2, 3));
        assert_eq!(c.bin(0, 0), [2, 1]);
        assert_eq!(c.bin(0, 1), [1, 1]);
        assert_eq!(c.bin(1, 2), [2, 2]);
        assert_eq!(c.bin(1, 0), [0, 0]);
        assert_eq!(c.bin(5, 0), [0, 0]);
        let rows: Vec<(u16, Vec<f64>)> = vec![(1, vec![0.2, 0.8])];
        let old = postcard::to_stdvec(&rows).unwrap();
        let r = ReferenceState::decode(&old).unwrap();
        assert_eq!(
            (r.rows, r.segments),
            (rows.clone(), SegmentCounts::default())
        );
        let new = ReferenceState { rows, segments: c };
        let bytes = postcard::to_stdvec(&new).unwrap();
        assert_eq!(ReferenceState::decode(&bytes).unwrap(), new);
    }
}
