//! Regions from other formats than the region JSON: a bundle of CSV files.

pub mod csv;
