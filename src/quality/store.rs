//! The embedded store (redb): predictions waiting for labels, joined
//! results, per-model totals and calibration references, so that a restart
//! loses none of them. Only the quality thread touches it.
//!
//! Tables:
//! - `predictions`: sequence number (arrival order) → one [`Stored`] record
//!   (its join key, time, model, prediction, scores, and the label once joined);
//! - `index`: 64-bit XXH3 of the join key → sequence number;
//! - `models`, `totals`, `reference`: per model id, small serialized structs;
//! - `early`: 64-bit XXH3 of the join key → one [`Early`] label that came
//!   before its prediction (joined when the prediction arrives);
//! - `offsets`: in the joiner, per topic, the next Kafka offset to consume
//!   (written in the same transaction as what those records changed);
//! - `meta`: the next sequence number and the schema version.
//!
//! Records are encoded with postcard (varints, no field names).

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

const PREDICTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("predictions");
const INDEX: TableDefinition<u64, u64> = TableDefinition::new("index");
const MODELS: TableDefinition<u16, &[u8]> = TableDefinition::new("models");
const TOTALS: TableDefinition<u16, &[u8]> = TableDefinition::new("totals");
const REFERENCE: TableDefinition<u16, &[u8]> = TableDefinition::new("reference");
const EARLY: TableDefinition<u64, &[u8]> = TableDefinition::new("early");
const OFFSETS: TableDefinition<&str, i64> = TableDefinition::new("offsets");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA_VERSION: u64 = 1;

/// A store that cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("quality store {path}: {source}")]
    Open { path: String, source: redb::Error },
    #[error("quality store {path} was written by a newer modelwatch (schema {found}, this one reads {SCHEMA_VERSION})")]
    Schema { path: String, found: u64 },
    #[error("quality store: {0}")]
    Db(#[from] redb::Error),
    #[error("quality store: a record does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A predicted or true value: a class (index into the model's classes) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    Class(u16),
    Value(f64),
}

/// One prediction as kept on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The join key: the id's bytes, a 0 byte, then the row number.
    pub key: Vec<u8>,
    /// Milliseconds since the Unix epoch when the prediction was made.
    pub time_ms: u64,
    pub model: u16,
    pub prediction: Target,
    /// Scores by class index (classification with scores), else empty.
    pub scores: Vec<f64>,
    pub label: Option<Target>,
    /// The bin of each reference feature (`drift::segments`), else empty.
    pub bins: Vec<u8>,
}

/// A prediction as stored before feature bins were kept.
#[derive(Deserialize)]
struct StoredV1 {
    key: Vec<u8>,
    time_ms: u64,
    model: u16,
    prediction: Target,
    scores: Vec<f64>,
    label: Option<Target>,
}

impl Stored {
    /// Reads a stored prediction, written by this version or an earlier
    /// one (postcard is not self-describing: a record without bins ends
    /// where the bins would start).
    pub fn decode(bytes: &[u8]) -> Result<Stored, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|_| {
            let o: StoredV1 = postcard::from_bytes(bytes)?;
            Ok(Stored {
                key: o.key,
                time_ms: o.time_ms,
                model: o.model,
                prediction: o.prediction,
                scores: o.scores,
                label: o.label,
                bins: Vec::new(),
            })
        })
    }
}

/// A label that arrived before its prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Early {
    pub key: Vec<u8>,
    pub id: String,
    pub row: u32,
    /// The label as JSON text.
    pub label: String,
    pub model: Option<String>,
    /// When the true value was observed, if the label said.
    pub time_ms: Option<u64>,
    /// When the label arrived (its wait is counted from here).
    pub arrived_ms: u64,
}

/// A (model, version) and what was learned about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub model: String,
    pub version: String,
    pub regression: bool,
    pub classes: Vec<String>,
}

/// The join key of `(id, row)`.
pub fn join_key(id: &str, row: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 6);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(row.to_string().as_bytes());
    k
}

/// The `(id, row)` of a join key.
pub fn split_join_key(key: &[u8]) -> Option<(&str, u32)> {
    let zero = key.iter().rposition(|b| *b == 0)?;
    let id = std::str::from_utf8(&key[..zero]).ok()?;
    let row = std::str::from_utf8(&key[zero + 1..]).ok()?.parse().ok()?;
    Some((id, row))
}

fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub models: Vec<(u16, ModelInfo)>,
    pub totals: Vec<(u16, Vec<u8>)>,
    pub references: Vec<(u16, Vec<u8>)>,
    pub next_seq: u64,
    pub records: u64,
    pub unlabelled: u64,
    /// Labels waiting for their prediction.
    pub early: u64,
    /// Per topic, the next offset to consume (joiner only).
    pub offsets: Vec<(String, i64)>,
    /// The newest records (oldest first), for the sliding windows.
    pub recent: Vec<(u64, Stored)>,
}

pub struct Store {
    db: Database,
    pub path: Option<String>,
}

impl Store {
    /// Opens (or creates) the store at `path`; `None` keeps it in memory.
    /// `cache_bytes` bounds redb's page cache (its default is 1 GiB).
    pub fn open(path: Option<&Path>, cache_bytes: usize) -> Result<Store, StoreError> {
        let shown = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(memory)".into());
        let db = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                        path: shown.clone(),
                        source: redb::Error::Io(e),
                    })?;
                }
                Database::builder().set_cache_size(cache_bytes).create(p)
            }
            None => Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(redb::backends::InMemoryBackend::new()),
        }
        .map_err(|e| StoreError::Open {
            path: shown.clone(),
            source: e.into(),
        })?;
        let store = Store {
            db,
            path: path.map(|p| p.display().to_string()),
        };
        // Create every table, check the schema.
        let txn = store.db.begin_write()?;
        {
            txn.open_table(PREDICTIONS)?;
            txn.open_table(INDEX)?;
            txn.open_table(MODELS)?;
            txn.open_table(TOTALS)?;
            txn.open_table(REFERENCE)?;
            txn.open_table(EARLY)?;
            txn.open_table(OFFSETS)?;
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Schema {
                        path: shown,
                        found: v,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
            }
        }
        txn.commit()?;
        Ok(store)
    }

    /// Reads what the quality engine needs at start: models, totals,
    /// references, counts, and up to `recent_rows` newest records not older
    /// than `since_ms`.
    pub fn load(&self, since_ms: u64, recent_rows: usize) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Loaded::default();
        for entry in txn.open_table(MODELS)?.iter()? {
            let (k, v) = entry?;
            out.models
                .push((k.value(), postcard::from_bytes(v.value())?));
        }
        for entry in txn.open_table(TOTALS)?.iter()? {
            let (k, v) = entry?;
            out.totals.push((k.value(), v.value().to_vec()));
        }
        for entry in txn.open_table(REFERENCE)?.iter()? {
            let (k, v) = entry?;
            out.references.push((k.value(), v.value().to_vec()));
        }
        out.next_seq = txn
            .open_table(META)?
            .get("next_seq")?
            .map(|v| v.value())
            .unwrap_or(0);
        out.early = txn.open_table(EARLY)?.len()?;
        for entry in txn.open_table(OFFSETS)?.iter()? {
            let (k, v) = entry?;
            out.offsets.push((k.value().to_string(), v.value()));
        }
        let predictions = txn.open_table(PREDICTIONS)?;
        out.records = predictions.len()?;
        for entry in predictions.iter()? {
            let (_, v) = entry?;
            let s = Stored::decode(v.value())?;
            if s.label.is_none() {
                out.unlabelled += 1;
            }
        }
        for entry in predictions.iter()?.rev() {
            let (k, v) = entry?;
            if out.recent.len() >= recent_rows {
                break;
            }
            let s = Stored::decode(v.value())?;
            if s.time_ms < since_ms {
                break;
            }
            out.recent.push((k.value(), s));
        }
        out.recent.reverse();
        Ok(out)
    }

    /// Runs `f` in one write transaction and commits it. `sync`: flush to
    /// disk now (else at a later synced commit).
    pub fn write<T>(
        &self,
        sync: bool,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = begin_write(&self.db, sync)?;
        let out = {
            let mut tables = Tables {
                predictions: txn.open_table(PREDICTIONS)?,
                index: txn.open_table(INDEX)?,
                models: txn.open_table(MODELS)?,
                totals: txn.open_table(TOTALS)?,
                reference: txn.open_table(REFERENCE)?,
                early: txn.open_table(EARLY)?,
                offsets: txn.open_table(OFFSETS)?,
                meta: txn.open_table(META)?,
            };
            f(&mut tables)?
        };
        txn.commit()?;
        Ok(out)
    }

    /// Bytes the store file takes on disk (0 in memory).
    pub fn file_bytes(&self) -> u64 {
        self.path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// A write transaction flushed to disk at its commit when `sync` (else at a
/// later synced commit).
pub fn begin_write(db: &Database, sync: bool) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if sync {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    Ok(txn)
}

/// The open tables of one write transaction.
pub struct Tables<'t> {
    predictions: redb::Table<'t, u64, &'static [u8]>,
    index: redb::Table<'t, u64, u64>,
    models: redb::Table<'t, u16, &'static [u8]>,
    totals: redb::Table<'t, u16, &'static [u8]>,
    reference: redb::Table<'t, u16, &'static [u8]>,
    early: redb::Table<'t, u64, &'static [u8]>,
    offsets: redb::Table<'t, &'static str, i64>,
    meta: redb::Table<'t, &'static str, u64>,
}

impl Tables<'_> {
    /// Stores a prediction under `seq`. Returns the sequence number of an
    /// older prediction with the same join key, which is replaced.
    pub fn insert(&mut self, seq: u64, record: &Stored) -> Result<Option<u64>, StoreError> {
        let bytes = postcard::to_stdvec(record)?;
        self.predictions.insert(seq, bytes.as_slice())?;
        let old = self.index.insert(key_hash(&record.key), seq)?;
        Ok(old.map(|v| v.value()))
    }

    /// The prediction with this join key, if any.
    pub fn find(&self, key: &[u8]) -> Result<Option<(u64, Stored)>, StoreError> {
        let Some(seq) = self.index.get(key_hash(key))?.map(|v| v.value()) else {
            return Ok(None);
        };
        let Some(record) = self.get(seq)? else {
            return Ok(None);
        };
        // A hash collision with another key is "not found".
        Ok((record.key == key).then_some((seq, record)))
    }

    pub fn get(&self, seq: u64) -> Result<Option<Stored>, StoreError> {
        match self.predictions.get(seq)? {
            Some(v) => Ok(Some(Stored::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Rewrites a record in place (after its label joined).
    pub fn update(&mut self, seq: u64, record: &Stored) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(record)?;
        self.predictions.insert(seq, bytes.as_slice())?;
        Ok(())
    }

    /// The oldest record.
    pub fn oldest(&self) -> Result<Option<(u64, Stored)>, StoreError> {
        match self.predictions.first()? {
            Some((k, v)) => Ok(Some((k.value(), Stored::decode(v.value())?))),
            None => Ok(None),
        }
    }

    /// Removes a record and its index entry (unless the key now points to a newer one).
    pub fn remove(&mut self, seq: u64, record: &Stored) -> Result<(), StoreError> {
        self.predictions.remove(seq)?;
        let h = key_hash(&record.key);
        if self.index.get(h)?.map(|v| v.value()) == Some(seq) {
            self.index.remove(h)?;
        }
        Ok(())
    }

    pub fn put_model(&mut self, id: u16, info: &ModelInfo) -> Result<(), StoreError> {
        self.models
            .insert(id, postcard::to_stdvec(info)?.as_slice())?;
        Ok(())
    }

    pub fn put_totals(&mut self, id: u16, bytes: &[u8]) -> Result<(), StoreError> {
        self.totals.insert(id, bytes)?;
        Ok(())
    }

    pub fn put_reference(&mut self, id: u16, bytes: &[u8]) -> Result<(), StoreError> {
        self.reference.insert(id, bytes)?;
        Ok(())
    }

    /// Keeps a label until its prediction arrives. False (and nothing
    /// written) when a label for the same key already waits.
    pub fn put_early(&mut self, early: &Early) -> Result<bool, StoreError> {
        let h = key_hash(&early.key);
        if let Some(old) = self.early.get(h)? {
            let old: Early = postcard::from_bytes(old.value())?;
            if old.key == early.key {
                return Ok(false);
            }
        }
        self.early
            .insert(h, postcard::to_stdvec(early)?.as_slice())?;
        Ok(true)
    }

    /// Takes the label waiting for this key, if any.
    pub fn take_early(&mut self, key: &[u8]) -> Result<Option<Early>, StoreError> {
        let h = key_hash(key);
        let found: Option<Early> = match self.early.get(h)? {
            Some(v) => Some(postcard::from_bytes(v.value())?),
            None => None,
        };
        match found {
            Some(e) if e.key == key => {
                self.early.remove(h)?;
                Ok(Some(e))
            }
            _ => Ok(None),
        }
    }

    /// Removes the early labels that arrived before `cutoff_ms`; returns how many.
    pub fn expire_early(&mut self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let mut old = Vec::new();
        for entry in self.early.iter()? {
            let (k, v) = entry?;
            let e: Early = postcard::from_bytes(v.value())?;
            if e.arrived_ms < cutoff_ms {
                old.push(k.value());
            }
        }
        for k in &old {
            self.early.remove(*k)?;
        }
        Ok(old.len() as u64)
    }

    /// Records the next offset to consume from `topic` (joiner).
    pub fn set_offset(&mut self, topic: &str, next: i64) -> Result<(), StoreError> {
        self.offsets.insert(topic, next)?;
        Ok(())
    }

    pub fn set_next_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        self.meta.insert("next_seq", seq)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, time_ms: u64) -> Stored {
        Stored {
            key: join_key(id, 0),
            time_ms,
            model: 0,
            prediction: Target::Class(1),
            scores: vec![0.2, 0.8],
            label: None,
            bins: vec![3, 255],
        }
    }

    #[test]
    fn records_written_before_bins_were_kept_still_read() {
        let new = record("a", 5);
        let bytes = postcard::to_stdvec(&new).unwrap();
        assert_eq!(Stored::decode(&bytes).unwrap(), new);
        #[derive(Serialize)]
        struct Old<'a>(&'a [u8], u64, u16, Target, &'a [f64], Option<Target>);
        let old =
            postcard::to_stdvec(&Old(&new.key, 5, 0, new.prediction, &new.scores, None)).unwrap();
        let read = Stored::decode(&old).unwrap();
        assert_eq!(
            read,
            Stored {
                bins: Vec::new(),
                ..new
            }
        );
    }

    #[test]
    fn records_survive_reopening_and_are_found_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let store = Store::open(Some(&path), 1 << 20).unwrap();
            store
                .write(true, |t| {
                    t.insert(0, &record("a", 10))?;
                    t.insert(1, &record("b", 20))?;
                    t.set_next_seq(2)?;
                    t.put_model(
                        0,
                        &ModelInfo {
                            model: "m".into(),
                            version: "1".into(),
                            regression: false,
                            classes: vec!["x".into(), "y".into()],
                        },
                    )
                })
                .unwrap();
        }
        let store = Store::open(Some(&path), 1 << 20).unwrap();
        let loaded = store.load(15, 10).unwrap();
        assert_eq!(loaded.next_seq, 2);
        assert_eq!((loaded.records, loaded.unlabelled), (2, 2));
        assert_eq!(loaded.recent.len(), 1, "only the record newer than 15 ms");
        assert_eq!(loaded.models[0].1.classes, vec!["x", "y"]);
        store
            .write(false, |t| {
                let (seq, mut r) = t.find(&join_key("b", 0))?.unwrap();
                assert_eq!(seq, 1);
                assert!(t.find(&join_key("b", 1))?.is_none());
                r.label = Some(Target::Class(0));
                t.update(seq, &r)?;
                let (seq, oldest) = t.oldest()?.unwrap();
                t.remove(seq, &oldest)?;
                assert!(t.find(&join_key("a", 0))?.is_none());
                Ok(())
            })
            .unwrap();
        let loaded = store.load(0, 10).unwrap();
        assert_eq!((loaded.records, loaded.unlabelled), (1, 0));
    }

    #[test]
    fn join_keys_split_back() {
        assert_eq!(split_join_key(&join_key("a-1", 7)), Some(("a-1", 7)));
        assert_eq!(split_join_key(b"no-row"), None);
    }

    #[test]
    fn a_record_with_five_scores_is_small() {
        let mut r = record("0b5c3f0e-8a6d-4c1e-9f7a-2d4b6e8f0a1c", 1_780_000_000_000);
        r.scores = vec![0.1, 0.2, 0.3, 0.25, 0.15];
        let bytes = postcard::to_stdvec(&r).unwrap();
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
    }
}
