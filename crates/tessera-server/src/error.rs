//! The one error type of the service layer, and how each adapter reports it:
//! an HTTP status with a JSON body, or a gRPC status code.

use axum::http::StatusCode;
use serde::Serialize;

/// What kind of failure: decides the HTTP status and the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed or invalid input (400 / INVALID_ARGUMENT).
    BadRequest,
    /// No or unknown API key (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// A read-only key asked for a write (403 / PERMISSION_DENIED).
    PermissionDenied,
    /// Unknown collection or route (404 / NOT_FOUND).
    NotFound,
    /// The method is not served on this route (405 / UNIMPLEMENTED).
    MethodNotAllowed,
    /// The collection already exists, or exists with another configuration (409 / ALREADY_EXISTS).
    Conflict,
    /// A configured size limit was exceeded (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// A parameter is outside its configured range (400 / OUT_OF_RANGE).
    OutOfRange,
    /// The server is shutting down and takes no more writes, or the collection
    /// refuses writes after a failed write (503 / UNAVAILABLE).
    Unavailable,
    /// The request body did not arrive within `body_timeout_ms` (408; gRPC
    /// DEADLINE_EXCEEDED).
    RequestTimeout,
    /// A search ran past its `timeout_ms` and was stopped (504 / DEADLINE_EXCEEDED).
    DeadlineExceeded,
    /// One client address holds `max_connections_per_address` connections
    /// already (429, the connection is closed; HTTP only).
    TooManyConnections,
    /// A fault of the server or its storage (500 / INTERNAL). Never caused by input.
    Internal,
}

/// An error with a message for the client, and the name of the limit when a
/// limit was exceeded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The configuration name of the limit that was exceeded, e.g. `max_k`.
    pub limit: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), limit: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A size limit: `what` is `value`, over `name = max`.
    pub fn too_large(name: &'static str, what: &str, value: usize, max: usize) -> Self {
        Self {
            kind: ErrorKind::TooLarge,
            message: format!("{what} is {value}, over the limit {name} = {max}"),
            limit: Some(name),
        }
    }

    /// A parameter range limit.
    pub fn out_of_range(name: &'static str, what: &str, value: usize, max: usize) -> Self {
        Self {
            kind: ErrorKind::OutOfRange,
            message: format!("{what} is {value}, over the limit {name} = {max}"),
            limit: Some(name),
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest | ErrorKind::OutOfRange => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            ErrorKind::BadRequest => tonic::Code::InvalidArgument,
            ErrorKind::OutOfRange => tonic::Code::OutOfRange,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::MethodNotAllowed => tonic::Code::Unimplemented,
            ErrorKind::Conflict => tonic::Code::AlreadyExists,
            ErrorKind::TooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::RequestTimeout | ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorKind::TooManyConnections => tonic::Code::ResourceExhausted,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

/// Messages may quote client input (an id, a filter): they are cut to this
/// many bytes so that an error cannot be larger than a header or trailer allows.
const MAX_MESSAGE: usize = 1024;

impl ApiError {
    /// The message, cut to [`MAX_MESSAGE`] bytes.
    pub fn short_message(&self) -> std::borrow::Cow<'_, str> {
        if self.message.len() <= MAX_MESSAGE {
            return self.message.as_str().into();
        }
        let mut end = MAX_MESSAGE;
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes in all)", &self.message[..end], self.message.len()).into()
    }

    /// Server faults are logged with their message (client errors are not).
    pub fn log_if_internal(&self, route: &str) {
        if self.kind == ErrorKind::Internal {
            tracing::error!(route, error = %self.short_message(), "internal error");
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let code = e.grpc_code();
        let message = match e.limit {
            Some(limit) => format!("{} [limit {limit}]", e.short_message()),
            None => e.short_message().into_owned(),
        };
        tonic::Status::new(code, message)
    }
}

impl From<tessera::Error> for ApiError {
    fn from(e: tessera::Error) -> Self {
        use tessera::ErrorKind as K;
        let kind = match e.kind() {
            K::InvalidInput => ErrorKind::BadRequest,
            K::TooLarge => ErrorKind::TooLarge,
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::Conflict,
            K::Unavailable => ErrorKind::Unavailable,
            K::Timeout => ErrorKind::DeadlineExceeded,
            K::Corruption | K::Io => ErrorKind::Internal,
        };
        let limit = (e.kind() == K::TooLarge).then_some("max_batch_bytes");
        ApiError { kind, message: e.to_string(), limit }
    }
}

impl From<tessera::UnknownName> for ApiError {
    fn from(e: tessera::UnknownName) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// The JSON body of an HTTP error: `{"error": {"code", "message", "limit"?}}`.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub code: ErrorKind,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
}
