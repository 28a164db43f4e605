//! The config's key list, derived from the config structs through their JSON Schema
//! (`schemars`): every key's path, type, default, description and environment variable.
//!
//! Deriving it (instead of writing it by hand) keeps `keel config default`,
//! `docs/configuration.md` and the environment overrides in step with the structs.

use serde_json::{Map, Value};

use super::Config;

/// The value type of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A string, possibly restricted to `choices`.
    String,
    /// A whole number.
    Integer,
    /// A number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list of scalars.
    List,
}

/// One settable key.
#[derive(Debug, Clone)]
pub struct Key {
    /// The path from the root, e.g. `["server", "listen"]`.
    pub path: Vec<String>,
    /// The doc comment of the field.
    pub description: String,
    /// The default; `None` for optional keys that are unset by default.
    pub default: Option<Value>,
    /// The value type.
    pub kind: Kind,
    /// Allowed values, for enumerations.
    pub choices: Vec<String>,
    /// A format hint: `duration`, `byte-size`, `secret`.
    pub format: Option<String>,
}

impl Key {
    /// The dotted path, e.g. `server.listen`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// The environment variable that overrides the key, e.g. `KEEL_SERVER_LISTEN`.
    pub fn env_name(&self) -> String {
        format!("KEEL_{}", self.path.join("_").to_ascii_uppercase())
    }

    /// Whether the key holds a secret.
    pub fn is_secret(&self) -> bool {
        self.format.as_deref() == Some("secret")
    }
}

/// A `[table]`: its keys, sub-tables and arrays of tables.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The path from the root; empty for the root.
    pub path: Vec<String>,
    /// The doc comment of the struct or field.
    pub description: String,
    /// Scalar and list keys, in declaration order.
    pub keys: Vec<Key>,
    /// Nested tables, in declaration order.
    pub tables: Vec<Table>,
    /// Arrays of tables (`[[auth.tokens]]`): their item tables.
    pub arrays: Vec<Table>,
    /// Absent unless configured (an `Option` of a table, e.g. `[gateway.default.cache]`).
    pub optional: bool,
}

impl Table {
    /// Every key in this table and below, depth first, arrays of tables excluded.
    pub fn all_keys(&self) -> Vec<&Key> {
        let mut out: Vec<&Key> = self.keys.iter().collect();
        for t in &self.tables {
            out.extend(t.all_keys());
        }
        out
    }

    /// Every table in this tree (this one first).
    pub fn all_tables(&self) -> Vec<&Table> {
        let mut out = vec![self];
        for t in &self.tables {
            out.extend(t.all_tables());
        }
        out
    }
}

/// The key tree of [`Config`].
pub fn config_tree() -> Table {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value().clone();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let walker = Walker { defs };
    walker.table(Vec::new(), &root, None)
}

struct Walker {
    defs: Map<String, Value>,
}

impl Walker {
    /// Follows `$ref` and strips a `null` alternative, returning the effective schema.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            if let Some(def) = self.defs.get(name) {
                return self.resolve(def);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            let non_null: Vec<&Value> = any
                .iter()
                .filter(|s| s.get("type") != Some(&Value::from("null")))
                .collect();
            if non_null.len() == 1 {
                return self.resolve(non_null[0]);
            }
        }
        schema
    }

    fn table(&self, path: Vec<String>, schema: &Value, description: Option<&str>) -> Table {
        let resolved = self.resolve(schema);
        let mut table = Table {
            description: description
                .or_else(|| resolved.get("description").and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned(),
            path: path.clone(),
            ..Table::default()
        };
        let Some(props) = resolved.get("properties").and_then(Value::as_object) else {
            return table;
        };
        for (name, prop) in props {
            let mut child = path.clone();
            child.push(name.clone());
            let doc = prop.get("description").and_then(Value::as_str);
            let target = self.resolve(prop);
            if target.get("properties").is_some() {
                let mut sub = self.table(child, prop, doc);
                sub.optional = is_nullable(prop);
                table.tables.push(sub);
                continue;
            }
            if type_names(target).contains(&"array")
                && let Some(items) = target.get("items")
                && self.resolve(items).get("properties").is_some()
            {
                let mut item = self.table(child, items, doc);
                item.description = doc.unwrap_or_default().to_owned();
                table.arrays.push(item);
                continue;
            }
            table.keys.push(self.key(child, prop, target, doc));
        }
        table
    }

    fn key(&self, path: Vec<String>, prop: &Value, target: &Value, doc: Option<&str>) -> Key {
        let types = type_names(target);
        let choices: Vec<String> = match (target.get("enum"), target.get("oneOf")) {
            (Some(Value::Array(values)), _) => values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            (_, Some(Value::Array(variants))) => variants
                .iter()
                .filter_map(|v| {
                    self.resolve(v)
                        .get("const")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect(),
            _ => Vec::new(),
        };
        let kind = if types.contains(&"boolean") {
            Kind::Boolean
        } else if types.contains(&"integer") {
            Kind::Integer
        } else if types.contains(&"number") {
            Kind::Number
        } else if types.contains(&"array") {
            Kind::List
        } else {
            Kind::String
        };
        let default = prop.get("default").filter(|d| !d.is_null()).cloned();
        Key {
            path,
            description: doc.unwrap_or_default().to_owned(),
            default,
            kind,
            choices,
            format: target
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// Whether a property's schema admits `null` (an `Option`).
fn is_nullable(schema: &Value) -> bool {
    type_names(schema).contains(&"null")
        || schema
            .get("anyOf")
            .and_then(Value::as_array)
            .is_some_and(|any| {
                any.iter()
                    .any(|s| s.get("type") == Some(&Value::from("null")))
            })
}

fn type_names(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_covers_sections_in_declaration_order() {
        let tree = config_tree();
        let sections: Vec<String> = tree.tables.iter().map(|t| t.path.join(".")).collect();
        assert_eq!(
            sections,
            [
                "server", "log", "auth", "health", "system", "cache", "queue", "redis", "gateway"
            ]
        );
        let keys: Vec<String> = tree.all_keys().iter().map(|k| k.dotted()).collect();
        for expected in [
            "server.listen",
            "auth.public_health",
            "auth.jwt.secret",
            "redis.url",
            "log.format",
        ] {
            assert!(
                keys.contains(&expected.to_owned()),
                "{expected} missing from {keys:?}"
            );
        }
        let auth = &tree.tables[2];
        assert_eq!(auth.arrays.len(), 1);
        assert_eq!(auth.arrays[0].path, ["auth", "tokens"]);
        let token_keys: Vec<&str> = auth.arrays[0]
            .keys
            .iter()
            .map(|k| k.path[2].as_str())
            .collect();
        assert_eq!(token_keys, ["name", "token", "role"]);
    }

    #[test]
    fn keys_carry_types_defaults_choices_and_env() {
        let tree = config_tree();
        let keys = tree.all_keys();
        let find = |p: &str| keys.iter().find(|k| k.dotted() == p).copied().unwrap();
        let listen = find("server.listen");
        assert_eq!(listen.env_name(), "KEEL_SERVER_LISTEN");
        assert_eq!(listen.default, Some(Value::from("127.0.0.1:7070")));
        assert_eq!(find("server.worker_threads").kind, Kind::Integer);
        assert_eq!(find("auth.public_metrics").kind, Kind::Boolean);
        assert_eq!(find("health.memory_warn_percent").kind, Kind::Number);
        assert_eq!(find("log.format").choices, ["text", "json"]);
        assert_eq!(
            find("auth.jwt.algorithm").choices,
            ["HS256", "RS256", "ES256"]
        );
        assert_eq!(
            find("auth.jwt.default_role").choices,
            ["viewer", "worker", "admin"]
        );
        assert!(find("auth.jwt.secret").is_secret());
        assert_eq!(find("auth.jwt.secret").default, None);
        assert_eq!(find("auth.jwt.secret").env_name(), "KEEL_AUTH_JWT_SECRET");
        assert!(!find("server.listen").description.is_empty());
    }
}
