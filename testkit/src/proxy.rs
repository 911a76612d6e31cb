//! A TCP proxy between a service and one of its dependencies, for injecting faults without
//! touching the shared local PostgreSQL or RabbitMQ.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Bytes flow both ways.
    Pass,
    /// Bytes from the service to the dependency are held back; the other way still flows.
    /// The service keeps receiving (deliveries, for instance) but nothing it sends arrives.
    Frozen,
    /// Every connection is closed and new ones are refused: the dependency is down.
    Cut,
}

/// Listens on a random local port and forwards to `upstream`, until dropped.
pub struct FaultProxy {
    port: u16,
    mode: watch::Sender<Mode>,
    listener: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, _) = watch::channel(Mode::Pass);
        let modes = mode.clone();
        let listener = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Cut {
                    continue; // dropping the socket refuses the connection
                }
                tokio::spawn(relay(client, upstream, modes.subscribe()));
            }
        });
        Self {
            port,
            mode,
            listener,
        }
    }

    /// The port a service should connect to instead of the dependency's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The dependency goes away: open connections drop, new ones are refused.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// The service's outgoing bytes stop arriving (its writes succeed but are held here).
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Back to normal; bytes held while frozen are delivered.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.listener.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut outgoing_mode = mode.clone();
    let outgoing = async {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                break;
            }
            // Hold the bytes while frozen; give up if cut.
            match outgoing_mode
                .wait_for(|m| *m != Mode::Frozen)
                .await
                .map(|m| *m)
            {
                Ok(Mode::Pass) => {}
                _ => break,
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
    };
    let incoming = tokio::io::copy(&mut server_read, &mut client_write);
    // Whichever side ends (or a cut) ends the connection: both sockets drop on return.
    tokio::select! {
        () = outgoing => {}
        _ = incoming => {}
        _ = mode.wait_for(|m| *m == Mode::Cut) => {}
    }
}
