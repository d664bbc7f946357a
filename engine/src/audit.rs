//! The audit record: every event of an instance wrapped with its sequence number, time, actor and a SHA-256
//! hash chain (each record hashes its canonical encoding together with the previous record's hash), so an
//! auditor can verify that nobody altered, removed or reordered anything. Pure: sealing and verifying
//! never read a clock or touch storage; time and actor come from the command.

use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::{Event, Instance, InstanceKey, EVENT_FORMAT_VERSION};

/// Who caused an event: the user and affiliation of the command, or `engine` for what the engine did by
/// itself (timers, connectors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub user: String,
    pub affiliation: Option<String>,
}

impl Actor {
    pub fn engine() -> Actor {
        Actor { user: "engine".to_owned(), affiliation: None }
    }

    pub fn user(user: impl Into<String>, affiliation: Option<String>) -> Actor {
        Actor { user: user.into(), affiliation }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.affiliation {
            Some(affiliation) => write!(f, "{} ({affiliation})", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// A SHA-256 digest, written as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest256(pub [u8; 32]);

impl Digest256 {
    /// The "previous hash" of an instance's first event.
    pub const GENESIS: Digest256 = Digest256([0; 32]);

    pub fn to_hex(&self) -> String {
        self.with_hex(str::to_owned)
    }

    /// Hands the 64 hex digits to `f` from a stack buffer (hashes are written for every stored record).
    fn with_hex<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut buffer = [0u8; 64];
        // 32 bytes always fit 64 digits, and hex digits are ASCII.
        let _ = hex::encode_to_slice(self.0, &mut buffer);
        f(std::str::from_utf8(&buffer).unwrap_or_default())
    }

    pub fn from_hex(text: &str) -> Option<Digest256> {
        let bytes = hex::decode(text).ok()?;
        Some(Digest256(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Digest256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_hex(|hex| f.write_str(hex))
    }
}

/// 64 hex digits in human-readable formats (JSON: the canonical encoding, exports, the API); 32 raw bytes
/// in binary ones (the store).
impl Serialize for Digest256 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.with_hex(|hex| serializer.serialize_str(hex))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest256 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest256, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest256;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a hash: 64 hex digits or 32 bytes")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Digest256, E> {
                Digest256::from_hex(text).ok_or_else(|| E::custom("a hash must be 64 hex digits"))
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Digest256, E> {
                <[u8; 32]>::try_from(bytes).map(Digest256).map_err(|_| E::custom("a hash must be 32 bytes"))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor)
        } else {
            deserializer.deserialize_bytes(Visitor)
        }
    }
}

/// One stored event: what an auditor reads, in the order it happened.
///
/// # Invariants
/// `hash = SHA-256(canonical encoding of every other field)`, the encoding including `prev_hash`; the first
/// record of an instance has `seq = 1` and `prev_hash = GENESIS`; each next record has `seq + 1` and the
/// previous record's `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedEvent {
    pub instance: InstanceKey,
    pub seq: u64,
    pub at: DateTime<FixedOffset>,
    pub actor: Actor,
    /// The event format version this record was written with.
    pub format: u16,
    pub event: Event,
    pub prev_hash: Digest256,
    pub hash: Digest256,
}

impl RecordedEvent {
    /// Wraps `event` as record `seq` of `instance`, chained to `prev_hash`.
    pub fn seal(
        instance: InstanceKey,
        seq: u64,
        at: DateTime<FixedOffset>,
        actor: Actor,
        event: Event,
        prev_hash: Digest256,
    ) -> RecordedEvent {
        let mut record = RecordedEvent {
            instance,
            seq,
            at,
            actor,
            format: EVENT_FORMAT_VERSION,
            event,
            prev_hash,
            hash: Digest256::GENESIS,
        };
        record.hash = record.compute_hash();
        record
    }

    /// SHA-256 over the canonical encoding of every field but `hash` (serde_json of a fixed-order struct;
    /// every map inside events is ordered, so the encoding is deterministic).
    pub fn compute_hash(&self) -> Digest256 {
        Canonical::new(self.instance, &self.at, &self.actor, self.format).hash(
            self.seq,
            &self.event,
            &self.prev_hash,
            &mut Vec::new(),
        )
    }
}

/// The canonical encoding of records that share instance, time, actor and format (a command's records):
/// byte for byte what serde_json writes for [`Body`], with the shared fields encoded once instead of once
/// per record (the time's RFC 3339 text and the actor's escaping were a tenth of a command's cost).
struct Canonical {
    /// `{"instance":N,"seq":`
    head: Vec<u8>,
    /// `,"at":"…","actor":{…},"format":F,"event":`
    middle: Vec<u8>,
}

impl Canonical {
    fn new(instance: InstanceKey, at: &DateTime<FixedOffset>, actor: &Actor, format: u16) -> Canonical {
        let mut head = Vec::with_capacity(32);
        head.extend_from_slice(b"{\"instance\":");
        head.extend_from_slice(itoa::Buffer::new().format(instance.0).as_bytes());
        head.extend_from_slice(b",\"seq\":");
        let mut middle = Vec::with_capacity(128);
        middle.extend_from_slice(b",\"at\":");
        // Writing plain data into a Vec cannot fail; a broken encoding would only make the check fail.
        let _ = serde_json::to_writer(&mut middle, at);
        middle.extend_from_slice(b",\"actor\":");
        let _ = serde_json::to_writer(&mut middle, actor);
        middle.extend_from_slice(b",\"format\":");
        middle.extend_from_slice(itoa::Buffer::new().format(format).as_bytes());
        middle.extend_from_slice(b",\"event\":");
        Canonical { head, middle }
    }

    /// The hash of record `seq` holding `event` after `prev_hash`; `buffer` is scratch space.
    fn hash(&self, seq: u64, event: &Event, prev_hash: &Digest256, buffer: &mut Vec<u8>) -> Digest256 {
        buffer.clear();
        buffer.extend_from_slice(&self.head);
        buffer.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        buffer.extend_from_slice(&self.middle);
        let _ = serde_json::to_writer(&mut *buffer, event);
        buffer.extend_from_slice(b",\"prev_hash\":\"");
        let mut hex = [0u8; 64];
        let _ = hex::encode_to_slice(prev_hash.0, &mut hex);
        buffer.extend_from_slice(&hex);
        buffer.extend_from_slice(b"\"}");
        Digest256(Sha256::digest(&buffer[..]).into())
    }
}

/// Seals a command's events after the instance's last record (`last`: its seq and hash, or none).
pub fn seal_all(
    instance: InstanceKey,
    last: Option<(u64, Digest256)>,
    at: DateTime<FixedOffset>,
    actor: &Actor,
    events: Vec<Event>,
) -> Vec<RecordedEvent> {
    let (mut seq, mut prev) = last.unwrap_or((0, Digest256::GENESIS));
    let canonical = Canonical::new(instance, &at, actor, EVENT_FORMAT_VERSION);
    let mut buffer = Vec::with_capacity(1024);
    events
        .into_iter()
        .map(|event| {
            seq += 1;
            let hash = canonical.hash(seq, &event, &prev, &mut buffer);
            let record = RecordedEvent {
                instance,
                seq,
                at,
                actor: actor.clone(),
                format: EVENT_FORMAT_VERSION,
                event,
                prev_hash: prev,
                hash,
            };
            prev = hash;
            record
        })
        .collect()
}

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {instance}: the audit chain breaks at sequence number {seq}: {reason}")]
pub struct ChainError {
    pub instance: InstanceKey,
    pub seq: u64,
    pub reason: String,
}

/// Checks an instance's whole history: contiguous sequence numbers from 1, each record's hash, and each
/// link to the previous record. Reports the first bad sequence number.
pub fn verify_chain(instance: InstanceKey, records: &[RecordedEvent]) -> Result<(), ChainError> {
    let mut prev = Digest256::GENESIS;
    for (i, record) in records.iter().enumerate() {
        let expected_seq = i as u64 + 1;
        let fail = |reason: String| ChainError { instance, seq: expected_seq, reason };
        if record.instance != instance {
            return Err(fail(format!("the record belongs to instance {}", record.instance)));
        }
        if record.seq != expected_seq {
            return Err(fail(format!(
                "found sequence number {} (a record is missing or out of order)",
                record.seq
            )));
        }
        if record.prev_hash != prev {
            return Err(fail("its previous-hash does not match the record before it".to_owned()));
        }
        if record.compute_hash() != record.hash {
            return Err(fail("its content does not match its hash (the record was altered)".to_owned()));
        }
        prev = record.hash;
    }
    Ok(())
}

/// Rebuilds the instance state purely from its records (the replay an auditor trusts).
pub fn replay(instance: InstanceKey, records: &[RecordedEvent]) -> Instance {
    Instance::replay(instance, records.iter().map(|record| &record.event))
}

/// Where an instance's chain stood at a checkpoint: its last sequence number and that record's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub instance: InstanceKey,
    pub seq: u64,
    #[serde(with = "hex_digest")]
    pub hash: Digest256,
}

/// What a checkpoint's root is a hash of, so it never collides with a record's hash.
const CHECKPOINT_DOMAIN: &[u8] = b"govflow-checkpoint-1";

/// The root hash of a checkpoint: SHA-256 over a domain tag and every head in instance order (instance
/// and sequence number big-endian, then the hash). A chain verifies on its own, but whoever can write the
/// store can also rewrite a record and seal the rest of its chain again; a root published outside the store
/// (a gazette, another agency) pins every chain's head as of its time, and such a rewrite then shows.
pub fn checkpoint_root(heads: &[ChainHead]) -> Digest256 {
    let mut sorted: Vec<&ChainHead> = heads.iter().collect();
    sorted.sort_by_key(|head| head.instance);
    let mut hasher = Sha256::new();
    hasher.update(CHECKPOINT_DOMAIN);
    hasher.update((sorted.len() as u64).to_be_bytes());
    for head in sorted {
        hasher.update(head.instance.0.to_be_bytes());
        hasher.update(head.seq.to_be_bytes());
        hasher.update(head.hash.0);
    }
    Digest256(hasher.finalize().into())
}

/// Why an instance's history no longer matches a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("instance {instance}: the chain breaks before the checkpoint's head: {reason}")]
    Chain { instance: InstanceKey, reason: String },
    #[error(
        "instance {instance}: the checkpoint pinned sequence number {seq}, but the history ends at {found}"
    )]
    Shorter { instance: InstanceKey, seq: u64, found: u64 },
    #[error(
        "instance {instance}: record {seq} is not the one the checkpoint pinned (history rewritten up to there)"
    )]
    Rewritten { instance: InstanceKey, seq: u64 },
}

/// Checks that `records` (an instance's history, from sequence number 1) still hold the head a checkpoint
/// pinned: the chain verifies up to it and its record `head.seq` has the pinned hash. Records after the head
/// (written since) are not this check's business; `verify_chain` covers them.
pub fn verify_against(head: &ChainHead, records: &[RecordedEvent]) -> Result<(), CheckpointError> {
    let instance = head.instance;
    let upto = records.iter().take_while(|record| record.seq <= head.seq).count();
    verify_chain(instance, &records[..upto])
        .map_err(|error| CheckpointError::Chain { instance, reason: error.to_string() })?;
    match records[..upto].last() {
        Some(record) if record.seq == head.seq && record.hash == head.hash => Ok(()),
        Some(record) if record.seq == head.seq => Err(CheckpointError::Rewritten { instance, seq: head.seq }),
        last => Err(CheckpointError::Shorter { instance, seq: head.seq, found: last.map_or(0, |r| r.seq) }),
    }
}

/// A digest as 64 hex digits in human-readable formats (checkpoint files).
mod hex_digest {
    use super::Digest256;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(digest: &Digest256, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&digest.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Digest256, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest256::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::VariableMap;

    fn history() -> Vec<RecordedEvent> {
        let at = DateTime::parse_from_rfc3339("2027-01-04T09:00:00+03:00").unwrap();
        let events = vec![
            Event::InstanceCancelled,
            Event::VariablesChanged {
                scope: crate::runtime::Key(1),
                element: "p".into(),
                variables: VariableMap::from([("amount".to_owned(), serde_json::json!(100))]),
            },
            Event::InstanceCancelled,
        ];
        seal_all(
            InstanceKey(7),
            None,
            at,
            &Actor::user("registrar-1", Some("Civil Registry".to_owned())),
            events,
        )
    }

    #[test]
    fn a_sealed_history_verifies() {
        let records = history();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(records[0].prev_hash, Digest256::GENESIS);
        assert_eq!(records[1].prev_hash, records[0].hash);
        verify_chain(InstanceKey(7), &records).unwrap();
    }

    #[test]
    fn flipping_any_byte_of_any_stored_record_is_detected() {
        let records = history();
        for target in 0..records.len() {
            let stored = serde_json::to_vec(&records[target]).unwrap();
            for i in 0..stored.len() {
                let mut bytes = stored.clone();
                bytes[i] ^= 0x01;
                let mut tampered = records.clone();
                match serde_json::from_slice::<RecordedEvent>(&bytes) {
                    // Unreadable: the store reports it as corrupt at this sequence number.
                    Err(_) => continue,
                    Ok(record) => tampered[target] = record,
                }
                let error = verify_chain(InstanceKey(7), &tampered);
                assert!(error.is_err(), "flipping byte {i} of record {} went unnoticed", target + 1);
                assert!(error.unwrap_err().seq <= target as u64 + 2);
            }
        }
    }

    /// The hashed part of a record as a derived serialisation: what [`Canonical`] must write byte for byte.
    #[derive(Serialize)]
    struct Body<'a> {
        instance: InstanceKey,
        seq: u64,
        at: &'a DateTime<FixedOffset>,
        actor: &'a Actor,
        format: u16,
        event: &'a Event,
        prev_hash: &'a Digest256,
    }

    #[test]
    fn the_canonical_encoder_writes_what_serde_json_writes_for_the_body() {
        let at = DateTime::parse_from_rfc3339("2027-01-04T09:00:00.123456789-02:30").unwrap();
        let actors = [
            Actor::engine(),
            Actor::user("quote \" and \\ and \n é 🇰🇪", Some("Ministry \"of\" Health".to_owned())),
        ];
        let mut records = history();
        records.extend(seal_all(
            InstanceKey(u64::MAX),
            Some((u64::MAX - 1, records[0].hash)),
            at,
            &actors[1],
            vec![Event::InstanceCancelled],
        ));
        for record in records {
            for actor in &actors {
                let body = Body {
                    instance: record.instance,
                    seq: record.seq,
                    at: &record.at,
                    actor,
                    format: record.format,
                    event: &record.event,
                    prev_hash: &record.prev_hash,
                };
                let expected = serde_json::to_vec(&body).unwrap();
                let mut buffer = Vec::new();
                let hash = Canonical::new(record.instance, &record.at, actor, record.format).hash(
                    record.seq,
                    &record.event,
                    &record.prev_hash,
                    &mut buffer,
                );
                assert_eq!(String::from_utf8_lossy(&buffer), String::from_utf8_lossy(&expected));
                assert_eq!(hash, Digest256(Sha256::digest(&expected).into()));
            }
        }
    }

    #[test]
    fn the_hash_encoding_is_pinned() {
        // Every stored chain was hashed over this encoding: a dependency upgrade that changes it (serde_json's
        // escaping or number output, chrono's date format) would orphan them all. This test fails first.
        let at = DateTime::parse_from_rfc3339("2027-01-04T09:00:00+03:00").unwrap();
        let variables = VariableMap::from([
            ("amount".to_owned(), serde_json::json!(100)),
            ("name".to_owned(), serde_json::json!({"given": "Amina", "scores": [1.5, -2, null, true]})),
        ]);
        // Escapes, non-ASCII, floats of every shape and an object whose keys arrive unsorted.
        let awkward = VariableMap::from([
            ("note".to_owned(), serde_json::json!("quote \" backslash \\ newline \n control \u{1} é 🇰🇪 a/b")),
            (
                "floats".to_owned(),
                serde_json::json!([0.1, 1e-7, 1e21, -0.0, 123456789.125, u64::MAX, i64::MIN]),
            ),
            ("unsorted".to_owned(), serde_json::from_str("{\"z\": 1, \"a\": {\"y\": 2, \"b\": 3}}").unwrap()),
        ]);
        let events = vec![
            Event::VariablesChanged { scope: crate::runtime::Key(1), element: "p".into(), variables },
            Event::InstanceCancelled,
            Event::VariablesChanged {
                scope: crate::runtime::Key(1),
                element: "p".into(),
                variables: awkward,
            },
        ];
        let actor = Actor::user("registrar-1", Some("Civil Registry".to_owned()));
        let records = seal_all(InstanceKey(7), None, at, &actor, events);
        assert_eq!(
            records.iter().map(|r| r.hash.to_string()).collect::<Vec<_>>(),
            [
                "782f64ba9c54b25082930d965eb8d0c1a71adf196847d0bec1e8dce60b0a9932",
                "c802cccd3dd2183998ef07643a00b85d796630b0232cdc9f48cd102cdafce60f",
                "d88ff86b0c0a908cd9f856663e84025c446f79399c4f1b7c62c182f07871e32e",
            ]
        );
    }

    #[test]
    fn removing_or_reordering_records_is_detected() {
        let mut records = history();
        records.remove(1);
        assert_eq!(verify_chain(InstanceKey(7), &records).unwrap_err().seq, 2);
        let mut records = history();
        records.swap(0, 1);
        assert_eq!(verify_chain(InstanceKey(7), &records).unwrap_err().seq, 1);
    }

    #[test]
    fn hashes_survive_a_json_round_trip() {
        for record in history() {
            let decoded: RecordedEvent =
                serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
            assert_eq!(decoded.compute_hash(), record.hash);
        }
    }

    fn head_of(records: &[RecordedEvent]) -> ChainHead {
        let last = records.last().unwrap();
        ChainHead { instance: last.instance, seq: last.seq, hash: last.hash }
    }

    #[test]
    fn a_history_rewritten_and_sealed_again_verifies_alone_but_not_against_a_checkpoint() {
        let records = history();
        let head = head_of(&records[..2]);
        verify_against(&head, &records).unwrap();
        // An insider with write access changes record 2 and seals it and everything after it again.
        let mut forged = records[..1].to_vec();
        let at = records[1].at;
        let changed = Event::VariablesChanged {
            scope: crate::runtime::Key(1),
            element: "p".into(),
            variables: VariableMap::from([("amount".to_owned(), serde_json::json!(100_000))]),
        };
        forged.extend(seal_all(
            InstanceKey(7),
            Some((1, records[0].hash)),
            at,
            &records[1].actor,
            vec![changed, Event::InstanceCancelled],
        ));
        verify_chain(InstanceKey(7), &forged).unwrap();
        assert_eq!(
            verify_against(&head, &forged),
            Err(CheckpointError::Rewritten { instance: InstanceKey(7), seq: 2 })
        );
        // Cut short, or broken before the head: both reported.
        assert_eq!(
            verify_against(&head, &records[..1]),
            Err(CheckpointError::Shorter { instance: InstanceKey(7), seq: 2, found: 1 })
        );
        let mut broken = records.clone();
        broken.remove(0);
        assert!(matches!(verify_against(&head, &broken), Err(CheckpointError::Chain { .. })));
    }

    #[test]
    fn a_checkpoint_root_covers_every_head_in_any_order() {
        let records = history();
        let a = head_of(&records[..2]);
        let b = ChainHead { instance: InstanceKey(9), seq: 5, hash: records[2].hash };
        let root = checkpoint_root(&[a, b]);
        assert_eq!(root, checkpoint_root(&[b, a]), "the order given does not matter");
        assert_ne!(root, checkpoint_root(&[a]), "a head left out changes it");
        for changed in [
            ChainHead { seq: 3, ..a },
            ChainHead { instance: InstanceKey(8), ..a },
            ChainHead { hash: records[0].hash, ..a },
        ] {
            assert_ne!(root, checkpoint_root(&[changed, b]), "{changed:?}");
        }
        // Heads read and written as JSON with hex hashes.
        let text = serde_json::to_string(&a).unwrap();
        assert!(text.contains(&a.hash.to_hex()), "{text}");
        assert_eq!(serde_json::from_str::<ChainHead>(&text).unwrap(), a);
    }
}
