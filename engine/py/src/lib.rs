//! `mailcore._engine`: thin pyo3 binding over the `mailcore-engine` crate.
//!
//! Conventions:
//! * engine errors reach Python only through `impl From<EngineErr> for PyErr` (one place);
//! * batch work runs with the GIL released only through [`without_gil`] (one place);
//! * inputs are converted to Rust values under the GIL before releasing it.

use mailcore_engine as engine;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyError, PyOverflowError};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

create_exception!(
    mailcore._engine,
    EngineError,
    PyException,
    "Base class of all mailcore engine errors."
);
create_exception!(
    mailcore._engine,
    TemplateError,
    EngineError,
    "Template compile error. Attributes: `field` (offending field path or None) and \
     `offset` (char offset of the offending tag)."
);
create_exception!(
    mailcore._engine,
    MoneyError,
    EngineError,
    "Money error: overflow, negative amount, or malformed decimal text."
);

/// Wrapper so the engine error can be converted into a Python exception.
struct EngineErr(engine::Error);

impl From<engine::Error> for EngineErr {
    fn from(e: engine::Error) -> Self {
        EngineErr(e)
    }
}

/// The single mapping from engine errors to Python exceptions.
impl From<EngineErr> for PyErr {
    fn from(EngineErr(e): EngineErr) -> PyErr {
        let message = e.to_string();
        match e {
            engine::Error::Template { field, offset, .. } => Python::attach(|py| {
                let err = TemplateError::new_err(message);
                let value = err.value(py);
                if let Err(set_err) = value
                    .setattr("field", field)
                    .and_then(|()| value.setattr("offset", offset))
                {
                    return set_err;
                }
                err
            }),
            engine::Error::Money(_) => MoneyError::new_err(message),
            engine::Error::Audience(_) | engine::Error::Mime(_) | engine::Error::Dkim(_) => {
                EngineError::new_err(message)
            }
        }
    }
}

type EngineResult<T> = Result<T, EngineErr>;

/// Run `f` with the GIL released (the only place the binding detaches from Python).
fn without_gil<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(f)
}

/// A Python int argument of a money function: out-of-`i64` values raise `MoneyError`
/// (not `OverflowError`); non-ints raise `TypeError` as usual.
#[derive(Clone, Copy)]
struct MoneyInt(i64);

impl<'a, 'py> FromPyObject<'a, 'py> for MoneyInt {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        obj.extract::<i64>().map(MoneyInt).map_err(|e| {
            if e.is_instance_of::<PyOverflowError>(obj.py()) {
                EngineErr(engine::Error::Money(
                    "integer is out of the 64-bit range".to_owned(),
                ))
                .into()
            } else {
                e
            }
        })
    }
}

/// count * unit_micros with checked i64 arithmetic.
#[pyfunction]
fn cost_micros(count: MoneyInt, unit_micros: MoneyInt) -> EngineResult<i64> {
    Ok(engine::cost_micros(count.0, unit_micros.0)?)
}

/// Format micros as a decimal USD string, rounding half-up to `decimals` (0..=6).
#[pyfunction]
#[pyo3(signature = (micros, decimals = MoneyInt(2)), text_signature = "(micros, decimals=2)")]
fn format_micros(micros: MoneyInt, decimals: MoneyInt) -> EngineResult<String> {
    let decimals = engine::checked_decimals(decimals.0)?;
    Ok(engine::format_micros(micros.0, decimals)?)
}

/// Parse a decimal USD string ("12.5", "-1", "0.0003") into micros.
#[pyfunction]
fn parse_usd(text: &str) -> EngineResult<i64> {
    Ok(engine::parse_usd(text)?)
}

/// A compiled merge-tag template.
#[pyclass(module = "mailcore._engine", name = "Template", frozen)]
struct PyTemplate {
    inner: engine::Template,
}

#[pymethods]
impl PyTemplate {
    /// `html=True` compiles an HTML template: each field is escaped for its context, and
    /// fields where no escaping is safe are compile errors.
    #[new]
    #[pyo3(signature = (source, *, html = false))]
    fn new(source: &str, html: bool) -> EngineResult<Self> {
        let inner = if html {
            engine::Template::compile_html(source)?
        } else {
            engine::Template::compile(source)?
        };
        Ok(PyTemplate { inner })
    }

    /// Distinct field paths referenced, in order of first appearance.
    #[getter]
    fn fields(&self) -> Vec<String> {
        self.inner.field_paths().to_vec()
    }

    /// The template source text.
    #[getter]
    fn source(&self) -> &str {
        self.inner.source()
    }

    /// Render with `values` (field path -> value); `html=True` HTML-escapes substitutions
    /// (for their context when compiled with `html=True`).
    #[pyo3(signature = (values, *, html))]
    fn render(&self, values: &Bound<'_, PyDict>, html: bool) -> PyResult<String> {
        let mut owned: Vec<Option<PyBackedStr>> = Vec::with_capacity(self.inner.fields().len());
        for path in self.inner.field_paths() {
            owned.push(match values.get_item(path)? {
                Some(v) => Some(v.extract::<PyBackedStr>()?),
                None => None,
            });
        }
        let borrowed: Vec<Option<&str>> = owned.iter().map(|v| v.as_deref()).collect();
        Ok(self.inner.render(&borrowed, html))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let source = PyString::new(py, self.inner.source()).repr()?;
        Ok(format!("Template({source})"))
    }
}

/// Roaring-bitmap index of contacts by tag and status.
#[pyclass(module = "mailcore._engine", name = "AudienceIndex")]
#[derive(Default)]
struct PyAudienceIndex {
    inner: engine::AudienceIndex,
}

fn query(
    any_tags: Vec<String>,
    all_tags: Vec<String>,
    none_tags: Vec<String>,
    statuses: Option<Vec<u8>>,
) -> engine::Query {
    engine::Query {
        any_tags,
        all_tags,
        none_tags,
        statuses,
    }
}

#[pymethods]
impl PyAudienceIndex {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Insert or replace a contact's status and tag set.
    fn upsert(&mut self, contact: u32, status: u8, tags: Vec<String>) {
        self.inner.upsert(contact, status, &tags);
    }

    /// Batch upsert; the bitmap work runs with the GIL released.
    fn upsert_many(
        &mut self,
        py: Python<'_>,
        contacts: Vec<u32>,
        statuses: Vec<u8>,
        tags: Vec<Vec<String>>,
    ) -> EngineResult<()> {
        let inner = &mut self.inner;
        Ok(without_gil(py, || {
            inner.upsert_many(&contacts, &statuses, &tags)
        })?)
    }

    /// Batch upsert from raw storage columns (`contacts`: little-endian u32 bytes,
    /// `statuses`: one byte each, `tags_json`: each a JSON array of strings). The `bytes`
    /// are borrowed under the GIL; JSON parsing and bitmap work run with it released.
    fn upsert_raw(
        &mut self,
        py: Python<'_>,
        contacts: &[u8],
        statuses: &[u8],
        tags_json: Vec<PyBackedBytes>,
    ) -> EngineResult<()> {
        let inner = &mut self.inner;
        Ok(without_gil(py, || {
            inner.upsert_raw(contacts, statuses, &tags_json)
        })?)
    }

    /// Batch upsert from packed storage columns, as one SQL query returns them with
    /// `group_concat`: `contacts` and `statuses` are decimal numbers separated by `,`,
    /// `tags_json` the rows' JSON arrays of strings one after the other (whitespace between).
    /// Parsing and bitmap work run with the GIL released.
    fn upsert_packed(
        &mut self,
        py: Python<'_>,
        contacts: &[u8],
        statuses: &[u8],
        tags_json: &[u8],
    ) -> EngineResult<()> {
        let inner = &mut self.inner;
        Ok(without_gil(py, || {
            inner.upsert_packed(contacts, statuses, tags_json)
        })?)
    }

    /// Remove a contact; True if it was present.
    fn remove(&mut self, contact: u32) -> bool {
        self.inner.remove(contact)
    }

    /// Number of contacts matching the query.
    #[pyo3(signature = (*, any_tags = Vec::new(), all_tags = Vec::new(), none_tags = Vec::new(), statuses = None))]
    fn count(
        &self,
        py: Python<'_>,
        any_tags: Vec<String>,
        all_tags: Vec<String>,
        none_tags: Vec<String>,
        statuses: Option<Vec<u8>>,
    ) -> u64 {
        let q = query(any_tags, all_tags, none_tags, statuses);
        let inner = &self.inner;
        without_gil(py, || inner.count(&q))
    }

    /// Matching contact ids as little-endian u32, ascending.
    #[pyo3(signature = (*, any_tags = Vec::new(), all_tags = Vec::new(), none_tags = Vec::new(), statuses = None))]
    fn members<'py>(
        &self,
        py: Python<'py>,
        any_tags: Vec<String>,
        all_tags: Vec<String>,
        none_tags: Vec<String>,
        statuses: Option<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let q = query(any_tags, all_tags, none_tags, statuses);
        let inner = &self.inner;
        let bitmap = without_gil(py, || inner.query(&q));
        let len = usize::try_from(bitmap.len())
            .ok()
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| PyOverflowError::new_err("result too large"))?;
        PyBytes::new_with(py, len, |buf| {
            for (chunk, id) in buf.chunks_exact_mut(4).zip(bitmap.iter()) {
                chunk.copy_from_slice(&id.to_le_bytes());
            }
            Ok(())
        })
    }

    /// Tags that currently have at least one contact, sorted.
    fn tags(&self) -> Vec<String> {
        self.inner.tags()
    }

    fn __len__(&self) -> usize {
        // The index holds at most 2^32 contacts, which fits usize on 64-bit targets.
        usize::try_from(self.inner.len()).unwrap_or(usize::MAX)
    }

    fn __contains__(&self, contact: &Bound<'_, PyAny>) -> PyResult<bool> {
        match contact.extract::<u32>() {
            Ok(id) => Ok(self.inner.contains(id)),
            Err(e) if e.is_instance_of::<PyOverflowError>(contact.py()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn __repr__(&self) -> String {
        format!("<AudienceIndex contacts={}>", self.inner.len())
    }
}

/// Messages rendered per GIL-released call of `render_batch` (a multiple of the core
/// crate's parallel threshold, so every full window is split across threads).
const RENDER_WINDOW: usize = 8 * engine::mime::PARALLEL_THRESHOLD;

/// Per-recipient MIME message renderer (multipart/alternative, quoted-printable parts).
#[pyclass(module = "mailcore._engine", name = "MessageRenderer", frozen)]
struct PyMessageRenderer {
    inner: engine::MessageRenderer,
    /// The field paths as Python strings (made once: dict lookups then reuse their hash).
    keys: Vec<Py<PyString>>,
    /// Render plans kept between `render_batch` calls.
    plans: std::sync::Mutex<Vec<engine::RenderPlan>>,
}

/// Keep freed heap memory for reuse once the process renders batches (glibc only).
///
/// glibc returns freed memory at the top of the heap to the kernel once it exceeds
/// `M_TRIM_THRESHOLD` (128 KiB by default). A batch of rendered messages is tens of MB of
/// `bytes`, freed once sent: the next batch then faults the same memory in again, page by
/// page, which cost more than rendering (measured: 55 % of `render_batch` time in the
/// kernel). From the first batch on, up to 256 MiB of freed heap is kept, and blocks up to
/// 4 MiB (any message) come from the heap rather than from a fresh `mmap` each.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator parameters; glibc allows it at any time.
        ONCE.call_once(|| unsafe {
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
            mallopt(M_MMAP_THRESHOLD, 4 << 20);
        });
    }
}

/// Threads for a batch of `n` messages (the engine's rule).
fn render_threads(n: usize) -> usize {
    if n >= engine::mime::PARALLEL_THRESHOLD {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    }
}

/// Where a message is written: the data of a new `bytes` object.
struct Target {
    data: *mut u8,
    len: usize,
}

// SAFETY: a Target points into a `bytes` object that the caller owns (created by
// `new_bytes_uninit`, not yet visible to any Python code) and keeps alive while the
// target is used; each target is written by exactly one thread.
unsafe impl Send for Target {}
unsafe impl Sync for Target {}

/// A new `bytes` object of `len` bytes whose content is not initialised yet, and its data.
/// The caller must fill all `len` bytes (see `write_plans`) before Python code sees it.
fn new_bytes_uninit(py: Python<'_>, len: usize) -> PyResult<(Bound<'_, PyBytes>, Target)> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("message too large"))?;
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new reference to a bytes object
    // with n uninitialised bytes (or NULL with an exception set); PyBytes_AsString of a bytes
    // object is its data pointer, valid while the object lives.
    unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let object = Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>();
        let data = pyo3::ffi::PyBytes_AsString(ptr).cast::<u8>();
        Ok((object, Target { data, len }))
    }
}

/// Write every plan into its target (same lengths), split across `threads`.
fn write_plans(
    renderer: &engine::MessageRenderer,
    plans: &[engine::RenderPlan],
    targets: &[Target],
    threads: usize,
) {
    let write = |plans: &[engine::RenderPlan], targets: &[Target]| {
        for (plan, target) in plans.iter().zip(targets) {
            let mut at = 0;
            for slice in renderer.plan_slices(plan) {
                assert!(
                    at + slice.len() <= target.len,
                    "plan longer than its target"
                );
                // SAFETY: in bounds (checked above); the target is this thread's alone and
                // the source is a Rust slice that does not overlap it.
                unsafe {
                    std::ptr::copy_nonoverlapping(slice.as_ptr(), target.data.add(at), slice.len());
                }
                at += slice.len();
            }
            assert_eq!(at, target.len, "plan shorter than its target");
        }
    };
    // Threads take the next 32 messages as they finish (a paused thread holds no share up).
    const PIECE: usize = 32;
    let pieces = plans.len().div_ceil(PIECE);
    let threads = threads.clamp(1, pieces.max(1));
    if threads == 1 {
        return write(plans, targets);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = || loop {
        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if k >= pieces {
            break;
        }
        let range = k * PIECE..plans.len().min((k + 1) * PIECE);
        write(&plans[range.clone()], &targets[range]);
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(run);
        }
        run();
    });
}

/// Look up `fields` in the mapping `values` (a missing key is `None`; values must be `str`).
fn extract_values(
    values: &Bound<'_, PyAny>,
    fields: &[Py<PyString>],
    out: &mut Vec<Option<PyBackedStr>>,
) -> PyResult<()> {
    let py = values.py();
    let fields = fields.iter().map(|f| f.bind(py));
    if let Ok(dict) = values.cast::<PyDict>() {
        for path in fields {
            out.push(match dict.get_item(path)? {
                Some(v) => Some(v.extract::<PyBackedStr>()?),
                None => None,
            });
        }
        return Ok(());
    }
    for path in fields {
        out.push(match values.get_item(path) {
            Ok(v) => Some(v.extract::<PyBackedStr>()?),
            Err(e) if e.is_instance_of::<PyKeyError>(values.py()) => None,
            Err(e) => return Err(e),
        });
    }
    Ok(())
}

#[pymethods]
impl PyMessageRenderer {
    #[new]
    #[pyo3(signature = (
        *, subject, preheader, html, text, from_email, from_name, reply_to, headers = Vec::new(),
        track_opens = false, track_clicks = false, tracking_base = "",
        dkim_domain = None, dkim_selector = None, dkim_private_key = None,
        dkim_algorithm = "rsa-sha256"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        subject: &str,
        preheader: &str,
        html: &str,
        text: Option<&str>,
        from_email: &str,
        from_name: Option<&str>,
        reply_to: Option<&str>,
        headers: Vec<(PyBackedStr, PyBackedStr)>,
        track_opens: bool,
        track_clicks: bool,
        tracking_base: &str,
        dkim_domain: Option<&str>,
        dkim_selector: Option<&str>,
        dkim_private_key: Option<&str>,
        dkim_algorithm: &str,
    ) -> EngineResult<Self> {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (&**n, &**v)).collect();
        let spec = engine::MessageSpec {
            subject,
            preheader,
            html,
            text,
            from_email,
            from_name,
            reply_to,
            headers: &headers,
            tracking: engine::Tracking {
                opens: track_opens,
                clicks: track_clicks,
                base: tracking_base,
            },
        };
        let mut inner = engine::MessageRenderer::new(&spec)?;
        match (dkim_domain, dkim_selector, dkim_private_key) {
            (None, None, None) => {}
            (Some(domain), Some(selector), Some(key)) => {
                inner = inner.with_dkim(dkim_signer(domain, selector, key, dkim_algorithm)?);
            }
            _ => {
                return Err(EngineErr(engine::Error::Dkim(
                    "dkim_domain, dkim_selector and dkim_private_key must be given together".into(),
                )))
            }
        }
        let keys = Python::attach(|py| {
            inner
                .fields()
                .iter()
                .map(|f| PyString::intern(py, f).unbind())
                .collect()
        });
        Ok(PyMessageRenderer {
            inner,
            keys,
            plans: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The link table: distinct tracked link URLs in order of first appearance (index = id).
    #[getter]
    fn links(&self) -> Vec<String> {
        self.inner.links().to_vec()
    }

    /// Render one complete RFC 5322 message (CRLF line endings, not dot-stuffed).
    #[pyo3(signature = (
        values, *, message_id, unsubscribe_url, date, tracking_token = None, dkim_timestamp = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn render<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
        message_id: &str,
        unsubscribe_url: &str,
        date: &str,
        tracking_token: Option<&str>,
        dkim_timestamp: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut owned = Vec::with_capacity(self.keys.len());
        extract_values(values, &self.keys, &mut owned)?;
        let borrowed: Vec<Option<&str>> = owned.iter().map(|v| v.as_deref()).collect();
        let recipient = engine::Recipient {
            values: &borrowed,
            message_id,
            unsubscribe_url,
            tracking_token,
        };
        let inner = &self.inner;
        let timestamp = self.dkim_timestamp(dkim_timestamp);
        let message =
            without_gil(py, || inner.render_at(&recipient, date, timestamp)).map_err(EngineErr)?;
        Ok(PyBytes::new(py, &message))
    }

    /// Render one message per recipient; inputs are converted under the GIL, rendering runs
    /// with the GIL released (large batches use every core).
    #[pyo3(signature = (
        values, *, message_ids, unsubscribe_urls, date, tracking_tokens = None,
        dkim_timestamp = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn render_batch<'py>(
        &self,
        py: Python<'py>,
        values: Vec<Bound<'py, PyAny>>,
        message_ids: Vec<PyBackedStr>,
        unsubscribe_urls: Vec<PyBackedStr>,
        date: &str,
        tracking_tokens: Option<Vec<PyBackedStr>>,
        dkim_timestamp: Option<u64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let n = values.len();
        let tokens_len = tracking_tokens.as_ref().map_or(n, Vec::len);
        if message_ids.len() != n || unsubscribe_urls.len() != n || tokens_len != n {
            let tokens = tracking_tokens
                .as_ref()
                .map_or(String::new(), |t| format!(", {} tracking_tokens", t.len()));
            return Err(EngineErr(engine::Error::Mime(format!(
                "batch length mismatch: {n} values, {} message_ids, {} unsubscribe_urls{tokens}",
                message_ids.len(),
                unsubscribe_urls.len()
            )))
            .into());
        }
        let k = self.keys.len();
        let mut owned = Vec::with_capacity(n * k);
        for mapping in &values {
            extract_values(mapping, &self.keys, &mut owned)?;
        }
        let borrowed: Vec<Option<&str>> = owned.iter().map(|v| v.as_deref()).collect();
        let recipients: Vec<engine::Recipient<'_>> = (0..n)
            .map(|i| engine::Recipient {
                values: &borrowed[i * k..(i + 1) * k],
                message_id: &message_ids[i],
                unsubscribe_url: &unsubscribe_urls[i],
                tracking_token: tracking_tokens.as_ref().map(|t| &*t[i]),
            })
            .collect();
        keep_freed_memory();
        let inner = &self.inner;
        let timestamp = self.dkim_timestamp(dkim_timestamp);
        let threads = render_threads(n);
        // Plans are reused from call to call (their buffers stay warm); taken out of the pool
        // so no lock is held while the GIL is released.
        let mut plans = std::mem::take(&mut *self.plans.lock().unwrap_or_else(|e| e.into_inner()));
        let list = PyList::empty(py);
        // Windows of RENDER_WINDOW messages bound the plans while each window still uses
        // every core. Each message is planned (GIL released), its `bytes` object allocated
        // at its exact length (GIL held), then written straight into it (GIL released).
        let result = (|| -> PyResult<()> {
            for window in recipients.chunks(RENDER_WINDOW) {
                without_gil(py, || {
                    inner.plan_batch(window, date, timestamp, threads, &mut plans)
                })
                .map_err(EngineErr)?;
                let plans = &plans[..window.len()];
                let mut objects = Vec::with_capacity(plans.len());
                let mut targets = Vec::with_capacity(plans.len());
                for plan in plans {
                    let (object, target) = new_bytes_uninit(py, plan.len())?;
                    objects.push(object);
                    targets.push(target);
                }
                without_gil(py, || write_plans(inner, plans, &targets, threads));
                for object in objects {
                    list.append(object)?;
                }
            }
            Ok(())
        })();
        *self.plans.lock().unwrap_or_else(|e| e.into_inner()) = plans;
        result.map(|()| list)
    }

    fn __repr__(&self) -> String {
        format!("<MessageRenderer fields={:?}>", self.inner.fields())
    }
}

impl PyMessageRenderer {
    /// The `t=` timestamp of a render call: the given one, else (only when signing) now.
    fn dkim_timestamp(&self, given: Option<u64>) -> Option<u64> {
        given.or_else(|| self.inner.dkim().map(|_| unix_now()))
    }
}

/// Current UNIX time in seconds (the binding's only clock read; the core takes timestamps).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn dkim_signer(
    domain: &str,
    selector: &str,
    private_key: &str,
    algorithm: &str,
) -> EngineResult<engine::DkimSigner> {
    let algorithm = engine::DkimAlgorithm::parse(algorithm)?;
    Ok(engine::DkimSigner::new(
        domain,
        selector,
        private_key,
        algorithm,
    )?)
}

/// Signed link tokens under one key (engine/core's `links`): the tokens of a render
/// batch's links in one call, GIL released.
#[pyclass(module = "mailcore._engine", name = "LinkSigner", frozen)]
struct PyLinkSigner {
    inner: engine::links::LinkSigner,
}

#[pymethods]
impl PyLinkSigner {
    #[new]
    fn new(key: &[u8]) -> Self {
        PyLinkSigner {
            inner: engine::links::LinkSigner::new(key),
        }
    }

    /// `head` + the token of `prefix ‖ varint(n)` for each of `numbers`.
    #[pyo3(signature = (prefix, numbers, head = ""))]
    fn sign_many(
        &self,
        py: Python<'_>,
        prefix: &[u8],
        numbers: Vec<u64>,
        head: &str,
    ) -> Vec<String> {
        let inner = &self.inner;
        let (prefix, head) = (prefix.to_vec(), head.to_owned());
        without_gil(py, || inner.sign_many(&prefix, &numbers, &head))
    }
}

/// Messages signed per GIL-released call of `DkimSigner.sign_batch`.
const SIGN_WINDOW: usize = 64 * engine::dkim::PARALLEL_THRESHOLD;

/// DKIM signer of one domain and selector (relaxed/relaxed, SHA-256).
#[pyclass(module = "mailcore._engine", name = "DkimSigner", frozen)]
struct PyDkimSigner {
    inner: engine::DkimSigner,
}

#[pymethods]
impl PyDkimSigner {
    #[new]
    #[pyo3(signature = (*, domain, selector, private_key, algorithm = "rsa-sha256"))]
    fn new(domain: &str, selector: &str, private_key: &str, algorithm: &str) -> EngineResult<Self> {
        Ok(PyDkimSigner {
            inner: dkim_signer(domain, selector, private_key, algorithm)?,
        })
    }

    #[getter]
    fn domain(&self) -> &str {
        self.inner.domain()
    }

    #[getter]
    fn selector(&self) -> &str {
        self.inner.selector()
    }

    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm().name()
    }

    /// The DNS TXT record value to publish at `{selector}._domainkey.{domain}`.
    #[getter]
    fn dns_record(&self) -> &str {
        self.inner.dns_record()
    }

    /// `message` with a DKIM-Signature field prepended (GIL released).
    #[pyo3(signature = (message, *, timestamp))]
    fn sign<'py>(
        &self,
        py: Python<'py>,
        message: &[u8],
        timestamp: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &self.inner;
        let signed = without_gil(py, || inner.sign(message, timestamp)).map_err(EngineErr)?;
        Ok(PyBytes::new(py, &signed))
    }

    /// Sign every message (same timestamp) with the GIL released, using every core.
    #[pyo3(signature = (messages, *, timestamp))]
    fn sign_batch<'py>(
        &self,
        py: Python<'py>,
        messages: Vec<PyBackedBytes>,
        timestamp: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        let inner = &self.inner;
        let list = PyList::empty(py);
        for window in messages.chunks(SIGN_WINDOW) {
            let signed =
                without_gil(py, || inner.sign_batch(window, timestamp)).map_err(EngineErr)?;
            for message in signed {
                list.append(PyBytes::new(py, &message))?;
            }
        }
        Ok(list)
    }

    fn __repr__(&self) -> String {
        format!(
            "<DkimSigner domain={:?} selector={:?} algorithm={:?}>",
            self.inner.domain(),
            self.inner.selector(),
            self.inner.algorithm().name()
        )
    }
}

/// The `mailcore._engine` extension module.
/// `content` itself when `normalized` is None (nothing to change), else the new bytes.
fn same_or_new<'py>(
    content: &Bound<'py, PyBytes>,
    normalized: Option<Vec<u8>>,
) -> Bound<'py, PyBytes> {
    match normalized {
        None => content.clone(),
        Some(bytes) => PyBytes::new(content.py(), &bytes),
    }
}

/// Every bare CR and LF of `content` as CRLF, ending in CRLF unless empty; `content`
/// itself when it already is.
#[pyfunction]
fn smtp_normalize_newlines<'py>(content: &Bound<'py, PyBytes>) -> Bound<'py, PyBytes> {
    same_or_new(
        content,
        engine::smtp::normalize_newlines(content.as_bytes()),
    )
}

/// What `SmtpConnection._prepare` asks of every content of a batch, in one call: each
/// content with its newlines normalised (the very object when it already is, as
/// `smtp_normalize_newlines` gives), and whether it holds a byte above 127 (it needs
/// `BODY=8BITMIME`). The GIL stays held: the scans take tens of µs for a batch, less than
/// getting the GIL back from a busy worker thread can take on the event loop's thread.
#[pyfunction]
fn smtp_normalize_many<'py>(
    contents: Vec<Bound<'py, PyBytes>>,
) -> (Vec<Bound<'py, PyBytes>>, Vec<bool>) {
    contents
        .iter()
        .map(|content| {
            let bytes = content.as_bytes();
            let high = !bytes.is_ascii();
            (
                same_or_new(content, engine::smtp::normalize_newlines(bytes)),
                high,
            )
        })
        .unzip()
}

/// A piece of a longer content with bare CR and LF as CRLF (nothing appended).
#[pyfunction]
fn smtp_normalize_piece<'py>(piece: &Bound<'py, PyBytes>) -> Bound<'py, PyBytes> {
    same_or_new(piece, engine::smtp::normalize_piece(piece.as_bytes()))
}

/// What follows the 354 reply to DATA: normalised, dot-stuffed, `.<CRLF>` added.
#[pyfunction]
fn smtp_data_content<'py>(content: &Bound<'py, PyBytes>) -> Bound<'py, PyBytes> {
    PyBytes::new(
        content.py(),
        &engine::smtp::data_content(content.as_bytes()),
    )
}

/// One pipelined DATA group: `body` framed, `RSET`, `mail`, a `RCPT TO` per recipient,
/// `DATA`, in one `bytes`; None when a recipient cannot go on a command line (the
/// caller's checks then say why).
#[pyfunction]
#[pyo3(signature = (body, rset, mail, rcpts, utf8))]
fn smtp_data_group<'py>(
    py: Python<'py>,
    body: Option<&Bound<'py, PyBytes>>,
    rset: bool,
    mail: &Bound<'py, PyBytes>,
    rcpts: Vec<Bound<'py, PyString>>,
    utf8: bool,
) -> Option<Bound<'py, PyBytes>> {
    // A string that is not valid UTF-8 (a lone surrogate) is no address either.
    let rcpts: Vec<&str> = rcpts
        .iter()
        .map(|r| r.to_str().ok())
        .collect::<Option<_>>()?;
    let group = engine::smtp::data_group(
        body.map(|b| b.as_bytes()),
        rset,
        mail.as_bytes(),
        &rcpts,
        utf8,
    )?;
    Some(PyBytes::new(py, &group))
}

/// One message of a pipeline run: the MAIL line, recipients, content, SMTPUTF8 (the
/// Python objects themselves, held by the run while the driver thread sends them).
type PipelineInput = (PyBackedBytes, Vec<PyBackedStr>, PyBackedBytes, bool);

struct PyEnvelope(PipelineInput);

impl engine::pipeline::Envelope for PyEnvelope {
    type Rcpt = PyBackedStr;

    fn mail(&self) -> &[u8] {
        &self.0 .0
    }

    fn rcpts(&self) -> &[PyBackedStr] {
        &self.0 .1
    }

    fn content(&self) -> &[u8] {
        &self.0 .2
    }

    fn utf8(&self) -> bool {
        self.0 .3
    }
}

/// A finished message: (index, MAIL's reply, RCPTs' replies, last reply, ending).
type FinishedOut = (usize, u32, Vec<u32>, u32, u8);

/// What a run did, as `SmtpPipelineRunner.finish` returns it.
type PipelineOut<'py> = (
    Vec<FinishedOut>,
    Vec<Bound<'py, PyBytes>>,
    usize,
    Option<(usize, u32, Vec<u32>, bool)>,
    bool,
    &'static str,
    Option<i32>,
    Option<usize>,
    Bound<'py, PyBytes>,
);

/// One SMTP connection's way to the engine's driver thread, which runs the steady state
/// of a DATA pipeline on its socket (one epoll loop for every connection, engine/core's
/// `transport`): `start` a run, await `fileno()` readable, `finish` takes what it did.
#[pyclass(name = "SmtpPipelineRunner", module = "mailcore._engine", frozen)]
struct PyPipelineRunner {
    runner: engine::transport::Runner<PyEnvelope>,
}

#[pymethods]
impl PyPipelineRunner {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(PyPipelineRunner {
            runner: engine::transport::Runner::new()?,
        })
    }

    /// Readable once a run has ended, until `finish` takes it.
    fn fileno(&self) -> i32 {
        self.runner.ready_fd()
    }

    /// Run the pipeline over `messages` on the socket `fd` in the driver thread, waiting
    /// at most `patience` seconds for any reply or room to write. The caller must not use
    /// the socket until `finish` returns the run.
    #[pyo3(signature = (fd, messages, rset, patience))]
    fn start(
        &self,
        fd: i32,
        messages: Vec<PipelineInput>,
        rset: bool,
        patience: f64,
    ) -> PyResult<()> {
        if !(patience.is_finite() && patience >= 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "patience must be >= 0",
            ));
        }
        let patience = std::time::Duration::from_secs_f64(patience.min(3600.0));
        let messages = messages.into_iter().map(PyEnvelope).collect();
        let pipeline = engine::pipeline::DataPipeline::new(messages, rset);
        Ok(self.runner.start(fd, pipeline, patience)?)
    }

    /// What the run did, once it has ended (None while it runs): the finished messages,
    /// the distinct reply lines they point into, the index of the first message not
    /// begun, the one whose content goes next, whether the next group begins with RSET,
    /// why it stopped (and the OS error), bytes of the group in flight that went out,
    /// and the bytes received and not taken.
    fn finish<'py>(&self, py: Python<'py>) -> Option<PipelineOut<'py>> {
        let (mut pipeline, back) = self.runner.finish()?;
        let finished: Vec<FinishedOut> = std::mem::take(&mut pipeline.finished)
            .into_iter()
            .map(|f| {
                let ending = match f.ending {
                    engine::pipeline::Ending::Refused => 0,
                    engine::pipeline::Ending::Sent => 1,
                    engine::pipeline::Ending::DotOnly => 2,
                };
                (f.index, f.mail, f.rcpts, f.last, ending)
            })
            .collect();
        let body = pipeline
            .body()
            .map(|b| (b.index, b.mail, b.rcpts.clone(), b.deliverable));
        let (stop, error) = match back.stop {
            engine::transport::Stop::Done => ("done", None),
            engine::transport::Stop::Irregular => ("irregular", None),
            engine::transport::Stop::Slow => ("slow", None),
            engine::transport::Stop::Eof => ("eof", None),
            engine::transport::Stop::WriteError(e) => ("write-error", Some(e)),
            engine::transport::Stop::ReadError(e) => ("read-error", Some(e)),
            engine::transport::Stop::Failed => ("failed", None),
        };
        let lines = pipeline.lines.iter().map(|l| PyBytes::new(py, l)).collect();
        Some((
            finished,
            lines,
            pipeline.next_message(),
            body,
            pipeline.rset(),
            stop,
            error,
            back.written,
            PyBytes::new(py, &back.leftover),
        ))
    }

    fn __repr__(&self) -> String {
        format!("SmtpPipelineRunner(fileno={})", self.runner.ready_fd())
    }
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("TemplateError", py.get_type::<TemplateError>())?;
    m.add("MoneyError", py.get_type::<MoneyError>())?;
    // Class-level defaults; each raised TemplateError overrides them on the instance.
    let template_error = py.get_type::<TemplateError>();
    template_error.setattr("field", py.None())?;
    template_error.setattr("offset", 0)?;

    m.add("PRICE_PER_EMAIL_MICROS", engine::PRICE_PER_EMAIL_MICROS)?;
    m.add("MICROS_PER_USD", engine::MICROS_PER_USD)?;
    m.add_function(wrap_pyfunction!(cost_micros, m)?)?;
    m.add_function(wrap_pyfunction!(format_micros, m)?)?;
    m.add_function(wrap_pyfunction!(parse_usd, m)?)?;
    m.add_function(wrap_pyfunction!(smtp_normalize_newlines, m)?)?;
    m.add_function(wrap_pyfunction!(smtp_normalize_many, m)?)?;
    m.add_function(wrap_pyfunction!(smtp_normalize_piece, m)?)?;
    m.add_function(wrap_pyfunction!(smtp_data_content, m)?)?;
    m.add_function(wrap_pyfunction!(smtp_data_group, m)?)?;
    m.add_class::<PyTemplate>()?;
    m.add_class::<PyAudienceIndex>()?;
    m.add_class::<PyMessageRenderer>()?;
    m.add_class::<PyDkimSigner>()?;
    m.add_class::<PyLinkSigner>()?;
    m.add_class::<PyPipelineRunner>()?;
    Ok(())
}
