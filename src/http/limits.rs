//! Guards on request bodies: time limits, and one `Content-Type` at most.
//!
//! actix-web bounds the time to receive a request *head* (`client_request_timeout`), but once the
//! head is in, nothing bounds the body: a client that sends part of a body and stalls (or drips a
//! byte every few seconds) holds a connection, a handler and its buffer for ever. Every request
//! body is therefore read through [`Deadlined`], which fails the read with
//! [`std::io::ErrorKind::TimedOut`] when no bytes arrive for [`BODY_IDLE_TIMEOUT`] or the whole
//! body is not in by [`BODY_DEADLINE`]. Handlers turn that error into `408` and the connection is
//! closed (the rest of the body is never read).
//!
//! A request answered before its body was read (401, 403, 413...) must not keep the connection
//! either: actix drains a dropped chunked body to reuse the connection, with no time limit, so a
//! client without a token could drip chunks for ever or stream gigabytes into the void. The
//! request's payload is therefore held by the response body until the response is written:
//! actix then sees an unread body, answers with `Connection: close` and closes the connection
//! (after lingering for its `client_disconnect_timeout`, so the client can read the answer).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage};
use futures_util::Stream;
use tokio::time::{sleep, Instant, Sleep};

use super::error::ApiError;

/// Longest silence allowed between two pieces of a request body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a whole request body may take, however it trickles in. A 1 MiB body (the
/// default limit) needs only ~17 KiB/s to make it.
pub const BODY_DEADLINE: Duration = Duration::from_secs(60);

/// A body stream that fails with `TimedOut` after `idle` without data or after `deadline` in all.
pub struct Deadlined<S> {
    inner: S,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    finished: bool,
}

impl<S> Deadlined<S> {
    pub fn new(inner: S, idle_timeout: Duration, deadline: Duration) -> Self {
        Deadlined {
            inner,
            idle_timeout,
            idle: Box::pin(sleep(idle_timeout)),
            deadline: Box::pin(sleep(deadline)),
            finished: false,
        }
    }
}

impl<S> Stream for Deadlined<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next = Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let late = this.deadline.as_mut().poll(cx).is_ready()
                    || this.idle.as_mut().poll(cx).is_ready();
                if late {
                    this.finished = true;
                    return Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body not received in time",
                    )))));
                }
                Poll::Pending
            }
        }
    }
}

/// True for the error [`Deadlined`] yields when time is up.
pub fn is_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == io::ErrorKind::TimedOut)
}

/// Middleware: every request body is read through [`Deadlined`]; a request with more than one
/// `Content-Type` is refused before any handler runs (extractors read the first, a proxy may
/// have acted on the last: the body's meaning would be ambiguous).
pub async fn guard_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<HoldsPayload>, Error> {
    if req.headers().get_all(CONTENT_TYPE).nth(1).is_some() {
        return Err(ApiError::bad_request("more than one Content-Type header").into());
    }
    let payload = Shared(Rc::new(RefCell::new(req.take_payload())));
    let kept = payload.0.clone();
    let timed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(Deadlined::new(payload, BODY_IDLE_TIMEOUT, BODY_DEADLINE));
    req.set_payload(Payload::from(timed));
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| HoldsPayload {
        body: body.boxed(),
        _payload: kept,
    }))
}

/// The request payload, readable by the handler while the middleware holds on to it.
struct Shared(Rc<RefCell<Payload>>);

impl Stream for Shared {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

/// A response body that keeps the request payload alive until actix has written it and decided
/// whether the connection can be reused.
pub struct HoldsPayload {
    body: BoxBody,
    _payload: Rc<RefCell<Payload>>,
}

impl MessageBody for HoldsPayload {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A body that yields `chunks` pieces, one every `every`, then stalls for ever.
    fn trickle(
        chunks: usize,
        every: Duration,
    ) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        Box::pin(futures_util::stream::unfold(0usize, move |n| async move {
            tokio::time::sleep(every).await;
            if n < chunks {
                Some((Ok(Bytes::from_static(b"x")), n + 1))
            } else {
                std::future::pending().await
            }
        }))
    }

    async fn drain(
        mut s: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    ) -> (usize, Option<PayloadError>) {
        let mut got = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => got += b.len(),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    // Real time, scaled down to milliseconds (tokio's paused clock needs a feature we do not enable).
    const IDLE: Duration = Duration::from_millis(200);
    const DEADLINE: Duration = Duration::from_millis(1000);

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        let start = Instant::now();
        let (got, err) = drain(Deadlined::new(
            trickle(3, Duration::from_millis(20)),
            IDLE,
            DEADLINE,
        ))
        .await;
        assert_eq!(got, 3);
        assert!(is_timeout(&err.expect("timed out")));
        // 3 chunks at 20 ms, then 200 ms of silence; well before the deadline.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(260) && took < DEADLINE,
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_dripping_body_fails_at_the_deadline() {
        let start = Instant::now();
        // A byte every 150 ms never trips the 200 ms idle timeout; the deadline stops it.
        let (got, err) = drain(Deadlined::new(
            trickle(usize::MAX, Duration::from_millis(150)),
            IDLE,
            DEADLINE,
        ))
        .await;
        assert!(is_timeout(&err.expect("timed out")));
        assert!((3..=6).contains(&got), "{got} bytes");
        let took = start.elapsed();
        assert!(took >= DEADLINE && took < DEADLINE * 2, "{took:?}");
    }

    #[tokio::test]
    async fn a_prompt_body_is_untouched() {
        let body = futures_util::stream::iter([
            Ok(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"c")),
        ]);
        let (got, err) = drain(Deadlined::new(body, IDLE, DEADLINE)).await;
        assert_eq!((got, err.is_none()), (3, true));
        // Other payload errors pass through unchanged.
        let broken = futures_util::stream::iter([Err(PayloadError::Incomplete(None))]);
        let (_, err) = drain(Deadlined::new(broken, IDLE, DEADLINE)).await;
        let err = err.expect("error passed through");
        assert!(matches!(err, PayloadError::Incomplete(None)) && !is_timeout(&err));
    }
}
