//! Exceptions: the `tessera.errors` class of each engine error, and raising them.

use crate::*;

/// The `tessera.errors` class for an engine error.
pub(crate) fn error_class(e: &tessera::Error) -> &'static str {
    use tessera::ErrorKind as K;
    match e.kind() {
        K::InvalidInput | K::TooLarge => "InvalidInputError",
        K::NotFound => "NotFoundError",
        K::AlreadyExists => "AlreadyExistsError",
        K::Corruption => "CorruptionError",
        K::Io => "TesseraIOError",
        K::Unavailable => "UnavailableError",
        K::Timeout => "DeadlineExceededError",
    }
}

/// A `tessera.errors` exception of class `class` with `message`.
pub(crate) fn py_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py.import("tessera.errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1((message.clone(),)));
    match made {
        Ok(v) => PyErr::from_value(v),
        Err(e) => e,
    }
}

pub(crate) fn engine_error(py: Python<'_>, e: tessera::Error) -> PyErr {
    py_error(py, error_class(&e), e.to_string())
}

pub(crate) fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    py_error(py, "InvalidInputError", message.into())
}

pub(crate) trait OrPy<T> {
    fn or_py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrPy<T> for tessera::Result<T> {
    fn or_py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| engine_error(py, e))
    }
}
