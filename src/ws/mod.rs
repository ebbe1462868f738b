//! The live room on the wire: its protocol (every frame, serialized in one
//! place) and the per-socket loop, over any message sink and stream.

pub mod protocol;
pub mod socket;

#[cfg(test)]
mod tests;
