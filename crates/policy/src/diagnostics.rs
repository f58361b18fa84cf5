//! Cedar's diagnostics placed in the bundle: each one once, as `file:line:col: message`
//! followed by Cedar's help text, so an editor or a terminal can jump to it. An unknown
//! action also lists the actions the schema declares.

use miette::Diagnostic;

/// Line and column (both 1-based, columns in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// One diagnostic, placed in `file` (whose text is `source`) by its first label.
pub fn located(file: &str, source: Option<&str>, d: &dyn Diagnostic, actions: &[String]) -> String {
    let place = match (source, d.labels().and_then(|mut l| l.next())) {
        (Some(src), Some(label)) => {
            let (line, col) = line_col(src, label.offset());
            format!("{file}:{line}:{col}")
        }
        _ => file.to_owned(),
    };
    let mut out = format!("{place}: {d}");
    if let Some(help) = d.help() {
        out.push_str(&format!(" (help: {help})"));
    }
    if d.to_string().contains("unrecognized action") && !actions.is_empty() {
        out.push_str(&format!(" (the schema's actions: {})", actions.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_from_one() {
        let s = "ab\ncdé\nf";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 1), (1, 2));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, 8), (3, 1));
        assert_eq!(line_col(s, 99), (3, 2));
    }
}
