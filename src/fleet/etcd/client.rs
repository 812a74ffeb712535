//! How to reach etcd (endpoints, timeouts, HTTP/2 keep-alive, a user, TLS) and the one
//! channel every call goes over: a unary call or a bidirectional stream, each carrying
//! the auth token. The services' calls are in `kv`, `lease` and `watch`.

use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{ProstCodec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig as TlsOptions, Endpoint};

use super::error::{Error, Result};
use super::pb;

/// How to reach etcd: timeouts, HTTP/2 keep-alive, a user, TLS.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    user: Option<(String, String)>,
    keep_alive: Option<(Duration, Duration)>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls: Option<TlsOptions>,
}

impl ConnectOptions {
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Logs in as this user (etcd's Authenticate); every call carries the token.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// HTTPS: the CA and, optionally, this client's identity.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// HTTP/2 pings every `interval` (idle or not); the connection is dropped when one
    /// is not answered within `timeout`.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Each call's deadline (for a stream: until etcd's first answer).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let invalid = |why: String| Error::Endpoint(url.to_owned(), why);
        let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(e.to_string()))?;
        match (&self.tls, url.starts_with("https://")) {
            (Some(tls), true) => endpoint = endpoint.tls_config(tls.clone())?,
            (None, false) => {}
            (Some(_), false) => return Err(invalid("TLS needs an https:// endpoint".into())),
            (None, true) => return Err(invalid("an https:// endpoint needs TLS options".into())),
        }
        if let Some((interval, timeout)) = self.keep_alive {
            endpoint = endpoint
                .keep_alive_while_idle(true)
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        Ok(endpoint)
    }
}

/// A connection to an etcd cluster (balanced over its endpoints); cheap to clone.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    /// etcd's auth token, sent as the `token` metadata of every call.
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client of these endpoints. Connections are made on the first call (and made
    /// again after a failure), except that a user logs in here.
    pub async fn connect<E: AsRef<str>, S: AsRef<[E]>>(
        endpoints: S,
        options: Option<ConnectOptions>,
    ) -> Result<Client> {
        let options = options.unwrap_or_default();
        let endpoints = endpoints
            .as_ref()
            .iter()
            .map(|url| options.endpoint(url.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let channel = match endpoints.as_slice() {
            [] => return Err(Error::Endpoint(String::new(), "no etcd endpoint".into())),
            [one] => one.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        let mut client = Client { channel, token: None };
        if let Some((name, password)) = options.user {
            let request = pb::AuthenticateRequest { name, password };
            let answer: pb::AuthenticateResponse = client.unary("/etcdserverpb.Auth/Authenticate", request).await?;
            let token = MetadataValue::try_from(answer.token.as_str())
                .map_err(|_| Error::Protocol("etcd's auth token is not valid metadata"))?;
            client.token = Some(token);
        }
        Ok(client)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    async fn ready(&self) -> Result<tonic::client::Grpc<Channel>> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("etcd is not reachable: {e}")))?;
        Ok(grpc)
    }

    pub(super) async fn unary<Q, A>(&self, path: &'static str, message: Q) -> Result<A>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.ready().await?;
        let answer = grpc
            .unary(
                self.request(message),
                PathAndQuery::from_static(path),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner())
    }

    /// A bidirectional stream opened with `first`; the sender sends more.
    pub(super) async fn stream<Q, A>(&self, path: &'static str, first: Q) -> Result<(mpsc::Sender<Q>, Streaming<A>)>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let (sender, receiver) = mpsc::channel(16);
        sender
            .send(first)
            .await
            .map_err(|_| Error::Protocol("the request stream closed"))?;
        let mut grpc = self.ready().await?;
        let answers = grpc
            .streaming(
                self.request(ReceiverStream::new(receiver)),
                PathAndQuery::from_static(path),
                ProstCodec::default(),
            )
            .await?;
        Ok((sender, answers.into_inner()))
    }
}
