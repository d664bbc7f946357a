//! The in-memory backend: ordered maps behind a mutex, for tests and for comparing backends. Durable only
//! for the life of the process; never used for real data.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::keys::Tree;
use super::kv::{Kv, KvStore, Write};
use super::{Result, StoreError};

/// Each logical tree as an ordered map of bytes to bytes.
type Trees = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug, Default)]
pub struct MemoryKv {
    trees: Mutex<Trees>,
}

impl MemoryKv {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Trees>> {
        self.trees.lock().map_err(|_| StoreError::Backend("the memory store's lock is poisoned".to_owned()))
    }
}

impl Kv for MemoryKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock()?.get(&tree).and_then(|map| map.get(key).cloned()))
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let trees = self.lock()?;
        let Some(map) = trees.get(&tree) else { return Ok(Vec::new()) };
        Ok(map
            .range(from.to_vec()..)
            .take_while(|(key, _)| to.is_none_or(|to| key.as_slice() < to))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn last_before(&self, tree: Tree, before: Option<&[u8]>) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let trees = self.lock()?;
        let Some(map) = trees.get(&tree) else { return Ok(None) };
        let last = match before {
            Some(before) => map.range(..before.to_vec()).next_back(),
            None => map.iter().next_back(),
        };
        Ok(last.map(|(key, value)| (key.clone(), value.clone())))
    }

    fn apply(&self, writes: Vec<Write>) -> Result<()> {
        let mut trees = self.lock()?;
        for write in writes {
            match write {
                Write::Put(tree, key, value) => {
                    trees.entry(tree).or_default().insert(key, value);
                }
                Write::Delete(tree, key) => {
                    if let Some(map) = trees.get_mut(&tree) {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A fresh, empty in-memory store.
pub fn memory_store() -> Result<KvStore<MemoryKv>> {
    KvStore::open(MemoryKv::default(), "memory")
}
