//! Tables: bordered on a terminal, plain aligned columns when piped, coloured
//! only when colour is allowed.

use super::Output;
use crate::breaker::State;
use comfy_table::{presets, Attribute, Cell, Color, ContentArrangement, Table};

/// Narrower terminals get unwrapped rows rather than unreadable columns.
const MIN_WRAP_WIDTH: u16 = 60;

/// An empty table with these column headers, styled for `out`.
pub fn new(out: &Output, headers: &[&str]) -> Table {
    let mut table = Table::new();
    if out.tty {
        table.load_preset(presets::UTF8_FULL_CONDENSED);
        // Wrap to the terminal only when its width is known and usable;
        // a pseudo-terminal without a size would squeeze every column to one letter.
        if table.width().is_some_and(|w| w >= MIN_WRAP_WIDTH) {
            table.set_content_arrangement(ContentArrangement::Dynamic);
        }
    } else {
        // Piped: no borders, so `grep`/`awk` see one row per line.
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .force_no_tty();
    }
    let header: Vec<Cell> = headers
        .iter()
        .map(|h| {
            let text = if out.tty {
                h.to_string()
            } else {
                h.to_uppercase()
            };
            let cell = Cell::new(text);
            if out.color {
                cell.add_attribute(Attribute::Bold)
            } else {
                cell
            }
        })
        .collect();
    table.set_header(header);
    table
}

/// The table as text, without the trailing blanks of the plain layout.
pub fn render(table: &Table) -> String {
    table
        .to_string()
        .lines()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A circuit state, coloured by severity when colour is allowed.
pub fn state_cell(out: &Output, state: State) -> Cell {
    let cell = Cell::new(state.as_str());
    if !out.color {
        return cell;
    }
    match state {
        State::Open => cell.fg(Color::Red).add_attribute(Attribute::Bold),
        State::HalfOpen => cell.fg(Color::Yellow),
        State::Closed => cell.fg(Color::Green),
    }
}

/// `-` for a missing value, so columns stay aligned when piped.
pub fn or_dash(value: Option<String>) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tables_have_no_borders_and_upper_headers() {
        let mut t = new(&Output::plain(), &["worker", "state"]);
        t.add_row(vec!["w1", "open"]);
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("WORKER") && lines[0].contains("STATE"));
        assert!(lines[1].contains("w1") && lines[1].contains("open"));
        assert!(!text.contains('│') && !text.contains('\u{1b}'));
    }

    #[test]
    fn dash_for_missing() {
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some(String::new())), "-");
        assert_eq!(or_dash(Some("x".into())), "x");
    }
}
