//! BSON <-> JavaScript values, keeping every BSON type across a round trip.
//!
//! | BSON | JavaScript |
//! |---|---|
//! | double (non-integral, NaN, ±Infinity) | number |
//! | double with an integral value (and -0) | `Double` (so it is written back as a double) |
//! | int32 | number (a JS integer in the int32 range is written as int32, as in mongosh) |
//! | int64 | `Long` |
//! | decimal128 | `Decimal128` |
//! | string, boolean, null | string, boolean, null |
//! | document, array | object, array |
//! | ObjectId | `ObjectId` |
//! | date | `Date` |
//! | timestamp | `Timestamp` |
//! | binary | `Binary` (subtype 4: shown as `UUID(...)`) |
//! | regular expression | `RegExp` when JS accepts its flags, else `BSONRegExp` |
//! | JavaScript code | `Code` |
//! | min key / max key | `MinKey` / `MaxKey` |
//! | undefined (deprecated) | undefined, written back as null (as mongosh does) |
//!
//! A JS number that is an integer in the int32 range (and not -0) becomes int32; any other
//! number becomes a double. `BigInt` becomes int64. The wrapper types are recognised by their
//! `_bsontype` (set on their prototypes by the prelude). Nesting is limited to
//! [`cairn_types::limits::BSON_DEPTH_MAX`] levels, which also stops cyclic objects.

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document};
use rquickjs::{Array, Ctx, Function, Object, Value};

/// Why a JS value could not become BSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionError(pub String);

impl std::fmt::Display for ConversionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConversionError {}

fn error(message: impl Into<String>) -> ConversionError {
    ConversionError(message.into())
}

fn js(error: rquickjs::Error) -> ConversionError {
    ConversionError(format!("JavaScript error during conversion: {error}"))
}

/// The `_bsontype` of a value (objects and functions), if any.
pub fn bson_type<'js>(value: &Value<'js>) -> Option<String> {
    let object = value.as_object()?;
    object.get::<_, Option<String>>("_bsontype").ok().flatten()
}

/// Is `value` an instance of the global constructor `name` (`Date`, `RegExp`, ...)?
pub fn instance_of<'js>(ctx: &Ctx<'js>, value: &Value<'js>, name: &str) -> bool {
    match (value.as_object(), ctx.globals().get::<_, Value<'js>>(name)) {
        (Some(object), Ok(class)) if class.is_function() => object.is_instance_of(class),
        _ => false,
    }
}

/// A JS value as a BSON document (it must be an object).
pub fn to_document<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Result<Document, ConversionError> {
    match to_bson(ctx, value)? {
        Bson::Document(document) => Ok(document),
        other => Err(error(format!(
            "expected a document, got {}",
            type_name(&other)
        ))),
    }
}

/// A JS value as BSON.
pub fn to_bson<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Result<Bson, ConversionError> {
    to_bson_at(ctx, value, 0)
}

fn to_bson_at<'js>(
    ctx: &Ctx<'js>,
    value: &Value<'js>,
    depth: usize,
) -> Result<Bson, ConversionError> {
    if depth > cairn_types::limits::BSON_DEPTH_MAX {
        return Err(error(format!(
            "the value is nested more than {} levels deep (or refers to itself)",
            cairn_types::limits::BSON_DEPTH_MAX
        )));
    }
    if value.is_undefined() || value.is_null() {
        return Ok(Bson::Null);
    }
    if let Some(flag) = value.as_bool() {
        return Ok(Bson::Boolean(flag));
    }
    if let Some(number) = value.as_int() {
        return Ok(Bson::Int32(number));
    }
    if let Some(number) = value.as_float() {
        return Ok(number_to_bson(number));
    }
    if let Some(text) = value.as_string() {
        return Ok(Bson::String(text.to_string().map_err(js)?));
    }
    if let Some(big) = value.as_big_int() {
        let number = big
            .clone()
            .to_i64()
            .map_err(|_| error("a BigInt outside the 64-bit range"))?;
        return Ok(Bson::Int64(number));
    }
    if value.is_symbol() {
        return Err(error("a Symbol cannot be stored"));
    }
    if let Some(kind) = bson_type(value) {
        let object = value
            .as_object()
            .expect("only objects and functions have a _bsontype");
        return wrapper_to_bson(object, &kind);
    }
    if value.is_function() {
        return Err(error(
            "a function cannot be stored (did you forget the parentheses of a call?)",
        ));
    }
    if let Some(array) = value.as_array() {
        let mut items = Vec::with_capacity(array.len());
        for item in array.iter::<Value<'js>>() {
            items.push(to_bson_at(ctx, &item.map_err(js)?, depth + 1)?);
        }
        return Ok(Bson::Array(items));
    }
    if instance_of(ctx, value, "Date") {
        let object = value.as_object().expect("a Date is an object");
        let get_time: Function<'js> = object.get("getTime").map_err(js)?;
        let millis: f64 = get_time
            .call((rquickjs::function::This(object.clone()),))
            .map_err(js)?;
        if !millis.is_finite() {
            return Err(error("an invalid Date cannot be stored"));
        }
        return Ok(Bson::DateTime(bson::DateTime::from_millis(millis as i64)));
    }
    if instance_of(ctx, value, "RegExp") {
        let object = value.as_object().expect("a RegExp is an object");
        let source: String = object.get("source").map_err(js)?;
        let flags: String = object.get("flags").map_err(js)?;
        // BSON knows i, m, s, u, x, l; JS's g and y have no meaning in a query.
        let flags: String = flags.chars().filter(|c| "imsux".contains(*c)).collect();
        return regex(source, &flags);
    }
    if let Some(object) = value.as_object() {
        let mut document = Document::new();
        for entry in object.props::<String, Value<'js>>() {
            let (key, item) = entry.map_err(js)?;
            if item.is_function() && bson_type(&item).is_none() {
                continue; // methods of an object are not data
            }
            document.insert(key, to_bson_at(ctx, &item, depth + 1)?);
        }
        return Ok(Bson::Document(document));
    }
    Err(error(format!(
        "cannot store a value of type {}",
        value.type_name()
    )))
}

/// mongosh's rule: an integral number in the int32 range is an int32, anything else a double.
pub fn number_to_bson(number: f64) -> Bson {
    let is_negative_zero = number == 0.0 && number.is_sign_negative();
    if number.fract() == 0.0
        && number >= i32::MIN as f64
        && number <= i32::MAX as f64
        && !is_negative_zero
    {
        Bson::Int32(number as i32)
    } else {
        Bson::Double(number)
    }
}

fn wrapper_to_bson(object: &Object<'_>, kind: &str) -> Result<Bson, ConversionError> {
    let field = |name: &str| -> Result<Value<'_>, ConversionError> {
        object.get::<_, Value<'_>>(name).map_err(js)
    };
    let text = |name: &str| -> Result<String, ConversionError> {
        object
            .get::<_, String>(name)
            .map_err(|_| error(format!("a {kind} without its {name}")))
    };
    let number = |name: &str| -> Result<f64, ConversionError> {
        field(name)?
            .as_number()
            .ok_or_else(|| error(format!("a {kind} without a numeric {name}")))
    };
    match kind {
        "ObjectId" => bson::oid::ObjectId::parse_str(text("hex")?)
            .map(Bson::ObjectId)
            .map_err(|e| error(format!("invalid ObjectId: {e}"))),
        "Long" => text("value")?
            .parse::<i64>()
            .map(Bson::Int64)
            .map_err(|e| error(format!("invalid Long: {e}"))),
        "Int32" => Ok(Bson::Int32(number("value")? as i32)),
        "Double" => Ok(Bson::Double(number("value")?)),
        "Decimal128" => text("value")?
            .parse::<bson::Decimal128>()
            .map(Bson::Decimal128)
            .map_err(|e| error(format!("invalid Decimal128: {e}"))),
        "Timestamp" => Ok(Bson::Timestamp(bson::Timestamp {
            time: number("t")? as u32,
            increment: number("i")? as u32,
        })),
        "Binary" => {
            let subtype = number("sub_type")? as u8;
            let bytes = base64_decode(&text("base64")?)?;
            Ok(Bson::Binary(Binary {
                subtype: BinarySubtype::from(subtype),
                bytes,
            }))
        }
        "BSONRegExp" => regex(text("pattern")?, &text("options")?),
        "Code" => Ok(Bson::JavaScriptCode(text("code")?)),
        "MinKey" => Ok(Bson::MinKey),
        "MaxKey" => Ok(Bson::MaxKey),
        other => Err(error(format!("unknown BSON type '{other}'"))),
    }
}

/// A BSON regular expression; its options are stored sorted, as BSON requires.
fn regex(pattern: String, options: &str) -> Result<Bson, ConversionError> {
    let mut sorted: Vec<char> = options.chars().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let options: String = sorted.into_iter().collect();
    let pattern = bson::raw::CString::try_from(pattern)
        .map_err(|_| error("a regular expression pattern cannot contain a NUL character"))?;
    let options = bson::raw::CString::try_from(options)
        .map_err(|_| error("invalid regular expression options"))?;
    Ok(Bson::RegularExpression(bson::Regex { pattern, options }))
}

fn type_name(value: &Bson) -> &'static str {
    match value {
        Bson::Array(_) => "an array",
        Bson::String(_) => "a string",
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => "a number",
        Bson::Boolean(_) => "a boolean",
        Bson::Null => "null",
        _ => "a scalar value",
    }
}

/// A BSON value as a JS value.
pub fn to_js<'js>(ctx: &Ctx<'js>, value: &Bson) -> rquickjs::Result<Value<'js>> {
    let construct = |name: &str, args: Vec<Value<'js>>| -> rquickjs::Result<Value<'js>> {
        let constructor: rquickjs::function::Constructor<'js> = ctx.globals().get(name)?;
        let mut arguments = rquickjs::function::Args::new(ctx.clone(), args.len());
        for argument in args {
            arguments.push_arg(argument)?;
        }
        constructor.construct_args(arguments)
    };
    let string = |text: &str| -> rquickjs::Result<Value<'js>> {
        Ok(rquickjs::String::from_str(ctx.clone(), text)?.into_value())
    };
    let number = |n: f64| Value::new_number(ctx.clone(), n);
    Ok(match value {
        Bson::Double(n) => {
            if n.is_finite() && n.fract() == 0.0 {
                construct("Double", vec![Value::new_float(ctx.clone(), *n)])?
            } else {
                Value::new_float(ctx.clone(), *n)
            }
        }
        Bson::String(text) | Bson::Symbol(text) => string(text)?,
        Bson::Document(document) => document_to_js(ctx, document)?.into_value(),
        Bson::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (index, item) in items.iter().enumerate() {
                array.set(index, to_js(ctx, item)?)?;
            }
            array.into_value()
        }
        Bson::Boolean(flag) => Value::new_bool(ctx.clone(), *flag),
        Bson::Null => Value::new_null(ctx.clone()),
        Bson::Undefined => Value::new_undefined(ctx.clone()),
        Bson::Int32(n) => Value::new_int(ctx.clone(), *n),
        Bson::Int64(n) => construct("Long", vec![string(&n.to_string())?])?,
        Bson::Decimal128(d) => construct("Decimal128", vec![string(&d.to_string())?])?,
        Bson::ObjectId(id) => construct("ObjectId", vec![string(&id.to_hex())?])?,
        Bson::DateTime(date) => construct("Date", vec![number(date.timestamp_millis() as f64)])?,
        Bson::Timestamp(ts) => construct(
            "Timestamp",
            vec![number(f64::from(ts.time)), number(f64::from(ts.increment))],
        )?,
        Bson::Binary(binary) => construct(
            "Binary",
            vec![
                string(&base64_encode(&binary.bytes))?,
                number(f64::from(u8::from(binary.subtype))),
            ],
        )?,
        Bson::RegularExpression(regex) => {
            let js_flags: String = regex
                .options
                .as_str()
                .chars()
                .filter(|c| "imsu".contains(*c))
                .collect();
            let as_js = regex.options.as_str().len() == js_flags.len();
            let made = if as_js {
                match construct(
                    "RegExp",
                    vec![string(regex.pattern.as_str())?, string(&js_flags)?],
                ) {
                    Ok(value) => Some(value),
                    Err(_) => {
                        // A PCRE pattern JS does not accept: clear the exception, keep it as BSON.
                        let _ = ctx.catch();
                        None
                    }
                }
            } else {
                None
            };
            match made {
                Some(value) => value,
                None => construct(
                    "BSONRegExp",
                    vec![
                        string(regex.pattern.as_str())?,
                        string(regex.options.as_str())?,
                    ],
                )?,
            }
        }
        Bson::JavaScriptCode(code) => construct("Code", vec![string(code)?])?,
        Bson::JavaScriptCodeWithScope(code) => construct("Code", vec![string(&code.code)?])?,
        Bson::MinKey => ctx.globals().get::<_, Value<'js>>("MinKey")?,
        Bson::MaxKey => ctx.globals().get::<_, Value<'js>>("MaxKey")?,
        Bson::DbPointer(_) => {
            let extended = value.clone().into_canonical_extjson();
            ctx.json_parse(extended.to_string())?
        }
    })
}

/// A BSON document as a JS object (keys in document order, as far as JS keeps it).
pub fn document_to_js<'js>(ctx: &Ctx<'js>, document: &Document) -> rquickjs::Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    for (key, value) in document {
        object.set(key.as_str(), to_js(ctx, value)?)?;
    }
    Ok(object)
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64_ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional, whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, ConversionError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        if c == '=' {
            break;
        }
        let value = BASE64_ALPHABET
            .iter()
            .position(|&a| a as char == c)
            .ok_or_else(|| error(format!("invalid base64 character '{c}'")))?
            as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(text: &str) -> Result<Vec<u8>, ConversionError> {
    if !text.len().is_multiple_of(2) {
        return Err(error("hex text must have an even number of digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| error(format!("invalid hex text '{text}'")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for bytes in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128, 7],
        ] {
            let encoded = base64_encode(bytes);
            assert_eq!(base64_decode(&encoded).unwrap(), bytes, "{encoded}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("a*b").is_err());
        assert_eq!(
            hex_decode(&hex_encode(&[1, 171, 255])).unwrap(),
            vec![1, 171, 255]
        );
        assert!(hex_decode("abc").is_err());
    }

    #[test]
    fn numbers_follow_mongosh() {
        assert_eq!(number_to_bson(1.0), Bson::Int32(1));
        assert_eq!(number_to_bson(-2147483648.0), Bson::Int32(i32::MIN));
        assert_eq!(number_to_bson(2147483648.0), Bson::Double(2147483648.0));
        assert_eq!(number_to_bson(1.5), Bson::Double(1.5));
        assert!(
            matches!(number_to_bson(-0.0), Bson::Double(z) if z == 0.0 && z.is_sign_negative())
        );
        assert!(matches!(number_to_bson(f64::NAN), Bson::Double(n) if n.is_nan()));
    }
}
