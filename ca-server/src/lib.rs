//! The reference Device Trust CA (`devicetrust-ca`), protocol v1.

pub mod mdm;
