//! Topic metadata: the immutable snapshot every shard reads, and the file that persists it.
//!
//! Shard 0 is the only writer (the single-node controller): it changes the store, writes it
//! atomically, and publishes a new `Arc<MetadataSnapshot>` to every shard. Shards never share a
//! mutable structure; they swap their `Arc` when a new snapshot arrives.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions one topic may have on this broker.
pub const PARTITIONS_MAX: i32 = 10_000;

/// One topic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    /// Name.
    pub name: String,
    /// Topic UUID (hyphenated), stable for the topic's life.
    pub id: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names, string values).
    pub configs: BTreeMap<String, String>,
    /// Whether the topic is internal (`__consumer_offsets`, ...).
    #[serde(default)]
    pub internal: bool,
}

impl TopicMeta {
    /// The topic id as a UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.id).unwrap_or_default()
    }
}

/// What is persisted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetadataFile {
    /// The cluster id, made at first start.
    pub cluster_id: String,
    /// Increases with every change.
    pub version: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
}

/// The read-only view every shard holds.
#[derive(Clone, Debug, Default)]
pub struct MetadataSnapshot {
    /// The cluster id.
    pub cluster_id: String,
    /// Version of the store this snapshot was taken from.
    pub version: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
}

impl MetadataSnapshot {
    /// The snapshot of a store file.
    pub fn from_file(file: &MetadataFile) -> Self {
        Self {
            cluster_id: file.cluster_id.clone(),
            version: file.version,
            topics: file
                .topics
                .iter()
                .map(|(name, topic)| (name.clone(), Arc::new(topic.clone())))
                .collect(),
        }
    }

    /// Looks a topic up.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }
}

/// Why a topic name is illegal, if it is (Kafka's rules).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is {} bytes, at most {TOPIC_NAME_BYTES_MAX} allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name '{name}' has the illegal character {bad:?} (allowed: ASCII letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

/// The store file of a data directory.
pub struct MetadataStore {
    path: PathBuf,
    file: MetadataFile,
}

impl MetadataStore {
    /// Loads `<data_dir>/metadata.json`, creating it (with a new cluster id) when absent.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("metadata.json");
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {error}", path.display()),
                )
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => MetadataFile {
                cluster_id: new_cluster_id(),
                version: 0,
                topics: BTreeMap::new(),
            },
            Err(error) => return Err(error),
        };
        let mut store = Self { path, file };
        if store.file.version == 0 {
            store.file.version = 1;
            store.save()?;
        }
        Ok(store)
    }

    /// The current contents.
    pub fn file(&self) -> &MetadataFile {
        &self.file
    }

    /// Applies `change` and persists the result (atomically, synced) before returning.
    pub fn update(&mut self, change: impl FnOnce(&mut MetadataFile)) -> io::Result<()> {
        let mut next = self.file.clone();
        change(&mut next);
        next.version = self.file.version + 1;
        let previous = std::mem::replace(&mut self.file, next);
        if let Err(error) = self.save() {
            self.file = previous;
            return Err(error);
        }
        Ok(())
    }

    fn save(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(io::Error::other)?;
        let temp = self.path.with_extension("json.tmp");
        {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temp, &self.path)?;
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Kafka cluster ids are 22-character URL-safe base64 of a UUID.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("with space").is_err());
        assert!(validate_topic_name("slash/../x").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }

    #[test]
    fn store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let cluster_id = store.file().cluster_id.clone();
        assert_eq!(cluster_id.len(), 22);
        store
            .update(|file| {
                file.topics.insert(
                    "t".into(),
                    TopicMeta {
                        name: "t".into(),
                        id: uuid::Uuid::new_v4().to_string(),
                        partitions: 3,
                        configs: BTreeMap::new(),
                        internal: false,
                    },
                );
            })
            .unwrap();
        let reopened = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(reopened.file().cluster_id, cluster_id);
        assert_eq!(reopened.file().topics["t"].partitions, 3);
    }
}
