//! Only benches live here: see the `[[bench]]` targets.
