//! The one integration-test binary: every test runs the real `faissx` binary.

mod util;

mod bench;
mod bench_filter;
mod cli_traps;
mod cluster;
mod cluster_failures;
mod cluster_s3;
mod container;
mod core;
mod deploy;
mod errors;
mod filter;
mod index_files;
mod man_pages;
mod merge_split;
mod mmap;
mod object_store;
mod python_compat;
mod router;
mod serve;
mod serve_binary;
mod serve_curve;
mod serve_durability;
mod serve_faissx_actions;
mod serve_filter;
mod serve_fuzz;
mod serve_hardening;
mod serve_import;
mod serve_ops;
mod serve_python;
mod split_build;
