//! The checked-in OpenAPI document (`docs/openapi.json`) is the one the code generates.
//! `ROMANA_BLESS=1 cargo test -p romana-services --test openapi` rewrites it.

use std::path::Path;

#[test]
fn openapi_document_is_current() {
    let generated = romana_services::openapi::openapi().to_pretty_json().expect("serializes") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("ROMANA_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: run ROMANA_BLESS=1 cargo test -p romana-services --test openapi"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    assert_eq!(
        doc["paths"].as_object().map(|p| p.len()),
        Some(
            romana_services::rest_routes::ROUTES
                .iter()
                .map(|r| r.path)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        )
    );
}
