//! Starting the broker: one glommio executor per shard, each accepting on the same port
//! (SO_REUSEPORT), and the per-connection loop.
//!
//! A connection is served by the shard that accepted it. Like Kafka, a connection's requests are
//! handled one at a time in arrival order (clients may pipeline; responses leave in order).

use crate::codec::{self, DecodeError};
use crate::fetch_response::ResponseParts;
use crate::frame::{FrameError, FrameReader};
use crate::handlers::Reply;
use crate::metadata::{MetadataSnapshot, MetadataStore};
use crate::shard::{BrokerConfig, Shard, ShardMessage, INBOX_CAPACITY};
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use kafka_protocol::messages::ApiKey;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections one shard serves at once; more are closed on accept with a log line.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;

/// A running broker.
pub struct Broker {
    inboxes: Arc<Vec<flume::Sender<ShardMessage>>>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// The address shards listen on (the real port when 0 was asked for).
    pub listen: SocketAddr,
    _data_dir_lock: std::fs::File,
}

impl Broker {
    /// Starts every shard and returns once all listen.
    pub fn start(mut config: BrokerConfig) -> Result<Broker, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|error| format!("creating {}: {error}", config.data_dir.display()))?;
        let lock = lock_data_dir(&config.data_dir)?;
        // glommio sets SO_REUSEPORT on every listener, so a second broker on the same port would
        // silently share connections: refuse a port where something already accepts.
        config.listen = claim_port(config.listen)?;
        if config.advertised_port == 0 {
            config.advertised_port = i32::from(config.listen.port());
        }
        let store = MetadataStore::open(&config.data_dir)
            .map_err(|error| format!("opening metadata: {error}"))?;
        let snapshot = Arc::new(MetadataSnapshot::from_file(store.file()));
        let config = Arc::new(config);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
            .map(|_| flume::bounded(INBOX_CAPACITY))
            .unzip();
        let inboxes = Arc::new(senders);
        let (ready_tx, ready_rx) = flume::bounded::<Result<(), String>>(config.shards);
        let cpus = std::thread::available_parallelism().map_or(1, |count| count.get());
        let mut store = Some(store);
        let mut threads = Vec::new();
        for (id, inbox) in receivers.into_iter().enumerate() {
            let shard_store = if id == 0 { store.take() } else { None };
            let (config, inboxes, snapshot, ready) = (
                config.clone(),
                inboxes.clone(),
                snapshot.clone(),
                ready_tx.clone(),
            );
            let handle = LocalExecutorBuilder::new(Placement::Fixed(id % cpus))
                .name(&format!("shard-{id}"))
                .preempt_timer(Duration::from_millis(5))
                .spawn(move || async move {
                    run_shard(id, config, inboxes, inbox, shard_store, snapshot, ready).await
                })
                .map_err(|error| format!("starting shard {id}: {error}"))?;
            threads.push(handle);
        }
        for _ in 0..config.shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err("a shard exited while starting".into()),
            }
        }
        Ok(Broker {
            inboxes,
            threads,
            listen: config.listen,
            _data_dir_lock: lock,
        })
    }

    /// Closes every log cleanly (writing clean-shutdown markers). The executors' threads are
    /// detached: the process is expected to exit after this.
    pub fn shutdown(self) {
        let mut answers = Vec::new();
        for inbox in self.inboxes.iter() {
            let (reply, answer) = flume::bounded(1);
            if inbox.send(ShardMessage::Shutdown { reply }).is_ok() {
                answers.push(answer);
            }
        }
        for answer in answers {
            let _ = answer.recv_timeout(Duration::from_secs(60));
        }
        drop(self.threads);
    }
}

/// Port 0: pick a free port. Otherwise: fail if something already listens there. (A plain
/// bind cannot be the test: connections this broker's previous run closed sit in TIME_WAIT
/// without SO_REUSEADDR and would make every restart fail.)
fn claim_port(listen: SocketAddr) -> Result<SocketAddr, String> {
    if listen.port() == 0 {
        let probe = std::net::TcpListener::bind(listen)
            .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
        return probe
            .local_addr()
            .map_err(|error| format!("local address: {error}"));
    }
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // A previous run of this broker that just exited can still accept for a moment: io_uring
    // tears rings down asynchronously, and an in-flight accept keeps the listener alive. So a
    // port only counts as taken if it keeps accepting for two seconds.
    for _ in 0..20 {
        match std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
            // A connect to a free port in the ephemeral range can pick that same port as its
            // source and connect to itself (TCP simultaneous open): that is not a listener.
            Ok(stream) if stream.local_addr().ok() == stream.peer_addr().ok() => return Ok(listen),
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => return Ok(listen),
        }
    }
    Err(format!(
        "cannot listen on {listen}: another process is already accepting connections there"
    ))
}

fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    let path = dir.join(".lock");
    let file = std::fs::File::create(&path)
        .map_err(|error| format!("creating {}: {error}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(format!(
            "data directory {} is in use by another runnel process",
            dir.display()
        ));
    }
    Ok(file)
}

async fn run_shard(
    id: usize,
    config: Arc<BrokerConfig>,
    inboxes: Arc<Vec<flume::Sender<ShardMessage>>>,
    inbox: flume::Receiver<ShardMessage>,
    store: Option<MetadataStore>,
    snapshot: Arc<MetadataSnapshot>,
    ready: flume::Sender<Result<(), String>>,
) {
    let shard = match Shard::start(id, config.clone(), inboxes, store, snapshot).await {
        Ok(shard) => shard,
        Err(error) => {
            let _ = ready.send(Err(format!("shard {id}: {error}")));
            return;
        }
    };
    glommio::spawn_local(shard.clone().serve_inbox(inbox)).detach();
    if id == 0 {
        if let Err(error) = crate::group_service::ensure_offsets_topic(&shard).await {
            let _ = ready.send(Err(format!("shard {id}: {error}")));
            return;
        }
    }
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = ready.send(Err(format!(
                "shard {id}: listening on {}: {error}",
                config.listen
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let connections = Rc::new(std::cell::Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if connections.get() >= CONNECTIONS_PER_SHARD_MAX {
                    tracing::warn!(
                        shard = id,
                        "connection limit reached; closing a new connection"
                    );
                    continue;
                }
                connections.set(connections.get() + 1);
                let (shard, connections) = (shard.clone(), connections.clone());
                glommio::spawn_local(async move {
                    serve_connection(shard, stream).await;
                    connections.set(connections.get() - 1);
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!(shard = id, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map_or_else(|| "unknown".to_string(), |addr| addr.to_string());
    // A client that stops reading its responses is dropped like one that stops sending.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(
        shard.config.request_timeout_ms.max(1),
    )));
    set_send_timeout(
        &stream,
        Duration::from_millis(shard.config.request_timeout_ms.max(1)),
    );
    let mut frames = FrameReader::new(shard.config.frame_bytes_max);
    loop {
        let frame = match read_request_frame(&mut stream, &mut frames, &shard.config).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return,
            Err(error) => {
                tracing::info!(%peer, %error, "closing connection");
                return;
            }
        };
        let response = match codec::decode_request(frame) {
            Ok(request) => {
                crate::handlers::dispatch(&shard, peer_addr.map(|addr| addr.ip()), request).await
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => Some(Reply::Frame(
                crate::handlers::api_versions::unsupported_version(correlation_id),
            )),
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection after a bad request");
                return;
            }
        };
        let Some(response) = response else { continue };
        let written = match response {
            Reply::Frame(bytes) => stream.write_all(&bytes).await,
            Reply::Parts(parts) => write_parts(&mut stream, parts).await,
        };
        if let Err(error) = written {
            tracing::info!(%peer, %error, "closing connection: write failed");
            return;
        }
    }
}

/// Writes a response made of pieces. Memory-only responses are written on the reactor; one with
/// file pieces is sent whole from the blocking pool (`sendfile` may block on a page-cache miss).
/// The socket's SO_SNDTIMEO (set to the request timeout) bounds a client that stops reading.
async fn write_parts(stream: &mut TcpStream, parts: ResponseParts) -> io::Result<()> {
    let has_files = parts
        .chunks
        .iter()
        .any(|chunk| matches!(chunk, runnel_engine::ReadChunk::File(_)));
    if !has_files {
        for chunk in &parts.chunks {
            if let runnel_engine::ReadChunk::Memory(bytes) = chunk {
                stream.write_all(bytes).await?;
            }
        }
        return Ok(());
    }
    stream.flush().await?;
    let expected = parts.len_bytes();
    // The stream stays borrowed (and its descriptor open) until the send completes.
    let sent = runnel_engine::send_plan(parts.into_plan(), stream.as_raw_fd()).await?;
    debug_assert_eq!(sent, expected);
    Ok(())
}

/// Bounds blocking sends on the socket (the blocking-pool `sendfile` path).
fn set_send_timeout(stream: &TcpStream, timeout: Duration) {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: a valid socket descriptor and a timeval of the size passed.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "setting SO_SNDTIMEO failed");
    }
}

/// Reads the next request frame. Waiting for its first byte is bounded by
/// `connections.max.idle.ms`; from the first byte to the last by the request timeout, so a
/// stalled half request is dropped (each `read` is given what is left of the deadline).
async fn read_request_frame(
    stream: &mut TcpStream,
    frames: &mut FrameReader,
    config: &BrokerConfig,
) -> Result<bytes::Bytes, FrameError> {
    let idle_deadline = Instant::now() + Duration::from_millis(config.connections_max_idle_ms);
    let mut request_deadline = None;
    loop {
        let deadline = if frames.in_frame() {
            *request_deadline.get_or_insert_with(|| {
                Instant::now() + Duration::from_millis(config.request_timeout_ms)
            })
        } else {
            idle_deadline
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timed_out = remaining.is_zero()
            || match stream.set_read_timeout(Some(remaining)) {
                Ok(()) => match frames.read_some(stream).await {
                    Ok(Some(frame)) => return Ok(frame),
                    Ok(None) => false,
                    Err(FrameError::Io(error)) if error.kind() == io::ErrorKind::TimedOut => true,
                    Err(error) => return Err(error),
                },
                Err(error) => return Err(FrameError::Io(error.into())),
            };
        if timed_out {
            return Err(if frames.in_frame() {
                let (received, expected) = frames.progress();
                FrameError::Incomplete {
                    timeout_ms: config.request_timeout_ms,
                    received,
                    expected,
                }
            } else {
                FrameError::Idle {
                    idle_ms: config.connections_max_idle_ms,
                }
            });
        }
    }
}
