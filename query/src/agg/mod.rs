//! Aggregation: expressions ([`expression`]).

pub mod expression;
