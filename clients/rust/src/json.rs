//! Proto3 JSON reading that pbjson lacks; the generated serde code uses it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IntoDeserializer};

/// An enum field read from proto3 JSON: a value name, or any number (a value
/// newer than this client stays that number, as it does in binary), or
/// `null`. The generated code reads every enum field through it.
#[doc(hidden)]
pub struct OpenEnum<E>(pub i32, PhantomData<E>);

impl<'de, E> de::Deserialize<'de> for OpenEnum<E>
where
    E: de::Deserialize<'de> + Into<i32>,
{
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<E>(PhantomData<E>);

        impl<'de, E> de::Visitor<'de> for Visitor<E>
        where
            E: de::Deserialize<'de> + Into<i32>,
        {
            type Value = OpenEnum<E>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an enum value name or a 32-bit number")
            }

            fn visit_i64<Err: de::Error>(self, v: i64) -> Result<Self::Value, Err> {
                i32::try_from(v)
                    .map(|n| OpenEnum(n, PhantomData))
                    .map_err(|_| Err::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_u64<Err: de::Error>(self, v: u64) -> Result<Self::Value, Err> {
                i32::try_from(v)
                    .map(|n| OpenEnum(n, PhantomData))
                    .map_err(|_| Err::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_str<Err: de::Error>(self, v: &str) -> Result<Self::Value, Err> {
                let named = E::deserialize(v.into_deserializer())?;
                Ok(OpenEnum(named.into(), PhantomData))
            }
        }

        deserializer.deserialize_any(Visitor(PhantomData))
    }
}
