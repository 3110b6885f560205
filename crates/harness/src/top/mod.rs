//! `flagstream top`: a live view of a running flagstream from its admin API, like `vector top`.
//!
//! Every `--interval` it reads `/v1/destinations` and `/metrics` ([`model::Reading`]) and
//! shows ingest rate, WAL use, and per destination its delivery rate, lag, retries, dead
//! letters and last error ([`model::View`]). `--once` prints one plain-text screen (rates over
//! one interval) for scripts; otherwise a ratatui screen refreshes until `q`/`Esc`/Ctrl-C.
//! It is read-only: it never changes the server's state.

pub mod model;
pub mod render;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::client::{self, ClientError};
use model::{DestinationsReading, Reading, View};

/// What `flagstream top` was asked to do.
#[derive(Debug, Clone)]
pub struct TopOptions {
    pub admin: SocketAddr,
    /// TLS to the admin listener (`--admin-tls-ca`), when it has `--admin-tls-cert`.
    pub tls: Option<client::Tls>,
    /// The admin bearer token, when the server requires one.
    pub token: Option<String>,
    pub interval: Duration,
    pub once: bool,
}

/// Why `top` could not show anything.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Request(#[from] ClientError),
    #[error("GET {path} answered {status}: pass the admin token with --admin-token (or FLAGSTREAM_ADMIN_TOKEN)")]
    Unauthorized { path: &'static str, status: u16 },
    #[error("GET {path} answered {status}: {body}")]
    Status {
        path: &'static str,
        status: u16,
        body: String,
    },
    #[error("GET {path}: unexpected answer: {source}")]
    Json {
        path: &'static str,
        source: serde_json::Error,
    },
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

async fn get(options: &TopOptions, path: &'static str) -> Result<Bytes, TopError> {
    let bearer = options
        .token
        .as_ref()
        .map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    let endpoint = client::Endpoint {
        addr: options.admin,
        tls: options.tls.clone(),
    };
    let response =
        client::request_to(&endpoint, http::Method::GET, path, &headers, Bytes::new()).await?;
    match response.status {
        200 => Ok(response.body),
        401 | 403 => Err(TopError::Unauthorized {
            path,
            status: response.status,
        }),
        status => Err(TopError::Status {
            path,
            status,
            body: response.text(),
        }),
    }
}

/// One poll of the admin API.
pub async fn read(options: &TopOptions) -> Result<Reading, TopError> {
    let status = get(options, "/v1/destinations").await?;
    let status: DestinationsReading =
        serde_json::from_slice(&status).map_err(|source| TopError::Json {
            path: "/v1/destinations",
            source,
        })?;
    let metrics = get(options, "/metrics").await?;
    let metrics = String::from_utf8_lossy(&metrics);
    let total = |family| model::sum_by(&metrics, family, None).values().sum();
    Ok(Reading {
        at: Instant::now(),
        status,
        ingest_events: total("flagstream_ingest_events_total"),
        ingest_rejected: total("flagstream_ingest_rejected_total"),
        retries: model::sum_by(
            &metrics,
            "flagstream_dest_retries_total",
            Some("destination"),
        ),
    })
}

/// Two readings one interval apart, as plain text.
pub async fn once(options: &TopOptions) -> Result<String, TopError> {
    let first = read(options).await?;
    tokio::time::sleep(options.interval).await;
    let second = read(options).await?;
    Ok(render::plain(
        &View::new(Some(&first), &second),
        &options.admin.to_string(),
    ))
}

/// The live screen, until the user quits.
pub async fn interactive(options: &TopOptions) -> Result<(), TopError> {
    let mut previous = read(options).await?;
    let mut view = View::new(None, &previous);
    let mut terminal = ratatui::init();
    let source = options.admin.to_string();
    let result = loop {
        if let Err(err) = terminal.draw(|frame| render::draw(frame, &view, &source)) {
            break Err(err.into());
        }
        match quit_requested(options.interval) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(err) => break Err(err.into()),
        }
        match read(options).await {
            Ok(current) => {
                view = View::new(Some(&previous), &current);
                previous = current;
            }
            Err(err) => break Err(err),
        }
    };
    ratatui::restore();
    result
}

/// Wait up to `interval` for a key; true when it asks to quit.
fn quit_requested(interval: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + interval;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if !event::poll(left)? {
            break;
        }
        if let Event::Key(key) = event::read()? {
            let ctrl_c =
                key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
            if key.kind == KeyEventKind::Press && quit {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
