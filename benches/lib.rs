//! Shared inputs for the criterion benches (see the `[[bench]]` targets).

pub mod corpus;
