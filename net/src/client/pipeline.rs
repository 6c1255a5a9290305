//! Several requests in flight on one connection, for throughput (the load generator's
//! producers); [`Client`] keeps its one-request-at-a-time API for everything else.
//!
//! Kafka answers the requests of one connection in the order they were sent, so pipelining needs
//! only a FIFO of what was sent. A [`Pipeline`] takes a connected [`Client`] over (the versions
//! negotiated stay), splits its stream into a write half, used by [`Pipeline::send`] on the
//! caller's task, and a read half owned by a reader task on the same glommio executor. The reader
//! pairs each response frame with the oldest request still waiting, checks its correlation id,
//! and hands the body to that request's [`InFlight`].
//!
//! Bounds: at most `window` requests that expect an answer are in flight; `send` waits for a
//! free slot (a slot is held until the answer has been read). Every answer is bounded by
//! [`ClientConfig::response_bytes_max`](super::ClientConfig::response_bytes_max) and must arrive
//! within the request timeout of its own send.
//!
//! Failure: as with [`Client`], the first transport failure (I/O error, timeout, an answer out
//! of order) leaves the stream in an unknown state, so the pipeline latches broken: the request
//! being read and every one behind it fail, and every later `send` returns
//! [`ClientError::Broken`]. Reconnect by making a new [`Client`].
//!
//! Lives on the executor that made it (the stream is `!Send`); dropping it cancels the reader
//! task and closes the connection. Requests that were still in flight then fail as broken.

use super::{
    decode_body, encode_request, negotiated_version, produce_answers, produce_request,
    transport_error, with_timeout, ApiKey, Client, ClientError, PartitionAnswer,
};
use crate::frame::{self, FrameError};
use bytes::Bytes;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use kafka_protocol::messages::{ProduceRequest, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most requests a pipeline may keep in flight (a sanity bound on the caller's window).
pub const WINDOW_MAX: usize = 1024;

/// A connection with up to `window` requests in flight. See the module documentation.
pub struct Pipeline {
    writer: WriteHalf<TcpStream>,
    shared: Rc<Shared>,
    client_id: String,
    request_timeout: Duration,
    broker_versions: BTreeMap<i16, (i16, i16)>,
    next_correlation_id: i32,
    /// Slots in the window.
    window: usize,
    /// Requests sent and not yet answered, oldest first; the reader's end is the receiver.
    sent: flume::Sender<Pending>,
    /// Cancelled (and the read half dropped) when the pipeline is.
    _reader: glommio::Task<()>,
}

/// What the sender and the reader task share.
struct Shared {
    /// One unit per request that may be in flight.
    window: Rc<Semaphore>,
    /// Why the pipeline broke, once it has.
    broken: RefCell<Option<String>>,
}

impl Shared {
    fn broken_error(&self) -> Option<ClientError> {
        self.broken.borrow().clone().map(ClientError::Broken)
    }

    /// Latches the pipeline broken (the first reason wins) and wakes every sender waiting for a
    /// slot, which then fails.
    fn latch(&self, error: &ClientError) {
        let mut broken = self.broken.borrow_mut();
        if broken.is_none() {
            *broken = Some(error.to_string());
        }
        self.window.close();
    }
}

/// A request the reader still owes an answer to.
struct Pending {
    correlation_id: i32,
    /// The response header's version (depends on the API and its version).
    header_version: i16,
    deadline: Instant,
    reply: flume::Sender<Result<Bytes, ClientError>>,
    /// The window slot, given back when this is dropped (answered or failed).
    _slot: StaticPermit,
}

/// A request sent on a [`Pipeline`] whose answer has not been taken yet.
#[must_use = "a request's answer says whether it succeeded"]
pub struct InFlight<R: Request> {
    reply: flume::Receiver<Result<Bytes, ClientError>>,
    version: i16,
    request: PhantomData<R>,
}

impl<R: Request> InFlight<R> {
    /// Waits for the answer and decodes it.
    pub async fn response(self) -> Result<R::Response, ClientError> {
        let body = self.reply.recv_async().await.map_err(|_| {
            ClientError::Broken("the connection closed before the answer arrived".into())
        })??;
        decode_body::<R>(body, self.version)
    }
}

/// A Produce request in flight (see [`Pipeline::send_produce`]).
#[must_use = "a produce request's answer says whether the records were written"]
pub struct ProduceInFlight {
    /// `None` with acks 0: the broker sends no answer.
    request: Option<InFlight<ProduceRequest>>,
    topic: String,
    partitions: Vec<i32>,
}

impl ProduceInFlight {
    /// Each partition's base offset or error, in the order the batches were given. With acks 0
    /// nothing is known and every partition reads `Ok(-1)`.
    pub async fn answers(self) -> Result<Vec<PartitionAnswer>, ClientError> {
        match self.request {
            None => Ok(self.partitions.iter().map(|&p| (p, Ok(-1))).collect()),
            Some(request) => {
                let response = request.response().await?;
                produce_answers(&response, &self.topic, &self.partitions)
            }
        }
    }
}

impl Pipeline {
    /// Takes `client`'s connection over, allowing up to `window` (1..=[`WINDOW_MAX`]) requests
    /// in flight. Must run on a glommio executor: the reader task is spawned on it.
    pub fn new(client: Client, window: usize) -> Result<Pipeline, ClientError> {
        assert!(
            (1..=WINDOW_MAX).contains(&window),
            "window {window} out of range"
        );
        let Client {
            stream,
            config,
            broker_versions,
            next_correlation_id,
            broken,
            ..
        } = client;
        if let Some(reason) = broken {
            return Err(ClientError::Broken(reason));
        }
        let (reader, writer) = futures_lite::io::split(stream);
        let shared = Rc::new(Shared {
            window: Rc::new(Semaphore::new(window as u64)),
            broken: RefCell::new(None),
        });
        // Never full: a request enters only while holding one of `window` slots.
        let (sent, to_read) = flume::bounded(window);
        let reader = glommio::spawn_local(read_answers(
            reader,
            to_read,
            shared.clone(),
            config.response_bytes_max,
        ));
        Ok(Pipeline {
            writer,
            shared,
            client_id: config.client_id,
            request_timeout: config.request_timeout,
            broker_versions,
            next_correlation_id,
            window,
            sent,
            _reader: reader,
        })
    }

    /// The version to use for `api`, as negotiated by the client.
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        negotiated_version(&self.broker_versions, api)
    }

    /// Requests in flight (sent, answer not yet read).
    pub fn in_flight(&self) -> usize {
        let free = usize::try_from(self.shared.window.available()).unwrap_or(usize::MAX);
        self.window.saturating_sub(free)
    }

    /// Whether a [`Pipeline::send`] would start at once rather than wait for a slot.
    pub fn has_free_slot(&self) -> bool {
        self.shared.window.available() > 0
    }

    /// Waits until a slot is free (or the pipeline broke); does not take it.
    pub async fn wait_for_slot(&self) -> Result<(), ClientError> {
        match self.shared.window.acquire_static_permit(1).await {
            Ok(_slot) => Ok(()),
            Err(_) => Err(self.broken_error()),
        }
    }

    /// Sends a request expecting an answer, once a slot is free. The answer is read in the
    /// background; take it with [`InFlight::response`].
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<InFlight<R>, ClientError> {
        if let Some(error) = self.shared.broken_error() {
            return Err(error);
        }
        let slot = match self.shared.window.acquire_static_permit(1).await {
            Ok(slot) => slot,
            Err(_) => return Err(self.broken_error()),
        };
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(request, version, correlation_id, &self.client_id)?;
        let (reply, receiver) = flume::bounded(1);
        let pending = Pending {
            correlation_id,
            header_version: R::Response::header_version(version),
            deadline: Instant::now() + self.request_timeout,
            reply,
            _slot: slot,
        };
        // Queued before writing, so the reader knows what the first bytes answer.
        self.sent
            .try_send(pending)
            .map_err(|_| self.broken_error())?;
        self.write(&frame).await?;
        Ok(InFlight {
            reply: receiver,
            version,
            request: PhantomData,
        })
    }

    /// Sends a request that gets no answer (Produce with acks 0); takes no slot.
    pub async fn send_only<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        if let Some(error) = self.shared.broken_error() {
            return Err(error);
        }
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(request, version, correlation_id, &self.client_id)?;
        self.write(&frame).await
    }

    /// Produces one encoded batch per partition of `topic` in one request (see
    /// [`Client::produce`]); the answers come with [`ProduceInFlight::answers`].
    pub async fn send_produce(
        &mut self,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
        acks: i16,
    ) -> Result<ProduceInFlight, ClientError> {
        let version = self.version(ApiKey::Produce)?;
        let partitions: Vec<i32> = batches.iter().map(|(partition, _)| *partition).collect();
        let request = produce_request(topic, batches, acks);
        let request = if acks == 0 {
            self.send_only(&request, version).await?;
            None
        } else {
            Some(self.send(&request, version).await?)
        };
        Ok(ProduceInFlight {
            request,
            topic: topic.to_string(),
            partitions,
        })
    }

    fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    async fn write(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let writer = &mut self.writer;
        let result = with_timeout(self.request_timeout, async {
            writer.write_all(frame).await?;
            writer.flush().await
        })
        .await;
        transport_error(result).inspect_err(|error| self.shared.latch(error))
    }

    fn broken_error(&self) -> ClientError {
        self.shared
            .broken_error()
            .unwrap_or_else(|| ClientError::Broken("the pipeline closed".into()))
    }
}

/// The reader task: answers arrive in the order requests were sent.
async fn read_answers(
    mut reader: ReadHalf<TcpStream>,
    to_read: flume::Receiver<Pending>,
    shared: Rc<Shared>,
    frame_bytes_max: usize,
) {
    while let Ok(pending) = to_read.recv_async().await {
        match read_answer(&mut reader, &pending, frame_bytes_max).await {
            Ok(body) => {
                // The caller may have stopped waiting; that is its business.
                let _ = pending.reply.send(Ok(body));
            }
            Err(error) => {
                shared.latch(&error);
                let _ = pending.reply.send(Err(error));
                let reason = shared.broken.borrow().clone().unwrap_or_default();
                for behind in to_read.drain() {
                    let _ = behind.reply.send(Err(ClientError::Broken(reason.clone())));
                }
                return;
            }
        }
    }
}

/// Reads the next frame, within `pending`'s deadline, and checks that it answers `pending`.
async fn read_answer(
    reader: &mut ReadHalf<TcpStream>,
    pending: &Pending,
    frame_bytes_max: usize,
) -> Result<Bytes, ClientError> {
    let left = pending.deadline.saturating_duration_since(Instant::now());
    let result = with_timeout(left.max(Duration::from_millis(1)), async {
        frame::read_frame(reader, frame_bytes_max)
            .await
            .map_err(|error| match error {
                FrameError::Io(error) => error,
                other => std::io::Error::other(other.to_string()),
            })
    })
    .await;
    let mut body = transport_error(result)?;
    let header = ResponseHeader::decode(&mut body, pending.header_version)
        .map_err(|error| ClientError::Protocol(format!("response header: {error}")))?;
    if header.correlation_id != pending.correlation_id {
        return Err(ClientError::Protocol(format!(
            "response for correlation id {} while waiting for {}",
            header.correlation_id, pending.correlation_id
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::records::{encode_batch, NewRecord};
    use crate::client::ClientConfig;
    use kafka_protocol::messages::{produce_response, ProduceResponse, ResponseKind, TopicName};
    use std::io::{Read, Write};
    use std::sync::mpsc;

    /// Reads one request frame: (api key, version, correlation id); `None` once the client
    /// has gone.
    fn read_request(stream: &mut std::net::TcpStream) -> Option<(i16, i16, i32)> {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).ok()?;
        let field = |at: usize| i16::from_be_bytes([body[at], body[at + 1]]);
        Some((
            field(0),
            field(2),
            i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        ))
    }

    fn answer(
        stream: &mut std::net::TcpStream,
        key: ApiKey,
        version: i16,
        id: i32,
        body: &ResponseKind,
    ) {
        let frame = crate::codec::encode_response(key, version, id, body).expect("encodes");
        stream.write_all(&frame).expect("write");
    }

    /// A Produce answer giving partition 0 the base offset `base_offset`.
    fn produce_answer(base_offset: i64) -> ResponseKind {
        ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
            produce_response::TopicProduceResponse::default()
                .with_name(TopicName("t".into()))
                .with_partition_responses(vec![
                    produce_response::PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(base_offset),
                ]),
        ]))
    }

    /// A fake broker: answers ApiVersions, then reads `requests` Produce requests, reporting
    /// each on `seen` as it arrives, and only then answers them in order, with the correlation
    /// id shifted by `skew` for the last one.
    fn pipelined_broker(requests: usize, skew: i32, seen: mpsc::Sender<i32>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let Some((_, version, id)) = read_request(&mut stream) else {
                return;
            };
            let versions = ResponseKind::ApiVersions(crate::handlers::api_versions::handle(0));
            answer(&mut stream, ApiKey::ApiVersions, version, id, &versions);
            let mut received = Vec::new();
            for _ in 0..requests {
                let Some((key, version, id)) = read_request(&mut stream) else {
                    return;
                };
                assert_eq!(key, ApiKey::Produce as i16);
                let _ = seen.send(id);
                received.push((version, id));
            }
            for (index, (version, id)) in received.iter().enumerate() {
                let id = if index + 1 == requests {
                    id + skew
                } else {
                    *id
                };
                let body = produce_answer(100 + index as i64);
                answer(&mut stream, ApiKey::Produce, *version, id, &body);
            }
            std::thread::sleep(Duration::from_secs(1));
        });
        address
    }

    fn batch() -> Bytes {
        encode_batch(&[NewRecord {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
            timestamp_ms: 0,
        }])
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(future)
    }

    fn config() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn requests_are_in_flight_together_and_answers_reach_their_senders() {
        let (seen, seen_ids) = mpsc::channel();
        let address = pipelined_broker(3, 0, seen);
        run(async move {
            let client = Client::connect(&address, config()).await.expect("connects");
            let mut pipeline = Pipeline::new(client, 3).expect("pipeline");
            let mut in_flight = Vec::new();
            for _ in 0..3 {
                let sent = pipeline.send_produce("t", vec![(0, batch())], -1).await;
                in_flight.push(sent.expect("sent"));
            }
            // The broker answers only after it has read all three: they were in flight together.
            let mut offsets = Vec::new();
            for request in in_flight {
                let answers = request.answers().await.expect("answered");
                offsets.push(answers[0].1.clone().expect("no error"));
            }
            assert_eq!(offsets, vec![100, 101, 102]);
            assert_eq!(pipeline.in_flight(), 0);
            assert!(pipeline.has_free_slot());
        });
        let ids: Vec<i32> = seen_ids.try_iter().collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1), "{ids:?}");
    }

    #[test]
    fn the_window_bounds_requests_in_flight() {
        let (seen, seen_ids) = mpsc::channel();
        let address = pipelined_broker(3, 0, seen);
        run(async move {
            let client = Client::connect(&address, config()).await.expect("connects");
            let mut pipeline = Pipeline::new(client, 2).expect("pipeline");
            let first = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            let second = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            assert!(!pipeline.has_free_slot());
            // The broker waits for a third request before answering, so a third send that
            // respected the window would wait forever: it must not be on the wire yet.
            let third = glommio::timer::timeout(Duration::from_millis(300), async {
                Ok(pipeline.send_produce("t", vec![(0, batch())], -1).await)
            })
            .await;
            assert!(third.is_err(), "a third request went out past the window");
            drop((first, second));
        });
        assert_eq!(seen_ids.try_iter().count(), 2);
    }

    #[test]
    fn an_answer_out_of_order_breaks_the_pipeline() {
        let (seen, _seen_ids) = mpsc::channel();
        let address = pipelined_broker(2, 7, seen);
        run(async move {
            let client = Client::connect(&address, config()).await.expect("connects");
            let mut pipeline = Pipeline::new(client, 4).expect("pipeline");
            let first = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            let second = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            assert!(first.expect("sent").answers().await.is_ok());
            let error = second
                .expect("sent")
                .answers()
                .await
                .expect_err("skewed id");
            assert!(
                matches!(&error, ClientError::Protocol(reason) if reason.contains("correlation")),
                "{error}"
            );
            let again = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            assert!(matches!(again, Err(ClientError::Broken(_))));
        });
    }

    /// Caps the receive buffer of the sockets `listener` accepts (and so their TCP window).
    fn set_receive_buffer(listener: &std::net::TcpListener, bytes: i32) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid socket descriptor and an int of the size passed.
        let result = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::addr_of!(bytes).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
    }

    /// Kafka reads a connection's next request only after it has answered the one before, so
    /// a pipelined request that does not fit in the socket buffers leaves `send` blocked in
    /// `write` meanwhile. The earlier answer must still be read while that write waits (the
    /// reader task and the writer share the stream through the split halves): this broker
    /// reads on only once the client has taken that answer, so a pipeline that stopped
    /// reading while a write waits would stall until its timeout.
    #[test]
    fn answers_are_read_while_a_send_waits_for_the_broker_to_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        set_receive_buffer(&listener, 64 << 10);
        let address = listener.local_addr().expect("address").to_string();
        let (resume, resumed) = mpsc::channel::<()>();
        let broker = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().ok()?;
            let (_, version, id) = read_request(&mut stream)?;
            let versions = ResponseKind::ApiVersions(crate::handlers::api_versions::handle(0));
            answer(&mut stream, ApiKey::ApiVersions, version, id, &versions);
            let (_, version, id) = read_request(&mut stream)?;
            // Answers once the client is blocked writing the large request (and its reader
            // waits for data), then, muted as Kafka is while it handles a request, reads
            // nothing more until the client has taken the answer. It gives up (and drops the
            // connection) long before the client's own timeouts would wake its reader.
            std::thread::sleep(Duration::from_millis(200));
            answer(
                &mut stream,
                ApiKey::Produce,
                version,
                id,
                &produce_answer(100),
            );
            resumed.recv_timeout(Duration::from_secs(3)).ok()?;
            let (_, version, id) = read_request(&mut stream)?;
            answer(
                &mut stream,
                ApiKey::Produce,
                version,
                id,
                &produce_answer(101),
            );
            std::thread::sleep(Duration::from_millis(500));
            Some(())
        });
        run(async move {
            let config = ClientConfig {
                request_timeout: Duration::from_secs(30),
                ..ClientConfig::default()
            };
            let client = Client::connect(&address, config).await.expect("connects");
            let mut pipeline = Pipeline::new(client, 2).expect("pipeline");
            let first = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            let first = first.expect("sent");
            let first_answered = Rc::new(std::cell::Cell::new(false));
            let waiter = glommio::spawn_local({
                let first_answered = first_answered.clone();
                async move {
                    let answers = first.answers().await;
                    first_answered.set(true);
                    let _ = resume.send(());
                    answers
                }
            });
            // Far more than the client's send buffer (4 MiB at most) and the broker's 64 KiB.
            let big = encode_batch(&[NewRecord {
                key: None,
                value: Some(Bytes::from(vec![7u8; 16 << 20])),
                headers: Vec::new(),
                timestamp_ms: 0,
            }]);
            let second = pipeline.send_produce("t", vec![(0, big)], -1).await;
            let second = second.expect("the large request went out once the broker read on");
            assert!(
                first_answered.get(),
                "the large request fit in the socket buffers: the test proves nothing"
            );
            let first = waiter.await.expect("first answered");
            assert_eq!(first[0].1.clone().expect("no error"), 100);
            let second = second.answers().await.expect("second answered");
            assert_eq!(second[0].1.clone().expect("no error"), 101);
        });
        assert!(broker.join().expect("broker thread").is_some());
    }

    #[test]
    fn a_silent_broker_times_out_every_request_in_flight() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let Some((_, version, id)) = read_request(&mut stream) else {
                    return;
                };
                let versions = ResponseKind::ApiVersions(crate::handlers::api_versions::handle(0));
                answer(&mut stream, ApiKey::ApiVersions, version, id, &versions);
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        run(async move {
            let config = ClientConfig {
                request_timeout: Duration::from_millis(300),
                ..ClientConfig::default()
            };
            let client = Client::connect(&address, config).await.expect("connects");
            let mut pipeline = Pipeline::new(client, 4).expect("pipeline");
            let first = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            let second = pipeline.send_produce("t", vec![(0, batch())], -1).await;
            let error = first.expect("sent").answers().await.expect_err("silent");
            assert!(matches!(error, ClientError::Timeout(_)), "{error}");
            let error = second
                .expect("sent")
                .answers()
                .await
                .expect_err("behind it");
            assert!(matches!(error, ClientError::Broken(_)), "{error}");
        });
    }
}
