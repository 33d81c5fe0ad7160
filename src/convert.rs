//! Python values to the bytes the engine sends: `str` as UTF-8, the bytes-like types.

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyByteArray, PyBytes, PyString};

/// Text at least this long is sent from the Python string's own UTF-8 buffer instead of
/// a copy; below it, copying is cheaper than keeping the string.
const BORROW_AT: usize = 4096;

/// The UTF-8 bytes of a `str`. Long text is not copied: the `Bytes` keeps the (immutable)
/// Python string alive and points into its UTF-8 buffer.
pub fn text_of(data: &Bound<'_, PyString>) -> PyResult<Bytes> {
    let text = data.extract::<PyBackedStr>()?;
    Ok(if text.len() >= BORROW_AT {
        Bytes::from_owner(text)
    } else {
        Bytes::copy_from_slice(text.as_bytes())
    })
}

/// The bytes of a `bytes`, `bytearray` or `memoryview`, copied once.
pub fn bytes_of(data: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    if let Ok(array) = data.cast::<PyByteArray>() {
        return Ok(array.to_vec().into());
    }
    if data.hasattr("tobytes")? {
        return Ok(data
            .call_method0("tobytes")?
            .cast::<PyBytes>()?
            .as_bytes()
            .to_vec()
            .into());
    }
    Err(PyTypeError::new_err(format!(
        "expected bytes, bytearray or memoryview, got {}",
        data.get_type().name()?
    )))
}
