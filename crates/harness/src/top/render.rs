//! Drawing a [`View`]: plain text for scripts (`--once`) and a ratatui screen.

use std::fmt::Write as _;

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Row, Table};
use ratatui::Frame;

use super::model::{DestinationRow, View};

const HEADERS: [&str; 10] = [
    "DESTINATION",
    "KIND",
    "STATE",
    "EVENTS/S",
    "DELIVERED",
    "LAG",
    "LAG AGE",
    "RETRIES/S",
    "DEAD LETTERS",
    "LAST ERROR",
];

fn cells(row: &DestinationRow) -> [String; 10] {
    [
        row.name.clone(),
        row.kind.clone(),
        if row.retry_attempts > 0 {
            format!("{} (attempt {})", row.state, row.retry_attempts)
        } else {
            row.state.clone()
        },
        format!("{:.0}", row.events_per_second),
        row.delivered_events.to_string(),
        row.lag_records.to_string(),
        format!("{:.1}s", row.lag_seconds),
        format!("{:.1}", row.retries_per_second),
        row.dead_lettered_events.to_string(),
        row.last_error.clone().unwrap_or_else(|| "-".to_string()),
    ]
}

fn summary(view: &View) -> String {
    format!(
        "ingest {:.0} events/s (total {:.0}) · refused {:.1}/s · WAL {} of {} ({:.1}%) · corrupt records {}",
        view.ingest_events_per_second,
        view.ingest_events_total,
        view.ingest_rejected_per_second,
        human_bytes(view.wal_used_bytes),
        human_bytes(view.wal_capacity_bytes),
        wal_ratio(view) * 100.0,
        view.wal_corrupt_records,
    )
}

fn wal_ratio(view: &View) -> f64 {
    if view.wal_capacity_bytes == 0 {
        0.0
    } else {
        (view.wal_used_bytes as f64 / view.wal_capacity_bytes as f64).clamp(0.0, 1.0)
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The view as aligned plain text (the `--once` output).
pub fn plain(view: &View, source: &str) -> String {
    let mut rows: Vec<[String; 10]> = vec![HEADERS.map(str::to_string)];
    rows.extend(view.destinations.iter().map(cells));
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("flagstream top: {source}\n{}\n", summary(view));
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// The view on a terminal frame.
pub fn draw(frame: &mut Frame, view: &View, source: &str) {
    let [title, gauge, table, help] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(3),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let block = |name: &str| {
        Block::default()
            .borders(Borders::ALL)
            .title(name.to_string())
    };
    frame.render_widget(
        Paragraph::new(summary(view)).block(block(&format!("flagstream top: {source}"))),
        title,
    );
    let ratio = wal_ratio(view);
    let color = match ratio {
        r if r >= 0.9 => Color::Red,
        r if r >= 0.8 => Color::Yellow,
        _ => Color::Green,
    };
    frame.render_widget(
        Gauge::default()
            .block(block("write-ahead log budget"))
            .gauge_style(Style::default().fg(color))
            .ratio(ratio),
        gauge,
    );
    let header = Row::new(HEADERS).style(Style::default().add_modifier(Modifier::BOLD));
    let rows = view.destinations.iter().map(|row| {
        let style = match row.state.as_str() {
            "failed" => Style::default().fg(Color::Red),
            "backing_off" => Style::default().fg(Color::Yellow),
            "paused" => Style::default().fg(Color::DarkGray),
            _ => Style::default(),
        };
        Row::new(cells(row)).style(style)
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(22),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(13),
        Constraint::Min(10),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(block("destinations")),
        table,
    );
    frame.render_widget(Line::from("q / Esc: quit"), help);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_aligns_columns_and_shows_every_destination() {
        let view = View {
            ingest_events_per_second: 1500.0,
            ingest_rejected_per_second: 0.0,
            ingest_events_total: 3000.0,
            wal_used_bytes: 3 * 1024 * 1024,
            wal_capacity_bytes: 12 * 1024 * 1024,
            wal_corrupt_records: 0,
            destinations: vec![DestinationRow {
                name: "warehouse".into(),
                kind: "postgres".into(),
                state: "backing_off".into(),
                events_per_second: 0.0,
                delivered_events: 10,
                lag_records: 4,
                lag_seconds: 2.5,
                retries_per_second: 0.5,
                retry_attempts: 3,
                dead_lettered_events: 1,
                last_error: Some("connection refused".into()),
            }],
        };
        let text = plain(&view, "127.0.0.1:8031");
        assert!(text.contains("ingest 1500 events/s (total 3000)"), "{text}");
        assert!(text.contains("WAL 3.0 MiB of 12.0 MiB (25.0%)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("DESTINATION"), "{text}");
        assert!(lines[3].starts_with("warehouse"), "{text}");
        assert!(lines[3].contains("backing_off (attempt 3)"), "{text}");
        assert!(lines[3].ends_with("connection refused"), "{text}");
        let column = lines[2].find("KIND").unwrap();
        assert_eq!(&lines[3][column..column + 8], "postgres");
    }
}
