//! A loopback port where connections are refused, for as long as the test holds it.
//!
//! Binding port 0, dropping the listener and using its number hopes that nobody takes the
//! port in the meantime; with tests running in parallel, another test's server can, and
//! then the "unreachable" server answers. A socket that is bound but never listens keeps
//! the port for itself, and the kernel answers every connection attempt with a reset.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// A bound, never listening TCP socket on 127.0.0.1: connecting to [`RefusedPort::addr`]
/// fails with "connection refused" until this is dropped.
#[derive(Debug)]
pub struct RefusedPort {
    _socket: Socket,
    addr: SocketAddr,
}

impl RefusedPort {
    /// Binds a free port on 127.0.0.1 without listening on it.
    pub fn new() -> Self {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a tcp socket");
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("the bound address").as_socket().expect("an inet address");
        Self { _socket: socket, addr }
    }

    /// The address, e.g. `127.0.0.1:40123`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Default for RefusedPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_refused_while_held() {
        let port = RefusedPort::new();
        for _ in 0..3 {
            let err = std::net::TcpStream::connect(port.addr()).expect_err("nothing listens");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        }
        // The port stays ours: nobody else can bind it.
        assert!(
            std::net::TcpListener::bind(port.addr())
                .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
        );
    }
}
