//! The `slotproxy` binary. (Stub.)
fn main() {}
