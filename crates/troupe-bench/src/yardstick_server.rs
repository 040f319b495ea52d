//! The bare-hyper yardstick server (`troupe-bench yardstick-server`): what the same machine does
//! with no framework, no auth and no storage. `/hello` answers a small JSON document, `/sink`
//! reads and discards the body, `/echo` sends the body back.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// About the size of a small Apify `{"data": ...}` answer.
const HELLO: &[u8] = br#"{"data":{"id":"yardstick00000001","message":"hello","ok":true,"count":1,"pad":"0123456789abcdef"}}"#;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match path.as_str() {
        "/hello" => Response::builder()
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from_static(HELLO))),
        "/sink" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            total += data.len();
                        }
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let status = if failed {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!("{{\"bytes\":{total}}}"))))
        }
        "/echo" => match req.into_body().collect().await {
            Ok(body) => Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Full::new(body.to_bytes())),
            Err(_) => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Full::new(Bytes::new())),
        },
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new())),
    };
    Ok(response.expect("valid response"))
}

/// Runs the server until killed; prints `yardstick listening on http://ADDR`.
pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
    // Same runtime shape as troupe's server (multi-threaded, default worker count).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        println!("yardstick listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
