//! A single keep-alive connection for multi-step workloads (request-queue consumers, probes).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::load::Req;

pub struct Client {
    addr: SocketAddr,
    token: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        Self {
            addr,
            token: token.to_string(),
            sender: None,
        }
    }

    /// Sends one request (reconnecting if needed) and returns status and body.
    pub async fn send(&mut self, req: Req) -> anyhow::Result<(StatusCode, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected");
        let mut builder = Request::builder()
            .method(req.method)
            .uri(req.path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token));
        for (name, value) in req.headers {
            builder = builder.header(name, value);
        }
        sender.ready().await?;
        let response = sender
            .send_request(builder.body(Full::new(req.body))?)
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
