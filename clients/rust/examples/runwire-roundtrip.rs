//! Decodes and re-encodes RunEvents for the randomized cross-language test
//! (tests/test_random_events.py).
//!
//! Each stdin line is `<hex of the binary encoding>\t<proto3 JSON>`. For each
//! it writes `<hex>\t<json>\t<hex>\t<json>`: the event decoded from binary
//! re-encoded (binary, then JSON) and the event decoded from JSON re-encoded
//! the same way; or `ERROR\t<message>`.

use std::io::{BufRead, Write};

use prost::Message;
use runwire_client::v1::RunEvent;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string())).collect()
}

fn roundtrip(line: &str) -> Result<String, String> {
    let (hex_text, json_text) = line.split_once('\t').ok_or("no tab in the input line")?;
    let from_binary = RunEvent::decode(unhex(hex_text)?.as_slice()).map_err(|e| format!("binary: {e}"))?;
    let from_json: RunEvent = serde_json::from_str(json_text).map_err(|e| format!("json: {e}"))?;
    let mut parts = Vec::new();
    for event in [from_binary, from_json] {
        parts.push(hex(&event.encode_to_vec()));
        parts.push(serde_json::to_string(&event).map_err(|e| format!("to json: {e}"))?);
    }
    Ok(parts.join("\t"))
}

fn main() {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let result = roundtrip(&line).unwrap_or_else(|e| format!("ERROR\t{}", e.replace(['\t', '\n'], " ")));
        writeln!(out, "{result}").expect("stdout");
    }
}
