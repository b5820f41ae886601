//! A small CSV reader (RFC 4180 quoting) for labels files.

/// Rows of fields; quoted fields may hold commas, doubled quotes and newlines.
pub fn parse(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_commas_and_crlf() {
        let rows = super::parse("\u{feff}a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\nlast,row");
        assert_eq!(
            rows,
            vec![
                vec!["a", "b"],
                vec!["x,1", "say \"hi\""],
                vec!["last", "row"]
            ]
        );
    }
}
