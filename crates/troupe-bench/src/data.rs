//! Test data: dataset items of about 312 bytes, deterministic per index.

/// One item (single-line JSON object, ~312 bytes) with the fields the transforms use: nested
/// object (`flatten`), array (`unwind`), a hidden `#` field (`clean`), an empty field.
pub fn item(i: u64) -> String {
    let price = (i % 100_000) as f64 / 100.0 + 1.0;
    format!(
        concat!(
            r##"{{"url":"https://example.com/products/{i:08}","title":"Product {i} widget model {m}","##,
            r##""price":{price:.2},"currency":"EUR","inStock":{stock},"tags":["tools","widgets","sale-{t}"],"##,
            r##""seller":{{"name":"Seller {s}","rating":{r}.5,"country":"DE"}},"note":"","##,
            r##""description":"Dependable widget; ships in one to two days.","#crawl":{{"depth":{d}}}}}"##
        ),
        i = i,
        m = i % 97,
        price = price,
        stock = !i.is_multiple_of(3),
        t = i % 5,
        s = i % 1000,
        r = i % 5,
        d = i % 4,
    )
}

/// A JSON array of `n` items starting at `first`.
pub fn batch(first: u64, n: u64) -> String {
    let mut out = String::with_capacity(n as usize * 330 + 2);
    out.push('[');
    for i in first..first + n {
        if i > first {
            out.push(',');
        }
        out.push_str(&item(i));
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_valid_json_of_about_312_bytes() {
        for i in [0, 1, 999_999] {
            let text = item(i);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value.is_object());
            assert!((280..=340).contains(&text.len()), "{}", text.len());
        }
        let array: Vec<serde_json::Value> = serde_json::from_str(&batch(5, 10)).unwrap();
        assert_eq!(array.len(), 10);
    }
}
