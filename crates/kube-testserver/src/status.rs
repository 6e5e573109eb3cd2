//! API errors as Kubernetes `Status` objects (`kind: Status`, `status: Failure`, `reason`, `code`),
//! the one place where failures get their HTTP code and reason; knows nothing of HTTP framing.

use serde_json::{Value, json};

/// A failed API call: what the real server would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    /// The `StatusReason` (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, ...).
    pub reason: &'static str,
    pub message: String,
    /// `details`: (name, group, kind) of the object concerned, when there is one.
    pub details: Option<(String, String, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError { code, reason, message, details: None }
    }

    fn about(mut self, name: &str, group: &str, resource: &str) -> ApiError {
        self.details = Some((name.to_string(), group.to_string(), resource.to_string()));
        self
    }

    /// `pods "x" not found` (the real server names the plural resource, qualified by group).
    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(group, resource)))
            .about(name, group, resource)
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .about(name, group, resource)
    }

    /// An update whose `metadata.resourceVersion` (or a delete whose precondition) is stale.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(group, resource)),
        )
        .about(name, group, resource)
    }

    /// A compacted resourceVersion or continue token.
    pub fn expired(message: String) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// A field that fails validation (HTTP 422).
    pub fn invalid(kind: &str, name: &str, message: String) -> ApiError {
        ApiError::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {message}"))
    }

    pub fn unsupported_media(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got \"{content_type}\")"
            ),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method} {path})"),
        )
    }

    pub fn no_route() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource".to_string())
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized".to_string())
    }

    /// A list or watch at a resourceVersion newer than the server's.
    pub fn too_large_rv(asked: u64, current: u64) -> ApiError {
        ApiError::new(504, "Timeout", format!("Too large resource version: {asked}, current: {current}"))
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some((name, group, kind)) = &self.details {
            let mut d = json!({"name": name, "kind": kind});
            if !group.is_empty() {
                d["group"] = json!(group);
            }
            status["details"] = d;
        }
        status
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shapes() {
        let s = ApiError::not_found("networking.k8s.io", "networkpolicies", "np").to_status();
        assert_eq!(s["message"], "networkpolicies.networking.k8s.io \"np\" not found");
        assert_eq!(s["details"]["group"], "networking.k8s.io");
        assert_eq!(s["code"], 404);
        let s = ApiError::already_exists("", "pods", "p").to_status();
        assert_eq!((s["reason"].as_str(), s["details"].get("group")), (Some("AlreadyExists"), None));
    }
}
