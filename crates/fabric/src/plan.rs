//! The agent's BIRD decision, pure: given the file it just rendered, what the file holds now and
//! what BIRD last accepted, whether to write, reconfigure, or do nothing.

/// What the adapter does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BirdStep {
    /// BIRD already runs this configuration.
    Nothing,
    /// The file is right but BIRD has not taken it (a failed or never-run `birdc configure`).
    Configure,
    /// Write the file (atomically: a temporary file renamed over it), then `birdc configure`.
    WriteAndConfigure,
}

/// `rendered`: the include file as it should be; `on_disk`: the file now (`None` when absent or
/// unreadable); `configured`: the text BIRD last accepted from this agent (`None` after a start).
pub fn decide(rendered: &str, on_disk: Option<&str>, configured: Option<&str>) -> BirdStep {
    if on_disk != Some(rendered) {
        BirdStep::WriteAndConfigure
    } else if configured != Some(rendered) {
        BirdStep::Configure
    } else {
        BirdStep::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let check = |on_disk, configured, want| assert_eq!(decide("new", on_disk, configured), want);
        check(None, None, BirdStep::WriteAndConfigure);
        check(Some("old"), Some("old"), BirdStep::WriteAndConfigure);
        check(Some("new"), None, BirdStep::Configure);
        check(Some("new"), Some("old"), BirdStep::Configure);
        check(Some("new"), Some("new"), BirdStep::Nothing);
        // Someone rewrote the file behind the agent's back: put it back.
        check(Some("tampered"), Some("new"), BirdStep::WriteAndConfigure);
    }
}
