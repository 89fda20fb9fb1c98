//! MongoDB's total order over BSON values.
//!
//! Values of different types compare by their canonical type (MongoDB's `canonicalizeBSONType`):
//! MinKey < undefined < null < numbers < strings (and symbols) < objects < arrays < binary <
//! ObjectId < bool < date < timestamp < regex < DBPointer < code < code with scope < MaxKey.
//! Numbers compare by exact value across int32, int64, double and decimal128; NaN is less than
//! every other number and equal to itself. Objects compare element by element (type, then field
//! name, then value), then by length; arrays element by element, then by length.
//!
//! Invariant: [`compare_values`] is a total order, and [`crate::keystring`] encodes it exactly.

use bson::{Bson, Document};
use std::cmp::Ordering;

/// MongoDB's canonical type rank: values of different rank compare by rank alone.
pub fn canonical_rank(value: &Bson) -> i32 {
    match value {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        Bson::Null => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 100,
    }
}

/// True for int32, int64, double and decimal128.
pub fn is_number(value: &Bson) -> bool {
    canonical_rank(value) == 10
}

/// Compares two values in MongoDB's order.
pub fn compare_values(left: &Bson, right: &Bson) -> Ordering {
    let (left_rank, right_rank) = (canonical_rank(left), canonical_rank(right));
    if left_rank != right_rank {
        return left_rank.cmp(&right_rank);
    }
    match (left, right) {
        (Bson::String(l) | Bson::Symbol(l), Bson::String(r) | Bson::Symbol(r)) => {
            l.as_bytes().cmp(r.as_bytes())
        }
        (Bson::Document(l), Bson::Document(r)) => compare_documents(l, r),
        (Bson::Array(l), Bson::Array(r)) => compare_arrays(l, r),
        (Bson::Binary(l), Bson::Binary(r)) => l
            .bytes
            .len()
            .cmp(&r.bytes.len())
            .then_with(|| u8::from(l.subtype).cmp(&u8::from(r.subtype)))
            .then_with(|| l.bytes.cmp(&r.bytes)),
        (Bson::ObjectId(l), Bson::ObjectId(r)) => l.bytes().cmp(&r.bytes()),
        (Bson::Boolean(l), Bson::Boolean(r)) => l.cmp(r),
        (Bson::DateTime(l), Bson::DateTime(r)) => l.timestamp_millis().cmp(&r.timestamp_millis()),
        (Bson::Timestamp(l), Bson::Timestamp(r)) => {
            (l.time, l.increment).cmp(&(r.time, r.increment))
        }
        (Bson::RegularExpression(l), Bson::RegularExpression(r)) => l
            .pattern
            .as_str()
            .as_bytes()
            .cmp(r.pattern.as_str().as_bytes())
            .then_with(|| {
                l.options
                    .as_str()
                    .as_bytes()
                    .cmp(r.options.as_str().as_bytes())
            }),
        (Bson::DbPointer(_), Bson::DbPointer(_)) => {
            let (l, r) = (dbpointer_value_bytes(left), dbpointer_value_bytes(right));
            l.len().cmp(&r.len()).then_with(|| l.cmp(&r))
        }
        (Bson::JavaScriptCode(l), Bson::JavaScriptCode(r)) => l.as_bytes().cmp(r.as_bytes()),
        (Bson::JavaScriptCodeWithScope(l), Bson::JavaScriptCodeWithScope(r)) => l
            .code
            .as_bytes()
            .cmp(r.code.as_bytes())
            .then_with(|| compare_documents(&l.scope, &r.scope)),
        _ if left_rank == 10 => compare_numbers(&Number::of(left), &Number::of(right)),
        // MinKey, MaxKey, null, undefined: one value each.
        _ => Ordering::Equal,
    }
}

/// Compares two documents in MongoDB's order (element by element, then length).
pub fn compare_documents(left: &Document, right: &Document) -> Ordering {
    let mut left_iter = left.iter();
    let mut right_iter = right.iter();
    loop {
        match (left_iter.next(), right_iter.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((left_key, left_value)), Some((right_key, right_value))) => {
                let ordering = canonical_rank(left_value)
                    .cmp(&canonical_rank(right_value))
                    .then_with(|| left_key.as_bytes().cmp(right_key.as_bytes()))
                    .then_with(|| compare_values(left_value, right_value));
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
        }
    }
}

fn compare_arrays(left: &[Bson], right: &[Bson]) -> Ordering {
    for (left_value, right_value) in left.iter().zip(right) {
        let ordering = compare_values(left_value, right_value);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    left.len().cmp(&right.len())
}

/// The serialized value bytes of a DBPointer (string length, namespace, NUL, ObjectId).
pub(crate) fn dbpointer_value_bytes(value: &Bson) -> Vec<u8> {
    let document = bson::doc! { "": value.clone() };
    let bytes = bson::serialize_to_vec(&document).unwrap_or_default();
    // 4 bytes length + type byte + empty key NUL ... + trailing NUL.
    if bytes.len() < 7 {
        Vec::new()
    } else {
        bytes[6..bytes.len() - 1].to_vec()
    }
}

/// A BSON number, decoded for exact comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Double(f64),
    Decimal(Decimal),
}

/// A decoded decimal128: `(-1)^negative * coefficient * 10^exponent`, or a special value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decimal {
    Finite {
        negative: bool,
        coefficient: u128,
        exponent: i32,
    },
    Infinity {
        negative: bool,
    },
    NaN,
}

impl Decimal {
    /// Decodes decimal128's binary integer decimal (BID) encoding.
    pub fn decode(value: &bson::Decimal128) -> Decimal {
        let bytes = value.bytes();
        let bits = u128::from_le_bytes(bytes);
        let high = (bits >> 64) as u64;
        let negative = high >> 63 == 1;
        let combination = (high >> 58) & 0x1f;
        if combination == 0x1f {
            return Decimal::NaN;
        }
        if combination == 0x1e {
            return Decimal::Infinity { negative };
        }
        let (exponent_bits, coefficient) = if (high >> 61) & 0b11 == 0b11 {
            // The large-coefficient form: always above 10^34 - 1, so non-canonical: zero.
            (((high >> 47) & 0x3fff) as i32, 0u128)
        } else {
            let coefficient = bits & ((1u128 << 113) - 1);
            let coefficient = if coefficient > 9_999_999_999_999_999_999_999_999_999_999_999u128 {
                0
            } else {
                coefficient
            };
            (((high >> 49) & 0x3fff) as i32, coefficient)
        };
        Decimal::Finite {
            negative,
            coefficient,
            exponent: exponent_bits - 6176,
        }
    }

    /// The nearest double.
    pub fn to_f64(self) -> f64 {
        match self {
            Decimal::NaN => f64::NAN,
            Decimal::Infinity { negative } => {
                if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            }
            Decimal::Finite {
                negative,
                coefficient,
                exponent,
            } => {
                let text = format!(
                    "{}{}e{}",
                    if negative { "-" } else { "" },
                    coefficient,
                    exponent
                );
                text.parse::<f64>().unwrap_or(f64::NAN)
            }
        }
    }
}

impl Number {
    /// The number in a BSON value; panics on a non-number (callers check [`is_number`]).
    pub fn of(value: &Bson) -> Number {
        match value {
            Bson::Int32(v) => Number::Int(*v as i64),
            Bson::Int64(v) => Number::Int(*v),
            Bson::Double(v) => Number::Double(*v),
            Bson::Decimal128(v) => Number::Decimal(Decimal::decode(v)),
            other => panic!("not a number: {other:?}"),
        }
    }

    pub fn is_nan(self) -> bool {
        match self {
            Number::Int(_) => false,
            Number::Double(v) => v.is_nan(),
            Number::Decimal(d) => d == Decimal::NaN,
        }
    }

    /// The nearest double (monotone: `a <= b` implies `a.to_f64() <= b.to_f64()`).
    pub fn to_f64(self) -> f64 {
        match self {
            Number::Int(v) => v as f64,
            Number::Double(v) => v,
            Number::Decimal(d) => d.to_f64(),
        }
    }

    /// The exact value as `(negative, magnitude as a scaled integer)`, for finite numbers only.
    fn exact(self) -> Option<Exact> {
        match self {
            Number::Int(v) => Some(Exact::from_parts(v < 0, v.unsigned_abs() as u128, 0, 0)),
            Number::Double(v) if v.is_finite() => {
                let bits = v.to_bits();
                let negative = bits >> 63 == 1;
                let exponent_bits = ((bits >> 52) & 0x7ff) as i32;
                let fraction = bits & ((1u64 << 52) - 1);
                let (mantissa, exponent2) = if exponent_bits == 0 {
                    (fraction, -1074)
                } else {
                    (fraction | (1u64 << 52), exponent_bits - 1075)
                };
                Some(Exact::from_parts(negative, mantissa as u128, 0, exponent2))
            }
            Number::Decimal(Decimal::Finite {
                negative,
                coefficient,
                exponent,
            }) => Some(Exact::from_parts(negative, coefficient, exponent, 0)),
            _ => None,
        }
    }
}

/// Compares two numbers by exact value; NaN is below every other number.
pub fn compare_numbers(left: &Number, right: &Number) -> Ordering {
    match (left, right) {
        (Number::Int(l), Number::Int(r)) => return l.cmp(r),
        (Number::Double(l), Number::Double(r)) if !l.is_nan() && !r.is_nan() => {
            return l.partial_cmp(r).unwrap_or(Ordering::Equal);
        }
        _ => {}
    }
    match (left.is_nan(), right.is_nan()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    let (left_approx, right_approx) = (left.to_f64(), right.to_f64());
    // Rounding to the nearest double is monotone, so distinct approximations decide the order.
    if left_approx < right_approx {
        return Ordering::Less;
    }
    if left_approx > right_approx {
        return Ordering::Greater;
    }
    match (left.exact(), right.exact()) {
        (Some(l), Some(r)) => l.cmp(&r),
        // A finite value that rounds to an infinity is still inside it.
        (Some(_), None) => {
            if right_approx > 0.0 {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (None, Some(_)) => {
            if left_approx > 0.0 {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        // The same infinity.
        (None, None) => Ordering::Equal,
    }
}

/// An exact finite number: sign and `magnitude * 10^exp10 * 2^exp2`, compared through a
/// small big-integer. Used only when two numbers round to the same double, which is rare.
#[derive(Clone, Debug)]
struct Exact {
    negative: bool,
    magnitude: u128,
    exp10: i32,
    exp2: i32,
}

impl Exact {
    fn from_parts(negative: bool, magnitude: u128, exp10: i32, exp2: i32) -> Exact {
        // Zero has no sign.
        Exact {
            negative: negative && magnitude != 0,
            magnitude,
            exp10,
            exp2,
        }
    }

    fn cmp(&self, other: &Exact) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => return Ordering::Greater,
            (true, false) => return Ordering::Less,
            _ => {}
        }
        let magnitudes = compare_magnitudes(self, other);
        if self.negative {
            magnitudes.reverse()
        } else {
            magnitudes
        }
    }
}

fn compare_magnitudes(left: &Exact, right: &Exact) -> Ordering {
    if left.magnitude == 0 || right.magnitude == 0 {
        return left.magnitude.cmp(&right.magnitude);
    }
    // Scale both to integers: multiply by 10^a * 2^b so that no exponent stays negative.
    let scale10 = 0.max(-left.exp10).max(-right.exp10);
    let scale2 = 0.max(-left.exp2).max(-right.exp2);
    let scaled = |value: &Exact| {
        let mut big = BigUint::from_u128(value.magnitude);
        big.mul_pow10((value.exp10 + scale10) as u32);
        big.shl((value.exp2 + scale2) as u32);
        big
    };
    scaled(left).cmp(&scaled(right))
}

/// Just enough of an arbitrary-precision unsigned integer for exact number comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BigUint {
    /// Little-endian 32-bit limbs without leading zero limbs.
    limbs: Vec<u32>,
}

impl BigUint {
    pub(crate) fn from_u128(mut value: u128) -> BigUint {
        let mut limbs = Vec::new();
        while value > 0 {
            limbs.push(value as u32);
            value >>= 32;
        }
        BigUint { limbs }
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.limbs.is_empty()
    }

    fn mul_small(&mut self, factor: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let product = *limb as u64 * factor as u64 + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry > 0 {
            self.limbs.push(carry as u32);
        }
        self.trim();
    }

    pub(crate) fn mul_pow10(&mut self, mut power: u32) {
        while power >= 9 {
            self.mul_small(1_000_000_000);
            power -= 9;
        }
        if power > 0 {
            self.mul_small(10u32.pow(power));
        }
    }

    pub(crate) fn shl(&mut self, bits: u32) {
        if self.is_zero() {
            return;
        }
        let (limb_shift, bit_shift) = ((bits / 32) as usize, bits % 32);
        if bit_shift > 0 {
            let mut carry = 0u32;
            for limb in &mut self.limbs {
                let next_carry = *limb >> (32 - bit_shift);
                *limb = (*limb << bit_shift) | carry;
                carry = next_carry;
            }
            if carry > 0 {
                self.limbs.push(carry);
            }
        }
        if limb_shift > 0 {
            let mut shifted = vec![0u32; limb_shift];
            shifted.extend_from_slice(&self.limbs);
            self.limbs = shifted;
        }
    }

    /// `self - other`, for `self >= other`.
    pub(crate) fn sub(&self, other: &BigUint) -> BigUint {
        assert!(*self >= *other, "BigUint::sub underflow");
        let mut limbs = Vec::with_capacity(self.limbs.len());
        let mut borrow = 0i64;
        for (index, &limb) in self.limbs.iter().enumerate() {
            let subtrahend = other.limbs.get(index).copied().unwrap_or(0) as i64;
            let mut difference = limb as i64 - subtrahend - borrow;
            if difference < 0 {
                difference += 1 << 32;
                borrow = 1;
            } else {
                borrow = 0;
            }
            limbs.push(difference as u32);
        }
        let mut result = BigUint { limbs };
        result.trim();
        result
    }

    /// Divides by a small number, returning the remainder.
    pub(crate) fn div_small(&mut self, divisor: u32) -> u32 {
        let mut remainder = 0u64;
        for limb in self.limbs.iter_mut().rev() {
            let current = (remainder << 32) | *limb as u64;
            *limb = (current / divisor as u64) as u32;
            remainder = current % divisor as u64;
        }
        self.trim();
        remainder as u32
    }

    /// Decimal digits, most significant first.
    pub(crate) fn to_decimal_digits(&self) -> Vec<u8> {
        if self.is_zero() {
            return vec![0];
        }
        let mut value = self.clone();
        let mut digits = Vec::new();
        while !value.is_zero() {
            digits.push(value.div_small(10) as u8);
        }
        digits.reverse();
        digits
    }

    fn trim(&mut self) {
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
    }
}

impl PartialOrd for BigUint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BigUint {
    fn cmp(&self, other: &Self) -> Ordering {
        self.limbs
            .len()
            .cmp(&other.limbs.len())
            .then_with(|| self.limbs.iter().rev().cmp(other.limbs.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Decimal128, doc, oid::ObjectId};

    fn decimal(text: &str) -> Bson {
        Bson::Decimal128(text.parse::<Decimal128>().unwrap())
    }

    #[test]
    fn canonical_type_order() {
        let ascending = vec![
            Bson::MinKey,
            Bson::Undefined,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Int32(-5),
            Bson::Double(1.5),
            Bson::Int64(2),
            Bson::String("".into()),
            Bson::String("a".into()),
            Bson::Document(doc! {}),
            Bson::Document(doc! {"a": 1}),
            Bson::Array(vec![]),
            Bson::Array(vec![Bson::Int32(1)]),
            Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![9],
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(bson::DateTime::from_millis(-1)),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::Timestamp(bson::Timestamp {
                time: 1,
                increment: 0,
            }),
            Bson::MaxKey,
        ];
        for window in ascending.windows(2) {
            assert_eq!(
                compare_values(&window[0], &window[1]),
                Ordering::Less,
                "{window:?}"
            );
            assert_eq!(
                compare_values(&window[1], &window[0]),
                Ordering::Greater,
                "{window:?}"
            );
        }
    }

    #[test]
    fn numbers_compare_by_value_across_types() {
        assert_eq!(
            compare_values(&Bson::Int32(1), &Bson::Double(1.0)),
            Ordering::Equal
        );
        assert_eq!(
            compare_values(&Bson::Int64(1), &decimal("1.00")),
            Ordering::Equal
        );
        assert_eq!(
            compare_values(&Bson::Double(0.1), &decimal("0.1")),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&Bson::Double(-0.0), &Bson::Int32(0)),
            Ordering::Equal
        );
        // 2^53 + 1 is not a double: it is above the double 2^53 it rounds to.
        let big = (1i64 << 53) + 1;
        assert_eq!(
            compare_values(&Bson::Int64(big), &Bson::Double((1u64 << 53) as f64)),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&Bson::Int64(i64::MAX), &Bson::Double(9.3e18)),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&Bson::Double(f64::NAN), &decimal("NaN")),
            Ordering::Equal
        );
        assert_eq!(
            compare_values(&decimal("-Infinity"), &Bson::Double(f64::MIN)),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&decimal("1E+400"), &Bson::Double(f64::MAX)),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&decimal("1E+400"), &Bson::Double(f64::INFINITY)),
            Ordering::Less
        );
    }

    #[test]
    fn documents_compare_type_then_name_then_value() {
        // Type rank of the first element decides before the field name does.
        assert_eq!(
            compare_documents(&doc! {"b": 1}, &doc! {"a": "x"}),
            Ordering::Less
        );
        assert_eq!(
            compare_documents(&doc! {"a": 1}, &doc! {"b": 1}),
            Ordering::Less
        );
        assert_eq!(
            compare_documents(&doc! {"a": 1}, &doc! {"a": 1, "b": 0}),
            Ordering::Less
        );
        assert_eq!(
            compare_documents(&doc! {"a": 2}, &doc! {"a": 1, "b": 0}),
            Ordering::Greater
        );
    }

    #[test]
    fn decimal_decoding() {
        assert_eq!(
            Decimal::decode(&"12.5".parse().unwrap()),
            Decimal::Finite {
                negative: false,
                coefficient: 125,
                exponent: -1
            }
        );
        assert_eq!(
            Decimal::decode(&"-Infinity".parse().unwrap()),
            Decimal::Infinity { negative: true }
        );
        assert_eq!(Decimal::decode(&"NaN".parse().unwrap()), Decimal::NaN);
    }
}
