//! MONITOR: one stream merged from every master. The proxy opens a connection of the client's
//! own to each master (through the [`Connector`], so it authenticates and speaks TLS like every
//! node connection), sends `MONITOR`, and forwards each node's lines (Redis's MONITOR format,
//! as the node writes them) into the client's reply queue as they arrive. The connections are
//! closed when the [`Monitor`] is dropped: QUIT, RESET, CLIENT KILL or a disconnect.
use crate::backend::connector::{Connector, Setup};
use crate::protocol::framer::Request;
use crate::protocol::reply::Proto;
use crate::protocol::reply_framer::ReplyFramer;
use crate::reply_queue::ReplyQueue;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A client's MONITOR streams, one task per master; dropping it closes them.
pub struct Monitor {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Opens MONITOR on every master in `masters`; once all have answered `+OK`, queues `ok` and
/// starts forwarding their lines. `Err` says which node could not be reached.
pub async fn open<T: Send + 'static>(
    connector: &Connector,
    masters: &[SocketAddr],
    timeout: Duration,
    queue: Arc<ReplyQueue<T>>,
    ok: T,
    wrap: fn(Bytes) -> T,
) -> Result<Option<Monitor>, String> {
    let mut streams = Vec::with_capacity(masters.len());
    let request = Request::from_args(&["MONITOR"]).bytes().clone();
    for &addr in masters {
        let fail = |e: &dyn std::fmt::Display| format!("cannot reach node {addr}: {e}");
        let setup = Setup {
            proto: Proto::Resp2,
            readonly: false,
        };
        let mut stream = connector
            .connect(addr, setup, timeout)
            .await
            .map_err(|e| fail(&e))?;
        stream.write_all(&request).await.map_err(|e| fail(&e))?;
        stream.flush().await.map_err(|e| fail(&e))?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut framer = ReplyFramer::new();
        let first = tokio::time::timeout(timeout, async {
            loop {
                if let Some(r) = framer.next_reply(&mut buf).map_err(|e| fail(&e))? {
                    return Ok(r);
                }
                if stream.read_buf(&mut buf).await.map_err(|e| fail(&e))? == 0 {
                    return Err(fail(&"connection closed"));
                }
            }
        })
        .await
        .map_err(|_| fail(&"no answer to MONITOR"))??;
        if first.first() == Some(&b'-') {
            return Err(String::from_utf8_lossy(&first[1..]).trim_end().to_string());
        }
        streams.push((stream, buf, framer));
    }
    if !queue.push(ok).await {
        return Ok(None);
    }
    let tasks = streams
        .into_iter()
        .map(|(mut stream, mut buf, mut framer)| {
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    loop {
                        match framer.next_reply(&mut buf) {
                            Ok(Some(line)) => {
                                if !queue.push(wrap(line)).await {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
        })
        .collect();
    Ok(Some(Monitor { tasks }))
}
