//! `ApiError`: every failure as one JSON body with the right status, and the one place where
//! IPAM and store errors become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use romana_api::rest::ErrorBody;
use romana_ipam::IpamError;
use romana_store::StoreError;

use crate::service_error::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub details: Vec<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), details: Vec::new() }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, m)
    }
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, m)
    }
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    /// 422 with every problem listed.
    pub fn invalid(m: impl Into<String>, details: Vec<String>) -> ApiError {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, message: m.into(), details }
    }

    fn code(&self) -> &'static str {
        code_of(self.status)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status_code: self.status.as_u16(),
            error: self.code().into(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }
}

/// The stable `error` code of a status (docs/api.md lists them); "internal" only for 5xx
/// without a code of their own, never for a client's mistake.
pub fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::GONE => "gone",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Compacted { .. } => ApiError::new(StatusCode::GONE, e.to_string()),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

/// A component's failure as an HTTP status.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::NotFound(m) => ApiError::not_found(m),
            ServiceError::Conflict(m) => ApiError::conflict(m),
            ServiceError::Unavailable(m) => ApiError::unavailable(m),
            ServiceError::Invalid { message, details } => ApiError::invalid(message, details),
            ServiceError::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            ServiceError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            ServiceError::Internal(m) => ApiError::internal(m),
            ServiceError::Store(e) => e.into(),
            ServiceError::Ipam(e) => e.into(),
        }
    }
}

/// Domain failures of the IPAM as HTTP statuses.
impl From<IpamError> for ApiError {
    fn from(e: IpamError) -> ApiError {
        use IpamError as E;
        let message = e.to_string();
        match e {
            E::InvalidTopology(problems) => {
                ApiError::invalid("invalid topology", problems.iter().map(ToString::to_string).collect())
            }
            E::MergeConflicts(c) => ApiError {
                status: StatusCode::CONFLICT,
                message: "topology change would lose data".into(),
                details: c,
            },
            E::UnknownHost(_) | E::NotFound(_) | E::UnknownNetwork(_) | E::NotBlackedOut { .. } => {
                ApiError::not_found(message)
            }
            E::HostExists { .. }
            | E::HostIpInUse { .. }
            | E::NameExists { .. }
            | E::AddressInUse { .. }
            | E::AddressInForeignBlock { .. } => ApiError::conflict(message),
            E::Exhausted { .. } | E::ClassicNumbersExhausted { .. } => ApiError::conflict(message),
            E::BlackoutHasAllocations { .. } => ApiError::conflict(message),
            E::HostFitsNoGroup { .. }
            | E::TagsBreakPlacement { .. }
            | E::NoNetworkForTenant { .. }
            | E::HostNotInTenantNetworks { .. }
            | E::AddressInNoNetwork { .. }
            | E::NetworkNotForTenant { .. }
            | E::AddressOutsideHost { .. }
            | E::AddressBlackedOut { .. }
            | E::NotAnEndpointAddress { .. }
            | E::ClassicNumberUnavailable { .. }
            | E::BlackoutOutsideNetworks { .. }
            | E::BlackoutCoversNetwork { .. }
            | E::StackNameTooLong { .. }
            | E::SecondIpv6 { .. }
            | E::NoFamily { .. }
            | E::WrongFamily { .. } => ApiError::invalid(message, vec![]),
        }
    }
}
