//! Turning typed keys and values into record bytes and back: raw bytes, UTF-8 strings, JSON (serde), and a trait
//! for custom formats.

use std::marker::PhantomData;

use bytes::Bytes;

use crate::error::{Error, Result};

pub trait Serializer<T: ?Sized>: Send + Sync {
    fn serialize(&self, topic: &str, value: &T) -> Result<Bytes>;
}

pub trait Deserializer<T>: Send + Sync {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T>;
}

/// Bytes as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct BytesSerde;

impl<T: AsRef<[u8]> + ?Sized> Serializer<T> for BytesSerde {
    fn serialize(&self, _topic: &str, value: &T) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(value.as_ref()))
    }
}

impl Deserializer<Bytes> for BytesSerde {
    fn deserialize(&self, _topic: &str, bytes: &[u8]) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

/// UTF-8 strings (Kafka's StringSerializer).
#[derive(Debug, Default, Clone, Copy)]
pub struct StringSerde;

impl<T: AsRef<str> + ?Sized> Serializer<T> for StringSerde {
    fn serialize(&self, _topic: &str, value: &T) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(value.as_ref().as_bytes()))
    }
}

impl Deserializer<String> for StringSerde {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Serialization(format!("topic {topic}: not UTF-8: {e}")))
    }
}

/// JSON through serde.
pub struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        JsonSerde(PhantomData)
    }
}

impl<T: serde::Serialize> Serializer<T> for JsonSerde<T> {
    fn serialize(&self, topic: &str, value: &T) -> Result<Bytes> {
        serde_json::to_vec(value).map(Bytes::from).map_err(|e| Error::Serialization(format!("topic {topic}: {e}")))
    }
}

impl<T: serde::de::DeserializeOwned> Deserializer<T> for JsonSerde<T> {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::Serialization(format!("topic {topic}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Order {
        id: u32,
        item: String,
    }

    #[test]
    fn serializers_round_trip() {
        let s = StringSerde.serialize("t", "héllo").unwrap();
        assert_eq!(StringSerde.deserialize("t", &s).unwrap(), "héllo");
        assert!(StringSerde.deserialize("t", &[0xff, 0xfe]).is_err());
        let b = BytesSerde.serialize("t", &[1u8, 2, 3][..]).unwrap();
        assert_eq!(&BytesSerde.deserialize("t", &b).unwrap()[..], &[1, 2, 3]);
        let j = JsonSerde::<Order>::default();
        let o = Order { id: 7, item: "tea".into() };
        let bytes = j.serialize("t", &o).unwrap();
        assert_eq!(&bytes[..], br#"{"id":7,"item":"tea"}"#);
        assert_eq!(j.deserialize("t", &bytes).unwrap(), o);
        assert!(matches!(j.deserialize("t", b"{"), Err(Error::Serialization(_))));
    }
}
