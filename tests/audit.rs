//! End-to-end audit: a journey runs on the sled store through the library, then `govflow audit verify`,
//! `replay` and `export` read the data directory; changing one byte of a stored event is reported with its
//! sequence number.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;

use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{Command, VariableMap};
use govflow_engine::store::keys::Tree;
use govflow_engine::store::sled::open_sled;
use serde_json::json;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("govflow-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn govflow(args: &[&str]) -> (i32, String) {
    let output = Process::new(env!("CARGO_BIN_EXE_govflow")).args(args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// Today's date as `YYYY-MM-DD` (the registration must not be late, so no review task is opened).
fn today() -> String {
    let engine_now = govflow_engine::engine::Clock::now(&SystemClock);
    engine_now.date_naive().to_string()
}

/// Runs a birth registration to completion in `dir`; returns its number of records.
fn run_journey(dir: &Path) -> u64 {
    let engine = Engine::open(open_sled(dir).unwrap(), Arc::new(SystemClock)).unwrap();
    let bpmn = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("processes/birth-registration.bpmn"))
        .unwrap();
    engine.deploy("birth-registration.bpmn", &bpmn, &Actor::user("designer", None)).unwrap();
    let variables: VariableMap = serde_json::from_value(json!({
        "mother": {"nationalId": "1000000001", "firstName": "Amina", "lastName": "Otieno", "phone": "+999700000001"},
        "father": {"nationalId": "1000000002", "firstName": "Brian", "lastName": "Otieno", "phone": "+999700000002"},
        "child": {"firstName": "Zawadi", "lastName": "Otieno", "birthDate": today(), "gender": "female", "placeOfBirth": "District Hospital"},
    }))
    .unwrap();
    let instance = engine.start("birth-registration", variables, None, &Actor::user("parent", None)).unwrap();
    // Play the building blocks as the connectors answer (docs/connectors.md), until no job is left.
    for _ in 0..40 {
        let Some(job) = engine.instance(instance).unwrap().state.jobs.values().next().cloned() else { break };
        let answer = match job.job_type.as_str() {
            "govstack.identity.verify" => json!({"identity": {"verified": true}}),
            "govstack.registries.exists" => json!({"exists": false}),
            "govstack.registries.create" => json!({"record": {"certificateNumber": "BC-1"}}),
            "govstack.messaging.sms" => json!({"message": {"requestUid": "r-1", "response": "sent"}}),
            _ => json!({}),
        };
        let variables: VariableMap = serde_json::from_value(answer).unwrap();
        engine
            .command(instance, &Command::CompleteJob { job: job.key, variables }, &Actor::engine())
            .unwrap();
    }
    let stored = engine.instance(instance).unwrap();
    assert_eq!(
        stored.meta.status,
        govflow_engine::runtime::InstanceStatus::Completed,
        "the journey ran to its end"
    );
    assert!(stored.state.incidents.is_empty(), "no incident: {:?}", stored.state.incidents);
    engine.instance(instance).unwrap().last_seq
}

#[test]
fn verify_replay_and_export_read_the_stored_history() {
    let dir = data_dir("ok");
    let n_records = run_journey(&dir);
    assert!(n_records > 50, "{n_records}");
    let data = dir.to_str().unwrap();

    let (code, out) = govflow(&["audit", "verify", "--data", data]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("instance 1: ok ({n_records} records")), "{out}");

    let (code, out) = govflow(&["audit", "replay", "1", "--data", data, "--to", "10"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("InstanceCreated") && out.contains("parent"), "{out}");
    assert!(!out.lines().any(|line| line.trim_start().starts_with("11 ")), "{out}");

    let (code, out) = govflow(&["audit", "export", "1", "--data", data]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count() as u64, n_records);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens the sled files directly, as an insider would (waiting for sled to release its directory lock a
/// moment after the last handle dropped, as the engine does).
fn open_raw(dir: &Path) -> sled::Db {
    govflow_engine::store::sled::open_db(dir)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", dir.display()))
}

/// Where record `seq` (below 128) starts in a stored batch: records are stored in batches, one value per
/// command, in MessagePack with field names; each record is the array `[seq, event, hash]` and each event a
/// map whose first key is `type`.
fn record_start(value: &[u8], seq: u8) -> Option<usize> {
    value.windows(8).position(|w| {
        w[0] == 0x93 && w[1] == seq && (w[2] & 0xf0 == 0x80 || w[2] == 0xde) && w[3..8] == *b"\xa4type"
    })
}

/// The first string value of the event that starts at `at` (past its `type`) that holds a letter: the
/// element or flow id it names. Walks the map's leading entries (short strings and small integers only).
fn first_name_in_event(value: &[u8], at: usize) -> usize {
    // Past the map header and the key `type` (one header byte and four letters): the type's own value,
    // the event's name, which is skipped.
    let mut i = at + 6;
    let mut is_value = true;
    loop {
        let header = value[i];
        let (len, skip) = match header {
            0xa0..=0xbf => (usize::from(header & 0x1f), 1),
            0xd9 => (usize::from(value[i + 1]), 2),
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 => (0, 1),
            0xcc => (1, 1),
            0xcd => (2, 1),
            0xce => (4, 1),
            0xcf => (8, 1),
            other => panic!("unexpected MessagePack byte {other:#x} at {i}"),
        };
        let text = &value[i + skip..i + skip + len];
        if is_value && matches!(header, 0xa0..=0xbf | 0xd9) && i > at + 6 {
            if let Some(letter) = text.iter().position(u8::is_ascii_alphabetic) {
                return i + skip + letter;
            }
        }
        i += skip + len;
        is_value = !is_value;
    }
}

/// Where the batch holding record `seq` of `instance` lies in the record log (`records.log`, pointed to
/// from sled), the sequence number of its last record (its sled key), and where the record starts in it.
/// sled holds a pointer (tag 0xc1, offset u64, length u32) or a packed run of them under the last one's key
/// (tag 0xc1, count u32, then per batch its last sequence number u64, offset u64, length u32).
fn batch_holding(dir: &Path, instance: u64, seq: u8) -> (u64, u64, usize) {
    let log = std::fs::read(dir.join("records.log")).unwrap();
    let db = open_raw(dir);
    let mut pointers = Vec::new();
    for (key, value) in
        db.scan_prefix([&[Tree::Records.prefix()][..], &instance.to_be_bytes()].concat()).map(Result::unwrap)
    {
        assert_eq!(value[0], 0xc1, "a pointer into the record log, or a packed run of them");
        if value.len() == 13 {
            let offset = u64::from_be_bytes(value[1..9].try_into().unwrap());
            let len = u32::from_be_bytes(value[9..13].try_into().unwrap());
            pointers.push((u64::from_be_bytes(key[9..17].try_into().unwrap()), offset, len));
            continue;
        }
        let count = u32::from_be_bytes(value[1..5].try_into().unwrap()) as usize;
        assert_eq!(value.len(), 5 + 20 * count, "a packed run of {count} pointers");
        for entry in value[5..].chunks(20) {
            let last = u64::from_be_bytes(entry[..8].try_into().unwrap());
            let offset = u64::from_be_bytes(entry[8..16].try_into().unwrap());
            pointers.push((last, offset, u32::from_be_bytes(entry[16..20].try_into().unwrap())));
        }
    }
    pointers
        .into_iter()
        .find_map(|(last, offset, len)| {
            let start = usize::try_from(offset).unwrap();
            let value = &log[start..start + usize::try_from(len).unwrap()];
            record_start(value, seq).map(|at| (last, offset, at))
        })
        .expect("the batch holding the record")
}

/// The record log's bytes from `offset` on, to edit in place.
fn edit_record_log(dir: &Path, offset: u64, edit: impl FnOnce(&mut [u8])) {
    let path = dir.join("records.log");
    let mut log = std::fs::read(&path).unwrap();
    edit(&mut log[usize::try_from(offset).unwrap()..]);
    std::fs::write(&path, log).unwrap();
}

#[test]
fn changing_one_byte_of_a_stored_event_is_reported_with_its_sequence_number() {
    let dir = data_dir("tamper");
    run_journey(&dir);
    {
        // An insider edits the stored record 5 of instance 1 in the record log file: one letter of its
        // event (the element or flow id it names), keeping the value well formed.
        let (_, offset, record) = batch_holding(&dir, 1, 5);
        edit_record_log(&dir, offset, |value| {
            let at = first_name_in_event(value, record + 2);
            value[at] = if value[at] == b'x' { b'y' } else { b'x' };
        });
    }
    let (code, out) = govflow(&["audit", "verify", "--data", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("breaks at sequence number 5"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stored_batch_that_no_longer_parses_is_reported_not_skipped() {
    let dir = data_dir("garbled");
    run_journey(&dir);
    let seq = {
        // One byte that breaks the batch holding record 5: its event's map header becomes a reserved
        // MessagePack byte.
        let (last, offset, record) = batch_holding(&dir, 1, 5);
        edit_record_log(&dir, offset, |value| value[record + 2] = 0xc1);
        last
    };
    let (code, out) = govflow(&["audit", "verify", "--data", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "instance 1: stored data is corrupt: the records of instance 1 up to sequence number {seq}"
        )),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_operation_log_names_who_did_what() {
    let dir = data_dir("operations");
    run_journey(&dir);
    let data = dir.to_str().unwrap();
    let (code, out) = govflow(&["audit", "operations", "--data", data]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("designer")
            && lines[0].contains("Create")
            && lines[0].contains("definition birth-registration v1"),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.contains("parent")
            && l.contains("Create")
            && l.contains("instance 1 (birth-registration)")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains("variable child of instance 1")), "{out}");
    assert!(lines.iter().any(|l| l.contains("Update") && l.contains("completed")), "{out}");
    // Filters and JSON lines for tools.
    let (code, out) = govflow(&["audit", "operations", "--data", data, "--user", "designer", "--json"]);
    assert_eq!(code, 0, "{out}");
    let entries: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0]["kind"], "create");
    assert_eq!(entries[0]["target"]["type"], "definition");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_pins_every_chain_head_and_verify_checks_the_file_and_the_history_against_it() {
    let dir = data_dir("checkpoint");
    run_journey(&dir);
    let data = dir.to_str().unwrap();
    let file = dir.with_extension("checkpoint.json");
    let (code, out) = govflow(&["audit", "checkpoint", "--data", data, "--out", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let root = out.lines().next().unwrap().to_owned();
    assert_eq!(root.len(), 64, "{out}");
    assert!(out.contains("checkpoint of 1 chain heads"), "{out}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["root"], root.as_str());
    assert_eq!(written["heads"][0]["instance"], 1);

    let checkpoint = file.to_str().unwrap();
    let (code, out) =
        govflow(&["audit", "verify", "--data", data, "--checkpoint", checkpoint, "--root", &root]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 chain head(s) of the checkpoint") && out.contains("0 no longer match"), "{out}");

    // Not the root that was published.
    let other = "0".repeat(64);
    let (code, out) =
        govflow(&["audit", "verify", "--data", data, "--checkpoint", checkpoint, "--root", &other]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not the published root"), "{out}");

    // A head in the file changed: the file no longer hashes to its root.
    let mut altered = written.clone();
    altered["heads"][0]["seq"] = serde_json::json!(written["heads"][0]["seq"].as_u64().unwrap() - 1);
    let altered_file = dir.with_extension("altered.json");
    std::fs::write(&altered_file, serde_json::to_vec(&altered).unwrap()).unwrap();
    let (code, out) =
        govflow(&["audit", "verify", "--data", data, "--checkpoint", altered_file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the file was altered"), "{out}");

    // Not a checkpoint at all, or one of another format: named, never guessed at.
    let garbage = dir.with_extension("garbage.json");
    std::fs::write(&garbage, b"not json").unwrap();
    let (code, out) =
        govflow(&["audit", "verify", "--data", data, "--checkpoint", garbage.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not a govflow checkpoint"), "{out}");
    let mut other_format = written.clone();
    other_format["format"] = serde_json::json!("govflow-checkpoint-9");
    std::fs::write(&garbage, serde_json::to_vec(&other_format).unwrap()).unwrap();
    let (code, out) =
        govflow(&["audit", "verify", "--data", data, "--checkpoint", garbage.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("format \"govflow-checkpoint-9\", expected \"govflow-checkpoint-1\""), "{out}");
    let _ = std::fs::remove_file(&garbage);

    // The history edited afterwards (record 5, in the record log): the chain breaks before the pinned head.
    let (_, offset, record) = batch_holding(&dir, 1, 5);
    edit_record_log(&dir, offset, |value| {
        let at = first_name_in_event(value, record + 2);
        value[at] = if value[at] == b'x' { b'y' } else { b'x' };
    });
    let (code, out) =
        govflow(&["audit", "verify", "--data", data, "--checkpoint", checkpoint, "--root", &root]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("instance 1: the chain breaks before the checkpoint's head"), "{out}");
    assert!(out.contains("1 no longer match"), "{out}");
    for path in [&file, &altered_file] {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
