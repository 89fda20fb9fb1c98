//! Helpers on single BSON values: MongoDB's type names and numbers, equality in MongoDB's order,
//! truthiness, and checked arithmetic with MongoDB's type promotion.
//!
//! Arithmetic follows MongoDB: int32 results that overflow become int64, int64 results that
//! overflow become double (aggregation) or an error (updates, see [`ArithmeticOverflow`]); a
//! double operand makes the result double; a decimal operand makes the result decimal.

use bson::{Bson, Decimal128};
use cairn_types::order::{Decimal, Number, canonical_rank, compare_values, is_number};
use std::cmp::Ordering;

/// MongoDB's name of a value's type, as `$type` and error messages print it.
pub fn type_name(value: &Bson) -> &'static str {
    match value {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

/// MongoDB's numeric type code of a value (`$type: 2`).
pub fn type_code(value: &Bson) -> i32 {
    match value {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

/// The type code for a `$type` alias (`"string"` -> 2); `None` for unknown names. The alias
/// `"number"` is not a single type and is handled by the caller.
pub fn type_code_for_alias(alias: &str) -> Option<i32> {
    Some(match alias {
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "undefined" => 6,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "dbPointer" => 12,
        "javascript" => 13,
        "symbol" => 14,
        "javascriptWithScope" => 15,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "minKey" => -1,
        "maxKey" => 127,
        _ => return None,
    })
}

/// True for a valid numeric type code.
pub fn is_valid_type_code(code: i64) -> bool {
    matches!(code, -1 | 1..=19 | 127)
}

/// Equality in MongoDB's order (numbers by value across types, documents field by field).
pub fn values_equal(left: &Bson, right: &Bson) -> bool {
    compare_values(left, right) == Ordering::Equal
}

/// True when two values have the same canonical type (so that `$lt` and friends compare them).
pub fn same_canonical_type(left: &Bson, right: &Bson) -> bool {
    canonical_rank(left) == canonical_rank(right)
}

/// True for a NaN double or decimal.
pub fn is_nan(value: &Bson) -> bool {
    is_number(value) && Number::of(value).is_nan()
}

/// Aggregation truthiness: false, null, undefined, missing and zero are false.
pub fn truthy(value: Option<&Bson>) -> bool {
    match value {
        None | Some(Bson::Null) | Some(Bson::Undefined) | Some(Bson::Boolean(false)) => false,
        Some(v) if is_number(v) => {
            let number = Number::of(v);
            !number.is_nan() && number.to_f64() != 0.0 || number.is_nan()
        }
        Some(_) => true,
    }
}

/// The value as a double, for numbers.
pub fn as_f64(value: &Bson) -> Option<f64> {
    if is_number(value) {
        Some(Number::of(value).to_f64())
    } else {
        None
    }
}

/// The value as an exact i64, for numbers that are whole and in range.
pub fn as_exact_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(v) => Some(*v as i64),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) => {
            if v.fract() == 0.0 && *v >= -9.223_372_036_854_776e18 && *v < 9.223_372_036_854_776e18
            {
                Some(*v as i64)
            } else {
                None
            }
        }
        Bson::Decimal128(d) => {
            let f = Decimal::decode(d).to_f64();
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Some(f as i64)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The value as an exact i32 (MongoDB's "representable as a 32-bit integer").
pub fn as_exact_i32(value: &Bson) -> Option<i32> {
    as_exact_i64(value).and_then(|v| i32::try_from(v).ok())
}

/// The widest numeric type of two operands, as the result of arithmetic on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Width {
    Int,
    Long,
    Double,
    Decimal,
}

fn width(value: &Bson) -> Width {
    match value {
        Bson::Int32(_) => Width::Int,
        Bson::Int64(_) => Width::Long,
        Bson::Double(_) => Width::Double,
        _ => Width::Decimal,
    }
}

fn as_i64(value: &Bson) -> i64 {
    match value {
        Bson::Int32(v) => *v as i64,
        Bson::Int64(v) => *v,
        other => Number::of(other).to_f64() as i64,
    }
}

/// What to do when an int64 result overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithmeticOverflow {
    /// Aggregation: fall back to a double.
    ToDouble,
    /// Updates ($inc, $mul): report the overflow as an error (`None`).
    Fail,
}

/// Arithmetic operations with MongoDB's promotion rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arithmetic {
    Add,
    Subtract,
    Multiply,
}

/// `left op right` for two numbers; `None` when an int64 overflows and `overflow` is `Fail`.
pub fn arithmetic(
    op: Arithmetic,
    left: &Bson,
    right: &Bson,
    overflow: ArithmeticOverflow,
) -> Option<Bson> {
    assert!(
        is_number(left) && is_number(right),
        "arithmetic on non-numbers"
    );
    let result_width = width(left).max(width(right));
    match result_width {
        Width::Int | Width::Long => {
            let (l, r) = (as_i64(left), as_i64(right));
            let exact = match op {
                Arithmetic::Add => l.checked_add(r),
                Arithmetic::Subtract => l.checked_sub(r),
                Arithmetic::Multiply => l.checked_mul(r),
            };
            match exact {
                Some(v) if result_width == Width::Int => match i32::try_from(v) {
                    Ok(small) => Some(Bson::Int32(small)),
                    Err(_) => Some(Bson::Int64(v)),
                },
                Some(v) => Some(Bson::Int64(v)),
                None => match overflow {
                    ArithmeticOverflow::Fail => None,
                    ArithmeticOverflow::ToDouble => {
                        let (l, r) = (l as f64, r as f64);
                        Some(Bson::Double(apply_f64(op, l, r)))
                    }
                },
            }
        }
        Width::Double => {
            let (l, r) = (Number::of(left).to_f64(), Number::of(right).to_f64());
            Some(Bson::Double(apply_f64(op, l, r)))
        }
        Width::Decimal => Some(Bson::Decimal128(decimal_arithmetic(op, left, right))),
    }
}

fn apply_f64(op: Arithmetic, l: f64, r: f64) -> f64 {
    match op {
        Arithmetic::Add => l + r,
        Arithmetic::Subtract => l - r,
        Arithmetic::Multiply => l * r,
    }
}

/// A decimal as an exact `(negative, coefficient, exponent)`, or a special value.
fn to_decimal(value: &Bson) -> Decimal {
    match value {
        Bson::Decimal128(d) => Decimal::decode(d),
        Bson::Int32(v) => Decimal::Finite {
            negative: *v < 0,
            coefficient: (*v as i64).unsigned_abs() as u128,
            exponent: 0,
        },
        Bson::Int64(v) => Decimal::Finite {
            negative: *v < 0,
            coefficient: v.unsigned_abs() as u128,
            exponent: 0,
        },
        other => {
            // A double converts to decimal with 15 significant digits, as MongoDB does.
            let f = Number::of(other).to_f64();
            if f.is_nan() {
                Decimal::NaN
            } else if f.is_infinite() {
                Decimal::Infinity { negative: f < 0.0 }
            } else {
                let text = format!("{f:.14e}");
                text.parse::<Decimal128>()
                    .map(|d| Decimal::decode(&d))
                    .unwrap_or(Decimal::NaN)
            }
        }
    }
}

const DECIMAL_DIGITS_MAX: u32 = 34;

/// Rounds a coefficient to at most 34 digits (half to even), adjusting the exponent.
fn round_decimal(
    mut coefficient: u128,
    mut exponent: i64,
    mut extra_digits: Vec<u8>,
) -> (u128, i64) {
    let limit = 10u128.pow(DECIMAL_DIGITS_MAX);
    while coefficient >= limit {
        extra_digits.push((coefficient % 10) as u8);
        coefficient /= 10;
        exponent += 1;
    }
    if let Some(&first_dropped) = extra_digits.last() {
        let rest_nonzero = extra_digits[..extra_digits.len() - 1]
            .iter()
            .any(|d| *d != 0);
        let round_up =
            first_dropped > 5 || (first_dropped == 5 && (rest_nonzero || coefficient % 2 == 1));
        if round_up {
            coefficient += 1;
            if coefficient >= limit {
                coefficient /= 10;
                exponent += 1;
            }
        }
    }
    (coefficient, exponent)
}

fn make_decimal(negative: bool, coefficient: u128, exponent: i64) -> Decimal128 {
    let sign = if negative && coefficient != 0 {
        "-"
    } else {
        ""
    };
    let exponent = exponent.clamp(-6176, 6111);
    format!("{sign}{coefficient}E{exponent}")
        .parse::<Decimal128>()
        .unwrap_or_else(|_| "NaN".parse().expect("NaN parses"))
}

fn nan_decimal() -> Decimal128 {
    "NaN".parse().expect("NaN parses")
}

fn infinity_decimal(negative: bool) -> Decimal128 {
    (if negative { "-Infinity" } else { "Infinity" })
        .parse()
        .expect("Infinity parses")
}

/// Decimal arithmetic, exact to 34 significant digits (rounded half to even).
fn decimal_arithmetic(op: Arithmetic, left: &Bson, right: &Bson) -> Decimal128 {
    let (l, mut r) = (to_decimal(left), to_decimal(right));
    if op == Arithmetic::Subtract {
        r = match r {
            Decimal::Finite {
                negative,
                coefficient,
                exponent,
            } => Decimal::Finite {
                negative: !negative,
                coefficient,
                exponent,
            },
            Decimal::Infinity { negative } => Decimal::Infinity {
                negative: !negative,
            },
            Decimal::NaN => Decimal::NaN,
        };
    }
    match (l, r) {
        (Decimal::NaN, _) | (_, Decimal::NaN) => nan_decimal(),
        (Decimal::Infinity { negative: a }, Decimal::Infinity { negative: b }) => match op {
            Arithmetic::Multiply => infinity_decimal(a != b),
            _ if a == b => infinity_decimal(a),
            _ => nan_decimal(),
        },
        (
            Decimal::Infinity { negative },
            Decimal::Finite {
                negative: other,
                coefficient,
                ..
            },
        )
        | (
            Decimal::Finite {
                negative: other,
                coefficient,
                ..
            },
            Decimal::Infinity { negative },
        ) => match op {
            Arithmetic::Multiply if coefficient == 0 => nan_decimal(),
            Arithmetic::Multiply => infinity_decimal(negative != other),
            _ => infinity_decimal(negative),
        },
        (
            Decimal::Finite {
                negative: ln,
                coefficient: lc,
                exponent: le,
            },
            Decimal::Finite {
                negative: rn,
                coefficient: rc,
                exponent: re,
            },
        ) => match op {
            Arithmetic::Multiply => {
                let (product, extra) = multiply_wide(lc, rc);
                let (c, e) =
                    round_decimal(product, le as i64 + re as i64 + extra.len() as i64, extra);
                make_decimal(ln != rn, c, e)
            }
            _ => {
                // Align exponents: scale the one with the larger exponent down to the smaller
                // one while it fits, else round the other.
                let (mut lc, mut le, mut rc, mut re) = (lc, le as i64, rc, re as i64);
                let mut extra_l = Vec::new();
                let mut extra_r = Vec::new();
                while le > re {
                    match lc.checked_mul(10).filter(|v| *v < 10u128.pow(37)) {
                        Some(v) => {
                            lc = v;
                            le -= 1;
                        }
                        None => {
                            extra_r.push((rc % 10) as u8);
                            rc /= 10;
                            re += 1;
                        }
                    }
                }
                while re > le {
                    match rc.checked_mul(10).filter(|v| *v < 10u128.pow(37)) {
                        Some(v) => {
                            rc = v;
                            re -= 1;
                        }
                        None => {
                            extra_l.push((lc % 10) as u8);
                            lc /= 10;
                            le += 1;
                        }
                    }
                }
                let (negative, magnitude) = if ln == rn {
                    (ln, lc + rc)
                } else if lc >= rc {
                    (ln, lc - rc)
                } else {
                    (rn, rc - lc)
                };
                let extra = if extra_l.is_empty() { extra_r } else { extra_l };
                let (c, e) = round_decimal(magnitude, le, extra);
                make_decimal(negative, c, e)
            }
        },
    }
}

/// The product of two coefficients below 10^34, rounded into a u128 with the dropped digits.
fn multiply_wide(left: u128, right: u128) -> (u128, Vec<u8>) {
    if let Some(product) = left.checked_mul(right) {
        return (product, Vec::new());
    }
    // Drop digits from the larger factor until the product fits; the dropped digits are kept
    // only as a sticky "something non-zero was dropped" marker, which is enough for rounding
    // to 34 digits from a product of at least 38 digits.
    let (mut big, small) = if left >= right {
        (left, right)
    } else {
        (right, left)
    };
    let mut dropped = Vec::new();
    loop {
        if let Some(product) = big.checked_mul(small) {
            // Shift the sticky marker into the position rounding looks at last.
            let sticky = dropped.iter().any(|d| *d != 0);
            let mut extra = vec![0u8; dropped.len()];
            if sticky && !extra.is_empty() {
                extra[0] = 1;
            }
            return (product, extra);
        }
        dropped.push((big % 10) as u8);
        big /= 10;
    }
}

/// Compares two numbers (for `$min`/`$max` and friends).
pub fn compare_numbers(left: &Bson, right: &Bson) -> Ordering {
    cairn_types::order::compare_numbers(&Number::of(left), &Number::of(right))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: Bson, b: Bson) -> Option<Bson> {
        arithmetic(Arithmetic::Add, &a, &b, ArithmeticOverflow::Fail)
    }

    #[test]
    fn int_overflow_promotes_to_long_then_fails() {
        assert_eq!(
            add(Bson::Int32(i32::MAX), Bson::Int32(1)),
            Some(Bson::Int64(1 << 31))
        );
        assert_eq!(add(Bson::Int32(1), Bson::Int32(2)), Some(Bson::Int32(3)));
        assert_eq!(add(Bson::Int64(i64::MAX), Bson::Int32(1)), None);
        assert_eq!(
            arithmetic(
                Arithmetic::Add,
                &Bson::Int64(i64::MAX),
                &Bson::Int32(1),
                ArithmeticOverflow::ToDouble
            ),
            Some(Bson::Double(9.223372036854776e18))
        );
        assert_eq!(
            add(Bson::Int32(1), Bson::Double(0.5)),
            Some(Bson::Double(1.5))
        );
    }

    #[test]
    fn decimal_arithmetic_is_exact() {
        let d = |s: &str| Bson::Decimal128(s.parse().unwrap());
        let sum = add(d("0.1"), d("0.2")).unwrap();
        assert!(values_equal(&sum, &d("0.3")), "{sum:?}");
        let sum = add(d("1"), Bson::Int32(2)).unwrap();
        assert!(values_equal(&sum, &Bson::Int32(3)));
        let product = arithmetic(
            Arithmetic::Multiply,
            &d("1.5"),
            &d("-2"),
            ArithmeticOverflow::Fail,
        );
        assert!(values_equal(&product.unwrap(), &d("-3")));
        let difference = arithmetic(
            Arithmetic::Subtract,
            &d("1"),
            &d("3.25"),
            ArithmeticOverflow::Fail,
        );
        assert!(values_equal(&difference.unwrap(), &d("-2.25")));
    }

    #[test]
    fn truthiness() {
        assert!(!truthy(None));
        assert!(!truthy(Some(&Bson::Int32(0))));
        assert!(!truthy(Some(&Bson::Null)));
        assert!(truthy(Some(&Bson::String(String::new()))));
        assert!(truthy(Some(&Bson::Array(vec![]))));
        assert!(truthy(Some(&Bson::Double(0.5))));
    }
}
