//! Payload filters: a small language over a document's JSON payload, applied
//! in every search stage (inside the HNSW traversal, in exact scoring, on the
//! memtable).
//!
//! Written as JSON:
//!
//! ```text
//! {"field": "lang", "eq": "en"}                         equality (any JSON value)
//! {"field": "tag", "in": ["a", "b"]}                    membership
//! {"field": "year", "range": {"gte": 2020, "lt": 2025}}  numeric range (gt, gte, lt, lte)
//! {"field": "date", "range": {"gte": "2020-01-01"}}      string range (code-point order)
//! {"field": "author", "exists": true}                   the field is present (and not null)
//! {"and": [F, …]}   {"or": [F, …]}   {"not": F}
//! ```
//!
//! `field` is a dotted path into the payload object (`"meta.year"`). A
//! document without a payload, or without the field, matches no condition
//! on it except `exists: false`.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq {
        field: String,
        value: Value,
    },
    In {
        field: String,
        values: Vec<Value>,
    },
    Range {
        field: String,
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
    /// A range of strings in code-point order (ISO-8601 dates written in one
    /// format and time zone compare as their times do).
    TextRange {
        field: String,
        gt: Option<String>,
        gte: Option<String>,
        lt: Option<String>,
        lte: Option<String>,
    },
    Exists {
        field: String,
        exists: bool,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

/// JSON text as a value; refused as a filter's.
fn json_text(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(format!("filter: {}", msg.into()))
}

/// Nesting limit of a filter, against stack exhaustion by hostile input.
const MAX_DEPTH: usize = 32;

/// Most JSON values (objects, arrays, strings, numbers… each counts one) in
/// a filter: a filter is evaluated against every candidate's payload, and a
/// 31-million-value `in` list once took a server from 310 MB to 4.1 GB.
pub const MAX_FILTER_VALUES: usize = 65_536;

/// How many JSON values `v` holds, counting stops past `most`.
pub fn count_values(v: &Value, most: usize) -> usize {
    let mut n = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        n += 1;
        if n > most {
            break;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    n
}

/// `v` for an error message, cut to a few hundred bytes.
fn brief(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Filter {
    /// Parses the JSON form.
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_json(&json_text(text)?)
    }

    /// The JSON form given as text, as JSON, refused as [`parse`](Self::parse)
    /// refuses it (for options that carry a filter as JSON).
    pub fn checked_json(text: &str) -> Result<Value> {
        let v = json_text(text)?;
        Self::from_json(&v)?;
        Ok(v)
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let n = count_values(v, MAX_FILTER_VALUES);
        if n > MAX_FILTER_VALUES {
            return Err(bad(format!(
                "more than {MAX_FILTER_VALUES} values; split the filter or use fewer `in` values"
            )));
        }
        Self::from_json_at(v, 0)
    }

    fn from_json_at(v: &Value, depth: usize) -> Result<Self> {
        if depth > MAX_DEPTH {
            return Err(bad(format!("nested deeper than {MAX_DEPTH}")));
        }
        let o = v.as_object().ok_or_else(|| bad(format!("expected an object, got {}", brief(v))))?;
        let list = |key: &str, x: &Value| -> Result<Vec<Filter>> {
            let a = x.as_array().ok_or_else(|| bad(format!("\"{key}\" takes an array of filters")))?;
            a.iter().map(|f| Self::from_json_at(f, depth + 1)).collect()
        };
        if let Some((key, x)) = single(o, &["and", "or", "not"]) {
            return Ok(match key {
                "and" => Filter::And(list(key, x)?),
                "or" => Filter::Or(list(key, x)?),
                _ => Filter::Not(Box::new(Self::from_json_at(x, depth + 1)?)),
            });
        }
        let field = o
            .get("field")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| bad(format!("expected \"and\", \"or\", \"not\" or a \"field\" condition in {}", brief(v))))?
            .to_string();
        let ops: Vec<(&String, &Value)> = o.iter().filter(|(k, _)| *k != "field").collect();
        let [(op, x)] = ops[..] else {
            return Err(bad(format!("a condition on {field:?} needs exactly one of eq, in, range, exists")));
        };
        let op = op.as_str();
        if !["eq", "in", "range", "exists"].contains(&op) {
            return Err(bad(format!("a condition on {field:?} needs exactly one of eq, in, range, exists")));
        }
        Ok(match op {
            "eq" => Filter::Eq { field, value: x.clone() },
            "in" => Filter::In { field, values: x.as_array().ok_or_else(|| bad("\"in\" takes an array"))?.clone() },
            "exists" => {
                Filter::Exists { field, exists: x.as_bool().ok_or_else(|| bad("\"exists\" takes true or false"))? }
            }
            _ => {
                let r = x.as_object().ok_or_else(|| bad("\"range\" takes an object of gt/gte/lt/lte"))?;
                if let Some(k) = r.keys().find(|k| !["gt", "gte", "lt", "lte"].contains(&k.as_str())) {
                    return Err(bad(format!("unknown range bound {k:?}")));
                }
                if r.is_empty() {
                    return Err(bad("\"range\" needs at least one of gt, gte, lt, lte"));
                }
                if r.values().all(Value::is_string) {
                    let bound = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
                    Filter::TextRange { field, gt: bound("gt"), gte: bound("gte"), lt: bound("lt"), lte: bound("lte") }
                } else {
                    let bound = |k: &str| -> Result<Option<f64>> {
                        r.get(k)
                            .map(|b| {
                                b.as_f64().ok_or_else(|| {
                                    bad(format!("range bound {k} must be a number (or every bound a string)"))
                                })
                            })
                            .transpose()
                    };
                    Filter::Range { field, gt: bound("gt")?, gte: bound("gte")?, lt: bound("lt")?, lte: bound("lte")? }
                }
            }
        })
    }

    /// Whether a document with this payload matches.
    pub fn matches(&self, payload: Option<&Value>) -> bool {
        let get = |field: &str| payload.and_then(|p| lookup(p, field)).filter(|v| !v.is_null());
        match self {
            Filter::Eq { field, value } => get(field).is_some_and(|v| json_eq(v, value)),
            Filter::In { field, values } => get(field).is_some_and(|v| values.iter().any(|x| json_eq(v, x))),
            Filter::Range { field, gt, gte, lt, lte } => get(field).and_then(Value::as_f64).is_some_and(|x| {
                gt.is_none_or(|b| x > b)
                    && gte.is_none_or(|b| x >= b)
                    && lt.is_none_or(|b| x < b)
                    && lte.is_none_or(|b| x <= b)
            }),
            Filter::TextRange { field, gt, gte, lt, lte } => get(field).and_then(Value::as_str).is_some_and(|x| {
                gt.as_deref().is_none_or(|b| x > b)
                    && gte.as_deref().is_none_or(|b| x >= b)
                    && lt.as_deref().is_none_or(|b| x < b)
                    && lte.as_deref().is_none_or(|b| x <= b)
            }),
            Filter::Exists { field, exists } => get(field).is_some() == *exists,
            Filter::And(fs) => fs.iter().all(|f| f.matches(payload)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(payload)),
            Filter::Not(f) => !f.matches(payload),
        }
    }

    /// Whether a document whose payload is stored as this JSON text matches.
    pub(crate) fn matches_text(&self, payload: Option<&str>) -> bool {
        let v = payload.and_then(|p| serde_json::from_str::<Value>(p).ok());
        self.matches(v.as_ref())
    }
}

/// The single key of `o` among `keys`, if exactly one of them is present
/// and it is the only other key besides "field".
fn single<'a>(o: &'a Map<String, Value>, keys: &[&'a str]) -> Option<(&'a str, &'a Value)> {
    let found: Vec<&str> = keys.iter().copied().filter(|k| o.contains_key(*k)).collect();
    match found.as_slice() {
        [k] if o.len() == 1 || (o.len() == 2 && o.contains_key("field")) => Some((k, &o[*k])),
        _ => None,
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.as_object()?.get(key))
}

/// JSON equality where numbers compare by value (1 == 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(f: &str, p: Value) -> bool {
        Filter::parse(f).unwrap().matches(Some(&p))
    }

    #[test]
    fn each_operator() {
        let p = json!({"lang": "en", "year": 2021, "tags": "x", "meta": {"score": 0.5}, "nothing": null});
        assert!(m(r#"{"field": "lang", "eq": "en"}"#, p.clone()));
        assert!(!m(r#"{"field": "lang", "eq": "de"}"#, p.clone()));
        assert!(m(r#"{"field": "year", "eq": 2021.0}"#, p.clone()));
        assert!(m(r#"{"field": "tags", "in": ["y", "x"]}"#, p.clone()));
        assert!(!m(r#"{"field": "tags", "in": []}"#, p.clone()));
        assert!(m(r#"{"field": "year", "range": {"gte": 2021, "lt": 2022}}"#, p.clone()));
        assert!(!m(r#"{"field": "year", "range": {"gt": 2021}}"#, p.clone()));
        assert!(!m(r#"{"field": "lang", "range": {"gt": 0}}"#, p.clone()), "a string is not in a numeric range");
        assert!(m(r#"{"field": "meta.score", "range": {"lte": 0.5}}"#, p.clone()));
        assert!(m(r#"{"field": "lang", "range": {"gt": "de", "lte": "en"}}"#, p.clone()));
        assert!(!m(r#"{"field": "lang", "range": {"gt": "en"}}"#, p.clone()));
        assert!(!m(r#"{"field": "year", "range": {"gt": "0"}}"#, p.clone()), "a number is not in a string range");
        assert!(m(r#"{"field": "meta.score", "exists": true}"#, p.clone()));
        assert!(m(r#"{"field": "nothing", "exists": false}"#, p.clone()), "null counts as absent");
        assert!(m(r#"{"field": "missing", "exists": false}"#, p.clone()));
        assert!(m(r#"{"and": [{"field": "lang", "eq": "en"}, {"not": {"field": "year", "eq": 2020}}]}"#, p.clone()));
        assert!(m(r#"{"or": [{"field": "lang", "eq": "de"}, {"field": "year", "eq": 2021}]}"#, p.clone()));
        assert!(!m(r#"{"or": []}"#, p.clone()));
        assert!(m(r#"{"and": []}"#, p));
        let f = Filter::parse(r#"{"field": "lang", "eq": "en"}"#).unwrap();
        assert!(!f.matches(None), "no payload matches no condition");
        assert!(Filter::parse(r#"{"not": {"field": "lang", "eq": "en"}}"#).unwrap().matches(None));
    }

    #[test]
    fn malformed_filters_are_rejected_with_a_reason() {
        for bad in [
            "nope",
            "[]",
            r#"{"field": "a"}"#,
            r#"{"field": "a", "eq": 1, "in": [1]}"#,
            r#"{"field": "a", "range": {}}"#,
            r#"{"field": "a", "range": {"gt": "x", "lt": 3}}"#,
            r#"{"field": "a", "range": {"gt": null}}"#,
            r#"{"field": "a", "range": {"between": 1}}"#,
            r#"{"field": "a", "in": 3}"#,
            r#"{"field": "a", "exists": "yes"}"#,
            r#"{"and": {"field": "a", "eq": 1}}"#,
            r#"{"and": [], "or": []}"#,
            r#"{"field": "", "eq": 1}"#,
        ] {
            assert!(matches!(Filter::parse(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
        let deep = "{\"not\": ".repeat(40) + r#"{"field": "a", "eq": 1}"# + &"}".repeat(40);
        assert!(Filter::parse(&deep).is_err());
    }
}
