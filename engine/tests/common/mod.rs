//! Helpers shared by the engine's integration tests: a temporary data directory that removes itself.
//! Nothing here may touch the engine; each test file keeps its own harness.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, unique per process and per use, removed when dropped.
#[derive(Debug)]
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// `govflow-{suite}-{pid}-{n}-{name}`; a leftover of a killed run whose process id came round again is
    /// removed first.
    pub fn new(suite: &str, name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("govflow-{suite}-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
