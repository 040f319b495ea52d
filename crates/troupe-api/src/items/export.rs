//! An items export, produced on the blocking pool in one go: status and headers are fixed
//! first, then pages of items are read straight from storage (one read transaction each, no
//! copy of the page), transformed and encoded. A selection that fits in one buffer is answered
//! as one body with a length; a larger one streams through a bounded channel (backpressure keeps
//! memory constant whatever the export size).

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use troupe_model::storage::StorageInfo;
use troupe_storage::Storage;

use super::formats::TextEncoder;
use super::query::{ItemFormat, ItemsQuery};
use super::table::{CellKind, Columns, Rows, CACHE_BYTES, MAX_COLUMNS};
use super::transform::transform;
use crate::error::{ApiError, ApiResult};

/// Items read from storage per read transaction (at most).
const PAGE: u64 = 1000;
/// Encoded bytes gathered before a chunk is sent (checked between pages).
const CHUNK: usize = 256 * 1024;
/// A page ends early once this much is buffered (pages of very large items).
const BUFFER_MAX: usize = 1024 * 1024;
/// Chunks queued between the producer and the connection.
const QUEUE: usize = 2;
/// Rows an XLSX sheet can hold (one is the header).
const XLSX_MAX_ROWS: u64 = 1_048_575;
/// Exports of up to this many items build the XLSX file in memory (~60 B per item).
const XLSX_IN_MEMORY_ITEMS: u64 = 100_000;

type Chunk = Result<Bytes, std::io::Error>;

/// How the producer's output starts: the whole body, or a stream of chunks.
enum First {
    Whole(Bytes),
    Stream(mpsc::Receiver<Chunk>),
}

/// Where the producer's bytes go. Nothing is committed until the first chunk is sent, so an
/// error found before (e.g. too many columns) still becomes a proper error response.
enum Sink {
    Pending(Option<oneshot::Sender<ApiResult<First>>>),
    Streaming(mpsc::Sender<Chunk>),
}

impl Sink {
    /// Sends one chunk of a streamed body; false when the client went away.
    fn send(&mut self, bytes: Bytes) -> bool {
        if let Sink::Pending(first) = self {
            let (tx, rx) = mpsc::channel(QUEUE);
            let Some(first) = first.take() else {
                return false;
            };
            if first.send(Ok(First::Stream(rx))).is_err() {
                return false;
            }
            *self = Sink::Streaming(tx);
        }
        match self {
            Sink::Streaming(tx) => tx.blocking_send(Ok(bytes)).is_ok(),
            Sink::Pending(_) => false,
        }
    }

    /// The last bytes: the whole body if nothing was sent yet.
    fn finish(self, bytes: Bytes) {
        match self {
            Sink::Pending(Some(first)) => {
                let _ = first.send(Ok(First::Whole(bytes)));
            }
            Sink::Pending(None) => {}
            Sink::Streaming(tx) => {
                if !bytes.is_empty() {
                    let _ = tx.blocking_send(Ok(bytes));
                }
            }
        }
    }

    fn fail(self, err: ApiError) {
        match self {
            Sink::Pending(Some(first)) => {
                let _ = first.send(Err(err));
            }
            Sink::Pending(None) => {}
            Sink::Streaming(tx) => {
                // Headers are gone already: the only way to signal is to cut the stream.
                tracing::warn!(error = %err.message, "items export aborted");
                let _ = tx.blocking_send(Err(std::io::Error::other(err.message)));
            }
        }
    }
}

/// Everything the producer needs, moved to the blocking pool.
struct Job {
    storage: Arc<dyn Storage>,
    dataset_id: String,
    query: ItemsQuery,
    start: u64,
    count: u64,
    title: String,
    link: String,
    temp_dir: std::path::PathBuf,
}

/// The items of `info` as a response in the query's format, with Apify's pagination headers.
/// `temp_dir` holds the XLSX file while it is built.
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

    let job = Job {
        storage,
        dataset_id: info.id.clone(),
        query,
        start,
        count,
        title,
        link: public_items_url,
        temp_dir,
    };
    let (first_tx, first_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut sink = Sink::Pending(Some(first_tx));
        match produce(&job, &mut sink) {
            Ok(last) => sink.finish(last),
            Err(err) => sink.fail(err),
        }
    });
    let body = match first_rx.await {
        Ok(Ok(First::Whole(bytes))) => Body::from(bytes),
        Ok(Ok(First::Stream(rx))) => Body::from_stream(ReceiverStream::new(rx)),
        Ok(Err(err)) => return Err(err),
        Err(_) => return Err(ApiError::internal("items export failed")),
    };
    builder.body(body).map_err(ApiError::internal)
}

/// Produces the export; returns the bytes not sent yet.
fn produce(job: &Job, sink: &mut Sink) -> ApiResult<Bytes> {
    let query = &job.query;
    // Tabular formats need the column set before the first row: one pass over the selection,
    // which keeps the rows of the first items.
    let table = if query.format.is_tabular() && job.count > 0 {
        collect_columns(job)?
    } else {
        Table::default()
    };
    let result = if query.format == ItemFormat::Xlsx {
        produce_xlsx(job, table, sink)
    } else {
        produce_text(job, table, sink)
    };
    result.map_err(|err| ApiError::internal(format!("{err:#}")))
}

/// What to do after an item.
enum Flow {
    /// Go on with the next item.
    Next,
    /// End the read transaction here (the buffer is full); go on with a new page.
    EndPage,
    /// Stop the whole export.
    Stop,
}

/// Reads `count` items from `start` page by page (one read transaction each), calling `item`
/// with each item's raw JSON straight from storage and `page_done` between pages, outside the
/// transaction (with whether the selection is finished; false stops).
fn for_each_item<S>(
    job: &Job,
    start: u64,
    count: u64,
    state: &mut S,
    mut item: impl FnMut(&mut S, &[u8]) -> anyhow::Result<Flow>,
    mut page_done: impl FnMut(&mut S, bool) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < count {
        let want = PAGE.min(count - done);
        let mut stop = false;
        let mut error = None;
        let (_, visited) = job.storage.visit_items(
            &job.dataset_id,
            start + done,
            want,
            job.query.desc,
            &mut |raw| match item(state, raw) {
                Ok(Flow::Next) => true,
                Ok(Flow::EndPage) => false,
                Ok(Flow::Stop) => {
                    stop = true;
                    false
                }
                Err(err) => {
                    error = Some(err);
                    false
                }
            },
        )?;
        if let Some(err) = error {
            return Err(err);
        }
        if visited == 0 || stop {
            break;
        }
        done += visited;
        if !page_done(state, done >= count)? {
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

fn collect_columns(job: &Job) -> ApiResult<Table> {
    let query = &job.query;
    let order = if query.output_fields.is_empty() {
        query.fields.clone()
    } else {
        query.output_fields.clone()
    };
    let mut state = (
        Table {
            columns: Columns::new(order),
            ..Table::default()
        },
        true,  // caching
        false, // too many columns
    );
    for_each_item(
        job,
        query.offset,
        job.count,
        &mut state,
        |(table, caching, too_many), raw| {
            transform(raw, query, |record| {
                let rows = caching.then_some(&mut table.rows);
                *too_many = *too_many || table.columns.add_record(record, rows).is_err();
            });
            if *too_many {
                return Ok(Flow::Stop);
            }
            if *caching {
                table.cached_items += 1;
                *caching = table.rows.bytes() < CACHE_BYTES;
            }
            Ok(Flow::Next)
        },
        |_, _| Ok(true),
    )
    .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    let (mut table, _, too_many) = state;
    if too_many {
        return Err(ApiError::invalid_parameter(format!(
            "The items have more than {MAX_COLUMNS} columns; select fewer with \"fields\" or \"omit\""
        )));
    }
    table.columns.finish();
    Ok(table)
}

struct TextState<'a> {
    encoder: TextEncoder,
    out: Vec<u8>,
    sink: &'a mut Sink,
}

fn produce_text(job: &Job, table: Table, sink: &mut Sink) -> anyhow::Result<Bytes> {
    let query = &job.query;
    let Table {
        columns,
        rows,
        cached_items,
    } = table;
    let mut state = TextState {
        encoder: TextEncoder::new(query, columns),
        out: Vec::with_capacity(CHUNK + CHUNK / 2),
        sink,
    };
    state
        .encoder
        .start(query, &job.title, &job.link, &mut state.out);
    // Rows kept by the column pass, sent on whenever a buffer is full.
    let mut next = 0;
    loop {
        next = state.encoder.rows(&rows, next, BUFFER_MAX, &mut state.out);
        if next == rows.len() {
            break;
        }
        let chunk = std::mem::replace(&mut state.out, Vec::with_capacity(CHUNK + CHUNK / 2));
        if !state.sink.send(Bytes::from(chunk)) {
            return Ok(Bytes::new()); // client went away
        }
    }
    drop(rows);
    let passthrough = query.is_passthrough();
    let mut gone = false;
    for_each_item(
        job,
        job.start + cached_items,
        job.count - cached_items,
        &mut state,
        |s, raw| {
            if passthrough {
                s.encoder.raw_item(raw, &mut s.out);
            } else {
                let TextState { encoder, out, .. } = s;
                transform(raw, query, |record| encoder.record(record, out));
            }
            Ok(if s.out.len() >= BUFFER_MAX {
                Flow::EndPage
            } else {
                Flow::Next
            })
        },
        |s, finished| {
            if finished || s.out.len() < CHUNK {
                return Ok(true);
            }
            let chunk = std::mem::replace(&mut s.out, Vec::with_capacity(CHUNK + CHUNK / 2));
            if !s.sink.send(Bytes::from(chunk)) {
                gone = true; // client went away
                return Ok(false);
            }
            Ok(true)
        },
    )?;
    if gone {
        return Ok(Bytes::new());
    }
    state.encoder.finish(query, &mut state.out);
    Ok(Bytes::from(state.out))
}

fn produce_xlsx(job: &Job, table: Table, sink: &mut Sink) -> anyhow::Result<Bytes> {
    use rust_xlsxwriter::Workbook;

    let query = &job.query;
    let Table {
        columns,
        rows,
        cached_items,
    } = table;
    std::fs::create_dir_all(&job.temp_dir)?;
    let mut workbook = Workbook::new();
    workbook.set_tempdir(&job.temp_dir)?;
    let sheet = workbook.add_worksheet_with_constant_memory();
    for (col, name) in columns.names().iter().enumerate() {
        sheet.write_string(0, col as u16, truncate_cell(name))?;
    }
    let mut state = (columns, rows, Vec::new(), 1u32);
    let (columns, rows, slots, row_index) = &mut state;
    let more = write_xlsx_rows(sheet, rows, columns, slots, row_index)?;
    if more {
        rows.clear();
        for_each_item(
            job,
            job.start + cached_items,
            job.count - cached_items,
            &mut state,
            |(columns, rows, _, _), raw| {
                transform(raw, query, |record| columns.add_row(record, rows));
                Ok(Flow::Next)
            },
            |(columns, rows, slots, row_index), _| {
                let more = write_xlsx_rows(sheet, rows, columns, slots, row_index)?;
                rows.clear();
                Ok(more)
            },
        )?;
    }
    drop(state);
    // A small workbook is assembled in memory (and sent as one body); a big one in a file,
    // streamed (constant memory).
    if job.count <= XLSX_IN_MEMORY_ITEMS {
        return Ok(Bytes::from(workbook.save_to_buffer()?));
    }
    let file = tempfile::NamedTempFile::new_in(&job.temp_dir)?;
    workbook.save(file.path())?;
    let mut reader = std::fs::File::open(file.path())?;
    // Read one chunk ahead so the last one goes out with `finish`.
    let mut pending: Option<Bytes> = None;
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        let n = (&mut reader).take(CHUNK as u64).read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(previous) = pending.replace(Bytes::from(buf)) {
            if !sink.send(previous) {
                return Ok(Bytes::new());
            }
        }
    }
    Ok(pending.unwrap_or_default())
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
