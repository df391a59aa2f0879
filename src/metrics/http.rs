//! The metrics HTTP listener: `/metrics` (Prometheus text format), `/healthz` (200 while the
//! process serves) and `/readyz` (200 while [`crate::health`] finds every slot's master
//! reachable, the topology fresh and the proxy not shutting down; else 503 with the reason). A deliberately small HTTP/1.1 responder on tokio, enough for Prometheus,
//! load balancers and curl: `GET` only, one request per connection (`Connection: close`), a
//! bounded request head read under a deadline, 400/404/405/431 for everything else. A full
//! HTTP stack would cost more compile time than these three routes are worth.
use super::Metrics;
use super::ScrapeSource;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head, and then to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client to close after the response.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

/// The content type of the Prometheus text exposition format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// Binds the listener for `addr`, with an error that names the setting.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {addr}: {e} (pick another with --metrics-listen)"
        )
    })
}

/// Serves `listener` until the process ends.
pub async fn serve(listener: TcpListener, source: Arc<dyn ScrapeSource>, metrics: Arc<Metrics>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (source, metrics) = (source.clone(), metrics.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(IO_TIMEOUT, answer(stream, source.as_ref(), &metrics)).await;
            drop(permit);
        });
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    extra: &'static str,
    body: Vec<u8>,
}

fn text(status: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type: TEXT_TYPE,
        extra: "",
        body: body.as_bytes().to_vec(),
    }
}

async fn answer(
    mut stream: TcpStream,
    source: &dyn ScrapeSource,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let response = match read_head(&mut stream).await? {
        Head::Complete(head) => route(&head, source, metrics),
        Head::TooLarge => text(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        ),
        Head::Closed => return Ok(()),
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        response.extra,
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await?;
    // Lingering close: read what the client still sends (a body, the rest of an oversized
    // head) until it closes, so that closing with unread bytes does not reset the connection
    // before the client has read the response.
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match tokio::time::timeout(LINGER, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
    Ok(())
}

enum Head {
    Complete(String),
    TooLarge,
    /// The client closed before sending a whole head.
    Closed,
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf[scan_from..]) {
            buf.truncate(scan_from + end);
            return Ok(Head::Complete(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the head ends in `buf` (`\r\n\r\n`, or a bare `\n\n` from a lenient client).
fn find_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| buf[i..].starts_with(b"\r\n\r\n") || buf[i..].starts_with(b"\n\n"))
}

fn route(head: &str, source: &dyn ScrapeSource, metrics: &Metrics) -> Response {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return text("400 Bad Request", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return text("400 Bad Request", "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(
            "404 Not Found",
            "not found; try /metrics, /healthz or /readyz\n",
        );
    }
    if method != "GET" {
        return Response {
            extra: "Allow: GET\r\n",
            ..text("405 Method Not Allowed", "only GET is served\n")
        };
    }
    match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: METRICS_TYPE,
            extra: "",
            body: metrics.render(source),
        },
        "/healthz" => text("200 OK", "ok\n"),
        _ => match source.health().ready() {
            Ok(()) => text("200 OK", "ready\n"),
            Err(why) => text("503 Service Unavailable", &format!("not ready: {why}\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::find_end;

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(23));
        assert_eq!(find_end(b"GET / HTTP/1.0\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
