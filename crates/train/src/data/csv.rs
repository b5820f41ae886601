//! A small CSV reader (RFC 4180 quoting) for labels files.

/// One row: the line it starts on (from 1) and its fields.
pub type Row = (usize, Vec<String>);

/// Rows of fields, each with the line it starts on; quoted fields may hold
/// commas, doubled quotes and newlines. A quote never closed is an error
/// naming the line it opened on (it would swallow the rest of the file).
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = None;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        if quoted.is_some() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = None,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = Some(line),
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push((row_line, std::mem::take(&mut row)));
                row_line = line;
            }
            _ => field.push(c),
        }
    }
    if let Some(opened) = quoted {
        return Err(format!(
            "line {opened}: a quoted field opens here and is never closed"
        ));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

/// A value for a message: control characters escaped, at most 80 characters
/// (a CSV with a 10 MB field must not print 10 MB).
pub fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(80)
        .flat_map(char::escape_debug)
        .collect();
    let n = value.chars().count();
    if n > 80 {
        out.push_str(&format!("… ({n} characters)"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_commas_and_crlf() {
        let rows =
            super::parse("\u{feff}a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",z\nlast,row")
                .unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rows,
            vec![
                (1, s(&["a", "b"])),
                (2, s(&["x,1", "say \"hi\""])),
                (3, s(&["two\nlines", "z"])),
                (5, s(&["last", "row"]))
            ]
        );
        let e = super::parse("a,b\nx,\"open\ny,z\n").unwrap_err();
        assert_eq!(e, "line 2: a quoted field opens here and is never closed");
        assert_eq!(super::shown("a\0b"), "a\\0b");
        let long = "x".repeat(10_000);
        assert!(super::shown(&long).ends_with("… (10000 characters)"));
    }
}
