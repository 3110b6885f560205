//! Snowflake's driver protocol (what the JDBC, ODBC, Go and Python drivers speak), over the
//! shared HTTP layer: `POST /session/v1/login-request` → session token; `POST
//! /queries/v1/query-request?requestId=<uuid>` with `Authorization: Snowflake
//! Token="<token>"` and `{"sqlText", "bindings", "sequenceId"}` → a result as a JSON rowset
//! (DML counts) or base64 Arrow IPC (queries; read with arrow-ipc).
//!
//! Bindings are positional (`?`), every value sent as `TEXT` (or null) and converted in the
//! statement (`PARSE_JSON(?)`, `?::TIMESTAMP_TZ`), so one binding type covers every column.
//!
//! ## Classification
//!
//! | answer | outcome |
//! |---|---|
//! | HTTP 429, 408, 5xx, transport errors | retriable (the HTTP layer) |
//! | `success: false`, code `390112`/`390114` (session or token expired), HTTP 401 | log in again, once |
//! | login refused (`390100` wrong credentials, `390144` JWT invalid, …) | permanent |
//! | `000625`, `000630`, `000604` (statement cancelled / timed out), `000606` (no warehouse running) | retriable |
//! | any other error code (SQL compilation `001003`, object missing `002003`, …) | permanent |

use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::{Array, LargeStringArray, StringArray, StringViewArray};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::auth::Login;
use super::config::SnowflakeTarget;
use crate::dest::http::{quote_body, HttpClient};
use crate::dest::{Failure, FailureClass};

/// Error codes after which a new session is worth one more try.
const SESSION_EXPIRED: &[&str] = &["390112", "390114", "390104", "390103"];
/// Error codes that are worth retrying later.
const TRANSIENT: &[&str] = &["000625", "000630", "000604", "000606"];

/// One connection's session: where to log in, how, and the current token.
#[derive(Debug)]
pub struct Session {
    pub http: HttpClient,
    pub endpoint: String,
    pub target: SnowflakeTarget,
    pub user: String,
    pub login: Login,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    token: Mutex<Option<String>>,
}

/// A statement's result rows, every cell as text (or null).
pub type Rows = Vec<Vec<Option<String>>>;

impl Session {
    pub fn new(
        http: HttpClient,
        endpoint: String,
        target: SnowflakeTarget,
        user: String,
        login: Login,
    ) -> Session {
        Session {
            http,
            endpoint,
            target,
            user,
            login,
            warehouse: None,
            role: None,
            token: Mutex::new(None),
        }
    }

    /// Run `sql` with positional text `bindings`; logs in first (and once more when the
    /// session expired).
    pub async fn query(&self, sql: &str, bindings: &[Option<String>]) -> Result<Rows, Failure> {
        let mut body = json!({"sqlText": sql, "sequenceId": 1, "asyncExec": false});
        if !bindings.is_empty() {
            body["bindings"] = bindings_json(bindings);
        }
        let body = Bytes::from(body.to_string());
        for attempt in 0..2 {
            let token = self.token().await?;
            match self.run(&token, body.clone()).await? {
                Ran::Rows(rows) => return Ok(rows),
                Ran::SessionExpired if attempt == 0 => *self.token.lock().await = None,
                Ran::SessionExpired => break,
            }
        }
        Err(Failure::retriable(format!(
            "{}: the session expired again right after logging in",
            self.target
        )))
    }

    async fn token(&self) -> Result<String, Failure> {
        let mut token = self.token.lock().await;
        if let Some(token) = token.as_ref() {
            return Ok(token.clone());
        }
        let fresh = self.log_in().await?;
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    async fn log_in(&self) -> Result<String, Failure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let account = self.target.account_name();
        let body = self
            .login
            .request_data(&account, &self.user, now)
            .map_err(Failure::permanent)?;
        let mut url = format!(
            "{}/session/v1/login-request?databaseName={}&schemaName={}",
            self.endpoint,
            encode(&self.target.database),
            encode(&self.target.schema)
        );
        for (key, value) in [("warehouse", &self.warehouse), ("roleName", &self.role)] {
            if let Some(value) = value {
                url.push_str(&format!("&{key}={}", encode(value)));
            }
        }
        let (_, answer) = self.post(&url, None, Bytes::from(body.to_string())).await?;
        match answer["data"]["token"].as_str() {
            Some(token) if answer["success"] == true => Ok(token.to_string()),
            _ => Err(Failure::permanent(format!(
                "{}: login as `{}` refused: {}",
                self.target,
                self.user,
                error_text(&answer)
            ))),
        }
    }

    async fn run(&self, token: &str, body: Bytes) -> Result<Ran, Failure> {
        let url = format!(
            "{}/queries/v1/query-request?requestId={}",
            self.endpoint,
            request_id()
        );
        let (status, answer) = self.post(&url, Some(token), body).await?;
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Ran::SessionExpired);
        }
        if answer["success"] == true {
            return rows_of(&answer["data"]).map(Ran::Rows).map_err(|reason| {
                Failure::permanent(format!("{}: unreadable result: {reason}", self.target))
            });
        }
        let code = answer["code"].as_str().unwrap_or_default();
        if SESSION_EXPIRED.contains(&code) {
            return Ok(Ran::SessionExpired);
        }
        let class = if TRANSIENT.contains(&code) {
            FailureClass::Retriable
        } else {
            FailureClass::Permanent
        };
        Err(Failure::new(
            class,
            format!("{}: {}", self.target, error_text(&answer)),
        ))
    }

    /// POST JSON; the status and the answer's JSON for 2xx and 4xx answers (Snowflake's
    /// errors are JSON), a failure for retriable statuses and bodies that are not JSON.
    async fn post(
        &self,
        url: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Value), Failure> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/snowflake"));
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Snowflake Token=\"{token}\""))
                .map_err(|_| Failure::permanent("the session token is not a header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let response = self
            .http
            .exchange(Method::POST, url, headers, body, &self.target)
            .await?;
        let class = crate::dest::http::classify_status_code(response.status.as_u16());
        match serde_json::from_slice::<Value>(&response.body) {
            Ok(answer) if response.status.is_success() || class == FailureClass::Permanent => {
                Ok((response.status, answer))
            }
            _ => Err(Failure::new(
                class,
                format!(
                    "{}: HTTP {}: {}",
                    self.target,
                    response.status.as_u16(),
                    quote_body(&response.body)
                ),
            )),
        }
    }
}

enum Ran {
    Rows(Rows),
    SessionExpired,
}

/// `{"1": {"type": "TEXT", "value": …}, …}`.
pub fn bindings_json(bindings: &[Option<String>]) -> Value {
    let map: serde_json::Map<String, Value> = bindings
        .iter()
        .enumerate()
        .map(|(i, value)| ((i + 1).to_string(), json!({"type": "TEXT", "value": value})))
        .collect();
    Value::Object(map)
}

/// `code: message` of a failed answer.
fn error_text(answer: &Value) -> String {
    format!(
        "{} {}",
        answer["code"].as_str().unwrap_or("(no code)"),
        answer["message"].as_str().unwrap_or("(no message)")
    )
}

/// A random UUID (v4), as the drivers send in `requestId`.
fn request_id() -> String {
    let bits = (rand::random::<u128>() & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The rows of a successful answer's `data`: a JSON `rowset`, or base64 Arrow IPC in
/// `rowsetBase64` (text columns only: our queries cast what they read to `VARCHAR`).
pub fn rows_of(data: &Value) -> Result<Rows, String> {
    if let Some(rowset) = data["rowset"].as_array() {
        return Ok(rowset
            .iter()
            .map(|row| {
                row.as_array()
                    .map(|cells| {
                        cells
                            .iter()
                            .map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect());
    }
    let encoded = data["rowsetBase64"].as_str().unwrap_or_default();
    if encoded.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = STANDARD.decode(encoded).map_err(|err| err.to_string())?;
    arrow_rows(&bytes)
}

fn arrow_rows(bytes: &[u8]) -> Result<Rows, String> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|err| err.to_string())?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|err| err.to_string())?;
        let columns: Vec<Vec<Option<String>>> = batch
            .columns()
            .iter()
            .map(|column| text_column(column.as_ref()))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(columns.iter().map(|column| column[row].clone()).collect());
        }
    }
    Ok(rows)
}

fn text_column(column: &dyn Array) -> Result<Vec<Option<String>>, String> {
    let any = column.as_any();
    let values: Vec<Option<String>> = if let Some(strings) = any.downcast_ref::<StringArray>() {
        strings.iter().map(|v| v.map(str::to_string)).collect()
    } else if let Some(strings) = any.downcast_ref::<LargeStringArray>() {
        strings.iter().map(|v| v.map(str::to_string)).collect()
    } else if let Some(strings) = any.downcast_ref::<StringViewArray>() {
        strings.iter().map(|v| v.map(str::to_string)).collect()
    } else {
        return Err(format!("a {} column (expected text)", column.data_type()));
    };
    Ok(values)
}
