//! Certificates' expiry for `romana doctor`, pure: PEM text in, each certificate's subject and
//! end of validity out (a small DER reader of the few X.509 fields needed, so no parser crate
//! joins the build), then the judgement against a time given as an argument: expired is an
//! error, under 30 days a warning, each naming the file, the subject and the date. No I/O.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Under this many seconds of validity left, a certificate is reported (as a warning).
pub const WARN_SECS: i64 = 30 * 86_400;

/// What the doctor needs of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The subject's common name (`None`: the certificate has none).
    pub subject: Option<String>,
    /// The end of validity, seconds since the Unix epoch (UTC).
    pub not_after: i64,
}

/// One place certificates were read from: the file (or "the CA in FILE") and what it held.
#[derive(Debug, Clone)]
pub struct CertSource {
    pub name: String,
    /// Each certificate in the file, in order (`Err`: why it could not be read).
    pub certs: Result<Vec<Result<Validity, String>>, String>,
}

/// The certificates of a PEM text (at least one, else an error).
pub fn read_pem(text: &str) -> Result<Vec<Result<Validity, String>>, String> {
    let certs: Vec<Result<Validity, String>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map_err(|e| format!("bad PEM: {e}")).and_then(|der| validity(&der)))
        .collect();
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// One DER element: its tag, its content, and what follows it.
fn element(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = b.split_first().ok_or("truncated DER")?;
    let (&first, rest) = rest.split_first().ok_or("truncated DER length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(format!("unsupported DER length form 0x{first:02x}"));
        }
        (rest[..n].iter().fold(0usize, |l, &x| l << 8 | usize::from(x)), &rest[n..])
    };
    if rest.len() < len {
        return Err(format!("DER element of {len} bytes with {} left", rest.len()));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(b: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (t, content, rest) = element(b)?;
    if t != tag {
        return Err(format!("{what}: tag 0x{t:02x}, expected 0x{tag:02x}"));
    }
    Ok((content, rest))
}

/// The subject's common name and the end of validity of one DER certificate.
pub fn validity(der: &[u8]) -> Result<Validity, String> {
    const SEQ: u8 = 0x30;
    let (cert, _) = expect(der, SEQ, "certificate")?;
    let (tbs, _) = expect(cert, SEQ, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2; // [0] version
    }
    rest = expect(rest, 0x02, "serialNumber")?.1;
    rest = expect(rest, SEQ, "signature")?.1;
    rest = expect(rest, SEQ, "issuer")?.1;
    let (validity, rest) = expect(rest, SEQ, "validity")?;
    let (subject, _) = expect(rest, SEQ, "subject")?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, text, _) = element(after)?;
    let text = std::str::from_utf8(text).map_err(|_| "notAfter is not text")?;
    let not_after = match tag {
        0x17 => der_time(text, false)?,
        0x18 => der_time(text, true)?,
        t => return Err(format!("notAfter: tag 0x{t:02x} is no time")),
    };
    Ok(Validity { subject: common_name(subject), not_after })
}

/// The first common name (2.5.4.3) of a Name: SEQUENCE of SET of SEQUENCE { OID, value }.
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    while !name.is_empty() {
        let (_, set, rest) = element(name).ok()?;
        name = rest;
        let (_, atv, _) = element(set).ok()?;
        let (_, oid, value) = element(atv).ok()?;
        if oid == CN {
            let (_, v, _) = element(value).ok()?;
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950 to 2049, RFC 5280) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`, as seconds since the epoch.
fn der_time(text: &str, generalized: bool) -> Result<i64, String> {
    let bad = || format!("unsupported time {text:?}");
    let digits = text.strip_suffix('Z').ok_or_else(bad)?;
    let want = if generalized { 14 } else { 12 };
    if digits.len() != want || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits[r].parse::<i64>().map_err(|_| bad());
    let (year, off) = if generalized {
        (num(0..4)?, 4)
    } else {
        let yy = num(0..2)?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    };
    let field = |i: usize| num(off + 2 * i..off + 2 * i + 2);
    let (month, day, h, m, s) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since the epoch (the inverse of `days_from_civil`).
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// What is wrong with one source's certificates at `now` (seconds since the epoch):
/// `(kind, what, fix, warning)`.
pub fn judge(src: &CertSource, now: i64) -> Vec<(&'static str, String, String, bool)> {
    let renew = format!(
        "renew it and replace {} (romanad --tls-issue DIR --tls-name NAME,... issues from the kept CA; \
         see docs/systemd.md), then restart what reads it",
        src.name
    );
    let certs = match &src.certs {
        Ok(c) => c,
        Err(e) => {
            return vec![(
                "cert-unreadable",
                format!("cannot read certificates from {}: {e}", src.name),
                "point --cert at a PEM certificate file".into(),
                false,
            )];
        }
    };
    let many = certs.len() > 1;
    let mut out = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let which = match (many, c.as_ref().ok().and_then(|v| v.subject.as_deref())) {
            (false, Some(s)) => format!("certificate {s:?} in {}", src.name),
            (true, Some(s)) => format!("certificate {} ({s:?}) in {}", i + 1, src.name),
            (false, None) => format!("the certificate in {}", src.name),
            (true, None) => format!("certificate {} in {}", i + 1, src.name),
        };
        match c {
            Err(e) => out.push((
                "cert-unreadable",
                format!("{which} does not parse: {e}"),
                "replace it with a valid PEM certificate".into(),
                false,
            )),
            Ok(v) if v.not_after <= now => out.push((
                "cert-expired",
                format!("{which} expired on {}", utc(v.not_after)),
                renew.clone(),
                false,
            )),
            Ok(v) if v.not_after - now < WARN_SECS => out.push((
                "cert-expiring",
                format!("{which} expires on {} (in {} days)", utc(v.not_after), (v.not_after - now) / 86_400),
                renew.clone(),
                true,
            )),
            Ok(_) => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A certificate named `cn`, valid until `not_after` (seconds since the epoch), as PEM.
    fn pem(cn: &str, not_after: i64) -> String {
        let mut p = rcgen::CertificateParams::new(vec!["example.test".into()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_after - 365 * 86_400).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    const NOW: i64 = 1_780_000_000; // 2026-05-28 20:26:40 UTC

    fn check(files: &[(&str, String)], expect: &[&str]) {
        let got: Vec<String> = files
            .iter()
            .flat_map(|(name, text)| judge(&CertSource { name: (*name).into(), certs: read_pem(text) }, NOW))
            .map(|(kind, what, _, warn)| format!("{kind}{}: {what}", if warn { " (warning)" } else { "" }))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn expiry_is_judged_against_the_given_time() {
        let day = 86_400;
        check(&[("ca.pem", pem("romana CA", NOW + 400 * day))], &[]);
        check(
            &[("ca.pem", pem("romana CA", NOW - day))],
            &[r#"cert-expired: certificate "romana CA" in ca.pem expired on 2026-05-27 20:26:40 UTC"#],
        );
        check(
            &[("server.pem", pem("romanad", NOW + 10 * day + 5))],
            &[
                r#"cert-expiring (warning): certificate "romanad" in server.pem expires on 2026-06-07 20:26:45 UTC (in 10 days)"#,
            ],
        );
        check(&[("s.pem", pem("romanad", NOW + 30 * day))], &[]);
        check(
            &[("s.pem", pem("romanad", NOW))],
            &[r#"cert-expired: certificate "romanad" in s.pem expired on 2026-05-28 20:26:40 UTC"#],
        );
        let chain = format!("{}{}", pem("leaf", NOW + 400 * day), pem("mid", NOW - 3 * day));
        check(
            &[("chain.pem", chain)],
            &[r#"cert-expired: certificate 2 ("mid") in chain.pem expired on 2026-05-25 20:26:40 UTC"#],
        );
        check(
            &[("empty.pem", "hello".into())],
            &["cert-unreadable: cannot read certificates from empty.pem: no certificate in it"],
        );
        let broken = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        check(
            &[("b.pem", broken.into())],
            &[
                "cert-unreadable: the certificate in b.pem does not parse: tbsCertificate: tag 0x02, expected 0x30",
            ],
        );
    }

    #[test]
    fn times_read_and_print_both_ways() {
        for (text, generalized, want) in [
            ("491231235959Z", false, "2049-12-31 23:59:59 UTC"),
            ("500101000000Z", false, "1950-01-01 00:00:00 UTC"),
            ("20240229120000Z", true, "2024-02-29 12:00:00 UTC"),
            ("99991231235959Z", true, "9999-12-31 23:59:59 UTC"),
            ("19700101000000Z", true, "1970-01-01 00:00:00 UTC"),
        ] {
            assert_eq!(utc(der_time(text, generalized).unwrap()), want, "{text}");
        }
        assert_eq!(der_time("19700101000000Z", true), Ok(0));
        for bad in ["2026", "20261301000000Z", "2026010100000Z", "2026010100000aZ"] {
            assert!(der_time(bad, true).is_err(), "{bad}");
        }
    }
}
