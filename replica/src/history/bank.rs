//! Bank invariant (draft).
