//! Decoding `RunEvent`s, with the explicit "unknown event" error.

use prost::Message;

use crate::error::{Error, UnknownEventError};
use crate::v1::RunEvent;

/// Decodes one binary `RunEvent` and rejects an unknown oneof case.
///
/// # Errors
///
/// [`Error::Decode`] for bytes that are not a `RunEvent`, and
/// [`Error::UnknownEvent`] for an event whose case this client does not know.
pub fn decode_event(bytes: &[u8]) -> Result<RunEvent, Error> {
    let event = RunEvent::decode(bytes)?;
    require_known(&event)?;
    Ok(event)
}

/// Fails when the event's oneof case is not in this client's catalog.
///
/// prost skips fields it does not know, so an event of a newer variant
/// arrives with `event: None`; a runwire server never sends an event without
/// a case, so `None` always means the client is older than the server.
///
/// # Errors
///
/// [`UnknownEventError`] naming the event's run and `seq`.
pub fn require_known(event: &RunEvent) -> Result<(), UnknownEventError> {
    match event.event {
        Some(_) => Ok(()),
        None => Err(UnknownEventError { run_id: event.run_id.clone(), seq: event.seq }),
    }
}
