//! A backend's response body, whichever protocol carried it: HTTP/1.1 read by our own
//! client in the request's task, or an HTTP/2 stream from hyper.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::H1Conn;
use super::h1_body::H1Body;
use crate::body::BoxError;

pub enum UpstreamBody {
    Http1(H1Body),
    Http2(Incoming),
}

impl UpstreamBody {
    /// The HTTP/1.1 body, for splicing.
    pub(crate) fn as_http1(&mut self) -> Option<&mut H1Body> {
        match self {
            UpstreamBody::Http1(body) => Some(body),
            UpstreamBody::Http2(_) => None,
        }
    }

    /// The backend's connection after a 101 (HTTP/1.1 only), for the tunnel.
    pub(crate) fn take_upgrade(&mut self) -> Option<H1Conn> {
        match self {
            UpstreamBody::Http1(body) => body.take_upgrade(),
            UpstreamBody::Http2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Http2(body) => body.size_hint(),
        }
    }
}
