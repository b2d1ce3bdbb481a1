//! Shared test helpers: loading the reference vectors.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// `$VECTORS_DIR`, else `shared/vectors` beside the repository.
pub fn vectors_dir() -> PathBuf {
    match std::env::var_os("VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    }
}

/// Read and parse one vector file (through the strict I-JSON reader).
pub fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (set VECTORS_DIR)", path.display()));
    openexec_core::json::parse_ijson(&bytes, 64)
        .unwrap_or_else(|e| panic!("{} is not I-JSON: {e}", path.display()))
}

pub fn cases<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
    v[field].as_array().expect("array of cases")
}

pub fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing"))
}
