//! A connected stream socket (TCP or Unix, plain or TLS) in non-blocking mode, read and
//! written with plain syscalls: whoever drives it watches its readiness.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;

use crate::tls;

pub struct Socket {
    fd: OwnedFd,
    /// The TLS session, for `wss://`: the reader (the poller) and the writers share it.
    /// Boxed: a plain socket stays a few bytes.
    tls: Option<Box<Mutex<tls::Session>>>,
}

impl Socket {
    /// Take a connected socket; it is switched to non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, tls: None })
    }

    /// A socket whose TLS handshake is done: reads and writes go through `session`.
    pub fn with_tls(fd: OwnedFd, session: tls::Session) -> io::Result<Self> {
        let mut socket = Self::new(fd)?;
        socket.tls = Some(Box::new(Mutex::new(session)));
        Ok(socket)
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether a read shorter than asked means the socket is drained. Not under TLS: the
    /// session hands out one record's plaintext at a time.
    pub fn short_read_drains(&self) -> bool {
        self.tls.is_none()
    }

    /// Read into `buf`; 0 is the end of the stream.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(tls) = &self.tls {
            return tls.lock().read(self.fd(), buf);
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::recv(self.fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Write the slices with one `sendmsg` (a `writev` that raises no SIGPIPE when the
    /// peer is gone); under TLS, encrypt them. Returns the bytes of `slices` taken.
    pub fn writev(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(tls) = &self.tls {
            return tls.lock().write(self.fd(), slices);
        }
        // SAFETY: an all-zero msghdr is valid; IoSlice is ABI-compatible with iovec.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = slices.as_ptr() as *mut libc::iovec;
        message.msg_iovlen = slices.len() as _;
        // SAFETY: the message points at `slices`, valid for the call.
        let n = unsafe { libc::sendmsg(self.fd(), &message, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Send what TLS still holds of earlier writes; `WouldBlock` while the socket is full.
    pub fn flush(&self) -> io::Result<()> {
        match &self.tls {
            Some(tls) => tls.lock().flush(self.fd()),
            None => Ok(()),
        }
    }

    /// Whether TLS holds output the socket has not taken yet.
    pub fn has_pending(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.lock().has_pending())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(tls) = &self.tls {
            tls.lock().close(self.fd.as_raw_fd());
        }
    }
}
