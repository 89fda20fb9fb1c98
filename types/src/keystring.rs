//! An order-preserving, prefix-free byte encoding of BSON values.
//!
//! For any values `a` and `b`: `encode(a).cmp(&encode(b)) == order::compare_values(a, b)`, and no
//! encoding is a proper prefix of another, so the concatenation of several encoded components
//! (a compound index key, a key followed by a record id) sorts component by component. A
//! descending component is the bitwise complement of its ascending encoding.
//!
//! Layout: a type byte in canonical type order, then a body.
//! - numbers: `0x00` for NaN; else `0x01`, the round-down-to-double `D` as 8 order-preserving
//!   bytes, then a tie-break for values that are not exactly a double: `0x00` when `v == D`, else
//!   `0x01` and the exact remainder `v - D` as a decimal (biased adjusted exponent, digits, `0x00`).
//!   So int32 5, int64 5, 5.0 and decimal 5.00 encode identically, as MongoDB indexes them.
//! - strings, field names, regexes, code: bytes with `0x00` escaped as `0x00 0xFF`, closed by
//!   `0x00 0x00`.
//! - objects: per element its type byte, its escaped name and its body, then `0x00`;
//!   arrays: per element its type byte and body, then `0x00`.
//! - fixed-width bodies (ObjectId, dates, timestamps) are big-endian with the sign bit flipped;
//!   binary data is length, subtype, bytes, as MongoDB orders it.
//!
//! The encoding is one way: indexes keep the record's `_id` key and fetch the document.

use crate::order::{BigUint, Decimal, Number};
use bson::Bson;

const TYPE_MIN_KEY: u8 = 0x0A;
const TYPE_UNDEFINED: u8 = 0x0F;
const TYPE_NULL: u8 = 0x14;
const TYPE_NUMBER: u8 = 0x1E;
const TYPE_STRING: u8 = 0x3C;
const TYPE_OBJECT: u8 = 0x46;
const TYPE_ARRAY: u8 = 0x50;
const TYPE_BINARY: u8 = 0x5A;
const TYPE_OBJECT_ID: u8 = 0x64;
const TYPE_BOOL: u8 = 0x6E;
const TYPE_DATE: u8 = 0x78;
const TYPE_TIMESTAMP: u8 = 0x82;
const TYPE_REGEX: u8 = 0x8C;
const TYPE_DB_POINTER: u8 = 0x96;
const TYPE_CODE: u8 = 0xA0;
const TYPE_CODE_WITH_SCOPE: u8 = 0xAA;
const TYPE_MAX_KEY: u8 = 0xF0;

/// Sort direction of one key component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ascending,
    Descending,
}

/// Encodes one value, ascending.
pub fn encode(value: &Bson) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    append(&mut out, value, Direction::Ascending);
    out
}

/// Appends one value's encoding in the given direction.
pub fn append(out: &mut Vec<u8>, value: &Bson, direction: Direction) {
    let start = out.len();
    out.push(type_byte(value));
    append_body(out, value);
    if direction == Direction::Descending {
        for byte in &mut out[start..] {
            *byte = !*byte;
        }
    }
}

/// Encodes a compound key: each component in its direction, concatenated.
pub fn encode_compound<'a>(components: impl IntoIterator<Item = (&'a Bson, Direction)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    for (value, direction) in components {
        append(&mut out, value, direction);
    }
    out
}

/// The smallest key that is greater than every key starting with `prefix` (for range ends).
/// `None` when no such key exists (the prefix is all `0xFF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut successor = prefix.to_vec();
    while let Some(last) = successor.pop() {
        if last != 0xFF {
            successor.push(last + 1);
            return Some(successor);
        }
    }
    None
}

fn type_byte(value: &Bson) -> u8 {
    match value {
        Bson::MinKey => TYPE_MIN_KEY,
        Bson::Undefined => TYPE_UNDEFINED,
        Bson::Null => TYPE_NULL,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => TYPE_NUMBER,
        Bson::String(_) | Bson::Symbol(_) => TYPE_STRING,
        Bson::Document(_) => TYPE_OBJECT,
        Bson::Array(_) => TYPE_ARRAY,
        Bson::Binary(_) => TYPE_BINARY,
        Bson::ObjectId(_) => TYPE_OBJECT_ID,
        Bson::Boolean(_) => TYPE_BOOL,
        Bson::DateTime(_) => TYPE_DATE,
        Bson::Timestamp(_) => TYPE_TIMESTAMP,
        Bson::RegularExpression(_) => TYPE_REGEX,
        Bson::DbPointer(_) => TYPE_DB_POINTER,
        Bson::JavaScriptCode(_) => TYPE_CODE,
        Bson::JavaScriptCodeWithScope(_) => TYPE_CODE_WITH_SCOPE,
        Bson::MaxKey => TYPE_MAX_KEY,
    }
}

fn append_body(out: &mut Vec<u8>, value: &Bson) {
    match value {
        Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined => {}
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            append_number(out, Number::of(value));
        }
        Bson::String(text) | Bson::Symbol(text) | Bson::JavaScriptCode(text) => {
            append_escaped(out, text.as_bytes());
        }
        Bson::Document(document) => {
            for (name, element) in document {
                out.push(type_byte(element));
                append_escaped(out, name.as_bytes());
                append_body(out, element);
            }
            out.push(0x00);
        }
        Bson::Array(items) => {
            for element in items {
                out.push(type_byte(element));
                append_body(out, element);
            }
            out.push(0x00);
        }
        Bson::Binary(binary) => {
            out.extend_from_slice(&(binary.bytes.len() as u32).to_be_bytes());
            out.push(u8::from(binary.subtype));
            out.extend_from_slice(&binary.bytes);
        }
        Bson::ObjectId(id) => out.extend_from_slice(&id.bytes()),
        Bson::Boolean(flag) => out.push(u8::from(*flag)),
        Bson::DateTime(date) => {
            out.extend_from_slice(&((date.timestamp_millis() as u64) ^ (1 << 63)).to_be_bytes());
        }
        Bson::Timestamp(ts) => {
            out.extend_from_slice(&ts.time.to_be_bytes());
            out.extend_from_slice(&ts.increment.to_be_bytes());
        }
        Bson::RegularExpression(regex) => {
            append_escaped(out, regex.pattern.as_str().as_bytes());
            append_escaped(out, regex.options.as_str().as_bytes());
        }
        Bson::DbPointer(_) => {
            let bytes = crate::order::dbpointer_value_bytes(value);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        Bson::JavaScriptCodeWithScope(code) => {
            append_escaped(out, code.code.as_bytes());
            append_body(out, &Bson::Document(code.scope.clone()));
        }
    }
}

fn append_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        out.push(byte);
        if byte == 0x00 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Order-preserving bytes of a double (after folding -0.0 into 0.0).
fn ordered_double_bits(value: f64) -> [u8; 8] {
    let value = if value == 0.0 { 0.0 } else { value };
    let bits = value.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

fn append_number(out: &mut Vec<u8>, number: Number) {
    if number.is_nan() {
        out.push(0x00);
        return;
    }
    out.push(0x01);
    match number {
        Number::Double(value) => {
            out.extend_from_slice(&ordered_double_bits(value));
            out.push(0x00);
        }
        Number::Int(value) => {
            let mut floor = value as f64;
            if floor as i128 > value as i128 {
                floor = floor.next_down();
            }
            out.extend_from_slice(&ordered_double_bits(floor));
            let remainder = value as i128 - floor as i128;
            assert!(remainder >= 0, "round-down remainder must not be negative");
            if remainder == 0 {
                out.push(0x00);
            } else {
                out.push(0x01);
                append_positive_decimal(out, BigUint::from_u128(remainder as u128), 0);
            }
        }
        Number::Decimal(Decimal::NaN) => unreachable!("NaN handled above"),
        Number::Decimal(Decimal::Infinity { negative }) => {
            let infinity = if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            out.extend_from_slice(&ordered_double_bits(infinity));
            out.push(0x00);
        }
        Number::Decimal(
            decimal @ Decimal::Finite {
                negative,
                coefficient,
                exponent,
            },
        ) => {
            let nearest = decimal.to_f64();
            if nearest == f64::NEG_INFINITY {
                // Below -f64::MAX: sort just above -Infinity, by the value itself.
                out.extend_from_slice(&ordered_double_bits(f64::NEG_INFINITY));
                out.push(0x01);
                let start = out.len();
                append_positive_decimal(out, BigUint::from_u128(coefficient), exponent);
                for byte in &mut out[start..] {
                    *byte = !*byte;
                }
                return;
            }
            let mut floor = if nearest == f64::INFINITY {
                f64::MAX
            } else {
                nearest
            };
            let value = crate::order::Number::Decimal(decimal);
            if crate::order::compare_numbers(&value, &Number::Double(floor))
                == std::cmp::Ordering::Less
            {
                floor = floor.next_down();
            }
            out.extend_from_slice(&ordered_double_bits(floor));
            if crate::order::compare_numbers(&value, &Number::Double(floor))
                == std::cmp::Ordering::Equal
            {
                out.push(0x00);
                return;
            }
            // remainder = |v| - |floor| when both are non-negative, |floor| - |v| when both are
            // negative; computed on integers scaled by 10^a * 2^b.
            let (floor_mantissa, floor_exp2) = double_parts(floor.abs());
            let scale10 = 0.max(-exponent);
            let scale2 = 0.max(-floor_exp2);
            let mut decimal_scaled = BigUint::from_u128(coefficient);
            decimal_scaled.mul_pow10((exponent + scale10) as u32);
            decimal_scaled.shl(scale2 as u32);
            let mut floor_scaled = BigUint::from_u128(floor_mantissa as u128);
            floor_scaled.shl((floor_exp2 + scale2) as u32);
            floor_scaled.mul_pow10(scale10 as u32);
            let difference = if negative {
                floor_scaled.sub(&decimal_scaled)
            } else {
                decimal_scaled.sub(&floor_scaled)
            };
            // difference / (10^scale10 * 2^scale2) = difference * 5^scale2 / 10^(scale10+scale2)
            let mut numerator = difference;
            for _ in 0..scale2 {
                numerator.mul_pow5();
            }
            out.push(0x01);
            append_positive_decimal(out, numerator, -(scale10 + scale2));
        }
    }
}

/// `(mantissa, exp2)` with `value == mantissa * 2^exp2`, for a finite non-negative double.
fn double_parts(value: f64) -> (u64, i32) {
    let bits = value.to_bits();
    let exponent_bits = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    if exponent_bits == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), exponent_bits - 1075)
    }
}

/// Appends a positive decimal `coefficient * 10^exponent` in an order-preserving, prefix-free
/// form: the adjusted exponent (biased, big-endian), the significant digits, `0x00`.
fn append_positive_decimal(out: &mut Vec<u8>, coefficient: BigUint, exponent: i32) {
    assert!(!coefficient.is_zero(), "remainder must be positive");
    let mut digits = coefficient.to_decimal_digits();
    let mut exponent = exponent;
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
        exponent += 1;
    }
    let adjusted = exponent + digits.len() as i32 - 1;
    out.extend_from_slice(&((adjusted as u32) ^ (1 << 31)).to_be_bytes());
    out.extend(digits.iter().map(|digit| b'0' + digit));
    out.push(0x00);
}

impl BigUint {
    fn mul_pow5(&mut self) {
        // 5 = 10 / 2: multiply by ten and halve, exactly (the product is even).
        self.mul_pow10(1);
        let remainder = self.div_small(2);
        assert_eq!(remainder, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::compare_values;
    use bson::{Decimal128, doc};
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn decimal(text: &str) -> Bson {
        Bson::Decimal128(text.parse::<Decimal128>().unwrap())
    }

    #[test]
    fn equal_numbers_encode_identically() {
        let five = encode(&Bson::Int32(5));
        assert_eq!(encode(&Bson::Int64(5)), five);
        assert_eq!(encode(&Bson::Double(5.0)), five);
        assert_eq!(encode(&decimal("5.00")), five);
        assert_eq!(encode(&Bson::Double(-0.0)), encode(&Bson::Int32(0)));
        assert_eq!(encode(&Bson::Double(f64::NAN)), encode(&decimal("NaN")));
    }

    #[test]
    fn strings_with_nul_bytes_keep_order() {
        let values = ["", "\0", "\0\0", "a", "a\0", "a\0b", "ab", "b"];
        for window in values.windows(2) {
            let (a, b) = (
                Bson::String(window[0].into()),
                Bson::String(window[1].into()),
            );
            assert!(encode(&a) < encode(&b), "{window:?}");
        }
    }

    #[test]
    fn descending_reverses_order() {
        let a = Bson::Int32(1);
        let b = Bson::String("x".into());
        let mut ascending = Vec::new();
        append(&mut ascending, &a, Direction::Descending);
        let mut descending = Vec::new();
        append(&mut descending, &b, Direction::Descending);
        assert!(ascending > descending);
    }

    #[test]
    fn prefix_successor_bounds_a_prefix() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
    }

    fn number_strategy() -> impl Strategy<Value = Bson> {
        prop_oneof![
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            (-3i64..3).prop_map(Bson::Int64),
            prop_oneof![
                Just((1i64 << 53) + 1),
                Just(i64::MAX),
                Just(i64::MIN),
                Just(-(1i64 << 53) - 1)
            ]
            .prop_map(Bson::Int64),
            any::<f64>().prop_map(Bson::Double),
            prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(f64::NAN),
                Just(9007199254740992.0),
                Just(0.1),
                Just(-0.1),
                Just(f64::MAX),
                Just(f64::MIN_POSITIVE)
            ]
            .prop_map(Bson::Double),
            (any::<i64>(), -40i32..40).prop_map(|(c, e)| decimal(&format!("{c}E{e}"))),
            prop_oneof![
                Just("0.1"),
                Just("-0.1"),
                Just("1E+400"),
                Just("-1E+400"),
                Just("-2E+400"),
                Just("9007199254740993"),
                Just("Infinity"),
                Just("-Infinity"),
                Just("NaN"),
                Just("1.000000000000000000000000000000001")
            ]
            .prop_map(decimal),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = Bson> {
        let leaf = prop_oneof![
            number_strategy(),
            "[a\\x00b]{0,4}".prop_map(Bson::String),
            Just(Bson::Null),
            Just(Bson::Undefined),
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
            any::<bool>().prop_map(Bson::Boolean),
            any::<i64>().prop_map(|ms| Bson::DateTime(bson::DateTime::from_millis(ms))),
            (any::<u32>(), any::<u32>())
                .prop_map(|(time, increment)| Bson::Timestamp(bson::Timestamp { time, increment })),
            any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(bson::oid::ObjectId::from_bytes(b))),
            (prop::collection::vec(any::<u8>(), 0..3), 0u8..3).prop_map(|(bytes, subtype)| {
                Bson::Binary(bson::Binary {
                    subtype: bson::spec::BinarySubtype::from(subtype),
                    bytes,
                })
            }),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
                prop::collection::vec(("[ab\\x00]{0,2}", inner), 0..3).prop_map(|fields| {
                    let mut document = bson::Document::new();
                    for (name, value) in fields {
                        document.insert(name, value);
                    }
                    Bson::Document(document)
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn encoding_order_is_value_order(a in value_strategy(), b in value_strategy()) {
            let expected = compare_values(&a, &b);
            let actual = encode(&a).cmp(&encode(&b));
            prop_assert_eq!(actual, expected, "a={:?} b={:?}", a, b);
        }

        #[test]
        fn number_encoding_order_is_value_order(a in number_strategy(), b in number_strategy()) {
            prop_assert_eq!(encode(&a).cmp(&encode(&b)), compare_values(&a, &b), "a={:?} b={:?}", a, b);
        }

        #[test]
        fn compound_keys_order_component_by_component(
            a1 in value_strategy(), a2 in value_strategy(),
            b1 in value_strategy(), b2 in value_strategy(),
            descending in any::<bool>(),
        ) {
            let second = if descending { Direction::Descending } else { Direction::Ascending };
            let key_a = encode_compound([(&a1, Direction::Ascending), (&a2, second)]);
            let key_b = encode_compound([(&b1, Direction::Ascending), (&b2, second)]);
            let mut expected = compare_values(&a1, &b1);
            if expected == Ordering::Equal {
                expected = compare_values(&a2, &b2);
                if descending { expected = expected.reverse(); }
            }
            prop_assert_eq!(key_a.cmp(&key_b), expected);
        }
    }

    #[test]
    fn nested_document_order_examples() {
        let a = Bson::Document(doc! {"x": 1, "y": "a"});
        let b = Bson::Document(doc! {"x": 1, "y": "b"});
        assert_eq!(encode(&a).cmp(&encode(&b)), Ordering::Less);
    }
}
