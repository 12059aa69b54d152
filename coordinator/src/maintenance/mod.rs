//! Background loops every coordinator runs; each is safe to run on all
//! coordinators at once.

pub mod lease_reaper;
pub mod statistics;
