//! Renders the key tree as a commented default `keel.toml` (`keel config default`) and as the
//! Markdown reference embedded in `docs/configuration.md` (`keel config reference`).

use std::fmt::Write;

use serde_json::Value;

use super::schema::{Key, Kind, Table, config_tree};

const HEADER: &str = "\
# keel configuration.
#
# Every key is shown with its default value; keys that are unset by default are commented out.
# Precedence, lowest first: defaults, this file, environment variables (the `env:` line of each
# key), command-line flags. Durations are written \"250ms\", \"30s\", \"5m\", \"1h\"; sizes
# \"512KiB\", \"256MiB\", \"1GiB\".
";

/// The fully commented default configuration file.
pub fn default_toml() -> String {
    let tree = config_tree();
    let mut out = String::from(HEADER);
    for table in &tree.tables {
        write_table(&mut out, table);
    }
    write_arrays(&mut out, &tree);
    out
}

/// Each array of tables of `table`, commented out (they have no default entries).
fn write_arrays(out: &mut String, table: &Table) {
    for array in &table.arrays {
        out.push('\n');
        comment_lines(out, &array.description);
        let _ = writeln!(out, "# [[{}]]", array.path.join("."));
        for (name, key) in item_keys(array) {
            write_key(out, key, &name, "# ", false);
        }
    }
}

/// The keys of an array item, named relative to the item (`rate_limit.max`).
fn item_keys(array: &Table) -> Vec<(String, &Key)> {
    array
        .all_keys()
        .into_iter()
        .map(|key| (key.path[array.path.len()..].join("."), key))
        .collect()
}

fn comment_lines(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {}", line.trim_end());
        }
    }
}

fn write_table(out: &mut String, table: &Table) {
    write_table_under(out, table, false);
}

/// Writes `table`; an optional table (and everything in it) is written commented out, since
/// it is absent unless configured.
fn write_table_under(out: &mut String, table: &Table, commented: bool) {
    let commented = commented || table.optional;
    let prefix = if commented { "# " } else { "" };
    out.push('\n');
    comment_lines(out, &table.description);
    let _ = writeln!(out, "{prefix}[{}]", table.path.join("."));
    for key in &table.keys {
        let name = key.path.last().cloned().unwrap_or_default();
        write_key(out, key, &name, prefix, true);
    }
    write_arrays(out, table);
    for sub in &table.tables {
        write_table_under(out, sub, commented);
    }
}

fn write_key(out: &mut String, key: &Key, name: &str, prefix: &str, with_env: bool) {
    comment_lines(out, &key.description);
    if !key.choices.is_empty() {
        let _ = writeln!(out, "# one of: {}", key.choices.join(", "));
    }
    if with_env {
        let _ = writeln!(out, "# env: {}", key.env_name());
    }
    match &key.default {
        Some(value) => {
            let _ = writeln!(out, "{prefix}{name} = {}", toml_literal(value));
        }
        None => {
            let _ = writeln!(out, "# {name} = {}", placeholder(key));
        }
    }
}

/// A JSON value written as a TOML literal.
pub fn toml_literal(value: &Value) -> String {
    match toml::Value::try_from(value) {
        Ok(v) => v.to_string(),
        Err(_) => value.to_string(),
    }
}

fn placeholder(key: &Key) -> String {
    if let Some(first) = key.choices.first() {
        return toml_literal(&Value::from(first.as_str()));
    }
    match (key.kind.clone(), key.format.as_deref()) {
        (Kind::Boolean, _) => "false".to_owned(),
        (Kind::Integer | Kind::Number, _) => "0".to_owned(),
        (Kind::List, _) => "[]".to_owned(),
        (Kind::String, Some("secret")) => "\"<secret>\"".to_owned(),
        (Kind::String, Some("duration")) => "\"30s\"".to_owned(),
        (Kind::String, _) => "\"...\"".to_owned(),
    }
}

/// The Markdown reference of every key, one table per section.
pub fn markdown_reference() -> String {
    let tree = config_tree();
    let mut out = String::new();
    for table in tree
        .tables
        .iter()
        .flat_map(Table::all_tables)
        .chain(std::iter::once(&tree))
    {
        if table.path.is_empty() {
            // The root: only its arrays of tables (`[[queues]]`).
            write_array_reference(&mut out, table);
            continue;
        }
        let _ = writeln!(out, "### `[{}]`\n", table.path.join("."));
        let _ = writeln!(out, "{}\n", one_line(&table.description));
        if !table.keys.is_empty() {
            out.push_str(
                "| Key | Type | Default | Environment | Description |\n|---|---|---|---|---|\n",
            );
            for key in &table.keys {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | `{}` | {} |",
                    key.path.last().map(String::as_str).unwrap_or_default(),
                    type_text(key),
                    key.default
                        .as_ref()
                        .map_or_else(|| "unset".to_owned(), |v| format!("`{}`", toml_literal(v))),
                    key.env_name(),
                    one_line(&key.description).replace('|', "\\|"),
                );
            }
            out.push('\n');
        }
        write_array_reference(&mut out, table);
    }
    out
}

fn write_array_reference(out: &mut String, table: &Table) {
    for array in &table.arrays {
        let heading = if table.path.is_empty() { "###" } else { "####" };
        let _ = writeln!(out, "{heading} `[[{}]]`\n", array.path.join("."));
        let _ = writeln!(
            out,
            "{} Not settable from the environment.\n",
            one_line(&array.description)
        );
        out.push_str("| Key | Type | Description |\n|---|---|---|\n");
        for (name, key) in item_keys(array) {
            let _ = writeln!(
                out,
                "| `{name}` | {} | {} |",
                type_text(key),
                one_line(&key.description).replace('|', "\\|"),
            );
        }
        out.push('\n');
    }
}

fn type_text(key: &Key) -> String {
    if !key.choices.is_empty() {
        return key
            .choices
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    match (&key.kind, key.format.as_deref()) {
        (Kind::String, Some("duration")) => "duration".to_owned(),
        (Kind::String, Some("byte-size")) => "size".to_owned(),
        (Kind::String, Some("secret")) => "secret".to_owned(),
        (Kind::String, _) => "string".to_owned(),
        (Kind::Integer, _) => "integer".to_owned(),
        (Kind::Number, _) => "number".to_owned(),
        (Kind::Boolean, _) => "boolean".to_owned(),
        (Kind::List, _) => "list".to_owned(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_file_parses_back_to_the_defaults() {
        let text = default_toml();
        let parsed: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
        assert!(text.contains("[server]\n"));
        assert!(text.contains("# env: KEEL_SERVER_LISTEN\nlisten = \"127.0.0.1:7070\""));
        assert!(text.contains("# [[auth.tokens]]"));
        assert!(text.contains("[auth.jwt]"));
        assert!(text.contains("# secret = \"<secret>\""));
    }

    #[test]
    fn every_key_appears_in_the_default_file_and_reference() {
        let text = default_toml();
        let reference = markdown_reference();
        for key in config_tree().all_keys() {
            assert!(
                text.contains(&format!("# env: {}\n", key.env_name())),
                "{} not in default file",
                key.dotted()
            );
            assert!(
                reference.contains(&format!("`{}`", key.env_name())),
                "{} not in reference",
                key.dotted()
            );
        }
    }
}
