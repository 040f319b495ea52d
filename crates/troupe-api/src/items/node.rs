//! A JSON tree that borrows its strings from the stored item bytes: exports parse each item into
//! it once (one allocation per object or array, none per unescaped string or key) instead of a
//! `serde_json::Value` (an index map, a hash and a `String` per key, a `String` per value).
//!
//! It behaves like `serde_json::Value` with `preserve_order` wherever the output can tell:
//! numbers are `serde_json::Number` (so they print the same), a repeated key keeps its first
//! position and its last value, and serialising gives the bytes `serde_json::to_vec` gives.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Number;

/// One JSON value; strings and keys borrow from the parsed text unless they had escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Object<'a>),
}

/// A JSON object: its members in document order, each key once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Node<'a>)>,
}

impl<'a> Node<'a> {
    /// Parses one JSON text (the whole slice; trailing whitespace only).
    pub fn parse(raw: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(raw)
    }

    /// Appends the value as compact JSON: the bytes `serde_json::to_vec` gives.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(number) => {
                let _ = write!(out, "{number}");
            }
            Node::String(text) => write_json_str(text, out),
            Node::Array(elements) => {
                out.push(b'[');
                for (index, element) in elements.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    element.write_json(out);
                }
                out.push(b']');
            }
            Node::Object(object) => object.write_json(out),
        }
    }
}

/// A string as JSON. One borrowed from the parsed text had no escapes there, so it holds no
/// quote, backslash or control character (JSON forbids them raw) and is copied as is.
#[allow(clippy::ptr_arg)] // the variant is what matters here, not the text
fn write_json_str(text: &Cow<'_, str>, out: &mut Vec<u8>) {
    match text {
        Cow::Borrowed(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(text) => {
            let _ = serde_json::to_writer(&mut *out, text);
        }
    }
}

impl<'a> Object<'a> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the object as compact JSON: the bytes `serde_json::to_vec` gives.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (index, (key, value)) in self.entries.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_json_str(key, out);
            out.push(b':');
            value.write_json(out);
        }
        out.push(b'}');
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_ref(), value))
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.position(key).map(|index| &self.entries[index].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key`: in place when present, else appended (as `IndexMap::insert`).
    pub fn insert(&mut self, key: Cow<'a, str>, value: Node<'a>) {
        match self.position(&key) {
            Some(index) => self.entries[index].1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Removes `key`, keeping the order of the others (as `IndexMap::shift_remove`).
    pub fn shift_remove(&mut self, key: &str) -> Option<Node<'a>> {
        self.position(key).map(|index| self.entries.remove(index).1)
    }

    /// Inserts every member of `other` in its order.
    pub fn extend(&mut self, other: Object<'a>) {
        if self.entries.is_empty() {
            self.entries = other.entries;
            return;
        }
        for (key, value) in other.entries {
            self.insert(key, value);
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|(key, _)| keep(key));
    }

    /// Builds an object from members that may repeat keys: first position, last value.
    fn from_entries(entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Self {
        if !has_duplicates(&entries) {
            return Self { entries };
        }
        let mut object = Object {
            entries: Vec::with_capacity(entries.len()),
        };
        let mut seen = std::collections::HashMap::with_capacity(entries.len());
        for (key, value) in entries {
            match seen.get(key.as_ref()) {
                Some(&index) => object.entries[index] = (key, value),
                None => {
                    seen.insert(key.to_string(), object.entries.len());
                    object.entries.push((key, value));
                }
            }
        }
        // `object.entries[index] = (key, value)` replaced an equal key: order and names hold.
        object
    }
}

fn has_duplicates(entries: &[(Cow<'_, str>, Node<'_>)]) -> bool {
    if entries.len() <= 16 {
        // A 64-bit filter on (length, first and last byte) picks the few pairs worth comparing.
        let mut filter = 0u64;
        for (index, (key, _)) in entries.iter().enumerate() {
            let bytes = key.as_bytes();
            let mix = bytes.len()
                ^ (usize::from(bytes.first().copied().unwrap_or(0)) << 1)
                ^ (usize::from(bytes.last().copied().unwrap_or(0)) << 3);
            let bit = 1u64 << (mix % 64);
            if filter & bit != 0 && entries[..index].iter().any(|(k, _)| k == key) {
                return true;
            }
            filter |= bit;
        }
        return false;
    }
    let mut seen = HashSet::with_capacity(entries.len());
    !entries.iter().all(|(key, _)| seen.insert(key.as_ref()))
}

impl<'a> IntoIterator for Object<'a> {
    type Item = (Cow<'a, str>, Node<'a>);
    type IntoIter = std::vec::IntoIter<(Cow<'a, str>, Node<'a>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Node<'de>, E> {
        Ok(Number::from_f64(value).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(value.to_string())))
    }

    fn visit_string<E>(self, value: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(element) = seq.next_element()? {
            elements.push(element);
        }
        Ok(Node::Array(elements))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Object(Object::from_entries(entries)))
    }
}

/// A key, borrowed from the text when it had no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(value) => serializer.serialize_bool(*value),
            Node::Number(number) => number.serialize(serializer),
            Node::String(text) => serializer.serialize_str(text),
            Node::Array(elements) => {
                let mut seq = serializer.serialize_seq(Some(elements.len()))?;
                for element in elements {
                    seq.serialize_element(element)?;
                }
                seq.end()
            }
            Node::Object(object) => object.serialize(serializer),
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, value) in &self.entries {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Parsing into a `Node` and serialising gives what `serde_json::Value` gives.
    fn same_as_value(text: &str) {
        let node = Node::parse(text.as_bytes()).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        let expected = serde_json::to_vec(&value).unwrap();
        assert_eq!(serde_json::to_vec(&node).unwrap(), expected, "{text}");
        let mut written = Vec::new();
        node.write_json(&mut written);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn serialises_like_value() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"f":-3,"g":1.50,"h":1e300}"#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":-0.0,"e":2E-7}"#,
            r#"{"esc":"q\"b\\s\/n\n\u0001\u00e9\ud83d\ude00","k\u0041":1,"ü":"ü"}"#,
            r#"{"dup":1,"x":2,"dup":3}"#,
            r#"{"a":{},"b":[],"c":[{}],"d":""}"#,
            r#"[1,"two",{"3":3}]"#,
            r#""just a string""#,
            "{\"raw\":\"é\u{7f}\u{2028}🐎 </script>\",\"ctl\":\"\\u001f\\u007f\"}",
        ] {
            same_as_value(text);
        }
    }

    #[test]
    fn repeated_keys_keep_first_position_and_last_value() {
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!("{{{},\"k3\":\"last\",\"k39\":null}}", many.join(","));
        same_as_value(&text);
        let Node::Object(object) = Node::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(object.len(), 40);
        assert_eq!(object.get("k3"), Some(&Node::String("last".into())));
        same_as_value(r#"{"a":1,"b":2,"a":{"x":1},"b":[],"a":3}"#);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let Node::Object(object) = Node::parse(br#"{"plain":"text","esc":"a\nb"}"#).unwrap() else {
            panic!()
        };
        let entries = &object.entries;
        assert!(matches!(entries[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&entries[0].1, Node::String(Cow::Borrowed("text"))));
        assert!(matches!(&entries[1].1, Node::String(Cow::Owned(s)) if s == "a\nb"));
    }

    #[test]
    fn object_operations_match_index_map() {
        let text = r#"{"a":1,"b":2,"c":3}"#;
        let Node::Object(mut object) = Node::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        let mut map: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
        object.insert("b".into(), Node::Null);
        map.insert("b".into(), Value::Null);
        object.insert("d".into(), Node::Bool(true));
        map.insert("d".into(), Value::Bool(true));
        assert_eq!(object.shift_remove("a"), Some(Node::Number(1.into())));
        map.shift_remove("a");
        assert_eq!(object.shift_remove("zz"), None);
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let mut written = Vec::new();
        object.write_json(&mut written);
        assert_eq!(written, serde_json::to_vec(&map).unwrap());
        assert!(Node::parse(b"{\"a\":1} x").is_err());
        assert!(Node::parse(b"{\"a\":1e400}").is_err());
    }
}
