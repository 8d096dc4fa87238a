//! The container files (issue 13): the Dockerfile passes hadolint (its configuration in
//! `.hadolint.yaml` says what it ignores and why), probes the server's /livez, builds FAISS as
//! the binary does by default (x86-64-v3, `PORTABLE=1` for any x86-64) without libzmq packages
//! (libzmq is built with the crate); the compose file holds no API keys.

use crate::python_compat::python;
use crate::util::*;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap()
}

#[test]
fn dockerfile_is_hadolint_clean_and_builds_what_the_binary_builds() {
    // hadolint sits beside the venv's python (scripts/python-env.sh installs it).
    let py = std::path::PathBuf::from(python());
    let hadolint = py.parent().unwrap().join("hadolint");
    let out = std::process::Command::new(&hadolint)
        .arg("Dockerfile")
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", hadolint.display()));
    assert!(
        out.status.success(),
        "hadolint Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = read("Dockerfile");
    assert!(d.contains("HEALTHCHECK") && d.contains("/livez"), "HEALTHCHECK on /livez");
    assert!(!d.contains("libzmq3-dev") && !d.contains("libzmq5"), "libzmq is vendored: no libzmq packages");
    assert!(d.contains("ARG PORTABLE=0") && !d.contains("ARG CXXFLAGS"), "x86-64-v3 by default");
    // The dependency layer comes before the sources are copied.
    assert!(d.find("COPY Cargo.toml Cargo.lock").unwrap() < d.find("COPY . .").unwrap());
}

#[test]
fn compose_ships_no_keys_and_uses_the_probes() {
    let c = read("docker-compose.yml");
    assert!(!c.contains("FAISSX_AUTH_KEYS"), "keys come from a secret file, not the compose file");
    assert!(c.contains("/readyz"), "the compose healthcheck asks /readyz");
}
