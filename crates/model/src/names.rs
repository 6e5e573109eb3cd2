//! Validated names: tenants, segments, hosts, networks, groups and address names.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A name that broke its type's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {value:?}: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, allow_empty = $empty:literal, $charok:expr, $rule:literal) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the text is shared.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value: String = value.into();
                let ok_chars: fn(char) -> bool = $charok;
                if (value.is_empty() && !$empty) || value.len() > $max || !value.chars().all(ok_chars) {
                    return Err(NameError { kind: $kind, value, rule: $rule });
                }
                Ok(Self(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A tenant: an OpenStack project or a Kubernetes namespace. Empty means "no tenant".
    TenantName, "tenant", 253, allow_empty = true, is_label_char,
    "at most 253 characters from A-Z a-z 0-9 - _ ."
);
name_type!(
    /// A segment inside a tenant. Empty means the tenant's default segment.
    SegmentName, "segment", 253, allow_empty = true, is_label_char,
    "at most 253 characters from A-Z a-z 0-9 - _ ."
);
name_type!(
    /// A host (node, hypervisor) as Romana knows it.
    HostName, "host", 253, allow_empty = false, is_label_char,
    "1 to 253 characters from A-Z a-z 0-9 - _ ."
);
name_type!(
    /// An address pool with its own CIDR.
    NetworkName, "network", 63, allow_empty = false, is_label_char,
    "1 to 63 characters from A-Z a-z 0-9 - _ ."
);
name_type!(
    /// A prefix group of a topology; empty for unnamed groups.
    GroupName, "group", 253, allow_empty = true, |c: char| !c.is_control(),
    "at most 253 characters, no control characters"
);
name_type!(
    /// The caller's key for an allocated address (a CNI container id, a Neutron port id...).
    AddressName, "address", 512, allow_empty = false, |c: char| c.is_ascii_graphic(),
    "1 to 512 printable ASCII characters without spaces"
);

/// The empty name: no tenant, the default segment, an unnamed group.
macro_rules! empty_default {
    ($($name:ident),*) => {$(
        impl Default for $name {
            fn default() -> Self {
                Self(Arc::from(""))
            }
        }
    )*};
}
empty_default!(TenantName, SegmentName, GroupName);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(TenantName::new("").is_ok());
        assert!(TenantName::new("kube-system").is_ok());
        assert!(TenantName::new("a b").is_err());
        assert!(HostName::new("").is_err());
        assert!(HostName::new("node-1.example").is_ok());
        assert!(NetworkName::new("x".repeat(64)).is_err());
        assert!(AddressName::new("pod.ns.0123abcd").is_ok());
        assert!(AddressName::new("has space").is_err());
        let e = HostName::new("bad/name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid host name \"bad/name\": 1 to 253 characters from A-Z a-z 0-9 - _ ."
        );
    }
}
