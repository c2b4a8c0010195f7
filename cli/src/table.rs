//! Plain aligned tables for people.

/// Formats `rows` under `headers` in columns separated by at least three spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i != last {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::render(&["ID", "NAME"], &[vec!["1".into(), "alpha".into()], vec!["1234".into(), "b".into()]]);
        assert_eq!(t, "ID     NAME\n1      alpha\n1234   b\n");
    }
}
