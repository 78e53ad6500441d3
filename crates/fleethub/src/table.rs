//! Tables for people: what the CLI's `list` commands print when `--json` is not given.

use serde_json::Value;

/// A JSON value as one cell: strings bare, arrays joined with commas, null empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
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
