//! Query parameters, parsed once with Apify's conventions: booleans as `1/0/true/false`,
//! non-negative integers, comma lists; unknown parameters are ignored.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use troupe_model::list::{ListParams, MAX_LIST_LIMIT};

use crate::error::ApiError;

/// The query string's decoded name/value pairs in their order (the first occurrence of a name
/// wins). A query has a handful of parameters: a list searched in order costs less than a map
/// (no hashing, one allocation), and every API request parses one.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string (`application/x-www-form-urlencoded`: `+` is a space,
    /// percent-escapes decoded, invalid UTF-8 replaced). It cannot fail; the `Result` keeps the
    /// extractors' shape.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs = query
            .map(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { pairs })
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The raw value of the first `name`, if present and non-empty.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A boolean (`1`, `0`, `true`, `false`, any case); absent → `default`.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.str(name) {
            None => Ok(default),
            Some(value) => parse_bool(value).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Parameter \"{name}\" must be a boolean (true, false, 1 or 0)"
                ))
            }),
        }
    }

    /// A non-negative integer; absent → `None`. Accepts `12.0` (the spec types them as numbers).
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.str(name) else {
            return Ok(None);
        };
        parse_u64(value).map(Some).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Parameter \"{name}\" must be a non-negative integer"
            ))
        })
    }

    /// A comma-separated list (empty entries dropped).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.str(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `offset`, `limit` (capped at 1000) and `desc` of a collection listing.
    pub fn list_params(&self) -> Result<ListParams, ApiError> {
        let offset = self.u64("offset")?.unwrap_or(0);
        let limit = match self.u64("limit")? {
            None | Some(0) => MAX_LIST_LIMIT,
            Some(limit) => limit.min(MAX_LIST_LIMIT),
        };
        Ok(ListParams {
            offset,
            limit,
            desc: self.bool("desc", false)?,
        })
    }
}

/// `1/0/true/false` in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn parse_u64(value: &str) -> Option<u64> {
    if let Ok(n) = value.parse::<u64>() {
        return Some(n);
    }
    let float: f64 = value.parse().ok()?;
    (float.is_finite() && float >= 0.0 && float.fract() == 0.0 && float < 1.8e19)
        .then_some(float as u64)
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    /// The storage extractors (`resolve::StorageTarget`, `resolve::WriteTarget`) parse the
    /// query first and leave it in the request's extensions: taken from there, not parsed twice.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(params) = parts.extensions.remove::<Params>() {
            return Ok(params);
        }
        Params::parse(parts.uri.query())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_numbers() {
        let p = Params::parse(Some(
            "desc=1&clean=TRUE&a=0&b=false&n=12&f=3.0&bad=x&neg=-1",
        ))
        .unwrap();
        assert!(p.bool("desc", false).unwrap());
        assert!(p.bool("clean", false).unwrap());
        assert!(!p.bool("a", true).unwrap());
        assert!(!p.bool("b", true).unwrap());
        assert!(p.bool("missing", true).unwrap());
        assert!(p.bool("bad", false).is_err());
        assert_eq!(p.u64("n").unwrap(), Some(12));
        assert_eq!(p.u64("f").unwrap(), Some(3));
        assert!(p.u64("neg").is_err());
        assert!(p.u64("bad").is_err());
    }

    #[test]
    fn first_occurrence_wins_and_values_are_decoded() {
        let p = Params::parse(Some("a=1&b=x+y%2Fz&a=2&c=%E2%9C%93&d=&e")).unwrap();
        assert_eq!(p.str("a"), Some("1"));
        assert_eq!(p.str("b"), Some("x y/z"));
        assert_eq!(p.str("c"), Some("\u{2713}"));
        assert_eq!(p.str("d"), None);
        assert_eq!(p.str("e"), None);
        assert_eq!(p.str("missing"), None);
        assert_eq!(Params::parse(None).unwrap().str("a"), None);
        // Invalid UTF-8 after decoding is replaced, not refused.
        assert_eq!(
            Params::parse(Some("k=%FF")).unwrap().str("k"),
            Some("\u{fffd}")
        );
    }

    #[test]
    fn list_limit_is_capped() {
        let p = Params::parse(Some("limit=5000&offset=3")).unwrap();
        let lp = p.list_params().unwrap();
        assert_eq!((lp.offset, lp.limit, lp.desc), (3, 1000, false));
    }
}
