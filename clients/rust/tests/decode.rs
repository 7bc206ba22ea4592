//! Proto3 JSON edge cases that pbjson alone refused: enum numbers newer than
//! this client, and `null` for singular fields.

use prost::Message;
use runwire_client::v1::run_event::Event;
use runwire_client::v1::{NodeLog, RunCompleted, RunEvent, SandboxViolation, SandboxViolationKind};

/// A newer server's RunStatus, decoded from binary, encodes to JSON as its
/// number (as protojson, protobuf-es and the Python clients print it) and
/// reads back from that JSON to the same bytes.
#[test]
fn test_json_writes_and_reads_an_enum_number_the_client_does_not_name() {
    let event = RunEvent {
        run_id: "r".into(),
        seq: 7,
        event: Some(Event::RunCompleted(RunCompleted { status: 42, ..Default::default() })),
        ..Default::default()
    };
    let decoded = RunEvent::decode(event.encode_to_vec().as_slice()).unwrap();
    let json = serde_json::to_value(&decoded).unwrap();
    assert_eq!(json["runCompleted"]["status"], serde_json::json!(42));
    let back: RunEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back.encode_to_vec(), event.encode_to_vec());
}

#[test]
fn test_json_reads_a_known_enum_by_name_or_number() {
    let by_name: RunEvent =
        serde_json::from_str(r#"{"sandboxViolation":{"kind":"SANDBOX_VIOLATION_KIND_NETWORK"}}"#).unwrap();
    let by_number: RunEvent =
        serde_json::from_str(&format!(r#"{{"sandboxViolation":{{"kind":{}}}}}"#, SandboxViolationKind::Network as i32))
            .unwrap();
    assert_eq!(by_name, by_number);
    let future: RunEvent = serde_json::from_str(r#"{"sandboxViolation":{"kind":99}}"#).unwrap();
    assert_eq!(future.event, Some(Event::SandboxViolation(SandboxViolation { kind: 99, ..Default::default() })));
    assert!(serde_json::from_str::<RunEvent>(r#"{"sandboxViolation":{"kind":"NO_SUCH_KIND"}}"#).is_err());
}

/// proto3 JSON reads `null` as the field's default; pbjson refused it for
/// scalars and enums.
#[test]
fn test_json_reads_null_as_the_default() {
    let event: RunEvent = serde_json::from_str(
        r#"{"runId":null,"seq":null,"traceId":null,"iteration":null,"eventTime":null,
            "nodeLog":{"line":null,"stream":null}}"#,
    )
    .unwrap();
    assert_eq!(event, RunEvent { event: Some(Event::NodeLog(NodeLog::default())), ..Default::default() });
}
