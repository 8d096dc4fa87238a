//! `man/` is generated from the clap definitions; this test fails when it is stale.
//! `FAISSX_BLESS=1 cargo test man_pages` rewrites it.

use crate::util::*;
use clap::CommandFactory;

#[test]
fn man_pages_are_current() {
    let env = TestEnv::new("man");
    let out = env.path("man");
    std::fs::create_dir_all(&out).unwrap();
    clap_mangen::generate_to(faissx::cmd::Cli::command(), &out).unwrap();
    let committed = repo_root().join("man");
    if std::env::var_os("FAISSX_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        std::fs::create_dir_all(&committed).unwrap();
        for e in std::fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), committed.join(e.file_name())).unwrap();
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    let mut have: Vec<_> =
        std::fs::read_dir(&committed).map(|r| r.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    have.sort();
    assert_eq!(names, have, "man/ holds other pages than the CLI defines; run FAISSX_BLESS=1 cargo test man_pages");
    for n in names {
        let want = std::fs::read_to_string(out.join(&n)).unwrap();
        let got = std::fs::read_to_string(committed.join(&n)).unwrap();
        assert!(want == got, "man/{} is stale; run FAISSX_BLESS=1 cargo test man_pages", n.to_string_lossy());
    }
    assert!(have.iter().any(|n| n == "faissx-build.1"));
}

#[test]
fn every_subcommand_has_worked_examples() {
    let cmd = faissx::cmd::Cli::command();
    for sub in cmd.get_subcommands() {
        let help = sub.get_after_long_help().map(|s| s.to_string()).unwrap_or_default();
        assert!(help.contains("Examples:") && help.contains("faissx "), "{} lacks examples", sub.get_name());
    }
}
