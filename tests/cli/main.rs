//! The one integration-test binary: every test runs the real `faissx` binary.

mod util;

mod core;
mod errors;
mod man_pages;
mod python_compat;
