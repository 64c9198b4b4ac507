//! `rch top`: the live view of the fleet on a terminal — a header (open
//! circuits or all healthy, daemon uptime), the workers with their circuits,
//! running and queued builds, and the event stream.
//!
//! [`View`] is the state on screen and [`draw`] renders it (pure, so it is
//! checked on a test backend at 80×24); [`Screen`] owns the terminal and
//! gives it back on every exit path, a panic included; [`keys`] turns key
//! presses into [`Action`]s. The loop that feeds them lives in `cli::top`.

use super::{events, fleet, time as t};
use crate::breaker::State;
use crate::state::events::EventRecord;
use crate::state::report::{FleetReport, WorkerReport};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::Frame;
use std::collections::VecDeque;
use std::time::Duration;
use time::OffsetDateTime;

/// Events kept on screen (the panel shows the newest that fit).
const EVENTS_KEPT: usize = 200;
/// Worker rows shown before the panel stops growing.
const MAX_WORKER_ROWS: usize = 8;
/// Build rows shown before the panel stops growing.
const MAX_BUILD_ROWS: usize = 5;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    /// Reset the selected worker's circuit.
    Reset,
    /// Probe the selected worker now.
    Probe,
    /// The terminal changed size: draw again.
    Redraw,
}

/// Everything on screen.
#[derive(Debug, Default)]
pub struct View {
    pub report: FleetReport,
    /// Oldest first.
    pub events: VecDeque<EventRecord>,
    pub selected: usize,
    /// The answer to the last action (`w1: circuit reset`), or a connection problem.
    pub message: Option<String>,
}

impl View {
    pub fn set_report(&mut self, report: FleetReport) {
        self.report = report;
        self.selected = self
            .selected
            .min(self.report.workers.len().saturating_sub(1));
    }

    pub fn push_event(&mut self, event: EventRecord) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    pub fn select(&mut self, action: Action) {
        let last = self.report.workers.len().saturating_sub(1);
        self.selected = match action {
            Action::Up => self.selected.saturating_sub(1),
            Action::Down => (self.selected + 1).min(last),
            _ => self.selected,
        };
    }

    /// The id of the selected worker.
    pub fn selected_worker(&self) -> Option<&str> {
        self.report
            .workers
            .get(self.selected)
            .map(|w| w.id.as_str())
    }
}

/// The whole screen.
pub fn draw(frame: &mut Frame, view: &View, now: OffsetDateTime) {
    let workers = view.report.workers.len().clamp(1, MAX_WORKER_ROWS) as u16;
    let builds =
        (view.report.leases.len() + view.report.queue.len()).clamp(1, MAX_BUILD_ROWS) as u16;
    let [header, workers_area, builds_area, events_area, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(workers + 3),
        Constraint::Length(builds + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_lines(view)), header);
    draw_workers(frame, workers_area, view);
    draw_builds(frame, builds_area, &view.report, now);
    draw_events(frame, events_area, view);
    frame.render_widget(Paragraph::new(footer_line(view)), footer);
}

/// `⚠ 1 circuit open (w1)` or `✓ all healthy`, the daemon, and the load.
fn header_lines(view: &View) -> Vec<Line<'static>> {
    let r = &view.report;
    let open: Vec<&str> = r
        .workers
        .iter()
        .filter(|w| w.circuit.state == State::Open)
        .map(|w| w.id.as_str())
        .collect();
    let health = match open.len() {
        0 if r.workers.is_empty() => Span::raw("no workers configured: builds run locally"),
        0 => Span::styled("✓ all healthy", Style::new().fg(Color::Green)),
        n => Span::styled(
            format!(
                "⚠ {n} circuit{} open ({})",
                if n == 1 { "" } else { "s" },
                open.join(", ")
            ),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let daemon = match (r.daemon.running, r.daemon.uptime_secs) {
        (true, Some(up)) => format!("daemon up {} · v{}", t::duration(up), r.daemon.version),
        (true, None) => format!("daemon v{}", r.daemon.version),
        (false, _) => "daemon not running".to_string(),
    };
    let first = Line::from(vec![
        Span::styled("rch top  ", Style::new().add_modifier(Modifier::BOLD)),
        health,
        Span::raw(format!("  ·  {daemon}")),
    ]);
    let second = Line::from(format!(
        "{} · running {} · queued {}",
        fleet::summary_line(&r.workers),
        r.leases.len(),
        r.queue.len()
    ));
    vec![first, second]
}

/// The glyph and colour of a circuit state.
fn state_style(state: State) -> (&'static str, Color) {
    match state {
        State::Open => ("⊘", Color::Red),
        State::HalfOpen => ("◐", Color::Yellow),
        State::Closed => ("●", Color::Green),
    }
}

/// `⊘ open, retry in 12s`, `◐ half_open`, `● closed (draining)`.
fn state_text(w: &WorkerReport) -> String {
    let (glyph, _) = state_style(w.circuit.state);
    let mut text = format!("{glyph} {}", w.circuit.state);
    if w.circuit.state == State::Open {
        match w.circuit.retry_in_secs {
            Some(0) => text.push_str(", retry due"),
            Some(s) => text.push_str(&format!(", retry in {}", t::duration(s))),
            None => {}
        }
    }
    if !w.enabled {
        text.push_str(" (disabled)");
    } else if w.draining {
        text.push_str(" (draining)");
    }
    text
}

fn draw_workers(frame: &mut Frame, area: Rect, view: &View) {
    let rows: Vec<Row> = view
        .report
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let (_, color) = state_style(w.circuit.state);
            let marker = if i == view.selected { "▶" } else { " " };
            let rate = w
                .circuit
                .error_rate
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "-".into());
            Row::new(vec![
                Cell::from(format!("{marker}{}", w.id)),
                Cell::from(state_text(w)).style(Style::new().fg(color)),
                Cell::from(format!("{}/{}", w.used, w.slots)),
                Cell::from(rate),
                Cell::from(last_error(w)),
            ])
        })
        .collect();
    let header = Row::new(["worker", "circuit", "slots", "err", "last error"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(24),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .block(Block::new().borders(Borders::ALL).title(" workers "));
    let mut state = ratatui::widgets::TableState::new().with_selected(Some(view.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// The last error without the `w1: ` its row already shows.
fn last_error(w: &WorkerReport) -> String {
    match &w.circuit.last_error {
        Some(e) => e
            .strip_prefix(&format!("{}: ", w.id))
            .unwrap_or(e)
            .to_string(),
        None => "-".into(),
    }
}

fn draw_builds(frame: &mut Frame, area: Rect, r: &FleetReport, now: OffsetDateTime) {
    let running = r.leases.iter().map(|l| {
        Row::new(vec![
            l.worker.clone(),
            project_name(&l.project),
            l.command.clone(),
            l.phase.clone().unwrap_or_else(|| "running".into()),
            elapsed(&l.since, now),
        ])
    });
    let queued = r.queue.iter().map(|q| {
        Row::new(vec![
            format!("queue #{}", q.position),
            project_name(&q.project),
            q.command.clone(),
            "waiting".into(),
            elapsed(&q.since, now),
        ])
    });
    let mut rows: Vec<Row> = running.chain(queued).collect();
    if rows.is_empty() {
        rows.push(Row::new(vec!["-", "-", "no builds running or queued"]));
    }
    let header = Row::new(["worker", "project", "command", "phase", "elapsed"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(14),
            Constraint::Fill(1),
            Constraint::Length(9),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(Block::new().borders(Borders::ALL).title(" builds "));
    frame.render_widget(table, area);
}

/// The newest events that fit, oldest at the top; times as `12:03:04`.
fn draw_events(frame: &mut Frame, area: Rect, view: &View) {
    let fit = area.height.saturating_sub(2) as usize;
    let skip = view.events.len().saturating_sub(fit);
    let mut lines: Vec<Line> = view
        .events
        .iter()
        .skip(skip)
        .map(|e| Line::from(event_text(e)))
        .collect();
    if lines.is_empty() {
        lines.push(Line::from("no events yet"));
    }
    let block = Block::new().borders(Borders::ALL).title(" events ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// One event as its `rch events` line, the date dropped for width.
pub fn event_text(e: &EventRecord) -> String {
    let line = events::event_line(e);
    let at = e.at.as_str();
    let rest = line.get(at.len()..).unwrap_or(&line).trim_start();
    let clock = at.get(11..19).unwrap_or(at);
    format!("{clock} {rest}")
}

fn footer_line(view: &View) -> Line<'static> {
    let keys = Span::styled(
        "q quit · ↑↓ select · r reset · p probe",
        Style::new().add_modifier(Modifier::DIM),
    );
    match &view.message {
        Some(m) => Line::from(vec![keys, Span::raw(format!("  │ {m}"))]),
        None => Line::from(keys),
    }
}

fn elapsed(stamp: &str, now: OffsetDateTime) -> String {
    match t::parse(stamp) {
        Some(at) => t::duration((now - at).whole_seconds().max(0) as u64),
        None => "-".into(),
    }
}

fn project_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// A key press as an action; `None` for keys `rch top` does not use.
pub fn action_for(key: KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') | KeyCode::Char('d') if ctrl => Some(Action::Quit),
        KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
        KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
        KeyCode::Char('r') => Some(Action::Reset),
        KeyCode::Char('p') => Some(Action::Probe),
        _ => None,
    }
}

/// Read keys on a thread of their own and send their actions; the thread
/// ends when the receiver is gone.
pub fn keys() -> tokio::sync::mpsc::Receiver<Action> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || loop {
        if tx.is_closed() {
            return;
        }
        // Poll with a timeout so a closed receiver is noticed.
        match event::poll(Duration::from_millis(200)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let action = match event::read() {
            Ok(TermEvent::Key(key)) if key.kind != event::KeyEventKind::Release => action_for(key),
            Ok(TermEvent::Resize(..)) => Some(Action::Redraw),
            Ok(_) => None,
            Err(_) => Some(Action::Quit),
        };
        if let Some(a) = action {
            if tx.blocking_send(a).is_err() {
                return;
            }
        }
    });
    rx
}

/// The terminal in raw mode on the alternate screen, given back as it was
/// when dropped — and on a panic, before the panic message prints.
pub struct Screen {
    pub terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>,
}

impl Screen {
    pub fn open() -> anyhow::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, terminal::EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e.into());
        }
        let backend = ratatui::backend::CrosstermBackend::new(out);
        match ratatui::Terminal::new(backend) {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e.into())
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leave raw mode and the alternate screen; harmless when already done.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::report::{CircuitReport, DaemonInfo, LeaseReport};
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn worker(id: &str, state: &str, retry: Option<u64>, error: Option<&str>) -> WorkerReport {
        WorkerReport {
            id: id.into(),
            host: format!("{id}.example"),
            slots: 4,
            used: 1,
            priority: 100,
            enabled: true,
            draining: false,
            circuit: CircuitReport {
                state: serde_json::from_value(json!(state)).unwrap(),
                failures: 3,
                since: None,
                retry_in_secs: retry,
                last_error: error.map(String::from),
                error_rate: Some(0.5),
                epoch: 1,
                admits: state != "open",
            },
            last_build: None,
            latency_ms: None,
            capabilities: None,
        }
    }

    fn screen(view: &View) -> String {
        let mut terminal = ratatui::Terminal::new(TestBackend::new(80, 24)).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_714_564_830).unwrap();
        terminal.draw(|f| draw(f, view, now)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn an_open_circuit_fills_header_panel_builds_and_events_at_80x24() {
        let mut view = View::default();
        view.set_report(FleetReport {
            daemon: DaemonInfo {
                running: true,
                version: "0.1.0".into(),
                pid: Some(1),
                uptime_secs: Some(7_500),
                config_error: None,
            },
            workers: vec![
                worker(
                    "w1",
                    "open",
                    Some(12),
                    Some("w1: ssh connect refused (w1:22)"),
                ),
                worker("w2", "closed", None, None),
            ],
            leases: vec![LeaseReport {
                worker: "w2".into(),
                project: "/home/u/app".into(),
                command: "cargo build --release".into(),
                since: "2024-05-01T12:00:00Z".into(),
                phase: Some("run".into()),
            }],
            ..Default::default()
        });
        view.push_event(
            serde_json::from_value(
                json!({"event": "circuit.opened", "at": "2024-05-01T11:59:00Z",
            "worker": "w1", "failure_count": 3, "threshold": 3, "cooldown_seconds": 30,
            "reason": "w1: ssh connect refused (w1:22)"}),
            )
            .unwrap(),
        );
        view.select(Action::Down);
        let text = screen(&view);
        assert!(text.contains("⚠ 1 circuit open (w1)"), "{text}");
        assert!(text.contains("daemon up 2h 5m"), "{text}");
        assert!(text.contains("⊘ open, retry in 12s"), "{text}");
        assert!(text.contains("● closed"), "{text}");
        assert!(text.contains("▶w2"), "{text}");
        assert!(
            text.contains("cargo build --release") && text.contains("30s"),
            "{text}"
        );
        assert!(text.contains("11:59:00 circuit.opened"), "{text}");
        assert!(text.contains("q quit"), "{text}");
        assert_eq!(view.selected_worker(), Some("w2"));
    }

    #[test]
    fn keys_map_to_actions() {
        let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(action_for(key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action_for(key(KeyCode::Char('r'))), Some(Action::Reset));
        assert_eq!(action_for(key(KeyCode::Char('p'))), Some(Action::Probe));
        assert_eq!(action_for(key(KeyCode::Down)), Some(Action::Down));
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action_for(key(KeyCode::Char('x'))), None);
    }
}
