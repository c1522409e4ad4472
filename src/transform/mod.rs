//! Transform: pure functions from the IAM domain value to an OCSF 1.6.0 class 5003 record, and from
//! a change to OCSF 3001 Account Change events. No IO and no clock: times are arguments.

pub mod change;
pub mod events;
pub mod ocsf;

pub use ocsf::{VOLATILE_FIELDS, input_hash, root_to_ocsf, strip_volatile, to_ocsf};
