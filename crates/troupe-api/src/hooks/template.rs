//! Apify's webhook templates: JSON-like text where `{{variable}}` (outside strings) becomes the
//! variable's JSON value, and — with `shouldInterpolateStrings` — `{{variable}}` inside a string
//! becomes the value's text. Variables are dotted paths into the event's variables
//! (`{{resource.defaultDatasetId}}`); an unknown one is `null`. The result must be valid JSON.

use serde_json::Value;

/// Renders `template` with `vars`; the error says why the result is not JSON.
pub fn render(template: &str, vars: &Value, interpolate_strings: bool) -> Result<Value, String> {
    let text = substitute(template, vars, interpolate_strings);
    serde_json::from_str(&text).map_err(|err| format!("it is not valid JSON ({err})"))
}

/// Checks that a template renders to JSON whatever the variables hold (all `null`).
pub fn check(template: &str, interpolate_strings: bool) -> Result<Value, String> {
    render(template, &Value::Null, interpolate_strings)
}

fn lookup<'a>(vars: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = vars;
    for part in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn substitute(template: &str, vars: &Value, interpolate_strings: bool) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    let mut in_string = false;
    while !rest.is_empty() {
        if rest.starts_with("{{") && (!in_string || interpolate_strings) {
            if let Some(end) = rest[2..].find("}}") {
                let name = rest[2..2 + end].trim();
                let value = lookup(vars, name).unwrap_or(&Value::Null);
                if in_string {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let quoted = Value::String(text).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                } else {
                    out.push_str(&value.to_string());
                }
                rest = &rest[2 + end + 2..];
                continue;
            }
        }
        let c = rest.chars().next().expect("non-empty");
        if in_string && c == '\\' {
            // Copy the escape and the escaped character as they are.
            out.push(c);
            rest = &rest[1..];
            if let Some(next) = rest.chars().next() {
                out.push(next);
                rest = &rest[next.len_utf8()..];
            }
            continue;
        }
        if c == '"' {
            in_string = !in_string;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_become_json_values() {
        let vars =
            json!({"userId": "u1", "resource": {"id": "r1", "stats": {"n": 3}}, "eventData": null});
        let out = render(
            r#"{"user": {{userId}}, "n": {{resource.stats.n}}, "r": {{resource}}, "x": {{missing.path}}, "s": "{{userId}}"}"#,
            &vars,
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"user": "u1", "n": 3, "r": {"id": "r1", "stats": {"n": 3}}, "x": null, "s": "{{userId}}"})
        );
    }

    #[test]
    fn strings_are_interpolated_when_asked() {
        let vars = json!({"resource": {"id": "r\"1", "n": 2}});
        let out = render(
            r#"{"text": "run {{resource.id}} n={{resource.n}} \" {{resource.id}}"}"#,
            &vars,
            true,
        )
        .unwrap();
        assert_eq!(out, json!({"text": "run r\"1 n=2 \" r\"1"}));
    }

    #[test]
    fn invalid_results_are_refused() {
        assert!(check("{\"a\": }", false).is_err());
        assert!(check("{\"a\": {{x}}", false).is_err());
        assert!(check("not json", false).is_err());
        assert_eq!(check("{\"a\": {{x}}}", false).unwrap(), json!({"a": null}));
    }
}
