//! What a call to etcd fails with, said the way an operator reads it in `/status`:
//! each cause once, tonic's wrappers left out.

/// What a call to etcd can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("{}", chain(.0))]
    Transport(#[from] tonic::transport::Error),
    /// etcd's answer, or the channel's when etcd cannot be reached (boxed: a `Status`
    /// is large).
    #[error("{:?}: {}", .0.code(), chain(.0.as_ref()))]
    Status(Box<tonic::Status>),
    /// A stream that ended early, an answer that makes no sense.
    #[error("{0}")]
    Protocol(&'static str),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        Error::Status(Box::new(status))
    }
}

/// An error and its sources, each said once, tonic's wrappers left out: "tcp connect
/// error: Connection refused (os error 111)".
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let said = if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            status.message().to_owned()
        } else if cause.is::<tonic::transport::Error>() && cause.source().is_some() {
            String::new() // "transport error": its source says what
        } else {
            cause.to_string()
        };
        if !said.is_empty() && !text.contains(&said) {
            text = if text.is_empty() {
                said
            } else {
                format!("{text}: {said}")
            };
        }
        next = cause.source();
    }
    text
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn an_error_says_its_causes_once_without_tonics_wrappers() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(Arc::new(refused));
        let error = Error::from(status);
        assert_eq!(error.to_string(), "Unavailable: tcp connect error: Connection refused");
    }
}
