//! A sled store whose background writer failed still closes. In a process of its own: sled 0.34 hangs the
//! failed handle's flush forever, holding a lock every sled database in the process shares, so no other
//! sled test may run next to this one.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::TestDir;
use govflow_engine::store::keys::Tree;
use govflow_engine::store::kv::{Kv, Write};
use govflow_engine::store::sled::{OverlayLimits, SledKv};

#[test]
fn sled_closes_in_bounded_time_after_writing_to_sled_failed() {
    // sled 0.34 leaves a log reservation open when `apply_batch` fails with an IO error, and its own drop
    // then waits forever for that reservation's flush. Here the store's directory is removed under it, so
    // the applier cannot write the file sled keeps a large value in.
    let dir = TestDir::new("sled-failure", "closes");
    // An overlay of one key: every batch goes to sled at once.
    let kv = SledKv::open_with(&dir.0, OverlayLimits { entries: 1, ..OverlayLimits::default() }).unwrap();
    kv.apply(vec![Write::Put(Tree::Meta, b"small".to_vec(), vec![1; 16])]).unwrap();
    std::fs::remove_dir_all(&dir.0).unwrap();
    // The log's file is still open, so the commit succeeds; writing it to sled fails behind it.
    kv.apply(vec![Write::Put(Tree::Meta, b"large".to_vec(), vec![7; 1 << 20])]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match kv.apply(vec![Write::Put(Tree::Meta, b"after".to_vec(), vec![2; 16])]) {
            Err(error) => break error.to_string(),
            Ok(()) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(()) => panic!("writing to sled never failed with its directory gone: the test covers nothing"),
        }
    };
    assert!(refused.contains("sled"), "the store refuses writes once sled failed: {refused}");
    let (closed, done) = mpsc::channel();
    std::thread::spawn(move || {
        drop(kv);
        let _ = closed.send(());
    });
    done.recv_timeout(Duration::from_secs(60))
        .expect("the store closed within a minute although sled failed under it");
}
