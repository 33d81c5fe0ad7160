//! HTTP requests handed to Python, and the reply that comes back.
//!
//! The IO side collects the body (bounded by `http_max_body`), queues a `PendingRequest` and
//! waits on a oneshot; Python's handler answers through `HttpRequest.respond` on the loop
//! thread. A request Python drops without answering gets a 500.

use std::net::SocketAddr;

use bytes::Bytes;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::oneshot;

use crate::handshake::{address, HeaderText};

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

pub struct PendingRequest {
    pub route_id: usize,
    pub method: String,
    pub path: String,
    pub query_string: String,
    pub headers: HeaderText,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub path_params: Vec<(String, String)>,
    pub body: Bytes,
    pub reply: oneshot::Sender<Reply>,
    /// "http" or "https".
    pub scheme: &'static str,
}

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct HttpRequest {
    #[pyo3(get)]
    route_id: usize,
    #[pyo3(get)]
    method: String,
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    query_string: String,
    headers: HeaderText,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    path_params: Vec<(String, String)>,
    body: Bytes,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    scheme: &'static str,
}

impl From<PendingRequest> for HttpRequest {
    fn from(request: PendingRequest) -> Self {
        Self {
            route_id: request.route_id,
            method: request.method,
            path: request.path,
            query_string: request.query_string,
            headers: request.headers,
            client: request.client,
            server: request.server,
            path_params: request.path_params,
            body: request.body,
            reply: Mutex::new(Some(request.reply)),
            scheme: request.scheme,
        }
    }
}

#[pymethods]
impl HttpRequest {
    #[getter]
    fn scheme(&self) -> &'static str {
        self.scheme
    }

    #[getter]
    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.pairs()
    }

    #[getter]
    fn client(&self) -> Option<(String, u16)> {
        self.client.map(address)
    }

    #[getter]
    fn server(&self) -> Option<(String, u16)> {
        self.server.map(address)
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    #[getter]
    fn path_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in &self.path_params {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    fn respond(&self, status: u16, headers: Vec<(String, String)>, body: &[u8]) -> PyResult<()> {
        let sender = self.reply.lock().take().ok_or_else(|| {
            PyRuntimeError::new_err("this request was already answered; respond once per request")
        })?;
        // The client may have gone away; there is nobody to tell.
        let _ = sender.send(Reply {
            status,
            headers,
            body: Bytes::copy_from_slice(body),
        });
        Ok(())
    }
}
