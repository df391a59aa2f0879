//! Inline commands (`SET "a b" 'c'\r\n`, what `telnet` and old clients send): splitting a line
//! into arguments exactly as Redis 7.0.15's `sdssplitargs` does, and re-encoding the result as a
//! RESP array so every [`Request`] is forwardable as-is.
use super::framer::{encode_split, ProtocolError, Request};

/// Reusable buffers for splitting, kept by the framer so a stream of inline commands does not
/// allocate twice per line.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    data: Vec<u8>,
    bounds: Vec<(usize, usize)>,
}

impl Scratch {
    /// Splits `line` (without its line ending) and encodes it; `Ok(None)` for a line with no
    /// arguments, which Redis ignores like an empty line.
    pub(crate) fn split_line(&mut self, line: &[u8]) -> Result<Option<Request>, ProtocolError> {
        self.data.clear();
        self.bounds.clear();
        split_args(line, &mut self.data, &mut self.bounds)?;
        if self.bounds.is_empty() {
            return Ok(None);
        }
        Ok(Some(encode_split(&self.data, &self.bounds)))
    }
}

/// C's `isspace` in the "C" locale, which `sdssplitargs` uses to skip blanks.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Port of `sdssplitargs`: appends each argument to `data` and its range to `bounds`.
///
/// Rules, all Redis's: arguments are separated by blanks; `"..."` supports `\n \r \t \b \a`,
/// `\xHH` and `\<any>` (the character itself); `'...'` supports only `\'`; a quote may open in
/// the middle of an argument (`a"b c"` is `ab c`), but a closing quote must be followed by a blank
/// or the end of the line; an unclosed quote is an error. Redis sees the line as a C string, so a
/// NUL byte ends it.
fn split_args(
    line: &[u8],
    data: &mut Vec<u8>,
    bounds: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // The byte at `i`, or NUL past the end: the C code reads the terminator the same way.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(());
        }
        let start = data.len();
        let (mut in_double, mut in_single, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_double {
                let hex = (at(p + 1) == b'x')
                    .then(|| Some(hex_value(at(p + 2))? * 16 + hex_value(at(p + 3))?))
                    .flatten();
                if let (b'\\', Some(byte)) = (c, hex) {
                    data.push(byte);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    data.push(match line[p] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    data.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    data.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    data.push(c);
                }
            } else {
                // Unquoted, only these end an argument (not \v or \f, unlike the blank skip).
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => data.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        bounds.push((start, data.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let (mut data, mut bounds) = (Vec::new(), Vec::new());
        split_args(line.as_bytes(), &mut data, &mut bounds)?;
        Ok(bounds.iter().map(|&(s, e)| data[s..e].to_vec()).collect())
    }

    fn ok(line: &str, want: &[&[u8]]) {
        let got = split(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
        assert_eq!(got, want, "{line:?}");
    }

    fn unbalanced(line: &str) {
        assert_eq!(
            split(line),
            Err(ProtocolError::UnbalancedQuotes),
            "{line:?}"
        );
    }

    #[test]
    fn blanks_separate_arguments() {
        ok("PING", &[b"PING"]);
        ok("  set  a\tb  ", &[b"set", b"a", b"b"]);
        ok("", &[]);
        ok("   \t ", &[]);
        ok("\x0bget\x0b", &[b"get\x0b"]); // \v is skipped as a blank but does not end a token
    }

    #[test]
    fn double_quotes_and_escapes() {
        ok(r#"set "a b" c"#, &[b"set", b"a b", b"c"]);
        ok(r#""""#, &[b""]);
        ok(r#""\n\r\t\b\a\\\"\q""#, &[b"\n\r\t\x08\x07\\\"q"]);
        ok(r#""\x41\x7a\xFF""#, &[b"Az\xff"]);
        ok(r#""\xZZ""#, &[b"xZZ"]); // not hex: the backslash escapes the 'x'
        ok(r#""\x4""#, &[b"x4"]);
        ok(r#"a"b c""#, &[b"ab c"]);
    }

    #[test]
    fn single_quotes_only_escape_quote() {
        ok(r"'it\'s' x", &[b"it's", b"x"]);
        ok(r"'a\nb'", &[b"a\\nb"]);
        ok(r"''", &[b""]);
    }

    #[test]
    fn quote_rules_match_redis() {
        unbalanced(r#""abc"#);
        unbalanced(r"'abc");
        unbalanced(r#""a"b"#);
        unbalanced(r"'a'b");
        unbalanced(r#"a"b c"d"#);
        unbalanced(r#""abc\"#);
        ok(r#""a"	b"#, &[b"a", b"b"]);
    }

    #[test]
    fn nul_ends_the_line() {
        let (mut data, mut bounds) = (Vec::new(), Vec::new());
        split_args(b"get a\0b c", &mut data, &mut bounds).unwrap();
        assert_eq!(bounds.len(), 2);
        assert_eq!(&data[bounds[1].0..bounds[1].1], b"a");
    }

    #[test]
    fn reencodes_as_resp() {
        let mut scratch = Scratch::default();
        let req = scratch.split_line(br#"SET "a b" 'c'"#).unwrap().unwrap();
        assert_eq!(
            &req.bytes()[..],
            b"*3\r\n$3\r\nSET\r\n$3\r\na b\r\n$1\r\nc\r\n"
        );
        assert_eq!(req.arg(1), b"a b");
        assert!(scratch.split_line(b"   ").unwrap().is_none());
    }
}
