//! Streams an items export: status and headers are fixed first, then a producer on the
//! blocking pool reads pages of 1000 items, transforms and encodes them, and feeds a bounded
//! channel (backpressure keeps memory constant whatever the export size).

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use troupe_model::storage::StorageInfo;
use troupe_storage::Storage;

use super::formats::TextEncoder;
use super::query::{ItemFormat, ItemsQuery};
use super::table::{CellKind, Columns, Rows, CACHE_BYTES, MAX_COLUMNS};
use super::transform::transform;
use crate::error::{ApiError, ApiResult};

/// Items read from storage per page.
const PAGE: u64 = 1000;
/// Encoded bytes gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// Rows an XLSX sheet can hold (one is the header).
const XLSX_MAX_ROWS: u64 = 1_048_575;
/// Exports of up to this many items build the XLSX file in memory (~60 B per item).
const XLSX_IN_MEMORY_ITEMS: u64 = 100_000;

type Chunk = Result<Bytes, std::io::Error>;

/// The items of `info` as a streamed response in the query's format, with Apify's pagination
/// headers. `temp_dir` holds the XLSX file while it is built.
pub async fn items_response(
    storage: Arc<dyn Storage>,
    info: &StorageInfo,
    query: ItemsQuery,
    public_items_url: String,
    temp_dir: std::path::PathBuf,
) -> ApiResult<Response> {
    let total = info.item_count;
    let start = query.offset.min(total);
    let count = query.limit.unwrap_or(u64::MAX).min(total - start);
    let title = match &info.name {
        Some(name) => format!("Dataset {name}"),
        None => format!("Dataset {}", info.id),
    };
    let query = Arc::new(query);

    // Tabular formats need the column set before the first row: one pass over the selection,
    // which keeps the rows of the first items.
    let table = if query.format.is_tabular() && count > 0 {
        let (storage, dataset_id, q) = (storage.clone(), info.id.clone(), query.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            collect_columns(&handle, storage.as_ref(), &dataset_id, &q, count)
        })
        .await
        .map_err(ApiError::internal)??
    } else {
        Table::default()
    };

    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, query.format.content_type())
        .header("x-apify-pagination-offset", query.offset.to_string())
        .header(
            "x-apify-pagination-limit",
            query.reported_limit().to_string(),
        )
        .header("x-apify-pagination-count", count.to_string())
        .header("x-apify-pagination-total", total.to_string())
        .header(
            "x-apify-pagination-desc",
            if query.desc { "true" } else { "false" },
        );
    if query.attachment {
        let stem: String = info
            .name
            .clone()
            .unwrap_or_else(|| info.id.clone())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let value = format!(
            "attachment; filename=\"dataset_{stem}.{}\"",
            query.format.extension()
        );
        builder = builder.header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&value).map_err(ApiError::internal)?,
        );
    }

    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let dataset_id = info.id.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let result = if query.format == ItemFormat::Xlsx {
            produce_xlsx(
                &handle,
                storage.as_ref(),
                &dataset_id,
                &query,
                start,
                count,
                table,
                &temp_dir,
                &tx,
            )
        } else {
            produce_text(
                &handle,
                storage.as_ref(),
                &dataset_id,
                &query,
                start,
                count,
                table,
                &title,
                &public_items_url,
                &tx,
            )
        };
        if let Err(err) = result {
            // Headers are gone already: the only way to signal is to cut the stream.
            tracing::warn!(error = %err, "items export aborted");
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
    });
    builder
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .map_err(ApiError::internal)
}

/// Reads the selection page by page, calling `f` with each page's raw items.
fn for_each_page(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    dataset_id: &str,
    query: &ItemsQuery,
    start: u64,
    count: u64,
    mut f: impl FnMut(&[Bytes]) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < count {
        let want = PAGE.min(count - done);
        let page =
            handle.block_on(storage.read_items(dataset_id, start + done, want, query.desc))?;
        if page.items.is_empty() {
            break;
        }
        done += page.items.len() as u64;
        if !f(&page.items)? {
            break;
        }
    }
    Ok(())
}

/// The columns of a tabular export, with the rows of its first `cached_items` items.
#[derive(Default)]
struct Table {
    columns: Columns,
    rows: Rows,
    cached_items: u64,
}

fn collect_columns(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    dataset_id: &str,
    query: &ItemsQuery,
    count: u64,
) -> ApiResult<Table> {
    let order = if query.output_fields.is_empty() {
        query.fields.clone()
    } else {
        query.output_fields.clone()
    };
    let mut table = Table {
        columns: Columns::new(order),
        ..Table::default()
    };
    let mut caching = true;
    let mut too_many = false;
    for_each_page(
        handle,
        storage,
        dataset_id,
        query,
        query.offset,
        count,
        |items| {
            for raw in items {
                transform(raw, query, |record| {
                    let rows = caching.then_some(&mut table.rows);
                    too_many = too_many || table.columns.add_record(record, rows).is_err();
                });
                if too_many {
                    return Ok(false);
                }
                if caching {
                    table.cached_items += 1;
                    caching = table.rows.bytes() < CACHE_BYTES;
                }
            }
            Ok(true)
        },
    )
    .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    if too_many {
        return Err(ApiError::invalid_parameter(format!(
            "The items have more than {MAX_COLUMNS} columns; select fewer with \"fields\" or \"omit\""
        )));
    }
    table.columns.finish();
    Ok(table)
}

#[allow(clippy::too_many_arguments)]
fn produce_text(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    dataset_id: &str,
    query: &ItemsQuery,
    start: u64,
    count: u64,
    table: Table,
    title: &str,
    link: &str,
    tx: &mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    let Table {
        columns,
        rows,
        cached_items,
    } = table;
    let mut encoder = TextEncoder::new(query, columns);
    let mut out = Vec::with_capacity(CHUNK * 2);
    encoder.start(query, title, link, &mut out);
    // Rows kept by the column pass are written as one block: chunks may exceed CHUNK here.
    encoder.rows(&rows, &mut out);
    drop(rows);
    let passthrough = query.is_passthrough();
    let (start, count) = (start + cached_items, count - cached_items);
    for_each_page(handle, storage, dataset_id, query, start, count, |items| {
        for raw in items {
            if passthrough {
                encoder.raw_item(raw, &mut out);
            } else {
                transform(raw, query, |record| encoder.record(record, &mut out));
            }
            if out.len() >= CHUNK {
                let chunk = Bytes::from(std::mem::replace(&mut out, Vec::with_capacity(CHUNK * 2)));
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return Ok(false); // client went away
                }
            }
        }
        Ok(true)
    })?;
    encoder.finish(query, &mut out);
    if !out.is_empty() {
        let _ = tx.blocking_send(Ok(Bytes::from(out)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn produce_xlsx(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    dataset_id: &str,
    query: &ItemsQuery,
    start: u64,
    count: u64,
    table: Table,
    temp_dir: &std::path::Path,
    tx: &mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    use rust_xlsxwriter::Workbook;

    let Table {
        mut columns,
        mut rows,
        cached_items,
    } = table;
    std::fs::create_dir_all(temp_dir)?;
    let mut workbook = Workbook::new();
    workbook.set_tempdir(temp_dir)?;
    let sheet = workbook.add_worksheet_with_constant_memory();
    for (col, name) in columns.names().iter().enumerate() {
        sheet.write_string(0, col as u16, truncate_cell(name))?;
    }
    let mut row_index: u32 = 1;
    let mut slots = Vec::new();
    let mut more = write_xlsx_rows(sheet, &rows, &columns, &mut slots, &mut row_index)?;
    let (rest_start, rest_count) = (start + cached_items, count - cached_items);
    if more {
        for_each_page(
            handle,
            storage,
            dataset_id,
            query,
            rest_start,
            rest_count,
            |items| {
                rows.clear();
                for raw in items {
                    transform(raw, query, |record| columns.add_row(record, &mut rows));
                }
                more = write_xlsx_rows(sheet, &rows, &columns, &mut slots, &mut row_index)?;
                Ok(more)
            },
        )?;
    }
    drop(rows);
    // A small workbook is assembled in memory; a big one in a file (constant memory).
    if count <= XLSX_IN_MEMORY_ITEMS {
        let file = Bytes::from(workbook.save_to_buffer()?);
        let mut sent = 0;
        while sent < file.len() {
            let end = file.len().min(sent + CHUNK);
            if tx.blocking_send(Ok(file.slice(sent..end))).is_err() {
                break;
            }
            sent = end;
        }
        return Ok(());
    }
    let file = tempfile::NamedTempFile::new_in(temp_dir)?;
    workbook.save(file.path())?;
    let mut reader = std::fs::File::open(file.path())?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if tx
            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Writes rows below `row_index` (typed cells); false once the sheet is full.
fn write_xlsx_rows(
    sheet: &mut rust_xlsxwriter::Worksheet,
    rows: &Rows,
    columns: &Columns,
    slots: &mut Vec<u32>,
    row_index: &mut u32,
) -> Result<bool, rust_xlsxwriter::XlsxError> {
    for row in 0..rows.len() {
        if u64::from(*row_index) > XLSX_MAX_ROWS {
            return Ok(false);
        }
        rows.layout(row, columns, slots);
        for (col, &slot) in slots.iter().enumerate() {
            let Some(cell) = rows.cell(slot) else {
                continue;
            };
            let col = col as u16;
            match cell.kind {
                CellKind::Number(value) if value.is_finite() => {
                    sheet.write_number(*row_index, col, value)?;
                }
                CellKind::Bool(value) => {
                    sheet.write_boolean(*row_index, col, value)?;
                }
                CellKind::Text | CellKind::Number(_) => {
                    sheet.write_string(*row_index, col, truncate_cell(cell.text))?;
                }
            }
        }
        *row_index += 1;
    }
    Ok(true)
}

/// XLSX cells hold at most 32,767 characters.
fn truncate_cell(text: &str) -> &str {
    const MAX: usize = 32_767;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
