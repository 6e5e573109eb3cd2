//! Printing results: a table by default, or the API's own JSON or YAML.

use anyhow::Result;
use serde::Serialize;

use crate::Format;
use crate::text_table::Table;

/// Prints `value` as JSON/YAML, or as the table `rows` builds.
pub fn show<T: Serialize>(
    format: Format,
    value: &T,
    header: &[&str],
    rows: impl FnOnce(&T) -> Vec<Vec<String>>,
) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Format::Table => {
            let mut t = Table::new(header);
            for r in rows(value) {
                t.row(r);
            }
            print!("{}", t.render(usize::MAX));
        }
    }
    Ok(())
}

pub fn kv(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
