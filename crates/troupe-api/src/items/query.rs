//! The parameters every items reader accepts (ENDPOINTS.md §5), validated once.

use crate::error::{ApiError, ApiResult};
use crate::params::Params;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFormat {
    Json,
    Jsonl,
    Csv,
    Html,
    Xml,
    Rss,
    Xlsx,
}

impl ItemFormat {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.to_ascii_lowercase().as_str() {
            "json" => Self::Json,
            "jsonl" => Self::Jsonl,
            "csv" => Self::Csv,
            "html" => Self::Html,
            "xml" => Self::Xml,
            "rss" => Self::Rss,
            "xlsx" => Self::Xlsx,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json; charset=utf-8",
            Self::Jsonl => "application/jsonl; charset=utf-8",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
            Self::Xml => "application/xml; charset=utf-8",
            Self::Rss => "application/rss+xml; charset=utf-8",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Html => "html",
            Self::Xml => "xml",
            Self::Rss => "rss",
            Self::Xlsx => "xlsx",
        }
    }

    /// Formats laid out as a table of flattened columns.
    pub fn is_tabular(self) -> bool {
        matches!(self, Self::Csv | Self::Html | Self::Xlsx)
    }
}

/// What upstream reports as the limit when none was given.
pub const NO_LIMIT: u64 = 999_999_999_999;

/// A validated items query.
#[derive(Debug, Clone)]
pub struct ItemsQuery {
    pub format: ItemFormat,
    pub offset: u64,
    /// `None` = no limit.
    pub limit: Option<u64>,
    pub desc: bool,
    pub fields: Vec<String>,
    pub output_fields: Vec<String>,
    pub omit: Vec<String>,
    pub unwind: Vec<String>,
    pub flatten: Vec<String>,
    pub skip_empty: bool,
    pub skip_hidden: bool,
    pub skip_failed_pages: bool,
    pub attachment: bool,
    pub bom: bool,
    pub delimiter: u8,
    pub skip_header_row: bool,
    pub xml_root: String,
    pub xml_row: String,
    pub feed_title: Option<String>,
    pub feed_description: Option<String>,
}

fn valid_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.to_ascii_lowercase().starts_with("xml")
}

impl ItemsQuery {
    pub fn from_params(params: &Params) -> ApiResult<Self> {
        let format = match params.str("format") {
            None => ItemFormat::Json,
            Some(value) => ItemFormat::parse(value).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Parameter \"format\" must be one of: json, jsonl, csv, html, xml, rss, xlsx (got \"{value}\")"
                ))
            })?,
        };
        let clean = params.bool("clean", false)?;
        let simplified = params.bool("simplified", false)?;
        let mut fields = params.list("fields");
        let mut unwind = params.list("unwind");
        if simplified {
            if fields.is_empty() {
                fields = vec![
                    "url".into(),
                    "pageFunctionResult".into(),
                    "errorInfo".into(),
                ];
            }
            if unwind.is_empty() {
                unwind = vec!["pageFunctionResult".into()];
            }
        }
        let output_fields = params.list("outputFields");
        if !output_fields.is_empty() && output_fields.len() != fields.len() {
            return Err(ApiError::invalid_parameter(
                "Parameter \"outputFields\" must name exactly one output field per entry of \"fields\"",
            ));
        }
        let delimiter = match params.str("delimiter") {
            None => b',',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(_) => {
                return Err(ApiError::invalid_parameter(
                    "Parameter \"delimiter\" must be a single ASCII character",
                ))
            }
        };
        let xml_root = params.str("xmlRoot").unwrap_or("items").to_string();
        let xml_row = params.str("xmlRow").unwrap_or("item").to_string();
        for (name, value) in [("xmlRoot", &xml_root), ("xmlRow", &xml_row)] {
            if !valid_xml_name(value) {
                return Err(ApiError::invalid_parameter(format!(
                    "Parameter \"{name}\" must be a valid XML element name"
                )));
            }
        }
        Ok(Self {
            format,
            offset: params.u64("offset")?.unwrap_or(0),
            // The clients treat `limit=0` as "no limit" (so does upstream).
            limit: params.u64("limit")?.filter(|&limit| limit > 0),
            desc: params.bool("desc", false)?,
            fields,
            output_fields,
            omit: params.list("omit"),
            unwind,
            flatten: params.list("flatten"),
            skip_empty: clean || params.bool("skipEmpty", false)?,
            skip_hidden: clean || params.bool("skipHidden", false)?,
            skip_failed_pages: params.bool("skipFailedPages", false)?,
            attachment: params.bool("attachment", false)?,
            bom: params.bool("bom", format == ItemFormat::Csv)?,
            delimiter,
            skip_header_row: params.bool("skipHeaderRow", false)?,
            xml_root,
            xml_row,
            feed_title: params.str("feedTitle").map(str::to_string),
            feed_description: params.str("feedDescription").map(str::to_string),
        })
    }

    /// True when items can be copied from storage byte for byte.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.format, ItemFormat::Json | ItemFormat::Jsonl)
            && self.fields.is_empty()
            && self.omit.is_empty()
            && self.unwind.is_empty()
            && self.flatten.is_empty()
            && !self.skip_empty
            && !self.skip_hidden
            && !self.skip_failed_pages
    }

    /// The limit reported in `X-Apify-Pagination-Limit`.
    pub fn reported_limit(&self) -> u64 {
        self.limit.unwrap_or(NO_LIMIT)
    }
}
