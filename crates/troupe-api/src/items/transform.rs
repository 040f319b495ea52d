//! Per-item transforms, applied in one fixed order (documented in the README):
//! `skipFailedPages` → `unwind` → `skipHidden` → `fields`/`omit` → `flatten` → `outputFields`
//! → `skipEmpty`.

use std::borrow::Cow;

use super::node::{Node, Object};
use super::query::ItemsQuery;

/// Applies the query's transforms to one stored item; calls `emit` with each of its 0..n output
/// objects, which borrow from `raw`. Items that are not JSON objects yield nothing.
pub fn transform<'a>(raw: &'a [u8], query: &ItemsQuery, mut emit: impl FnMut(&Object<'a>)) {
    let Ok(Node::Object(item)) = Node::parse(raw) else {
        return;
    };
    if query.skip_failed_pages && item.contains_key("errorInfo") {
        return;
    }
    if query.unwind.is_empty() {
        finish_record(item, query, &mut emit);
        return;
    }
    let mut records = vec![item];
    for field in &query.unwind {
        records = records
            .into_iter()
            .flat_map(|record| unwind(record, field))
            .collect();
    }
    for record in records {
        finish_record(record, query, &mut emit);
    }
}

/// The transforms after `unwind`, on one record.
fn finish_record<'a>(
    mut record: Object<'a>,
    query: &ItemsQuery,
    emit: &mut impl FnMut(&Object<'a>),
) {
    if query.skip_hidden {
        record.retain(|key| !key.starts_with('#'));
    }
    if !query.fields.is_empty() {
        let mut picked = Object::default();
        for (index, field) in query.fields.iter().enumerate() {
            if let Some(value) = record.shift_remove(field) {
                let name = query.output_fields.get(index).unwrap_or(field);
                picked.insert(Cow::Owned(name.clone()), value);
            }
        }
        record = picked;
    }
    for field in &query.omit {
        record.shift_remove(field);
    }
    for field in &query.flatten {
        if let Some(Node::Object(_)) = record.get(field) {
            let value = record.shift_remove(field).expect("present");
            let mut flat = Vec::new();
            flatten_dotted(field, value, &mut flat);
            for (key, value) in flat {
                record.insert(Cow::Owned(key), value);
            }
        }
    }
    if query.skip_empty && record.is_empty() {
        return;
    }
    emit(&record);
}

/// `unwind` of one field: array elements become records (objects merged into the parent,
/// scalars replacing the field); an object is merged into the parent; anything else is kept.
fn unwind<'a>(mut record: Object<'a>, field: &str) -> Vec<Object<'a>> {
    match record.get(field) {
        Some(Node::Array(_)) => {
            let Some(Node::Array(elements)) = record.shift_remove(field) else {
                unreachable!()
            };
            if elements.is_empty() {
                return vec![record];
            }
            elements
                .into_iter()
                .map(|element| {
                    let mut copy = record.clone();
                    match element {
                        Node::Object(fields) => copy.extend(fields),
                        other => copy.insert(Cow::Owned(field.to_string()), other),
                    }
                    copy
                })
                .collect()
        }
        Some(Node::Object(_)) => {
            let Some(Node::Object(fields)) = record.shift_remove(field) else {
                unreachable!()
            };
            record.extend(fields);
            vec![record]
        }
        _ => vec![record],
    }
}

fn flatten_dotted<'a>(prefix: &str, value: Node<'a>, out: &mut Vec<(String, Node<'a>)>) {
    match value {
        Node::Object(fields) if !fields.is_empty() => {
            for (key, child) in fields.into_iter() {
                flatten_dotted(&format!("{prefix}.{key}"), child, out);
            }
        }
        other => out.push((prefix.to_string(), other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use serde_json::{json, Value};

    fn run(item: Value, query: &str) -> Vec<Value> {
        let q = ItemsQuery::from_params(&Params::parse(Some(query)).unwrap()).unwrap();
        let raw = item.to_string();
        let mut out = Vec::new();
        transform(raw.as_bytes(), &q, |record| {
            out.push(serde_json::to_value(record).unwrap())
        });
        out
    }

    #[test]
    fn fields_keep_requested_order_and_rename() {
        let item = json!({"a":1,"b":2,"c":3});
        assert_eq!(run(item.clone(), "fields=c,a"), vec![json!({"c":3,"a":1})]);
        assert_eq!(
            serde_json::to_string(&run(item.clone(), "fields=c,a")[0]).unwrap(),
            r#"{"c":3,"a":1}"#
        );
        assert_eq!(
            run(item.clone(), "fields=a,b&outputFields=x,y"),
            vec![json!({"x":1,"y":2})]
        );
        assert_eq!(run(item, "omit=b"), vec![json!({"a":1,"c":3})]);
    }

    #[test]
    fn unwind_arrays_and_objects() {
        let item = json!({"id":1,"tags":[{"t":"x"},{"t":"y"}],"meta":{"m":true}});
        assert_eq!(
            run(item, "unwind=tags,meta"),
            vec![
                json!({"id":1,"t":"x","m":true}),
                json!({"id":1,"t":"y","m":true})
            ]
        );
        assert_eq!(
            run(json!({"id":1,"s":["a","b"]}), "unwind=s"),
            vec![json!({"id":1,"s":"a"}), json!({"id":1,"s":"b"})]
        );
        assert_eq!(
            run(json!({"id":1}), "unwind=missing"),
            vec![json!({"id":1})]
        );
    }

    #[test]
    fn clean_flatten_and_failed_pages() {
        assert_eq!(run(json!({"#h":1}), "clean=1"), Vec::<Value>::new());
        assert_eq!(
            run(json!({"#h":1,"a":2}), "clean=true"),
            vec![json!({"a":2})]
        );
        assert_eq!(run(json!({"#h":1}), "skipHidden=1"), vec![json!({})]);
        assert_eq!(
            run(json!({"a":{"b":{"c":1},"d":2}}), "flatten=a"),
            vec![json!({"a.b.c":1,"a.d":2})]
        );
        assert_eq!(
            run(json!({"errorInfo":"x"}), "skipFailedPages=1"),
            Vec::<Value>::new()
        );
    }
}
