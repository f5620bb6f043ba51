//! MLflow throughput bench (placeholder, filled in below).
fn main() {}
