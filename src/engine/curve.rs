//! CurveZMQ keys (libzmq's CURVE mechanism: Curve25519 key exchange, encryption and server
//! authentication, linked with libsodium). A key file holds one key as 40 Z85 characters
//! (ZeroMQ's text form of 32 bytes) and an optional trailing newline, as `faissx keygen`
//! writes it: `NAME` is the secret key (mode 0600), `NAME.pub` the public key.

use super::{Error, ErrorKind, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A 32-byte Curve25519 key (public or secret).
pub type CurveKey = [u8; 32];

/// Whether this build's libzmq has CURVE (it has, with libsodium; see third_party/zmq-sys).
pub fn available() -> bool {
    zmq::has("curve") == Some(true)
}

/// An [`ErrorKind::Unsupported`] error unless [`available`].
fn require() -> Result<()> {
    if available() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Unsupported, "this faissx was built without CurveZMQ (libzmq without libsodium)"))
    }
}

/// Decode a key from its 40 Z85 characters (surrounding whitespace ignored); `None` when
/// `text` is not one.
pub fn decode(text: &str) -> Option<CurveKey> {
    const Z85: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    let t = text.trim();
    // libzmq's decoder maps some characters outside the alphabet to values: check them here.
    if t.len() != 40 || !t.chars().all(|c| Z85.contains(c)) {
        return None;
    }
    zmq::z85_decode(t).ok()?.try_into().ok()
}

/// Read the key file at `path`. Errors: the file unreadable ([`ErrorKind::Io`] or
/// [`ErrorKind::NotFound`], naming it), not one Z85 key ([`ErrorKind::InvalidInput`],
/// naming it and `what`, e.g. `--server-public-key`).
pub fn read_key(path: &Path, what: &str) -> Result<CurveKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e).context(what))?;
    decode(&text).ok_or_else(|| {
        Error::invalid(format!(
            "{what} {}: not a CurveZMQ key (expected 40 Z85 characters, as `faissx keygen` writes)",
            path.display()
        ))
    })
}

/// A fresh key pair: `(public, secret)`.
pub fn generate() -> Result<(CurveKey, CurveKey)> {
    require()?;
    let kp = zmq::CurveKeyPair::new()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("generating a CurveZMQ key pair: {e}")))?;
    Ok((kp.public_key, kp.secret_key))
}

/// The Z85 text of `key` (40 characters).
pub fn encode(key: &CurveKey) -> String {
    zmq::z85_encode(key).expect("invariant: 32 bytes are a multiple of 4")
}

/// Write a new key pair: the secret key to `out` (mode 0600) and the public key to
/// `out.pub`. Refuses existing files unless `force`. Returns `(secret path, public path)`.
pub fn keygen(out: &Path, force: bool) -> Result<(PathBuf, PathBuf)> {
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if !force {
        for p in [out, pub_path.as_path()] {
            if p.exists() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{} exists; pass -f/--force to overwrite it", p.display()),
                ));
            }
        }
    }
    let (public, secret) = generate()?;
    write_key(out, &secret, 0o600)?;
    write_key(&pub_path, &public, 0o644)?;
    Ok((out.to_path_buf(), pub_path))
}

fn write_key(path: &Path, key: &CurveKey, mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", encode(key)).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libzmq_has_curve() {
        assert!(available(), "libzmq was built without libsodium: CURVE is off");
    }

    #[test]
    fn keys_round_trip() {
        let (public, secret) = generate().unwrap();
        assert_ne!(public, secret);
        assert_eq!(decode(&format!("{}\n", encode(&public))), Some(public));
        assert_eq!(decode("short"), None);
        assert_eq!(decode(&"~".repeat(40)), None, "~ is not a Z85 character");
    }
}
