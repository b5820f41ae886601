//! A small blocking client for MLflow's tracking server, through its REST API
//! (`/api/2.0/mlflow/...`) and its artifact proxy
//! (`/api/2.0/mlflow-artifacts/artifacts/...`): what Sweep needs to mirror a
//! sweep into MLflow, and nothing of MLflow's Python.
//!
//! What the server expects and this client does (found against MLflow 3.17):
//! POST bodies are JSON with `Content-Type: application/json`; experiment ids
//! are strings; a NaN or infinite metric value is sent as the string `"NaN"`,
//! `"Infinity"` or `"-Infinity"` (a JSON `null` is refused); params are strings
//! of at most 6,000 characters; one `log-batch` takes at most 1,000 metrics,
//! 100 params and 100 tags (1,000 entries in all), so larger batches are split.
//!
//! Authentication as MLflow's clients do it: `MLFLOW_TRACKING_TOKEN` (bearer),
//! `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic), or
//! `user:password@` in the URI. Credentials are never part of [`Tracking::uri`]
//! or of an error message. HTTPS checks the server's certificate against the
//! public authorities, or against `MLFLOW_TRACKING_SERVER_CERT_PATH` (a PEM
//! file, MLflow's variable for a private authority); the variables that would
//! turn checks off or present a client certificate
//! (`MLFLOW_TRACKING_INSECURE_TLS`, `MLFLOW_TRACKING_CLIENT_CERT_PATH`) are
//! refused rather than silently ignored.
//!
//! Every call has a timeout and is retried a bounded number of times with
//! backoff when the server is unreachable, answers 429 or a 5xx; other errors
//! (a 400) return at once.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

/// Why a call failed. Messages name the endpoint, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("MLflow {endpoint}: HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Http {
        endpoint: String,
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, `INVALID_PARAMETER_VALUE`, ...).
        code: Option<String>,
        message: String,
    },
    /// The server could not be reached or the connection broke (refused, timed
    /// out, TLS).
    #[error("MLflow {endpoint}: {message}")]
    Transport {
        endpoint: String,
        message: String,
        /// False for what another try cannot mend (a certificate refused).
        transient: bool,
    },
    /// The server answered something this client cannot read.
    #[error("MLflow {endpoint}: unexpected answer: {message}")]
    Answer { endpoint: String, message: String },
    /// The tracking URI or the credentials are not usable.
    #[error("MLflow tracking URI: {0}")]
    Config(String),
}

impl Error {
    /// Worth another try later: the server was unreachable, overloaded or
    /// failed itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { transient, .. } => *transient,
            Error::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn has_code(&self, want: &str) -> bool {
        matches!(self, Error::Http { code: Some(c), .. } if c == want)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How a client authenticates.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never a secret in a log line
        f.write_str(match self {
            Credentials::None => "none",
            Credentials::Bearer(_) => "bearer token",
            Credentials::Basic { .. } => "basic (user and password)",
        })
    }
}

impl Credentials {
    /// From MLflow's environment variables: `MLFLOW_TRACKING_TOKEN`, else
    /// `MLFLOW_TRACKING_USERNAME` with `MLFLOW_TRACKING_PASSWORD`.
    pub fn from_env() -> Result<Credentials> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// As [`Credentials::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Credentials> {
        if let Some(t) = var("MLFLOW_TRACKING_TOKEN") {
            return Ok(Credentials::Bearer(t));
        }
        match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(user), Some(password)) => Ok(Credentials::Basic { user, password }),
            (Some(_), None) => Err(Error::Config(
                "MLFLOW_TRACKING_USERNAME is set but MLFLOW_TRACKING_PASSWORD is not".into(),
            )),
            (None, Some(_)) => Err(Error::Config(
                "MLFLOW_TRACKING_PASSWORD is set but MLFLOW_TRACKING_USERNAME is not".into(),
            )),
            (None, None) => Ok(Credentials::None),
        }
    }

    fn header(&self) -> Option<String> {
        match self {
            Credentials::None => None,
            Credentials::Bearer(t) => Some(format!("Bearer {t}")),
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
        }
    }
}

/// Timeouts and retries of every call.
#[derive(Clone, Debug)]
pub struct Patience {
    /// Connecting to the server.
    pub connect: Duration,
    /// A whole call (artifacts get [`Patience::upload`]).
    pub call: Duration,
    /// A whole artifact upload.
    pub upload: Duration,
    /// Tries per call (the first included) when the failure is transient.
    pub tries: u32,
    /// Wait before the second try; doubled for each further one.
    pub backoff: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            connect: Duration::from_secs(5),
            call: Duration::from_secs(20),
            upload: Duration::from_secs(300),
            tries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// One metric value at a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A run's lifecycle state as MLflow names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "RUNNING" => RunStatus::Running,
            "SCHEDULED" => RunStatus::Scheduled,
            "FINISHED" => RunStatus::Finished,
            "FAILED" => RunStatus::Failed,
            "KILLED" => RunStatus::Killed,
            _ => return None,
        })
    }
}

/// What this client reads of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: String,
    pub experiment_id: String,
    pub name: String,
    pub status: Option<RunStatus>,
    /// When it started (milliseconds since the Unix epoch).
    pub start_time: i64,
    /// Where its artifacts go (`mlflow-artifacts:/1/<run>/artifacts` when the
    /// server proxies them).
    pub artifact_uri: String,
    pub tags: BTreeMap<String, String>,
}

/// An experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    pub id: String,
    pub name: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
}

/// At most this many of each per `log-batch` (the server's limits).
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;
const BATCH_TAGS: usize = 100;
/// Largest answer read (a page of runs with their tags and metrics).
const ANSWER_MAX: u64 = 512 << 20;
/// Runs per page of a search (each comes with all its params, tags and latest
/// metrics).
const SEARCH_PAGE: usize = 200;
/// Longest param value the server keeps.
pub const PARAM_VALUE_MAX: usize = 6000;
/// Longest tag value sent (the server's limit is larger; a summary tag never needs more).
pub const TAG_VALUE_MAX: usize = 8000;

/// A connection to one tracking server.
#[derive(Clone)]
pub struct Tracking {
    /// The URI as shown to users: without credentials, without a trailing `/`.
    uri: String,
    agent: ureq::Agent,
    auth: Option<String>,
    patience: Patience,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracking({})", self.uri)
    }
}

/// Splits `user:password@` off an http(s) URI: (URI without it, credentials).
pub fn split_credentials(uri: &str) -> Result<(String, Option<(String, String)>)> {
    let uri = uri.trim().trim_end_matches('/');
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
        Error::Config(format!(
            "`{}` is not an http:// or https:// address (Sweep talks to a tracking server, not to a local folder or database)",
            redact(uri)
        ))
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(Error::Config(format!(
            "`{}`: only http:// and https:// tracking servers are supported (got {scheme}://)",
            redact(uri)
        )));
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if host.is_empty() {
                return Err(Error::Config(format!("`{}` names no host", redact(uri))));
            }
            Ok((
                format!("{scheme}://{host}{path}"),
                Some((percent_decode(user), percent_decode(password))),
            ))
        }
        None if authority.is_empty() => {
            Err(Error::Config(format!("`{}` names no host", redact(uri))))
        }
        None => Ok((uri.to_string(), None)),
    }
}

/// A URI as it may be shown: `user:password@` replaced by `***@`.
pub fn redact(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[host_end..]),
                None => uri.to_string(),
            }
        }
        None => uri.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            // (bytes, not a str slice: a `%` before a multi-byte character
            // must not panic, and a panic would print the password)
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A metric value as the server takes it: a number, or MLflow's names for the
/// values JSON has none for.
fn metric_value(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tracking {
    /// A client for the server at `uri` (`http://host:port[/prefix]` or
    /// `https://...`). `user:password@` in the URI counts as basic credentials
    /// (and beats `credentials`).
    pub fn new(uri: &str, credentials: Credentials, patience: Patience) -> Result<Tracking> {
        let (uri, inline) = split_credentials(uri)?;
        let credentials = match inline {
            Some((user, password)) => Credentials::Basic { user, password },
            None => credentials,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(patience.connect)
            .user_agent(concat!("sweep/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Tracking {
            uri,
            agent,
            auth: credentials.header(),
            patience,
        })
    }

    /// A client from MLflow's environment variables for credentials and
    /// certificates.
    pub fn from_env(uri: &str, patience: Patience) -> Result<Tracking> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if var("MLFLOW_TRACKING_INSECURE_TLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
        {
            return Err(Error::Config(
                "MLFLOW_TRACKING_INSECURE_TLS is set: Sweep does not turn certificate checks off; give the server's authority with MLFLOW_TRACKING_SERVER_CERT_PATH instead".into(),
            ));
        }
        if var("MLFLOW_TRACKING_CLIENT_CERT_PATH").is_some() {
            return Err(Error::Config(
                "MLFLOW_TRACKING_CLIENT_CERT_PATH is set: client certificates are not supported by Sweep (use a token or a user and password)".into(),
            ));
        }
        let t = Tracking::new(uri, Credentials::from_env()?, patience)?;
        match var("MLFLOW_TRACKING_SERVER_CERT_PATH") {
            Some(path) => t.with_ca_file(std::path::Path::new(&path)),
            None => Ok(t),
        }
    }

    /// Trusts the authorities in `path` (PEM) instead of the public ones.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Tracking> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let bad = |m: String| {
            Error::Config(format!(
                "MLFLOW_TRACKING_SERVER_CERT_PATH {}: {m}",
                path.display()
            ))
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it (a PEM file is expected)".into()));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.agent = ureq::AgentBuilder::new()
            .timeout_connect(self.patience.connect)
            .user_agent(concat!("sweep/", env!("CARGO_PKG_VERSION")))
            .tls_config(std::sync::Arc::new(config))
            .build();
        Ok(self)
    }

    /// Tries per call from now on (at least one).
    pub fn set_tries(&mut self, tries: u32) {
        self.patience.tries = tries.max(1);
    }

    /// The server's address as shown to users (no credentials).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The UI's table of an experiment's runs (MLflow 3's bare experiment
    /// page opens on its GenAI overview instead).
    pub fn experiment_url(&self, experiment_id: &str) -> String {
        format!(
            "{}/#/experiments/{experiment_id}/runs?workflowType=machine_learning",
            self.uri
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        method: &str,
        endpoint: &str,
        body: Option<&[u8]>,
        content_type: &str,
        timeout: Duration,
        retry: bool,
    ) -> Result<String> {
        let url = format!("{}{endpoint}", self.uri);
        let mut wait = self.patience.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = self
                .agent
                .request(method, &url)
                .timeout(timeout)
                .set("Accept", "application/json");
            if let Some(a) = &self.auth {
                req = req.set("Authorization", a);
            }
            let result = match body {
                Some(b) => req.set("Content-Type", content_type).send_bytes(b),
                None => req.call(),
            };
            let err = match result {
                Ok(resp) => {
                    // (ureq's into_string stops at 10 MiB: a page of runs with
                    // many metrics each is larger)
                    use std::io::Read;
                    let mut text = String::new();
                    return resp
                        .into_reader()
                        .take(ANSWER_MAX)
                        .read_to_string(&mut text)
                        .map(|_| text)
                        .map_err(|e| Error::Transport {
                            endpoint: endpoint.to_string(),
                            message: format!("reading the answer: {e}"),
                            transient: true,
                        });
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    let parsed: Option<Value> = serde_json::from_str(&text).ok();
                    let code = parsed
                        .as_ref()
                        .and_then(|v| v.get("error_code"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let message = parsed
                        .as_ref()
                        .and_then(|v| v.get("message"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| cut(text.trim(), 300));
                    Error::Http {
                        endpoint: endpoint.to_string(),
                        status,
                        code,
                        message: if status == 401 || status == 403 {
                            format!(
                                "{message} (credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
                            )
                        } else {
                            message
                        },
                    }
                }
                Err(ureq::Error::Transport(t)) => transport(endpoint, &t),
            };
            if !retry || !err.is_transient() || tries >= self.patience.tries {
                return Err(err);
            }
            std::thread::sleep(wait);
            wait *= 2;
        }
    }

    fn post(&self, endpoint: &str, body: &Value) -> Result<Value> {
        self.post_with(endpoint, body, true)
    }

    /// A POST; `retry` false for a call that creates something (a retry after
    /// a timeout could create it twice: the caller looks first instead).
    fn post_with(&self, endpoint: &str, body: &Value, retry: bool) -> Result<Value> {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        let text = self.send(
            "POST",
            endpoint,
            Some(&bytes),
            "application/json",
            self.patience.call,
            retry,
        )?;
        parse(endpoint, &text)
    }

    fn get(&self, endpoint: &str) -> Result<Value> {
        let text = self.send("GET", endpoint, None, "", self.patience.call, true)?;
        parse(endpoint, &text)
    }

    /// The experiment of that name (active or deleted), if any.
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        let endpoint = format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
            query_escape(name)
        );
        match self.get(&endpoint) {
            Ok(v) => Ok(Some(experiment(&endpoint, &v["experiment"])?)),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The active experiment of that name, created (with `tags`) when there is
    /// none. A deleted one of that name is an error (MLflow keeps its name).
    pub fn ensure_experiment(&self, name: &str, tags: &[(String, String)]) -> Result<String> {
        if let Some(e) = self.experiment_by_name(name)? {
            return active(e);
        }
        let endpoint = "/api/2.0/mlflow/experiments/create";
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": cut(v, TAG_VALUE_MAX)}))
            .collect();
        match self.post(endpoint, &json!({"name": name, "tags": tags})) {
            Ok(v) => v["experiment_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| answer(endpoint, "no experiment_id")),
            // another client created it meanwhile
            Err(e) if e.has_code("RESOURCE_ALREADY_EXISTS") => {
                match self.experiment_by_name(name)? {
                    Some(e) => active(e),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Every run of the experiment that `filter` (MLflow's search syntax)
    /// selects, page by page.
    pub fn search_runs(&self, experiment_id: &str, filter: &str) -> Result<Vec<Run>> {
        let endpoint = "/api/2.0/mlflow/runs/search";
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({
                "experiment_ids": [experiment_id],
                "filter": filter,
                "max_results": SEARCH_PAGE,
                "run_view_type": "ACTIVE_ONLY",
            });
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let v = self.post(endpoint, &body)?;
            if let Some(runs) = v["runs"].as_array() {
                for r in runs {
                    out.push(run(endpoint, r)?);
                }
            }
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// A new run (status RUNNING) with its tags. Tried once: after a timeout
    /// the run may exist, so the caller searches before creating again.
    pub fn create_run(
        &self,
        experiment_id: &str,
        name: &str,
        start_ms: i64,
        tags: &[(String, String)],
    ) -> Result<Run> {
        let endpoint = "/api/2.0/mlflow/runs/create";
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": cut(v, TAG_VALUE_MAX)}))
            .collect();
        let v = self.post_with(
            endpoint,
            &json!({
                "experiment_id": experiment_id,
                "run_name": name,
                "start_time": start_ms,
                "tags": tags,
            }),
            false,
        )?;
        run(endpoint, &v["run"])
    }

    /// Sets a run's status (and end time, for a finished one).
    pub fn update_run(&self, run_id: &str, status: RunStatus, end_ms: Option<i64>) -> Result<()> {
        let mut body = json!({"run_id": run_id, "status": status.as_str()});
        if let Some(t) = end_ms {
            body["end_time"] = json!(t);
        }
        self.post("/api/2.0/mlflow/runs/update", &body).map(|_| ())
    }

    /// Removes a tag from a run (a missing tag is not an error).
    pub fn delete_tag(&self, run_id: &str, key: &str) -> Result<()> {
        match self.post(
            "/api/2.0/mlflow/runs/delete-tag",
            &json!({"run_id": run_id, "key": key}),
        ) {
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Marks a run deleted (MLflow keeps it in its trash until garbage
    /// collection).
    pub fn delete_run(&self, run_id: &str) -> Result<()> {
        self.post("/api/2.0/mlflow/runs/delete", &json!({"run_id": run_id}))
            .map(|_| ())
    }

    /// Logs metrics, params and tags, in as many `log-batch` calls as the
    /// server's limits need, the tags (in their order) after every metric and
    /// param: a tag that marks what was sent lands only when all of it did.
    /// Params longer than the server keeps are cut.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        let endpoint = "/api/2.0/mlflow/runs/log-batch";
        let (mut m, mut p, mut t) = (metrics, params, tags);
        while !(m.is_empty() && p.is_empty() && t.is_empty()) {
            let np = p.len().min(BATCH_PARAMS);
            let nm = m.len().min(BATCH_METRICS - np);
            // tags only once every metric and param is in this batch
            let nt = if nm == m.len() && np == p.len() {
                t.len().min(BATCH_TAGS).min(BATCH_METRICS - np - nm)
            } else {
                0
            };
            let body = json!({
                "run_id": run_id,
                "metrics": m[..nm].iter().map(|x| json!({
                    "key": x.key, "value": metric_value(x.value), "step": x.step, "timestamp": x.timestamp,
                })).collect::<Vec<_>>(),
                "params": p[..np].iter().map(|(k, v)| json!({"key": k, "value": cut(v, PARAM_VALUE_MAX)})).collect::<Vec<_>>(),
                "tags": t[..nt].iter().map(|(k, v)| json!({"key": k, "value": cut(v, TAG_VALUE_MAX)})).collect::<Vec<_>>(),
            });
            self.post(endpoint, &body)?;
            (m, p, t) = (&m[nm..], &p[np..], &t[nt..]);
        }
        Ok(())
    }

    /// Uploads one artifact file of a run through the server's artifact proxy
    /// (`--artifacts-destination`; MLflow's default since 2.0). A server that
    /// hands out artifact locations it does not proxy is an error naming it.
    pub fn put_artifact(&self, run: &Run, path: &str, bytes: &[u8]) -> Result<()> {
        let rest = run
            .artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .map(|r| r.trim_start_matches('/'))
            .ok_or_else(|| Error::Config(format!(
                "the server stores run {}'s artifacts at `{}`, which it does not proxy: start it with --artifacts-destination (MLflow's default) to receive artifacts",
                run.id, run.artifact_uri
            )))?;
        let endpoint = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
            path_escape(rest),
            path_escape(path)
        );
        self.send(
            "PUT",
            &endpoint,
            Some(bytes),
            "application/octet-stream",
            self.patience.upload,
            true,
        )
        .map(|_| ())
    }

    /// The server answers `/health` (a quick check before a long sync).
    pub fn health(&self) -> Result<()> {
        self.send("GET", "/health", None, "", self.patience.call, true)
            .map(|_| ())
    }
}

/// A transport error with its causes (a refused certificate says so), and
/// whether another try could help.
fn transport(endpoint: &str, t: &ureq::Transport) -> Error {
    let mut message = match t.message() {
        Some(m) => format!("{}: {m}", t.kind()),
        None => t.kind().to_string(),
    };
    let mut tls = false;
    let mut cause = std::error::Error::source(t);
    while let Some(e) = cause {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if e.downcast_ref::<rustls::Error>().is_some()
            || inner.is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            tls = true;
        }
        let text = e.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = e.source();
    }
    Error::Transport {
        endpoint: endpoint.to_string(),
        message,
        transient: !tls,
    }
}

fn active(e: Experiment) -> Result<String> {
    if e.lifecycle_stage == "deleted" {
        return Err(Error::Config(format!(
            "experiment `{}` (id {}) is deleted in MLflow: restore it in the MLflow UI (or `mlflow experiments restore`), or log to another one with `[logging] mlflow_experiment`",
            e.name, e.id
        )));
    }
    Ok(e.id)
}

fn parse(endpoint: &str, text: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text).map_err(|e| answer(endpoint, &format!("not JSON ({e})")))
}

fn answer(endpoint: &str, message: &str) -> Error {
    Error::Answer {
        endpoint: endpoint.to_string(),
        message: message.to_string(),
    }
}

fn experiment(endpoint: &str, v: &Value) -> Result<Experiment> {
    Ok(Experiment {
        id: v["experiment_id"]
            .as_str()
            .ok_or_else(|| answer(endpoint, "an experiment without experiment_id"))?
            .to_string(),
        name: v["name"].as_str().unwrap_or_default().to_string(),
        lifecycle_stage: v["lifecycle_stage"]
            .as_str()
            .unwrap_or("active")
            .to_string(),
    })
}

fn run(endpoint: &str, v: &Value) -> Result<Run> {
    let info = &v["info"];
    let tags = v["data"]["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t["key"].as_str()?.to_string(),
                        t["value"].as_str().unwrap_or_default().to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        id: info["run_id"]
            .as_str()
            .ok_or_else(|| answer(endpoint, "a run without run_id"))?
            .to_string(),
        experiment_id: info["experiment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        name: info["run_name"].as_str().unwrap_or_default().to_string(),
        status: info["status"].as_str().and_then(RunStatus::parse),
        start_time: info["start_time"]
            .as_i64()
            .or_else(|| info["start_time"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0),
        artifact_uri: info["artifact_uri"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        tags,
    })
}

/// `s` for a URL query value.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path for a URL: each segment escaped, the `/` kept.
fn path_escape(s: &str) -> String {
    s.split('/').map(query_escape).collect::<Vec<_>>().join("/")
}

/// A string for an MLflow search filter: `'...'` with quotes escaped.
pub fn filter_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_uri_are_split_off_and_never_shown() {
        let (uri, c) =
            split_credentials("https://ann:s%40cret@mlflow.example.org:8443/x/").unwrap();
        assert_eq!(uri, "https://mlflow.example.org:8443/x");
        assert_eq!(c, Some(("ann".into(), "s@cret".into())));
        // a `%` before a multi-byte character (no panic that would print it)
        let (_, c) = split_credentials("http://ann:p%aé%zz@h").unwrap();
        assert_eq!(c, Some(("ann".into(), "p%aé%zz".into())));
        assert_eq!(redact("https://ann:secret@host/a"), "https://***@host/a");
        let t = Tracking::new(
            "http://ann:secret@127.0.0.1:1",
            Credentials::None,
            Patience::default(),
        )
        .unwrap();
        assert_eq!(t.uri(), "http://127.0.0.1:1");
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.auth.as_deref(), Some("Basic YW5uOnNlY3JldA=="));
        for bad in [
            "file:///tmp/mlruns",
            "sqlite:///m.db",
            "127.0.0.1:5000",
            "http://",
            "http://u:p@/x",
        ] {
            let e = split_credentials(bad).unwrap_err().to_string();
            assert!(e.contains("MLflow tracking URI"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_come_from_mlflows_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Credentials::from_vars(vars(&[("MLFLOW_TRACKING_TOKEN", "t0k")])).unwrap(),
            Credentials::Bearer("t0k".into())
        );
        assert_eq!(
            Credentials::from_vars(vars(&[
                ("MLFLOW_TRACKING_USERNAME", "ann"),
                ("MLFLOW_TRACKING_PASSWORD", "pw")
            ]))
            .unwrap()
            .header()
            .unwrap(),
            "Basic YW5uOnB3"
        );
        let e = Credentials::from_vars(vars(&[("MLFLOW_TRACKING_USERNAME", "ann")])).unwrap_err();
        assert!(e.to_string().contains("MLFLOW_TRACKING_PASSWORD"), "{e}");
        assert_eq!(
            Credentials::from_vars(vars(&[])).unwrap(),
            Credentials::None
        );
        assert_eq!(
            format!("{:?}", Credentials::Bearer("t0k".into())),
            "bearer token"
        );
    }

    #[test]
    fn values_json_cannot_hold_are_sent_by_mlflows_names() {
        assert_eq!(metric_value(f64::NAN), json!("NaN"));
        assert_eq!(metric_value(f64::INFINITY), json!("Infinity"));
        assert_eq!(metric_value(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(metric_value(0.25), json!(0.25));
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(filter_string("it's"), "'it\\'s'");
        assert_eq!(path_escape("1/ab c/artifacts"), "1/ab%20c/artifacts");
    }

    #[test]
    fn an_unreachable_server_fails_after_bounded_tries() {
        // a port nothing listens on (bound, then closed)
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Tracking::new(
            &format!("http://127.0.0.1:{port}"),
            Credentials::None,
            Patience {
                tries: 3,
                backoff: Duration::from_millis(20),
                ..Patience::default()
            },
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        let e = t.experiment_by_name("x").unwrap_err();
        assert!(e.is_transient(), "{e}");
        // three tries, two waits (20 + 40 ms): bounded
        assert!(
            t0.elapsed() >= Duration::from_millis(60),
            "{:?}",
            t0.elapsed()
        );
        assert!(e.to_string().contains("experiments/get-by-name"), "{e}");
    }

    /// A server on a local socket that answers each request with the next of
    /// `answers` (status, body) and hands back what it was sent.
    fn canned(answers: Vec<(u16, &'static str)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).unwrap();
                seen.push(format!("{head}{}", String::from_utf8_lossy(&b)));
                let mut s = s;
                write!(s, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
            }
            seen
        });
        (uri, h)
    }

    #[test]
    fn a_failing_server_is_retried_and_a_refusal_is_not() {
        let (uri, h) = canned(vec![
            (503, "busy"),
            (
                500,
                r#"{"error_code":"INTERNAL_ERROR","message":"db locked"}"#,
            ),
            (
                200,
                r#"{"experiment":{"experiment_id":"7","name":"e","lifecycle_stage":"active"}}"#,
            ),
            (
                400,
                r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"Changing param values is not allowed"}"#,
            ),
        ]);
        let t = Tracking::new(
            &uri,
            Credentials::Bearer("t0k".into()),
            Patience {
                backoff: Duration::from_millis(10),
                ..Patience::default()
            },
        )
        .unwrap();
        assert_eq!(t.experiment_by_name("e").unwrap().unwrap().id, "7");
        let e = t
            .log_batch("r1", &[], &[("a".into(), "1".into())], &[])
            .unwrap_err();
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .contains("HTTP 400 INVALID_PARAMETER_VALUE: Changing param values"),
            "{e}"
        );
        let seen = h.join().unwrap();
        // three tries of the create (503, 500, 200), one of the batch (400)
        assert_eq!(seen.len(), 4);
        for s in &seen {
            assert!(
                s.contains("Authorization: Bearer t0k") || s.contains("authorization: Bearer t0k"),
                "{s}"
            );
        }
        assert!(
            seen[0].starts_with("GET /api/2.0/mlflow/experiments/get-by-name?experiment_name=e "),
            "{}",
            seen[0]
        );
        assert!(
            seen[3]
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            seen[3]
        );
        assert!(
            seen[3].contains(r#""params":[{"key":"a","value":"1"}]"#),
            "{}",
            seen[3]
        );
    }

    #[test]
    fn a_batch_over_the_servers_limits_is_split() {
        let (uri, h) = canned(vec![(200, "{}"), (200, "{}")]);
        let t = Tracking::new(&uri, Credentials::None, Patience::default()).unwrap();
        let metrics: Vec<Metric> = (0..1500)
            .map(|i| Metric {
                key: "m".into(),
                value: if i == 0 { f64::NAN } else { i as f64 },
                step: i,
                timestamp: 1,
            })
            .collect();
        let params: Vec<(String, String)> = (0..150)
            .map(|i| (format!("p{i}"), "x".repeat(7000)))
            .collect();
        let tags = vec![("sweep.sent_epochs".to_string(), "150".to_string())];
        t.log_batch("r", &metrics, &params, &tags).unwrap();
        let seen = h.join().unwrap();
        let bodies: Vec<Value> = seen
            .iter()
            .map(|s| serde_json::from_str(s.split("\r\n\r\n").nth(1).unwrap()).unwrap())
            .collect();
        let count = |k: &str| {
            bodies
                .iter()
                .map(|b| b[k].as_array().unwrap().len())
                .collect::<Vec<_>>()
        };
        assert_eq!(count("params"), vec![100, 50]);
        assert_eq!(count("metrics"), vec![900, 600]);
        // the marker only with the last of the data
        assert_eq!(count("tags"), vec![0, 1]);
        assert_eq!(bodies[0]["metrics"][0]["value"], json!("NaN"));
        assert_eq!(
            bodies[0]["params"][0]["value"].as_str().unwrap().len(),
            PARAM_VALUE_MAX
        );
    }
}
