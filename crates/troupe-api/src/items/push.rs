//! Validates a push body without building a tree, in one pass: each item must be a JSON object;
//! its raw text is kept as sent and hidden-field emptiness is found while it is validated.

use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::{json, Value};
use troupe_model::storage::NewItem;

use crate::error::{ApiError, ApiResult};

/// Walks one item without building it: counts the top-level keys that do not start with `#`,
/// and rejects what a JSON tree cannot hold safely. Values go through `deserialize_any`, so
/// serde_json's recursion limit (128 levels) applies and numbers must fit a double.
struct VisibleKeys;

/// Accepts any JSON value without allocating.
struct AnyValue;

impl<'de> Visitor<'de> for AnyValue {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(AnyValue)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(AnyValue)?;
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for AnyValue {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for VisibleKeys {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut visible = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value_seed(AnyValue)?;
            if !key.starts_with('#') {
                visible += 1;
            }
        }
        Ok(visible)
    }
}

fn invalid_item(position: usize) -> Value {
    json!({
        "itemPosition": position,
        "validationErrors": [{
            "instancePath": "",
            "schemaPath": "#/type",
            "keyword": "type",
            "params": { "type": "object" },
            "message": "must be object"
        }]
    })
}

/// JSON whitespace.
fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && matches!(bytes[pos], b' ' | b'\t' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// One item, walked by [`VisibleKeys`]: its count of visible top-level keys.
struct Visible(usize);

impl<'de> serde::Deserialize<'de> for Visible {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(VisibleKeys).map(Visible)
    }
}

/// Parses the JSON value at the start of `text` as `T`; returns it and its length in bytes.
fn parse_prefix<'a, T: serde::Deserialize<'a>>(
    text: &'a str,
) -> Result<(T, usize), serde_json::Error> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
    match stream.next() {
        Some(Ok(value)) => Ok((value, stream.byte_offset())),
        Some(Err(err)) => Err(err),
        None => Err(serde::de::Error::custom("EOF while parsing a value")),
    }
}

/// Turns a push body (one object or an array of objects) into items, in one pass over the
/// bytes: each element is validated (and its visible keys counted) where it lies, and its raw
/// text kept. Nothing is accepted unless every item is an object.
pub fn parse_push_body(body: &[u8]) -> ApiResult<Vec<NewItem>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid_input("Request body is not valid UTF-8"))?;
    // A UTF-8 BOM (some tools write one) is not part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bytes = text.as_bytes();
    let start = skip_ws(bytes, 0);
    if start == bytes.len() {
        return Err(ApiError::invalid_input(
            "Request body is empty; send a JSON object or an array of objects",
        ));
    }
    let syntax = |position: Option<usize>, err: &dyn fmt::Display| match position {
        Some(position) => {
            ApiError::invalid_input(format!("Invalid JSON in item {position}: {err}"))
        }
        None => ApiError::invalid_input(format!("Invalid JSON in request body: {err}")),
    };
    let mut items = Vec::new();
    let mut invalid = Vec::new();
    let mut accept = |json: &str, visible: usize| {
        // Stored items must be single-line so JSONL exports stay one item per line.
        let json: Box<str> = if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
            let value: Value = serde_json::from_str(json).map_err(ApiError::internal)?;
            value.to_string().into()
        } else {
            json.into()
        };
        items.push(NewItem {
            json,
            clean: visible > 0,
        });
        Ok::<(), ApiError>(())
    };
    if bytes[start] != b'[' {
        // One value: an object, or anything else (a schema error, if it is valid JSON).
        if bytes[start] == b'{' {
            let rest = &text[start..];
            let (Visible(visible), len) =
                parse_prefix(rest).map_err(|err| syntax(Some(0), &err))?;
            if skip_ws(bytes, start + len) != bytes.len() {
                return Err(syntax(None, &"trailing characters after the object"));
            }
            accept(&rest[..len], visible)?;
        } else {
            serde_json::from_str::<IgnoredAny>(text).map_err(|err| syntax(None, &err))?;
            invalid.push(invalid_item(0));
        }
    } else {
        let mut pos = skip_ws(bytes, start + 1);
        let mut position = 0;
        if bytes.get(pos) == Some(&b']') {
            pos += 1;
        } else {
            loop {
                pos = skip_ws(bytes, pos);
                if pos == bytes.len() {
                    return Err(syntax(None, &"EOF while parsing a list"));
                }
                let rest = &text[pos..];
                if bytes[pos] == b'{' {
                    let (Visible(visible), len) =
                        parse_prefix(rest).map_err(|err| syntax(Some(position), &err))?;
                    accept(&rest[..len], visible)?;
                    pos += len;
                } else {
                    let (_, len) = parse_prefix::<IgnoredAny>(rest)
                        .map_err(|err| syntax(Some(position), &err))?;
                    invalid.push(invalid_item(position));
                    pos += len;
                }
                position += 1;
                pos = skip_ws(bytes, pos);
                match bytes.get(pos) {
                    Some(b',') => pos += 1,
                    Some(b']') => {
                        pos += 1;
                        break;
                    }
                    _ => {
                        return Err(syntax(
                            Some(position - 1),
                            &"expected `,` or `]` after the item",
                        ))
                    }
                }
            }
        }
        if skip_ws(bytes, pos) != bytes.len() {
            return Err(syntax(None, &"trailing characters after the array"));
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::schema_validation(
            "Schema validation failed: dataset items must be JSON objects",
            json!({ "invalidItems": invalid }),
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_object_and_array() {
        assert_eq!(parse_push_body(br#"{"a":1}"#).unwrap().len(), 1);
        let items = parse_push_body(b"[{\"a\":1},\n {\"#h\":2},\n{}]").unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].clean);
        assert!(!items[1].clean);
        assert!(!items[2].clean);
    }

    #[test]
    fn rejects_deep_nesting_and_infinite_numbers() {
        let deep = format!("[{}1{}]", "{\"a\":".repeat(500), "}".repeat(500));
        assert_eq!(
            parse_push_body(deep.as_bytes()).unwrap_err().error_type,
            "invalid-input"
        );
        assert_eq!(
            parse_push_body(b"[{\"a\":1e400}]").unwrap_err().error_type,
            "invalid-input"
        );
        assert_eq!(
            parse_push_body(b"[{\"a\":-1e400}]").unwrap_err().error_type,
            "invalid-input"
        );
        let fine = format!("[{}1{}]", "{\"a\":".repeat(100), "}".repeat(100));
        assert!(parse_push_body(fine.as_bytes()).is_ok());
        assert!(
            parse_push_body(b"[{\"big\":123456789012345678901234567890,\"f\":1.5e300}]").is_ok()
        );
    }

    #[test]
    fn items_keep_their_exact_text() {
        let items = parse_push_body(b" [ {\"a\": [1, {\"b\":\"]\"}]} ,{\"#x\":\"}\"}\t] ").unwrap();
        let texts: Vec<&str> = items.iter().map(|i| &*i.json).collect();
        assert_eq!(texts, vec![r#"{"a": [1, {"b":"]"}]}"#, r##"{"#x":"}"}"##]);
        assert!(items[0].clean && !items[1].clean);
        assert!(parse_push_body(b"[]").unwrap().is_empty());
        assert!(parse_push_body(b" [ ] ").unwrap().is_empty());
        let one = parse_push_body(b" {\"a\":1} \n").unwrap();
        assert_eq!(&*one[0].json, r#"{"a":1}"#);
    }

    #[test]
    fn malformed_arrays_are_invalid_input() {
        for body in [
            &b"[{\"a\":1},]"[..],
            b"[{\"a\":1} {\"b\":2}]",
            b"[{\"a\":1}",
            b"[{\"a\":1}] x",
            b"{\"a\":1} {}",
            b"[{\"a\":1},",
            b"[,]",
            b"[{\"a\":}]",
            b"[{\"a\":1}, [1,]]",
            b"[\"x]",
        ] {
            assert_eq!(
                parse_push_body(body).unwrap_err().error_type,
                "invalid-input",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn leading_bom_is_ignored() {
        let items = parse_push_body("\u{feff}[{\"a\":1}]".as_bytes()).unwrap();
        assert_eq!(&*items[0].json, r#"{"a":1}"#);
        assert_eq!(parse_push_body("\u{feff}{}".as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn multiline_items_are_compacted() {
        let items = parse_push_body(b"[{\n \"a\": \"x\\ny\",\n \"b\": [1,\n2]\n}]").unwrap();
        assert_eq!(&*items[0].json, r#"{"a":"x\ny","b":[1,2]}"#);
    }

    #[test]
    fn rejects_non_objects_with_positions() {
        let err = parse_push_body(br#"[{"a":1}, 2, "x", {"b":2}]"#).unwrap_err();
        assert_eq!(err.error_type, "schema-validation-error");
        let data = *err.data.unwrap();
        let positions: Vec<u64> = data["invalidItems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["itemPosition"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, vec![1, 2]);
        assert_eq!(
            parse_push_body(b"[1,").unwrap_err().error_type,
            "invalid-input"
        );
        assert_eq!(
            parse_push_body(b"   ").unwrap_err().error_type,
            "invalid-input"
        );
        assert_eq!(
            parse_push_body(b"42").unwrap_err().error_type,
            "schema-validation-error"
        );
    }
}
