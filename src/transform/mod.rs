//! Transform: pure functions from the IAM domain value to an OCSF 1.6.0 class 5003 record.
//! No IO and no clock: the collection time is an argument.

pub mod ocsf;

pub use ocsf::{VOLATILE_FIELDS, strip_volatile, to_ocsf};
