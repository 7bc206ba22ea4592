//! The golden corpus (`fixtures/corpus/`, rules in its README): every file
//! decodes from JSON and binary to equal events, re-encodes to the same
//! canonical JSON and the same bytes, and the corpus and this client's
//! oneof name the same variants.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use runwire_client::v1::RunEvent;
use runwire_client::{Error, decode_event};
use serde_json::Value;

/// Envelope field names in JSON; every other key of an event is its case.
const ENVELOPE: [&str; 10] =
    ["runId", "seq", "eventTime", "nodeId", "iteration", "attempt", "traceId", "spanId", "itemIndex", "itemKey"];

/// Field numbers probed for oneof cases: well past the catalog's blocks,
/// below protobuf's reserved 19000-19999.
const PROBE_FIELD_NUMBERS: std::ops::RangeInclusive<u32> = 1..=18_999;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/corpus")
}

/// Golden files by variant name: `(json text, binary bytes)`.
fn goldens() -> BTreeMap<String, (Option<String>, Option<Vec<u8>>)> {
    goldens_in(corpus_dir())
}

/// Golden files of one directory by name; `edge/` (the edge cases) is
/// read on its own.
fn goldens_in(dir: PathBuf) -> BTreeMap<String, (Option<String>, Option<Vec<u8>>)> {
    let mut out: BTreeMap<String, (Option<String>, Option<Vec<u8>>)> = BTreeMap::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(stem) = name.strip_suffix(".json") {
            out.entry(stem.to_owned()).or_default().0 = Some(fs::read_to_string(&path).unwrap());
        } else if let Some(stem) = name.strip_suffix(".binpb") {
            out.entry(stem.to_owned()).or_default().1 = Some(fs::read(&path).unwrap());
        } else {
            assert!(
                ["README.md", "make_corpus.py", "edge", "make_edge.py"].contains(&name.as_str()),
                "{name}: the corpus holds only <variant>.json, <variant>.binpb and its tooling"
            );
        }
    }
    assert!(!out.is_empty(), "no golden files in {}", dir.display());
    out
}

/// The corpus README's canonical JSON: keys sorted recursively, compact
/// separators, non-ASCII left as is.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            let fields: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), canonical(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        scalar => serde_json::to_string(scalar).unwrap(),
    }
}

fn canonical_text(text: &str) -> String {
    canonical(&serde_json::from_str::<Value>(text).expect("valid JSON"))
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The oneof field name of an event, as this client's JSON mapping names it.
fn case_name(event: &RunEvent) -> String {
    let json = serde_json::to_value(event).unwrap();
    let cases: Vec<&String> = json.as_object().unwrap().keys().filter(|k| !ENVELOPE.contains(&k.as_str())).collect();
    assert_eq!(cases.len(), 1, "expected exactly one case in {json}");
    snake_case(cases[0])
}

/// The oneof as this client's generated code sees it: for each field
/// number, decode a RunEvent holding just that field as an empty message
/// and see whether a case comes out.
fn rust_oneof_variants() -> BTreeMap<String, u32> {
    let mut variants = BTreeMap::new();
    for number in PROBE_FIELD_NUMBERS {
        let mut bytes = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut bytes);
        encode_varint(0, &mut bytes);
        let Ok(event) = RunEvent::decode(bytes.as_slice()) else {
            continue; // an envelope field of another wire type
        };
        if event.event.is_some() {
            assert!(variants.insert(case_name(&event), number).is_none());
        }
    }
    variants
}

#[test]
fn test_corpus_every_variant_has_a_golden_and_every_golden_a_variant() {
    let variants = rust_oneof_variants();
    assert!(variants.len() >= 20, "the probe found only {variants:?}");
    let goldens = goldens();

    let missing: Vec<&String> = variants.keys().filter(|v| !goldens.contains_key(*v)).collect();
    assert!(missing.is_empty(), "variants without golden files: {missing:?}");
    let unnamed: Vec<&String> = goldens.keys().filter(|g| !variants.contains_key(*g)).collect();
    assert!(unnamed.is_empty(), "golden files naming no variant of RunEvent.event: {unnamed:?}");
    for (name, (json, binary)) in &goldens {
        assert!(json.is_some(), "{name}.json is missing");
        assert!(binary.is_some(), "{name}.binpb is missing");
    }
}

#[test]
fn test_corpus_round_trips_json_and_binary() {
    for (name, (json, binary)) in goldens() {
        let (Some(json), Some(binary)) = (json, binary) else { continue };

        let from_json: RunEvent =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}.json does not decode: {e}"));
        let from_binary = decode_event(&binary).unwrap_or_else(|e| panic!("{name}.binpb does not decode: {e}"));
        assert_eq!(from_json, from_binary, "{name}: JSON and binary decode to different events");
        assert_eq!(case_name(&from_json), name, "{name}: the golden holds another variant");

        let json_again = serde_json::to_string(&from_json).unwrap();
        assert_eq!(canonical_text(&json_again), canonical_text(&json), "{name}: JSON round trip differs");

        assert_eq!(from_binary.encode_to_vec(), binary, "{name}: binary round trip differs");
    }
}

#[test]
fn test_corpus_canonical_json_sorts_keys_and_keeps_non_ascii() {
    assert_eq!(
        canonical_text("{ \"b\": [1, {\"z\": 1, \"a\": \"é\"}], \"a\": \"日本\" }"),
        r#"{"a":"日本","b":[1,{"a":"é","z":1}]}"#
    );
}

#[test]
fn test_corpus_unknown_variant_is_an_explicit_error() {
    // A RunEvent from a newer server: a known envelope plus oneof field
    // 127, unused in this catalog, holding a message.
    let envelope = RunEvent { run_id: "run_x".into(), seq: 42, ..RunEvent::default() };
    let mut bytes = envelope.encode_to_vec();
    let payload = b"\x0a\x03new"; // field 1 = "new"
    encode_key(127, WireType::LengthDelimited, &mut bytes);
    encode_varint(payload.len() as u64, &mut bytes);
    bytes.extend_from_slice(payload);

    // Plain prost drops the unknown field silently...
    assert_eq!(RunEvent::decode(bytes.as_slice()).unwrap().event, None);
    // ...the decoding helper does not.
    match decode_event(&bytes) {
        Err(Error::UnknownEvent(e)) => {
            assert_eq!((e.run_id.as_str(), e.seq), ("run_x", 42));
            assert!(e.to_string().contains("upgrade the client"), "{e}");
        }
        other => panic!("expected an unknown-event error, got {other:?}"),
    }
}

/// `fixtures/corpus/edge/`: BOMs, astral and combining characters, escapes,
/// int64 limits, the first and last timestamps, negative durations, enum
/// numbers this client does not name, empty payloads; each round-trips like
/// a golden.
#[test]
fn test_edge_corpus_round_trips_json_and_binary() {
    let edges = goldens_in(corpus_dir().join("edge"));
    assert!(edges.len() >= 10, "edge cases: {:?}", edges.keys());
    for (name, (json, binary)) in edges {
        let (Some(json), Some(binary)) = (json, binary) else { panic!("{name}: a file is missing") };
        let from_json: RunEvent =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}.json does not decode: {e}"));
        let from_binary = decode_event(&binary).unwrap_or_else(|e| panic!("{name}.binpb does not decode: {e}"));
        assert_eq!(from_json, from_binary, "{name}: JSON and binary decode to different events");
        let json_again = serde_json::to_string(&from_binary).unwrap();
        assert_eq!(canonical_text(&json_again), canonical_text(&json), "{name}: JSON round trip differs");
        assert_eq!(from_json.encode_to_vec(), binary, "{name}: binary round trip differs");
    }
}
