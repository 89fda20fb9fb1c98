//! Aggregation: expressions ([`expression`]) and pipeline stages ([`pipeline`]).

pub mod expression;
pub mod pipeline;
