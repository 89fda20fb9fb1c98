//! Printing values the way mongosh does (Node's `util.inspect` with mongosh's settings).
//!
//! Objects print as `{ _id: ObjectId('...'), n: 1, big: Long('5') }`, arrays as `[ 1, 2 ]`; an
//! object or array stays on one line when it fits in 80 columns and holds at most three levels
//! of nesting, else its entries go one per line, indented by two spaces (Node's "compact: 3"
//! rule, with its grouping of long arrays of short items into columns). Keys that are
//! identifiers print bare, others quoted. Strings are single-quoted inside objects and bare at
//! the top level. BSON wrappers print as their constructors (`ObjectId('...')`, `Long('5')`,
//! `ISODate('...')`, `Timestamp({ t: 1, i: 2 })`, `UUID('...')`, ...). With colour on, the
//! styles are Node's (numbers yellow, strings green, dates magenta, null bold, ...); widths are
//! always measured without the escape codes.

use crate::convert::{base64_decode, bson_type, hex_encode, instance_of};
use rquickjs::{Ctx, Function, Object, Value};

/// Nesting shown before `[Object]` (mongosh's default inspectDepth).
pub const INSPECT_DEPTH_MAX: usize = 6;
/// Array items shown before "... n more items" (Node's default).
pub const ARRAY_ITEMS_SHOWN_MAX: usize = 100;
const BREAK_LENGTH: usize = 80;
const COMPACT: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Number,
    String,
    Date,
    Regexp,
    Null,
    Undefined,
    Special,
}

fn paint(colour: bool, style: Style, text: &str) -> String {
    if !colour {
        return text.to_string();
    }
    let (open, close) = match style {
        Style::Number => (33, 39),
        Style::String => (32, 39),
        Style::Date => (35, 39),
        Style::Regexp => (31, 39),
        Style::Null => (1, 22),
        Style::Undefined => (90, 39),
        Style::Special => (36, 39),
    };
    format!("\u{1b}[{open}m{text}\u{1b}[{close}m")
}

/// Length of `text` as shown (ANSI escape sequences removed).
pub fn visible_len(text: &str) -> usize {
    let mut length = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for inner in chars.by_ref() {
                if inner == 'm' {
                    break;
                }
            }
        } else {
            length += 1;
        }
    }
    length
}

/// Formats `value` as mongosh prints a REPL result (top-level strings bare).
pub fn inspect<'js>(ctx: &Ctx<'js>, value: &Value<'js>, colour: bool) -> String {
    if let Some(text) = value.as_string() {
        return text.to_string().unwrap_or_default();
    }
    let mut inspector = Inspector {
        ctx: ctx.clone(),
        colour,
        current_depth: 0,
        indentation: 0,
        seen: Vec::new(),
    };
    inspector.format(value, 0)
}

struct Inspector<'js> {
    ctx: Ctx<'js>,
    colour: bool,
    /// Node's `ctx.currentDepth`: the level of the object whose entries were formatted last.
    current_depth: usize,
    indentation: usize,
    seen: Vec<Object<'js>>,
}

/// `'text'` with Node's choice of quotes and escapes.
pub fn quote(text: &str) -> String {
    let quote = if !text.contains('\'') {
        '\''
    } else if !text.contains('"') {
        '"'
    } else if !text.contains('`') && !text.contains("${") {
        '`'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'js> Inspector<'js> {
    fn number(&self, value: f64) -> String {
        // JavaScript's own Number-to-string (exponents, -0 shown as -0 like Node).
        if value == 0.0 && value.is_sign_negative() {
            return paint(self.colour, Style::Number, "-0");
        }
        let text = self
            .ctx
            .globals()
            .get::<_, Function<'js>>("String")
            .and_then(|f| f.call::<_, String>((value,)))
            .unwrap_or_else(|_| value.to_string());
        paint(self.colour, Style::Number, &text)
    }

    fn string(&self, text: &str) -> String {
        paint(self.colour, Style::String, &quote(text))
    }

    fn format(&mut self, value: &Value<'js>, level: usize) -> String {
        if value.is_undefined() {
            return paint(self.colour, Style::Undefined, "undefined");
        }
        if value.is_null() {
            return paint(self.colour, Style::Null, "null");
        }
        if let Some(flag) = value.as_bool() {
            return paint(
                self.colour,
                Style::Number,
                if flag { "true" } else { "false" },
            );
        }
        if let Some(n) = value.as_int() {
            return paint(self.colour, Style::Number, &n.to_string());
        }
        if let Some(n) = value.as_float() {
            return self.number(n);
        }
        if let Some(text) = value.as_string() {
            return self.string(&text.to_string().unwrap_or_default());
        }
        if let Some(big) = value.as_big_int() {
            let text = big
                .clone()
                .to_i64()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            return paint(self.colour, Style::Number, &format!("{text}n"));
        }
        if value.is_symbol() {
            let text = value
                .get::<rquickjs::Coerced<String>>()
                .map(|c| c.0)
                .unwrap_or_else(|_| "Symbol()".into());
            return paint(self.colour, Style::String, &text);
        }
        if let Some(kind) = bson_type(value) {
            return self.wrapper(value, &kind);
        }
        let Some(object) = value.as_object() else {
            return value.type_name().to_string();
        };
        if value.is_function() {
            let name: String = object.get("name").unwrap_or_default();
            let text = if name.is_empty() {
                "[Function (anonymous)]".to_string()
            } else {
                format!("[Function: {name}]")
            };
            return paint(self.colour, Style::Special, &text);
        }
        if instance_of(&self.ctx, value, "Date") {
            return self.date(object);
        }
        if instance_of(&self.ctx, value, "RegExp") {
            let text = object
                .get::<_, Function<'js>>("toString")
                .and_then(|f| f.call::<_, String>((rquickjs::function::This(object.clone()),)));
            return paint(
                self.colour,
                Style::Regexp,
                &text.unwrap_or_else(|_| "/?/".into()),
            );
        }
        if instance_of(&self.ctx, value, "Error") {
            let name: String = object.get("name").unwrap_or_else(|_| "Error".into());
            let message: String = object.get("message").unwrap_or_default();
            return format!("{name}: {message}");
        }
        if self.seen.iter().any(|seen| seen == object) {
            return paint(self.colour, Style::Special, "[Circular]");
        }
        let is_array = value.is_array();
        if level > INSPECT_DEPTH_MAX {
            return paint(
                self.colour,
                Style::Special,
                if is_array { "[Array]" } else { "[Object]" },
            );
        }
        self.container(object, is_array, level)
    }

    fn date(&self, object: &Object<'js>) -> String {
        let time = object
            .get::<_, Function<'js>>("getTime")
            .and_then(|f| f.call::<_, f64>((rquickjs::function::This(object.clone()),)))
            .unwrap_or(f64::NAN);
        if !time.is_finite() {
            return paint(self.colour, Style::Date, "Invalid Date");
        }
        let iso = object
            .get::<_, Function<'js>>("toISOString")
            .and_then(|f| f.call::<_, String>((rquickjs::function::This(object.clone()),)))
            .unwrap_or_default();
        format!(
            "ISODate({})",
            paint(self.colour, Style::Date, &format!("'{iso}'"))
        )
    }

    fn wrapper(&self, value: &Value<'js>, kind: &str) -> String {
        let object = value
            .as_object()
            .expect("a value with a _bsontype is an object");
        let text = |name: &str| {
            object
                .get::<_, Value<'js>>(name)
                .ok()
                .and_then(|v| v.get::<rquickjs::Coerced<String>>().ok())
                .map(|c| c.0)
                .unwrap_or_default()
        };
        let string = |t: &str| paint(self.colour, Style::String, &quote(t));
        let number = |t: &str| paint(self.colour, Style::Number, t);
        match kind {
            "ObjectId" => format!("ObjectId({})", string(&text("hex"))),
            "Long" => format!("Long({})", string(&text("value"))),
            "Int32" => format!("Int32({})", number(&text("value"))),
            "Double" => {
                let n: f64 = object.get("value").unwrap_or(f64::NAN);
                self.number(n)
            }
            "Decimal128" => format!("Decimal128({})", string(&text("value"))),
            "Timestamp" => format!(
                "Timestamp({{ t: {}, i: {} }})",
                number(&text("t")),
                number(&text("i"))
            ),
            "Binary" => {
                let base64 = text("base64");
                let subtype = text("sub_type");
                let bytes = base64_decode(&base64).unwrap_or_default();
                if subtype == "4" && bytes.len() == 16 {
                    let hex = hex_encode(&bytes);
                    let uuid = format!(
                        "{}-{}-{}-{}-{}",
                        &hex[0..8],
                        &hex[8..12],
                        &hex[12..16],
                        &hex[16..20],
                        &hex[20..32]
                    );
                    format!("UUID({})", string(&uuid))
                } else {
                    format!(
                        "Binary.createFromBase64({}, {})",
                        string(&base64),
                        number(&subtype)
                    )
                }
            }
            "BSONRegExp" => format!(
                "BSONRegExp({}, {})",
                string(&text("pattern")),
                string(&text("options"))
            ),
            "Code" => format!("Code({})", string(&text("code"))),
            "MinKey" => paint(self.colour, Style::Special, "MinKey()"),
            "MaxKey" => paint(self.colour, Style::Special, "MaxKey()"),
            other => format!("{other}()"),
        }
    }

    fn container(&mut self, object: &Object<'js>, is_array: bool, level: usize) -> String {
        let mut entries: Vec<String> = Vec::new();
        let mut all_numbers = true;
        let mut all_primitive = true;
        if is_array {
            let array = object.clone().into_array().expect("checked is_array");
            let length = array.len();
            if length == 0 {
                return "[]".to_string();
            }
            self.seen.push(object.clone());
            self.current_depth = level + 1;
            self.indentation += 2;
            for index in 0..length.min(ARRAY_ITEMS_SHOWN_MAX) {
                let item: Value<'js> = array
                    .get(index)
                    .unwrap_or_else(|_| Value::new_undefined(self.ctx.clone()));
                all_numbers &= item.is_number() || item.is_big_int();
                all_primitive &= !item.is_object() || bson_type(&item).is_some();
                entries.push(self.format(&item, level + 1));
            }
            if length > ARRAY_ITEMS_SHOWN_MAX {
                let more = length - ARRAY_ITEMS_SHOWN_MAX;
                entries.push(format!(
                    "... {more} more item{}",
                    if more > 1 { "s" } else { "" }
                ));
            }
            self.indentation -= 2;
        } else {
            let keys: Vec<String> = object.keys::<String>().filter_map(Result::ok).collect();
            let class_name = self.class_name(object);
            if keys.is_empty() {
                return match class_name {
                    Some(name) => format!("{name} {{}}"),
                    None => "{}".to_string(),
                };
            }
            self.seen.push(object.clone());
            self.current_depth = level + 1;
            self.indentation += 2;
            for key in keys {
                let item: Value<'js> = object
                    .get(key.as_str())
                    .unwrap_or_else(|_| Value::new_undefined(self.ctx.clone()));
                let shown_key = if is_identifier(&key) {
                    key
                } else {
                    self.string(&key)
                };
                let shown = self.format(&item, level + 1);
                entries.push(format!("{shown_key}: {shown}"));
            }
            self.indentation -= 2;
            if let Some(name) = class_name {
                self.seen.pop();
                return self.reduce(
                    entries,
                    &format!("{name} "),
                    ("{", "}"),
                    false,
                    false,
                    level + 1,
                );
            }
        }
        self.seen.pop();
        let braces = if is_array { ("[", "]") } else { ("{", "}") };
        // Unlike Node, documents are never set side by side in columns (mongosh shows one per
        // line); arrays of scalars are.
        self.reduce(
            entries,
            "",
            braces,
            is_array && all_primitive,
            all_numbers,
            level + 1,
        )
    }

    fn class_name(&self, object: &Object<'js>) -> Option<String> {
        let constructor: Object<'js> = object.get("constructor").ok()?;
        let name: String = constructor.get("name").ok()?;
        (!name.is_empty() && name != "Object").then_some(name)
    }

    /// Node's `reduceToSingleString` with `compact: 3` and `breakLength: 80`.
    fn reduce(
        &mut self,
        mut entries: Vec<String>,
        prefix: &str,
        braces: (&str, &str),
        is_array: bool,
        all_numbers: bool,
        level: usize,
    ) -> String {
        let count = entries.len();
        if is_array && count > 6 {
            entries = self.group_array_elements(entries, all_numbers);
        }
        if self.current_depth - level < COMPACT && count == entries.len() {
            let start = entries.len() + self.indentation + braces.0.len() + prefix.len() + 10;
            if self.is_below_break_length(&entries, start) {
                let joined = entries.join(", ");
                if !joined.contains('\n') {
                    return format!("{prefix}{} {joined} {}", braces.0, braces.1);
                }
            }
        }
        let indentation = format!("\n{}", " ".repeat(self.indentation));
        format!(
            "{prefix}{}{indentation}  {}{indentation}{}",
            braces.0,
            entries.join(&format!(",{indentation}  ")),
            braces.1
        )
    }

    fn is_below_break_length(&self, entries: &[String], start: usize) -> bool {
        let mut total = entries.len() + start;
        if total + entries.len() > BREAK_LENGTH {
            return false;
        }
        for entry in entries {
            total += visible_len(entry);
            if total > BREAK_LENGTH {
                return false;
            }
        }
        true
    }

    /// Node's `groupArrayElements`: many short items in aligned columns.
    fn group_array_elements(&self, entries: Vec<String>, all_numbers: bool) -> Vec<String> {
        let separator_space = 2;
        let has_more = entries
            .last()
            .is_some_and(|e| e.starts_with("... ") && e.ends_with("more items"));
        let output_length = if has_more {
            entries.len() - 1
        } else {
            entries.len()
        };
        let lengths: Vec<usize> = entries
            .iter()
            .take(output_length)
            .map(|e| visible_len(e))
            .collect();
        let total_length: usize = lengths.iter().map(|l| l + separator_space).sum();
        let max_length = lengths.iter().copied().max().unwrap_or(0);
        let actual_max = max_length + separator_space;
        if actual_max * 3 + self.indentation < BREAK_LENGTH
            && (total_length as f64 / actual_max as f64 > 5.0 || max_length <= 6)
        {
            let average_bias =
                (actual_max as f64 - total_length as f64 / entries.len() as f64).sqrt();
            let biased_max = (actual_max as f64 - 3.0 - average_bias).max(1.0);
            let columns = ((2.5 * biased_max * output_length as f64).sqrt() / biased_max)
                .round()
                .min(((BREAK_LENGTH - self.indentation) / actual_max) as f64)
                .min((COMPACT * 4) as f64)
                .min(15.0) as usize;
            if columns <= 1 {
                return entries;
            }
            let mut max_line_length = Vec::with_capacity(columns);
            for column in 0..columns {
                let widest = (column..output_length)
                    .step_by(columns)
                    .map(|j| lengths[j])
                    .max()
                    .unwrap_or(0);
                max_line_length.push(widest + separator_space);
            }
            let mut grouped = Vec::new();
            let mut row_start = 0;
            while row_start < output_length {
                let row_end = (row_start + columns).min(output_length);
                let mut line = String::new();
                for j in row_start..row_end {
                    let cell = if j + 1 < row_end {
                        format!("{}, ", entries[j])
                    } else {
                        entries[j].clone()
                    };
                    let width = if j + 1 < row_end {
                        max_line_length[j - row_start]
                    } else {
                        max_line_length[j - row_start] - separator_space
                    };
                    let padding = width.saturating_sub(visible_len(&cell));
                    if all_numbers {
                        line.push_str(&" ".repeat(padding));
                        line.push_str(&cell);
                    } else if j + 1 < row_end {
                        line.push_str(&cell);
                        line.push_str(&" ".repeat(padding));
                    } else {
                        line.push_str(&cell);
                    }
                }
                grouped.push(line);
                row_start = row_end;
            }
            if has_more {
                grouped.push(entries[output_length].clone());
            }
            return grouped;
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_node() {
        assert_eq!(quote("abc"), "'abc'");
        assert_eq!(quote("it's"), "\"it's\"");
        assert_eq!(quote("a'b\"c"), "`a'b\"c`");
        assert_eq!(quote("line\nnext\\"), "'line\\nnext\\\\'");
        assert_eq!(quote("\u{1}"), "'\\x01'");
    }

    #[test]
    fn identifiers_and_widths() {
        assert!(is_identifier("_id"));
        assert!(is_identifier("a1"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("b-c"));
        assert!(!is_identifier(""));
        assert_eq!(visible_len(&paint(true, Style::Number, "12")), 2);
        assert_eq!(paint(false, Style::Number, "12"), "12");
    }
}
