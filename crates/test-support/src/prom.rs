//! Prometheus text exposition for tests: a strict parser (0.0.4 text and OpenMetrics), and the
//! documented families of one process read from docs/metrics.md, so that the scrape tests compare
//! code and documentation instead of a copy of either.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: families by their documented name (counters with `_total`), with their type,
/// and every sample.
#[derive(Debug, Default)]
pub struct Scrape {
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// The documented name of a family declared by `# TYPE base kind`: OpenMetrics declares a
/// counter without the `_total` its samples carry; the 0.0.4 format declares it with.
fn documented(base: &str, kind: &str) -> String {
    if kind == "counter" && !base.ends_with("_total") { format!("{base}_total") } else { base.to_owned() }
}

fn parse_labels(text: &str, line: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) =
            rest.split_once("=\"").ok_or_else(|| format!("label without =\"...\": {line}"))?;
        let name = name.trim_start_matches(',');
        if !valid_name(name) {
            return Err(format!("bad label name {name:?}: {line}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err(format!("bad escape in label {name}: {line}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label {name}: {line}")),
            }
        };
        if out.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice: {line}"));
        }
        rest = &after[end + 1..];
    }
    Ok(out)
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// Parses a scrape; the error names the offending line. Checks: every sample belongs to a family
/// declared by `# TYPE` before it, a family is declared once, `# EOF` (if any) is the last line,
/// histograms' buckets are cumulative and end with `+Inf` equal to `_count`.
pub fn parse(text: &str) -> Result<Scrape, String> {
    let mut s = Scrape::default();
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut eof = false;
    for line in text.lines() {
        if eof {
            return Err(format!("text after # EOF: {line}"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| format!("TYPE without a type: {line}"))?;
            if !valid_name(name)
                || !["counter", "gauge", "histogram", "summary", "untyped", "unknown"].contains(&kind)
            {
                return Err(format!("bad TYPE line: {line}"));
            }
            if declared.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("family {name} declared twice"));
            }
            s.families.insert(documented(name, kind), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = match line.find('{') {
            Some(i) => {
                let close = line.rfind('}').ok_or_else(|| format!("unclosed labels: {line}"))?;
                let labels = parse_labels(&line[i + 1..close], line)?;
                (Sample { name: line[..i].to_owned(), labels, value: 0.0 }, line[close + 1..].trim())
            }
            None => {
                let (n, v) = line.split_once(' ').ok_or_else(|| format!("sample without a value: {line}"))?;
                (Sample { name: n.to_owned(), labels: BTreeMap::new(), value: 0.0 }, v.trim())
            }
        };
        let v = value.split(' ').next().unwrap_or("");
        let value = parse_value(v).ok_or_else(|| format!("bad value {v:?}: {line}"))?;
        if !valid_name(&series.name) {
            return Err(format!("bad metric name: {line}"));
        }
        let declared_family = ["", "_total", "_bucket", "_sum", "_count", "_created"].iter().any(|suffix| {
            let Some(kind) = series.name.strip_suffix(suffix).and_then(|base| declared.get(base)) else {
                return false;
            };
            match *suffix {
                "" => kind != "histogram",
                "_total" | "_created" => kind == "counter",
                _ => kind == "histogram" || kind == "summary",
            }
        });
        if !declared_family {
            return Err(format!("sample of no declared family: {line}"));
        }
        s.samples.push(Sample { value, ..series });
    }
    check_histograms(&s, &declared)?;
    Ok(s)
}

/// One histogram series: its buckets (upper bound, cumulative count) and its `_count`.
type Series = (Vec<(f64, f64)>, Option<f64>);

fn check_histograms(s: &Scrape, declared: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, _) in declared.iter().filter(|(_, k)| *k == "histogram") {
        // Series of one histogram: the labels other than `le`.
        let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
        for x in &s.samples {
            let key: Vec<(String, String)> =
                x.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone())).collect();
            if x.name == format!("{name}_bucket") {
                let le = x
                    .labels
                    .get("le")
                    .and_then(|l| parse_value(l))
                    .ok_or(format!("{name}: bucket without le"))?;
                series.entry(key).or_default().0.push((le, x.value));
            } else if x.name == format!("{name}_count") {
                series.entry(key).or_default().1 = Some(x.value);
            }
        }
        for (key, (buckets, count)) in series {
            let ordered = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            if !ordered || inf.is_none() || inf != count {
                return Err(format!(
                    "{name}{key:?}: buckets {buckets:?} not cumulative up to +Inf = count {count:?}"
                ));
            }
        }
    }
    Ok(())
}

impl Scrape {
    /// A family's movement measure: the sum of its samples (counters, gauges), or of its
    /// `_count` (histograms: how many observations). `None` when the family is not declared.
    pub fn value(&self, family: &str) -> Option<f64> {
        let kind = self.families.get(family)?;
        let sample = if kind == "histogram" { format!("{family}_count") } else { family.to_owned() };
        Some(self.samples.iter().filter(|x| x.name == sample).map(|x| x.value).sum())
    }
}

/// The families (name, type) documented in the `## {section}` table of docs/metrics.md.
pub fn documented_families(doc: &str, section: &str) -> Vec<(String, String)> {
    let heading = format!("## {section}");
    let mut inside = false;
    let mut out = Vec::new();
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == heading;
            continue;
        }
        if !inside {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, kind, ..] = cells.as_slice()
            && let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`'))
        {
            out.push((name.to_owned(), (*kind).to_owned()));
        }
    }
    out
}

/// docs/metrics.md of this checkout.
pub fn metrics_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// What differs between a scrape's families and the documented ones (both directions, with
/// types); empty when they agree.
pub fn compare(scrape: &Scrape, documented: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, kind) in documented {
        match scrape.families.get(name) {
            None => problems.push(format!("{name} is documented but not served")),
            Some(k) if k != kind => {
                problems.push(format!("{name} is documented as {kind} but served as {k}"))
            }
            Some(_) => {}
        }
    }
    for name in scrape.families.keys() {
        if !documented.iter().any(|(n, _)| n == name) {
            problems.push(format!("{name} is served but not documented in docs/metrics.md"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`; `Ok(families)` or the error's fragment.
    fn check(text: &str, expect: Result<&[(&str, &str)], &str>) {
        match (parse(text), expect) {
            (Ok(s), Ok(fams)) => {
                let want: BTreeMap<String, String> =
                    fams.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
                assert_eq!(s.families, want, "{text}");
            }
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
            (got, _) => panic!("{text}: {got:?}"),
        }
    }

    #[test]
    fn parses_and_refuses() {
        check("# TYPE a counter\na_total 1\n# EOF\n", Ok(&[("a_total", "counter")]));
        check("# TYPE a_total counter\na_total 1\n", Ok(&[("a_total", "counter")]));
        check("# TYPE g gauge\ng{x=\"a\\\"b\",y=\"\"} -2.5\n", Ok(&[("g", "gauge")]));
        check(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
            Ok(&[("h", "histogram")]),
        );
        check("g 1\n", Err("no declared family"));
        check("# TYPE g gauge\ng_total 1\n", Err("no declared family"));
        check("# TYPE g gauge\ng one\n", Err("bad value"));
        check("# TYPE g gauge\ng{x=\"a} 1\n", Err("unterminated"));
        check("# TYPE g gauge\n# TYPE g gauge\n", Err("twice"));
        check("# TYPE g gauge\n# EOF\ng 1\n", Err("after # EOF"));
        check(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
            Err("cumulative"),
        );
        check("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n", Err("cumulative"));
    }

    #[test]
    fn documented_tables_and_their_comparison() {
        let doc = "## a\n| family | type |\n| --- | --- |\n| `x_total` | counter | | m |\n| `h` | histogram | | m |\n## b\n| `y` | gauge |\n";
        let a = documented_families(doc, "a");
        assert_eq!(a, vec![("x_total".into(), "counter".into()), ("h".into(), "histogram".into())]);
        let s = parse("# TYPE x counter\nx_total 1\n# TYPE z gauge\nz 1\n").unwrap_or_default();
        assert_eq!(
            compare(&s, &a),
            vec!["h is documented but not served", "z is served but not documented in docs/metrics.md"]
        );
        assert_eq!(s.value("x_total"), Some(1.0));
    }
}
