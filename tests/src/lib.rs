//! Acceptance tests live in this package's `tests`; the library is empty.
