//! Per-item transforms, applied in one fixed order (documented in the README):
//! `skipFailedPages` → `unwind` → `skipHidden` → `fields`/`omit` → `flatten` → `outputFields`
//! → `skipEmpty`.

use serde_json::{Map, Value};

use super::query::ItemsQuery;

/// Applies the query's transforms to one stored item; yields 0..n output objects.
pub fn transform(raw: &[u8], query: &ItemsQuery, out: &mut Vec<Map<String, Value>>) {
    let Ok(Value::Object(item)) = serde_json::from_slice::<Value>(raw) else {
        return;
    };
    if query.skip_failed_pages && item.contains_key("errorInfo") {
        return;
    }
    let mut records = vec![item];
    for field in &query.unwind {
        records = records
            .into_iter()
            .flat_map(|record| unwind(record, field))
            .collect();
    }
    for mut record in records {
        if query.skip_hidden {
            record.retain(|key, _| !key.starts_with('#'));
        }
        if !query.fields.is_empty() {
            let mut picked = Map::new();
            for (index, field) in query.fields.iter().enumerate() {
                if let Some(value) = record.remove(field) {
                    let name = query.output_fields.get(index).unwrap_or(field);
                    picked.insert(name.clone(), value);
                }
            }
            record = picked;
        }
        for field in &query.omit {
            record.shift_remove(field);
        }
        for field in &query.flatten {
            if let Some(Value::Object(_)) = record.get(field) {
                let value = record.shift_remove(field).expect("present");
                let mut flat = Vec::new();
                flatten_dotted(field, value, &mut flat);
                for (key, value) in flat {
                    record.insert(key, value);
                }
            }
        }
        if query.skip_empty && record.is_empty() {
            continue;
        }
        out.push(record);
    }
}

/// `unwind` of one field: array elements become records (objects merged into the parent,
/// scalars replacing the field); an object is merged into the parent; anything else is kept.
fn unwind(mut record: Map<String, Value>, field: &str) -> Vec<Map<String, Value>> {
    match record.get(field) {
        Some(Value::Array(_)) => {
            let Some(Value::Array(elements)) = record.shift_remove(field) else {
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
                        Value::Object(fields) => copy.extend(fields),
                        other => {
                            copy.insert(field.to_string(), other);
                        }
                    }
                    copy
                })
                .collect()
        }
        Some(Value::Object(_)) => {
            let Some(Value::Object(fields)) = record.shift_remove(field) else {
                unreachable!()
            };
            record.extend(fields);
            vec![record]
        }
        _ => vec![record],
    }
}

fn flatten_dotted(prefix: &str, value: Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, child) in fields {
                flatten_dotted(&format!("{prefix}.{key}"), child, out);
            }
        }
        other => out.push((prefix.to_string(), other)),
    }
}

/// One cell of a tabular export, typed so XLSX can keep numbers and booleans.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell {
    #[default]
    Empty,
    Text(String),
    /// A JSON number: its JSON text (what CSV and HTML print) and its value as `f64`.
    Number(String, f64),
    Bool(bool),
}

impl Cell {
    fn of(value: &Value) -> Self {
        match value {
            Value::Null | Value::Array(_) | Value::Object(_) => Cell::Empty,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Number(n) => {
                // Integers beyond 2^53 would lose digits as a spreadsheet number: NaN marks
                // them, so XLSX writes their text instead.
                let exact = n.is_f64() || n.as_i64().is_some_and(|i| i.unsigned_abs() <= 1 << 53);
                let value = if exact {
                    n.as_f64().unwrap_or(f64::NAN)
                } else {
                    f64::NAN
                };
                Cell::Number(n.to_string(), value)
            }
            Value::String(s) => Cell::Text(s.clone()),
        }
    }

    /// The cell as text (CSV, HTML).
    pub fn text(&self) -> &str {
        match self {
            Cell::Empty => "",
            Cell::Text(s) | Cell::Number(s, _) => s,
            Cell::Bool(true) => "true",
            Cell::Bool(false) => "false",
        }
    }
}

/// Flattens an object into table cells: `parent/child` for object members, `parent/0` for array
/// elements (Apify's convention in CSV, HTML and XLSX exports). Calls `f(top_level_key, path,
/// value)` for each leaf; null and empty containers are leaves.
pub fn table_leaves<'a>(
    record: &'a Map<String, Value>,
    mut f: impl FnMut(&str, String, &'a Value),
) {
    for (key, value) in record {
        leaves_of(key, key.clone(), value, &mut f);
    }
}

fn leaves_of<'a>(
    top: &str,
    path: String,
    value: &'a Value,
    f: &mut impl FnMut(&str, String, &'a Value),
) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, child) in fields {
                leaves_of(top, format!("{path}/{key}"), child, f);
            }
        }
        Value::Array(elements) if !elements.is_empty() => {
            for (index, child) in elements.iter().enumerate() {
                leaves_of(top, format!("{path}/{index}"), child, f);
            }
        }
        other => f(top, path, other),
    }
}

/// The table cells of a record, in document order.
pub fn table_cells(record: &Map<String, Value>, out: &mut Vec<(String, Cell)>) {
    table_leaves(record, |_, path, value| out.push((path, Cell::of(value))));
}

/// Text of a scalar (empty containers and null become empty text).
pub fn scalar_text(value: &Value) -> String {
    Cell::of(value).text().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use serde_json::json;

    fn run(item: Value, query: &str) -> Vec<Value> {
        let q = ItemsQuery::from_params(&Params::parse(Some(query)).unwrap()).unwrap();
        let mut out = Vec::new();
        transform(item.to_string().as_bytes(), &q, &mut out);
        out.into_iter().map(Value::Object).collect()
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

    #[test]
    fn table_cells_use_slash_paths() {
        let Value::Object(record) = json!({"a":{"b":1},"tags":["x","y"],"n":null,"e":[]}) else {
            panic!()
        };
        let mut cells = Vec::new();
        table_cells(&record, &mut cells);
        let names: Vec<&str> = cells.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["a/b", "tags/0", "tags/1", "n", "e"]);
        assert_eq!(cells[1].1, Cell::Text("x".into()));
        assert_eq!(cells[0].1.text(), "1");
    }
}
