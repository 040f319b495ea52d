//! Encoders of every export format. Text formats write into a byte buffer batch by batch; XLSX
//! goes through rust_xlsxwriter in constant-memory mode (see `export.rs`).

use std::borrow::Cow;
use std::io::Write as _;

use super::node::{Node, Object};
use super::query::{ItemFormat, ItemsQuery};
use super::table::{Columns, Rows};

/// Bytes that need work when escaped for XML: markup characters and the control characters
/// XML 1.0 cannot carry at all (tab, line feed and carriage return pass).
const XML_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = !matches!(byte, 0x09 | 0x0A | 0x0D);
        byte += 1;
    }
    table[b'&' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'"' as usize] = true;
    table[b'\'' as usize] = true;
    table
};

/// Escapes text for XML and HTML.
pub fn escape_xml(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut done = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if !XML_SPECIAL[byte as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[done..index]);
        done = index + 1;
        out.extend_from_slice(match byte {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            _ => b"", // a control character: dropped
        });
    }
    out.extend_from_slice(&bytes[done..]);
}

/// The text of a scalar, escaped for XML (null and containers have none).
fn escape_scalar(value: &Node, out: &mut Vec<u8>) {
    match value {
        Node::Null | Node::Array(_) | Node::Object(_) => {}
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        // Digits, sign, point and exponent: nothing to escape.
        Node::Number(number) => {
            let _ = write!(out, "{number}");
        }
        Node::String(text) => escape_xml(text, out),
    }
}

/// A property name turned into a valid XML element name.
pub fn xml_name(name: &str) -> Cow<'_, str> {
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if valid {
        return Cow::Borrowed(name);
    }
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    Cow::Owned(out)
}

/// Writes `value` as the element `name` (arrays repeat the element; `@` holds attributes and `#`
/// the text of an object).
pub fn write_xml_value(name: &str, value: &Node, out: &mut Vec<u8>) {
    match value {
        Node::Array(elements) => {
            for element in elements {
                write_xml_value(name, element, out);
            }
        }
        Node::Object(fields) => write_xml_object(name, fields, out),
        Node::Null => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"/>");
        }
        scalar => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
            escape_scalar(scalar, out);
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
        }
    }
}

/// Writes an object as the element `name`.
pub fn write_xml_object(name: &str, fields: &Object, out: &mut Vec<u8>) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    if let Some(Node::Object(attributes)) = fields.get("@") {
        for (key, attr) in attributes.iter() {
            out.push(b' ');
            out.extend_from_slice(xml_name(key).as_bytes());
            out.extend_from_slice(b"=\"");
            escape_scalar(attr, out);
            out.push(b'"');
        }
    }
    out.push(b'>');
    for (key, child) in fields.iter() {
        match key {
            "@" => {}
            "#" => escape_scalar(child, out),
            _ => write_xml_value(&xml_name(key), child, out),
        }
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

/// Writes one CSV record (the `csv` crate's rules: quotes only where needed, doubled inside).
fn write_csv_record<'f>(
    writer: &mut csv_core::Writer,
    fields: impl Iterator<Item = &'f [u8]>,
    out: &mut Vec<u8>,
) {
    fn run(out: &mut Vec<u8>, room: usize, step: impl FnMut(&mut [u8]) -> (bool, usize)) {
        let mut step = step;
        loop {
            let len = out.len();
            out.resize(len + room, 0);
            let (done, written) = step(&mut out[len..]);
            out.truncate(len + written);
            if done {
                return;
            }
        }
    }
    use csv_core::WriteResult::InputEmpty;
    for (index, field) in fields.enumerate() {
        if index > 0 {
            run(out, 4, |buf| {
                let (result, n) = writer.delimiter(buf);
                (result == InputEmpty, n)
            });
        }
        let mut rest = field;
        run(out, field.len() * 2 + 4, |buf| {
            let (result, read, n) = writer.field(rest, buf);
            rest = &rest[read..];
            (result == InputEmpty, n)
        });
    }
    run(out, 8, |buf| {
        let (result, n) = writer.terminator(buf);
        (result == InputEmpty, n)
    });
}

/// Streaming encoder of one text format.
pub struct TextEncoder {
    format: ItemFormat,
    first: bool,
    xml_row: String,
    columns: Columns,
    csv: csv_core::Writer,
    /// One record's row (CSV, HTML).
    row: Rows,
    slots: Vec<u32>,
}

impl TextEncoder {
    /// `columns`: the finished column set of a tabular format.
    pub fn new(query: &ItemsQuery, columns: Columns) -> Self {
        Self {
            format: query.format,
            first: true,
            xml_row: query.xml_row.clone(),
            columns,
            csv: csv_core::WriterBuilder::new()
                .delimiter(query.delimiter)
                .build(),
            row: Rows::default(),
            slots: Vec::new(),
        }
    }

    /// Everything before the first item.
    pub fn start(&mut self, query: &ItemsQuery, title: &str, link: &str, out: &mut Vec<u8>) {
        if query.bom {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        match self.format {
            ItemFormat::Json => out.push(b'['),
            ItemFormat::Jsonl | ItemFormat::Xlsx => {}
            ItemFormat::Csv => {
                if !query.skip_header_row && !self.columns.names().is_empty() {
                    let names = self.columns.names().iter().map(|name| name.as_bytes());
                    write_csv_record(&mut self.csv, names, out);
                }
            }
            ItemFormat::Html => {
                out.extend_from_slice(
                    b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>",
                );
                escape_xml(title, out);
                out.extend_from_slice(b"</title></head><body><table border=\"1\">\n<thead><tr>");
                for name in self.columns.names() {
                    out.extend_from_slice(b"<th>");
                    escape_xml(name, out);
                    out.extend_from_slice(b"</th>");
                }
                out.extend_from_slice(b"</tr></thead>\n<tbody>\n");
            }
            ItemFormat::Xml => {
                out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
                out.extend_from_slice(query.xml_root.as_bytes());
                out.extend_from_slice(b">\n");
            }
            ItemFormat::Rss => {
                out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\n<title>");
                escape_xml(query.feed_title.as_deref().unwrap_or(title), out);
                out.extend_from_slice(b"</title>\n<link>");
                escape_xml(link, out);
                out.extend_from_slice(b"</link>\n<description>");
                let description = query
                    .feed_description
                    .clone()
                    .unwrap_or_else(|| format!("Items of {title}"));
                escape_xml(&description, out);
                out.extend_from_slice(b"</description>\n");
            }
        }
    }

    /// One stored item copied as is (JSON and JSONL without transforms).
    pub fn raw_item(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        match self.format {
            ItemFormat::Json => {
                if !self.first {
                    out.push(b',');
                }
                out.push(b'\n');
                out.extend_from_slice(raw);
            }
            _ => {
                out.extend_from_slice(raw);
                out.push(b'\n');
            }
        }
        self.first = false;
    }

    /// One transformed record.
    pub fn record(&mut self, record: &Object, out: &mut Vec<u8>) {
        match self.format {
            ItemFormat::Json | ItemFormat::Jsonl => {
                if self.format == ItemFormat::Json {
                    if !self.first {
                        out.push(b',');
                    }
                    out.push(b'\n');
                }
                record.write_json(out);
                if self.format == ItemFormat::Jsonl {
                    out.push(b'\n');
                }
                self.first = false;
            }
            ItemFormat::Csv | ItemFormat::Html => {
                let mut row = std::mem::take(&mut self.row);
                row.clear();
                self.columns.add_row(record, &mut row);
                self.rows(&row, 0, usize::MAX, out);
                self.row = row;
            }
            ItemFormat::Xml | ItemFormat::Rss => {
                let row_name = if self.format == ItemFormat::Rss {
                    "item"
                } else {
                    self.xml_row.as_str()
                };
                write_xml_object(row_name, record, out);
                out.push(b'\n');
            }
            ItemFormat::Xlsx => {}
        }
    }

    /// Rows laid out already (CSV, HTML; the column pass keeps those of the first items), from
    /// row `from` until `out` holds `max_out` bytes; returns the next row to write.
    pub fn rows(&mut self, rows: &Rows, from: usize, max_out: usize, out: &mut Vec<u8>) -> usize {
        for row in from..rows.len() {
            if out.len() >= max_out {
                return row;
            }
            rows.layout(row, &self.columns, &mut self.slots);
            let cells = self
                .slots
                .iter()
                .map(|&slot| rows.cell(slot).map_or("", |cell| cell.text));
            if self.format == ItemFormat::Csv {
                write_csv_record(&mut self.csv, cells.map(str::as_bytes), out);
            } else {
                out.extend_from_slice(b"<tr>");
                for text in cells {
                    out.extend_from_slice(b"<td>");
                    escape_xml(text, out);
                    out.extend_from_slice(b"</td>");
                }
                out.extend_from_slice(b"</tr>\n");
            }
        }
        rows.len()
    }

    /// Everything after the last item.
    pub fn finish(&mut self, query: &ItemsQuery, out: &mut Vec<u8>) {
        match self.format {
            ItemFormat::Json => {
                if !self.first {
                    out.push(b'\n');
                }
                out.extend_from_slice(b"]");
            }
            ItemFormat::Html => out.extend_from_slice(b"</tbody></table></body></html>\n"),
            ItemFormat::Xml => {
                out.extend_from_slice(b"</");
                out.extend_from_slice(query.xml_root.as_bytes());
                out.extend_from_slice(b">\n");
            }
            ItemFormat::Rss => out.extend_from_slice(b"</channel></rss>\n"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_values() {
        let mut out = Vec::new();
        let text = json!({"a": [1, 2], "b": {"@": {"x": "1"}, "#": "t<"}, "9z": null}).to_string();
        write_xml_value("item", &Node::parse(text.as_bytes()).unwrap(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<item><a>1</a><a>2</a><b x=\"1\">t&lt;</b><_9z/></item>"
        );
    }
}
