//! The table behind the CSV, HTML and XLSX exports: the column set (Apify's convention: nested
//! values become columns named by path with `/`, `address/city`, `tags/0`; columns in order of
//! first appearance, or of `fields`) and rows of cells in a compact buffer.
//!
//! The column set needs every exported item before the first row is written. The pass that
//! finds the columns keeps the rows of the first items it sees (up to [`CACHE_BYTES`]), so an
//! export that fits (any page of 1000 items) parses each item once; a longer export parses the
//! rest a second time while it writes, in constant memory.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::node::{Node, Object};

/// Tabular exports allow at most this many columns (Apify's limit).
pub const MAX_COLUMNS: usize = 2000;

/// Rows the column pass may keep for the writer (text plus cell entries).
pub const CACHE_BYTES: usize = 16 << 20;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The ordered column set of a tabular export: first appearance order, or with `fields` the
/// order of the fields (their nested columns in first appearance order within each field).
#[derive(Debug, Default)]
pub struct Columns {
    /// Names in discovery order.
    found: Vec<String>,
    /// Discovery index of each name.
    index: FastMap<String, u32>,
    /// Position in `order` of the top-level field each column comes from.
    ranks: Vec<usize>,
    /// Output names of the requested `fields` (empty: first appearance order).
    order: Vec<String>,
    /// Output position of each discovered column (set by `finish`).
    position: Vec<u32>,
    /// Names in output order (set by `finish`).
    names: Vec<String>,
    /// Path being built while walking a record.
    path: String,
}

/// Why a record could not be added.
#[derive(Debug)]
pub struct TooManyColumns;

impl Columns {
    /// An empty column set; `order` = the output names of `fields`, if any.
    pub fn new(order: Vec<String>) -> Self {
        Self {
            order,
            ..Self::default()
        }
    }

    /// Column names in output order (after `finish`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn rank(&self, top: &str) -> usize {
        self.order
            .iter()
            .position(|field| {
                field == top
                    || (top.len() > field.len()
                        && top.starts_with(field.as_str())
                        && top.as_bytes()[field.len()] == b'.')
            })
            .unwrap_or(usize::MAX)
    }

    /// Adds the columns of one record and, when `rows` is given, the record as a row.
    pub fn add_record(
        &mut self,
        record: &Object<'_>,
        mut rows: Option<&mut Rows>,
    ) -> Result<(), TooManyColumns> {
        let mut path = std::mem::take(&mut self.path);
        let mut result = Ok(());
        walk(record, &mut path, &mut |top, path, node| {
            if result.is_err() {
                return;
            }
            let column = match self.index.get(path) {
                Some(&column) => column,
                None => {
                    if self.found.len() >= MAX_COLUMNS {
                        result = Err(TooManyColumns);
                        return;
                    }
                    let column = self.found.len() as u32;
                    let rank = self.rank(top);
                    self.index.insert(path.to_string(), column);
                    self.found.push(path.to_string());
                    self.ranks.push(rank);
                    column
                }
            };
            if let Some(rows) = rows.as_deref_mut() {
                rows.push_cell(column, node);
            }
        });
        if let Some(rows) = rows {
            rows.end_row();
        }
        self.path = path;
        result
    }

    /// Appends the record as a row of the known columns (others are dropped).
    pub fn add_row(&mut self, record: &Object<'_>, rows: &mut Rows) {
        let mut path = std::mem::take(&mut self.path);
        walk(record, &mut path, &mut |_, path, node| {
            if let Some(&column) = self.index.get(path) {
                rows.push_cell(column, node);
            }
        });
        rows.end_row();
        self.path = path;
    }

    /// Fixes the output order once every record was seen: requested fields that never appeared
    /// get an (empty) column of their own, and columns follow the order of `fields`.
    pub fn finish(&mut self) {
        if !self.order.is_empty() {
            for (rank, field) in self.order.iter().enumerate() {
                if !self.ranks.contains(&rank) && !self.index.contains_key(field) {
                    self.index.insert(field.clone(), self.found.len() as u32);
                    self.found.push(field.clone());
                    self.ranks.push(rank);
                }
            }
        }
        let mut order: Vec<usize> = (0..self.found.len()).collect();
        if !self.order.is_empty() {
            order.sort_by_key(|&column| self.ranks[column]); // stable: first appearance within a field
        }
        self.position = vec![0; self.found.len()];
        self.names = Vec::with_capacity(order.len());
        for (position, column) in order.into_iter().enumerate() {
            self.position[column] = position as u32;
            self.names.push(self.found[column].clone());
        }
    }
}

/// Calls `f(top_level_key, path, value)` for each leaf of the record in document order:
/// `parent/child` for object members, `parent/0` for array elements; null and empty
/// containers are leaves.
fn walk<'n>(record: &'n Object<'_>, path: &mut String, f: &mut impl FnMut(&str, &str, &'n Node)) {
    for (key, value) in record.iter() {
        path.clear();
        path.push_str(key);
        leaves_of(key, path, value, f);
    }
}

fn leaves_of<'n>(
    top: &str,
    path: &mut String,
    value: &'n Node,
    f: &mut impl FnMut(&str, &str, &'n Node),
) {
    match value {
        Node::Object(fields) if !fields.is_empty() => {
            let len = path.len();
            for (key, child) in fields.iter() {
                path.push('/');
                path.push_str(key);
                leaves_of(top, path, child, f);
                path.truncate(len);
            }
        }
        Node::Array(elements) if !elements.is_empty() => {
            let len = path.len();
            let mut digits = itoa::Buffer::new();
            for (index, child) in elements.iter().enumerate() {
                path.push('/');
                path.push_str(digits.format(index));
                leaves_of(top, path, child, f);
                path.truncate(len);
            }
        }
        other => f(top, path, other),
    }
}

/// What a cell holds (its text is in the row buffer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellKind {
    Text,
    /// A JSON number (its JSON text) and its value; NaN for integers beyond 2^53, which a
    /// spreadsheet number would round.
    Number(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy)]
struct StoredCell {
    column: u32,
    start: u32,
    end: u32,
    kind: CellKind,
}

/// Rows of cells: the text of every cell in one buffer. Null and empty containers are empty
/// cells, which take no room.
#[derive(Debug, Default)]
pub struct Rows {
    text: String,
    cells: Vec<StoredCell>,
    /// End of each row in `cells`.
    ends: Vec<u32>,
}

/// One non-empty cell of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell<'r> {
    pub text: &'r str,
    pub kind: CellKind,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.cells.clear();
        self.ends.clear();
    }

    /// Memory the rows hold.
    pub fn bytes(&self) -> usize {
        self.text.len() + self.cells.len() * std::mem::size_of::<StoredCell>() + self.ends.len() * 4
    }

    fn push_cell(&mut self, column: u32, node: &Node) {
        let start = self.text.len() as u32;
        let kind = match node {
            Node::Null | Node::Array(_) | Node::Object(_) => return,
            Node::Bool(value) => {
                self.text.push_str(if *value { "true" } else { "false" });
                CellKind::Bool(*value)
            }
            Node::Number(number) => {
                let _ = write!(self.text, "{number}");
                let exact =
                    number.is_f64() || number.as_i64().is_some_and(|i| i.unsigned_abs() <= 1 << 53);
                CellKind::Number(if exact {
                    number.as_f64().unwrap_or(f64::NAN)
                } else {
                    f64::NAN
                })
            }
            Node::String(text) => {
                self.text.push_str(text);
                CellKind::Text
            }
        };
        self.cells.push(StoredCell {
            column,
            start,
            end: self.text.len() as u32,
            kind,
        });
    }

    fn end_row(&mut self) {
        self.ends.push(self.cells.len() as u32);
    }

    /// Lays row `row` out in output order: `slots[position]` = the cell there (see `cell`), 0
    /// for an empty cell. A path seen twice in one record keeps its last value.
    pub fn layout(&self, row: usize, columns: &Columns, slots: &mut Vec<u32>) {
        slots.clear();
        slots.resize(columns.position.len(), 0);
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        for index in start..self.ends[row] {
            let column = self.cells[index as usize].column as usize;
            slots[columns.position[column] as usize] = index + 1;
        }
    }

    /// The cell of a slot filled by `layout`.
    pub fn cell(&self, slot: u32) -> Option<Cell<'_>> {
        let cell = self.cells.get((slot as usize).checked_sub(1)?)?;
        Some(Cell {
            text: &self.text[cell.start as usize..cell.end as usize],
            kind: cell.kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Object<'_> {
        match Node::parse(text.as_bytes()).unwrap() {
            Node::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    fn texts(rows: &Rows, columns: &Columns) -> Vec<Vec<String>> {
        let mut slots = Vec::new();
        (0..rows.len())
            .map(|row| {
                rows.layout(row, columns, &mut slots);
                slots
                    .iter()
                    .map(|&slot| {
                        rows.cell(slot)
                            .map_or(String::new(), |c| c.text.to_string())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn paths_cells_and_first_appearance_order() {
        let mut columns = Columns::new(Vec::new());
        let mut rows = Rows::default();
        let a = object(r#"{"a":{"b":1},"tags":["x","y"],"n":null,"e":[],"f":1.5,"t":true}"#);
        let b = object(r#"{"z":"new","a":{"b":2,"c":18446744073709551615}}"#);
        columns.add_record(&a, Some(&mut rows)).unwrap();
        columns.add_record(&b, Some(&mut rows)).unwrap();
        columns.finish();
        assert_eq!(
            columns.names(),
            ["a/b", "tags/0", "tags/1", "n", "e", "f", "t", "z", "a/c"]
        );
        assert_eq!(
            texts(&rows, &columns),
            vec![
                vec!["1", "x", "y", "", "", "1.5", "true", "", ""],
                vec!["2", "", "", "", "", "", "", "new", "18446744073709551615"],
            ]
        );
        let mut slots = Vec::new();
        rows.layout(1, &columns, &mut slots);
        // Integers a spreadsheet number would round are NaN (XLSX writes their text).
        assert!(matches!(rows.cell(slots[8]).unwrap().kind, CellKind::Number(v) if v.is_nan()));
        assert_eq!(rows.cell(slots[0]).unwrap().kind, CellKind::Number(2.0));
        assert_eq!(rows.cell(slots[3]), None);
    }

    #[test]
    fn fields_order_missing_fields_and_repeated_paths() {
        let mut columns = Columns::new(vec!["b".into(), "missing".into(), "a".into()]);
        let mut rows = Rows::default();
        let record = object(r#"{"a":{"x":1},"b":2,"a/x":3,"b.c":4}"#);
        columns.add_record(&record, Some(&mut rows)).unwrap();
        columns.finish();
        assert_eq!(columns.names(), ["b", "b.c", "missing", "a/x"]);
        // "a/x" appears twice in the record: the last value wins.
        assert_eq!(texts(&rows, &columns), vec![vec!["2", "4", "", "3"]]);
        // Rows of known columns only.
        let mut more = Rows::default();
        columns.add_row(&object(r#"{"other":1,"b":"x"}"#), &mut more);
        assert_eq!(texts(&more, &columns), vec![vec!["x", "", "", ""]]);
    }

    #[test]
    fn column_limit() {
        let wide: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("\"c{i}\":{i}")).collect();
        let text = format!("{{{}}}", wide.join(","));
        let mut columns = Columns::new(Vec::new());
        assert!(columns.add_record(&object(&text), None).is_err());
    }
}
