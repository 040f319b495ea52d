//! Streams an items export: status and headers are fixed first, then a producer on the
//! blocking pool reads pages of 1000 items, transforms and encodes them, and feeds a bounded
//! channel (backpressure keeps memory constant whatever the export size).

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use troupe_model::storage::StorageInfo;
use troupe_storage::Storage;

use super::formats::{Columns, TextEncoder, MAX_COLUMNS};
use super::query::{ItemFormat, ItemsQuery};
use super::transform::transform;
use super::transform::Cell;
use crate::error::{ApiError, ApiResult};

/// Items read from storage per page.
const PAGE: u64 = 1000;
/// Encoded bytes gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// Rows an XLSX sheet can hold (one is the header).
const XLSX_MAX_ROWS: u64 = 1_048_575;

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

    // Tabular formats need the column set before the first row: one pass over the selection.
    let columns = if query.format.is_tabular() && count > 0 {
        let (storage, dataset_id, q) = (storage.clone(), info.id.clone(), query.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            collect_columns(&handle, storage.as_ref(), &dataset_id, &q, count)
        })
        .await
        .map_err(ApiError::internal)??
    } else {
        Columns::default()
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
                columns,
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
                columns,
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

fn collect_columns(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    dataset_id: &str,
    query: &ItemsQuery,
    count: u64,
) -> ApiResult<Columns> {
    let order = if query.output_fields.is_empty() {
        query.fields.clone()
    } else {
        query.output_fields.clone()
    };
    let mut columns = Columns::new(order);
    let mut records = Vec::new();
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
                records.clear();
                transform(raw, query, &mut records);
                for record in &records {
                    if !columns.add_record(record) {
                        too_many = true;
                        return Ok(false);
                    }
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
    columns.finish();
    Ok(columns)
}

#[allow(clippy::too_many_arguments)]
fn produce_text(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    dataset_id: &str,
    query: &ItemsQuery,
    start: u64,
    count: u64,
    columns: Columns,
    title: &str,
    link: &str,
    tx: &mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    let mut encoder = TextEncoder::new(query, columns);
    let mut out = Vec::with_capacity(CHUNK * 2);
    encoder.start(query, title, link, &mut out);
    let passthrough = query.is_passthrough();
    let mut records: Vec<Map<String, Value>> = Vec::new();
    for_each_page(handle, storage, dataset_id, query, start, count, |items| {
        for raw in items {
            if passthrough {
                encoder.raw_item(raw, &mut out);
            } else {
                records.clear();
                transform(raw, query, &mut records);
                for record in &records {
                    encoder.record(record, &mut out);
                }
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
    columns: Columns,
    temp_dir: &std::path::Path,
    tx: &mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    use rust_xlsxwriter::Workbook;

    std::fs::create_dir_all(temp_dir)?;
    let mut workbook = Workbook::new();
    workbook.set_tempdir(temp_dir)?;
    let sheet = workbook.add_worksheet_with_constant_memory();
    for (col, name) in columns.names.iter().enumerate() {
        sheet.write_string(0, col as u16, truncate_cell(name))?;
    }
    let mut row_index: u32 = 1;
    let mut records = Vec::new();
    let mut scratch = Vec::new();
    for_each_page(handle, storage, dataset_id, query, start, count, |items| {
        for raw in items {
            records.clear();
            transform(raw, query, &mut records);
            for record in &records {
                if u64::from(row_index) > XLSX_MAX_ROWS {
                    return Ok(false);
                }
                for (col, cell) in columns.row(record, &mut scratch).iter().enumerate() {
                    let col = col as u16;
                    match cell {
                        Cell::Empty => {}
                        Cell::Text(text) => {
                            sheet.write_string(row_index, col, truncate_cell(text))?;
                        }
                        Cell::Number(_, value) if value.is_finite() => {
                            sheet.write_number(row_index, col, *value)?;
                        }
                        Cell::Number(text, _) => {
                            sheet.write_string(row_index, col, truncate_cell(text))?;
                        }
                        Cell::Bool(value) => {
                            sheet.write_boolean(row_index, col, *value)?;
                        }
                    }
                }
                row_index += 1;
            }
        }
        Ok(true)
    })?;
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
