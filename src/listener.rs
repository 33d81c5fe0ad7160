//! The listening socket and what accepting on it gives: a TCP socket bound from `host` and
//! `port`, or a socket the process was handed as an open descriptor (`fd`): TCP, or a Unix
//! socket file (`uds`, bound by the process layer, or systemd's `ListenStream=/path`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyResult;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::ServerConfig;

/// A listening socket made before the runtime runs; `into_tokio` registers it inside.
pub enum Prepared {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A listening socket the accept loop waits on.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted connection.
pub enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The two ends of an accepted connection. A Unix socket's have no address: its peer is a
/// process on this machine (a proxy, usually), and its own end is a file.
#[derive(Clone, Copy)]
pub struct Ends {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

impl fmt::Display for Ends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{peer}"),
            None => f.write_str("unix socket"),
        }
    }
}

/// A connected stream hyper serves and, once upgraded, the poller takes over as a
/// descriptor.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_fd(self) -> io::Result<OwnedFd>;
}

impl Stream for TcpStream {
    fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

impl Stream for UnixStream {
    fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

impl Prepared {
    /// Bind `host:port` (a name is resolved; its first address is taken).
    pub fn tcp(config: &ServerConfig) -> PyResult<Self> {
        use socket2::{Domain, Socket, Type};
        let address: SocketAddr = format!("{}:{}", config.host, config.port)
            .parse()
            .or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(&(config.host.as_str(), config.port))
                    .ok()
                    .and_then(|mut all| all.next())
                    .ok_or(())
            })
            .map_err(|_| PyValueError::new_err(format!("cannot resolve host {:?}", config.host)))?;
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if config.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(config.backlog)?;
        Ok(Self::Tcp(socket.into()))
    }

    /// The listening socket at `fd`, served through a duplicate: the inherited descriptor
    /// stays open, so forked workers and a server started again in the same process can
    /// each take their own.
    pub fn inherited(fd: i32) -> PyResult<Self> {
        // SAFETY: fcntl checks `fd` itself (EBADF when it is not open) and only duplicates it.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            let error = io::Error::last_os_error();
            return Err(PyOSError::new_err(format!("fd {fd}: {error}")));
        }
        // SAFETY: `copy` is a descriptor just made for this socket and owned by nothing else.
        let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(copy) });
        socket.set_nonblocking(true)?;
        if socket.domain()? == socket2::Domain::UNIX {
            Ok(Self::Unix(OwnedFd::from(socket).into()))
        } else {
            Ok(Self::Tcp(socket.into()))
        }
    }

    /// The TCP port listened on; 0 for a Unix socket.
    pub fn port(&self) -> io::Result<u16> {
        match self {
            Self::Tcp(listener) => Ok(listener.local_addr()?.port()),
            Self::Unix(_) => Ok(0),
        }
    }

    /// Must run inside the tokio runtime.
    pub fn into_tokio(self) -> io::Result<Listener> {
        Ok(match self {
            Self::Tcp(listener) => Listener::Tcp(TcpListener::from_std(listener)?),
            Self::Unix(listener) => Listener::Unix(UnixListener::from_std(listener)?),
        })
    }
}

impl Listener {
    pub async fn accept(&self) -> io::Result<(Accepted, Ends)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Replies are small and latency counts: no Nagle.
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(peer);
                let ends = Ends {
                    peer: Some(peer),
                    local: Some(local),
                };
                Ok((Accepted::Tcp(stream), ends))
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let ends = Ends {
                    peer: None,
                    local: None,
                };
                Ok((Accepted::Unix(stream), ends))
            }
        }
    }
}
