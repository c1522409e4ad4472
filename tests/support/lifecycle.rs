//! The outage machinery the strict fakes (HEC, Oomnitza, Sekoia) share: serve an axum router on a
//! listener, stop it (connections refused, idle keep-alive connections closed, requests in flight
//! dropped), and serve again on the same port with the fake's state kept.
//!
//! Each start is a new *generation*; a handler of an older generation drops its connection
//! (`check_live`), so a keep-alive connection opened before an outage never reaches the new state.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Server {
    task: tokio::task::JoinHandle<()>,
    shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Which generation is up (0: none).
#[derive(Default)]
pub struct Lifecycle {
    current: AtomicU64,
    last: AtomicU64,
    server: Mutex<Option<Server>>,
}

impl Lifecycle {
    /// The generation the next [`Lifecycle::serve`] starts: build the router's state with it.
    pub fn next_generation(&self) -> u64 {
        self.last.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Serves `app` on `listener` as `generation` until stopped.
    pub fn serve(&self, generation: u64, listener: tokio::net::TcpListener, app: axum::Router) {
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        self.current.store(generation, Ordering::SeqCst);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = signal.await;
                })
                .await;
        });
        *self.server.lock().unwrap() = Some(Server { task, shutdown });
    }

    /// Marks the server down, stops accepting and closes idle connections; the serve task to await.
    pub fn shut(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.current.store(0, Ordering::SeqCst);
        let server = self.server.lock().unwrap().take()?;
        let _ = server.shutdown.send(());
        Some(server.task)
    }

    /// An outage: shut down, waiting up to 2 s for the serve task before aborting it.
    pub async fn stop(&self) {
        if let Some(task) = self.shut() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// For a restart: a listener on `addr` again (retrying while the port is released), or `None`
    /// when the server is up already.
    pub async fn rebind(&self, addr: SocketAddr, fake: &str) -> Option<tokio::net::TcpListener> {
        if self.is_up() {
            return None;
        }
        let mut tries = 0;
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return Some(l),
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{fake} fake could not listen on {addr} again: {e}"),
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.current.load(Ordering::SeqCst) != 0
    }

    /// In a handler of `generation`: drop the connection without a response if that generation
    /// is no longer up (`resume_unwind` skips the panic hook: no noise in test output).
    pub fn check_live(&self, generation: u64, down: &'static str) {
        if self.current.load(Ordering::SeqCst) != generation {
            std::panic::resume_unwind(Box::new(down));
        }
    }

    /// Stops at once (for `Drop`).
    pub fn abort(&self) {
        if let Some(task) = self.shut() {
            task.abort();
        }
    }
}
