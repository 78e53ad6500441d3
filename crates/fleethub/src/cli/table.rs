//! Tables for people: what the CLI's `list` commands print when `--json` is not given.

use serde_json::Value;

/// A JSON value as one cell: strings bare, arrays of scalars joined with commas, null empty,
/// anything else compact JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            items.iter().map(text).collect::<Vec<_>>().join(",")
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One line per item under a header of `names`, each column as wide as its widest cell;
/// `cell(item, name)` makes a cell.
pub fn columns(names: &[&str], items: &[Value], cell: impl Fn(&Value, &str) -> String) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| names.iter().map(|c| cell(a, c)).collect())
        .collect();
    let widths: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(names.iter().map(|c| c.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One `name value` line per field, names padded to `width`; fields the value lacks are left
/// out (so a table of details never shows an empty line for an absent field).
pub fn fields(v: &Value, names: &[(&str, &str)], width: usize) -> String {
    let mut out = String::new();
    for (label, pointer) in names {
        let Some(cell) = v.pointer(pointer).filter(|c| !c.is_null()) else {
            continue;
        };
        out.push_str(&format!("{label:<width$}{}\n", text(cell)));
    }
    out
}

/// A table of documents whose columns are their top-level keys, in first-seen order (a query's
/// projection or aggregate); objects are shown as compact JSON.
pub fn documents(items: &[Value]) -> String {
    let mut names: Vec<String> = Vec::new();
    for item in items {
        for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }
    if names.is_empty() {
        return format!("{} items\n", items.len());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    columns(&refs, items, |item, name| text(&item[name]))
}
