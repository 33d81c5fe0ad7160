//! The listening socket and what accepting on it gives: a TCP socket bound from `host` and
//! `port`, or a socket the process was handed as an open descriptor (`fd`): TCP, or a Unix
//! socket file (`uds`, bound by the process layer, or systemd's `ListenStream=/path`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyResult;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::config::ServerConfig;

/// A listening socket, non-blocking: the loop thread accepts on it (`accept`).
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
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

impl Listener {
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

    pub fn fd(&self) -> RawFd {
        match self {
            Self::Tcp(listener) => listener.as_raw_fd(),
            Self::Unix(listener) => listener.as_raw_fd(),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    /// The address every connection accepted here has as its own end, when the socket
    /// is bound to one (not to all of the host's, where each connection asks its own).
    pub fn fixed_local(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .ok()
                .filter(|a| !a.ip().is_unspecified()),
            Self::Unix(_) => None,
        }
    }

    /// Accept one connection, non-blocking (`WouldBlock` when none is waiting); the new
    /// socket is non-blocking too, and without Nagle over TCP (replies are small and
    /// latency counts). `local` is `fixed_local`'s answer.
    pub fn accept(&self, local: Option<SocketAddr>) -> io::Result<(OwnedFd, Ends)> {
        // SAFETY: accept4 fills at most `len` bytes of the storage and sets `len`.
        let (raw, peer) = unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                let fd = libc::accept4(
                    self.fd(),
                    storage.cast(),
                    len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(fd)
            })?
        };
        // SAFETY: a descriptor accept4 just made, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if self.is_unix() {
            let ends = Ends {
                peer: None,
                local: None,
            };
            return Ok((fd, ends));
        }
        let socket = socket2::SockRef::from(&fd);
        let _ = socket.set_tcp_nodelay(true);
        let peer = peer.as_socket();
        let local = local.or_else(|| socket.local_addr().ok().and_then(|a| a.as_socket()));
        Ok((
            fd,
            Ends {
                peer,
                local: local.or(peer),
            },
        ))
    }
}
