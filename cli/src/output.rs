//! How the commands print for people: tables with aligned columns, and progress bars that show
//! only on a terminal. Scripts get `--json` instead.

use comfy_table::presets::UTF8_HORIZONTAL_ONLY;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A table with these column headers; columns named in `right` are right-aligned (numbers).
pub fn table(headers: &[&str], right: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_HORIZONTAL_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(headers);
    for (index, header) in headers.iter().enumerate() {
        if right.contains(header) {
            if let Some(column) = table.column_mut(index) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
}

/// A bar counting `total` events on standard output; drawn only when that is a terminal.
pub fn event_bar(total: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    // The template is a constant; should it ever fail to parse, the default style still works.
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {pos}/{len} events ({per_sec}, {eta} left)")
    {
        bar.set_style(style.progress_chars("#>."));
    }
    bar.set_prefix(prefix);
    bar
}

/// A bar counting `total` requests on standard error; drawn only when that is a terminal.
pub fn request_bar(total: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    // The template is a constant; should it ever fail to parse, the default style still works.
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {pos}/{len} requests ({per_sec}) {msg}")
    {
        bar.set_style(style.progress_chars("#>."));
    }
    bar.set_prefix(prefix);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_numbers_right_and_keeps_every_cell() {
        let mut table = table(&["name", "lag"], &["lag"]);
        table.add_row(vec!["roomview", "7"]);
        table.add_row(vec!["reservations", "1234"]);
        let text = table.to_string();
        assert!(text.contains("roomview") && text.contains("1234"), "{text}");
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("roomview") || l.contains("reservations")).collect();
        let end = |line: &str, cell: &str| line.find(cell).map(|at| at + cell.len());
        assert_eq!(end(lines[0], "7"), end(lines[1], "1234"), "numbers end in the same column:\n{text}");
    }
}
