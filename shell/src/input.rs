//! Shell commands and unfinished input.
//!
//! [`translate`] turns mongosh's shell commands, when they stand on a line of their own, into
//! calls of the prelude's functions: `use app` -> `use("app")`, `show dbs` -> `show("dbs")`,
//! `it` -> `it()`, `exit`/`quit` -> `quit()`, `help` -> `help()`. Everything else is JavaScript.
//!
//! [`is_complete`] decides whether the REPL should ask for another line: it scans strings,
//! template literals, comments, regular expression literals and brackets, and says "incomplete"
//! while a bracket, a string or a comment is still open.

/// JavaScript source for `input`, with shell commands translated line by line.
pub fn translate(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for (index, line) in input.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
        }
        out.push_str(&translate_line(line));
    }
    out
}

fn translate_line(line: &str) -> String {
    let trimmed = line.trim().trim_end_matches(';').trim_end();
    let mut words = trimmed.split_whitespace();
    let first = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    let quoted = |text: &str| format!("{text:?}");
    match (first, rest.as_slice()) {
        ("use", [name]) if is_name(name) => format!("use({})", quoted(name)),
        ("show", [what]) if what.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("show({})", quoted(what))
        }
        ("it", []) => "it()".into(),
        ("exit" | "quit", []) => "quit()".into(),
        ("help", []) => "help()".into(),
        _ => line.to_string(),
    }
}

/// A database name as `use` accepts it (no quotes, spaces or parentheses).
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-'))
}

/// Whether `source` is a complete input (no open bracket, string, template or comment).
pub fn is_complete(source: &str) -> bool {
    let chars: Vec<char> = source.chars().collect();
    let mut stack: Vec<char> = Vec::new();
    let mut i = 0;
    // The last significant character, to tell a regex literal from a division.
    let mut previous: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                loop {
                    if i + 1 >= chars.len() {
                        return false;
                    }
                    if chars[i] == '*' && chars[i + 1] == '/' {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            '/' if previous.is_none_or(|p| "(,=:[!&|?{};+-*%<>~^".contains(p)) => {
                // A regular expression literal.
                i += 1;
                let mut in_class = false;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 1,
                        '[' => in_class = true,
                        ']' => in_class = false,
                        '/' if !in_class => break,
                        '\n' => return true, // not a regex after all; let the parser say so
                        _ => {}
                    }
                    i += 1;
                }
                previous = Some('/');
                i += 1;
                continue;
            }
            '\'' | '"' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    } else if chars[i] == '\n' {
                        return true; // an unterminated string is a syntax error, not more input
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return false;
                }
            }
            '`' => {
                stack.push('`');
                i += 1;
                // Inside a template: scan to its end or to a `${`.
                loop {
                    if i >= chars.len() {
                        return false;
                    }
                    match chars[i] {
                        '\\' => i += 1,
                        '`' => {
                            stack.pop();
                            break;
                        }
                        '$' if chars.get(i + 1) == Some(&'{') => {
                            stack.push('$');
                            i += 1;
                            break;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' => {
                stack.pop();
            }
            '}' => {
                if stack.last() == Some(&'$') {
                    // The end of a `${...}`: back inside the template.
                    stack.pop();
                    i += 1;
                    loop {
                        if i >= chars.len() {
                            return false;
                        }
                        match chars[i] {
                            '\\' => i += 1,
                            '`' => {
                                stack.pop();
                                break;
                            }
                            '$' if chars.get(i + 1) == Some(&'{') => {
                                stack.push('$');
                                i += 1;
                                break;
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                } else {
                    stack.pop();
                }
            }
            _ => {}
        }
        if !c.is_whitespace() {
            previous = Some(c);
        }
        i += 1;
    }
    stack.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_become_calls() {
        assert_eq!(translate("use app"), "use(\"app\")");
        assert_eq!(translate("  use my-db ;"), "use(\"my-db\")");
        assert_eq!(translate("show dbs"), "show(\"dbs\")");
        assert_eq!(translate("show collections"), "show(\"collections\")");
        assert_eq!(translate("it"), "it()");
        assert_eq!(translate("exit"), "quit()");
        assert_eq!(translate("help"), "help()");
        assert_eq!(
            translate("use app\ndb.c.find()"),
            "use(\"app\")\ndb.c.find()"
        );
        // JavaScript that merely starts with those words is left alone.
        assert_eq!(translate("use(x)"), "use(x)");
        assert_eq!(translate("it = 5"), "it = 5");
        assert_eq!(translate("use a b"), "use a b");
        assert_eq!(translate("show = 1"), "show = 1");
    }

    #[test]
    fn completeness() {
        for complete in [
            "db.c.find()",
            "x = {a: [1, 2]}",
            "'({['",
            "\"a\\\"(\"",
            "// (",
            "/* ( */ 1",
            "x = /[(]/.test('(')",
            "a / b / c",
            "`a ${ {b: 1}.b } c`",
            "",
        ] {
            assert!(is_complete(complete), "{complete}");
        }
        for incomplete in [
            "db.c.find(",
            "function f() {",
            "x = [1,\n2",
            "/* open",
            "`open ${",
            "`open",
            "'open",
            "if (a) { b({",
        ] {
            assert!(!is_complete(incomplete), "{incomplete}");
        }
    }
}
