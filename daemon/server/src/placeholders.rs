//! JDBC-style `?` placeholders. In: a SQL statement as a client sent it. Out: the same
//! statement with each bare `?` numbered `$1, $2, …` in order of appearance, which is how JDBC
//! and ADBC bind them (by position). DataFusion names every `?` alike, so a statement with two
//! of them fails to plan ("Conflicting types for id ?") without this.
//!
//! The SQL tokenizer finds the placeholders, so a `?` inside a string literal, a quoted
//! identifier or a comment is left alone; only the placeholders' characters change. A statement
//! that mixes `?` with numbered placeholders (`$1`, `?1`) is refused: the positions would be
//! ambiguous.

use std::borrow::Cow;
use std::fmt::Write;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

/// `sql` with its bare `?` placeholders numbered (borrowed when it has none). A statement the
/// tokenizer cannot read is returned as it is, for the planner to report.
pub(crate) fn number_placeholders(sql: &str) -> Result<Cow<'_, str>, String> {
    if !sql.contains('?') {
        return Ok(Cow::Borrowed(sql));
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(Cow::Borrowed(sql));
    };
    let mut bare = Vec::new();
    let mut numbered = false;
    for t in &tokens {
        if let Token::Placeholder(p) = &t.token {
            if p == "?" {
                bare.push(t.span.start);
            } else {
                numbered = true;
            }
        }
    }
    if bare.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    if numbered {
        return Err(
            "the statement mixes ? placeholders with numbered ones ($1 or ?1); use one style"
                .into(),
        );
    }
    let offsets = byte_offsets(sql, &bare);
    // Every location must land on a '?' of the text itself. Tokens the tokenizer re-reads
    // inside a hint comment (`/*! … */`) carry positions relative to the comment: leave such a
    // statement as it is (the planner then says what it thinks of it).
    if offsets.len() != bare.len() || offsets.iter().any(|&at| sql.as_bytes()[at] != b'?') {
        return Ok(Cow::Borrowed(sql));
    }
    let mut out = String::with_capacity(sql.len() + 2 * offsets.len());
    let mut last = 0;
    for (i, &at) in offsets.iter().enumerate() {
        out.push_str(&sql[last..at]);
        write!(out, "${}", i + 1).expect("writing to a String");
        last = at + 1; // '?' is one byte
    }
    out.push_str(&sql[last..]);
    Ok(Cow::Owned(out))
}

/// The byte offsets of tokenizer locations (lines and columns from 1, columns in characters,
/// counted as the tokenizer counts them), in the order given (ascending).
fn byte_offsets(sql: &str, locations: &[Location]) -> Vec<usize> {
    let mut out = Vec::with_capacity(locations.len());
    let mut wanted = locations.iter().peekable();
    let (mut line, mut column) = (1u64, 1u64);
    for (offset, ch) in sql.char_indices() {
        let Some(next) = wanted.peek() else { break };
        if next.line == line && next.column == column {
            out.push(offset);
            wanted.next();
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    out
}

/// Placeholder names (`$1`, `$2`, …, or others) in the order they bind: numbered ones by
/// number, then the rest by name.
pub(crate) fn binding_order(a: &str, b: &str) -> std::cmp::Ordering {
    let number = |s: &str| s.strip_prefix('$').and_then(|n| n.parse::<u64>().ok());
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_in_order() {
        assert_eq!(
            number_placeholders("SELECT * FROM observables WHERE run_id = ? AND point >= ?")
                .unwrap(),
            "SELECT * FROM observables WHERE run_id = $1 AND point >= $2"
        );
        let many = (0..12).map(|_| "?").collect::<Vec<_>>().join(", ");
        let numbered = (1..=12)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(
            number_placeholders(&format!("SELECT {many}")).unwrap(),
            format!("SELECT {numbered}")
        );
    }

    #[test]
    fn strings_identifiers_and_comments_keep_their_question_marks() {
        let sql = "SELECT 'why?', \"col?\" -- really?\nFROM t /* what? */ WHERE a = ? AND b = 'it''s ?' AND c = ?";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT 'why?', \"col?\" -- really?\nFROM t /* what? */ WHERE a = $1 AND b = 'it''s ?' AND c = $2"
        );
        // Multi-byte characters before a placeholder.
        assert_eq!(
            number_placeholders("SELECT 'é∑' AS x WHERE y = ?").unwrap(),
            "SELECT 'é∑' AS x WHERE y = $1"
        );
    }

    #[test]
    fn statements_without_bare_placeholders_are_unchanged() {
        for sql in [
            "SELECT 1",
            "SELECT 'a?b'",
            "SELECT $1, $2",
            "SELECT 'unterminated ?",
            // A hint comment: its tokens' positions are not the text's.
            "SELECT 1 WHERE /*! b = ? AND */ c = ?",
        ] {
            assert!(matches!(number_placeholders(sql), Ok(Cow::Borrowed(s)) if s == sql));
        }
    }

    #[test]
    fn mixed_styles_are_refused() {
        let e = number_placeholders("SELECT ? , $1").unwrap_err();
        assert!(e.contains("mixes ? placeholders with numbered ones"), "{e}");
    }

    #[test]
    fn parameters_bind_in_numeric_order() {
        let mut names = vec!["$10", "$2", "$1", "x"];
        names.sort_by(|a, b| binding_order(a, b));
        assert_eq!(names, ["$1", "$2", "$10", "x"]);
    }
}
