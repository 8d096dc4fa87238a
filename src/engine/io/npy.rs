//! NumPy `.npy` input (format spec: numpy.lib.format, versions 1.0–3.0). The header is parsed
//! by `npyz`; the data, which always ends the file, is then read in place from the map.

use super::{Elem, Layout};
use crate::engine::error::{Error, Result};
use std::path::Path;

/// The first bytes of every `.npy` file.
pub(super) const MAGIC: &[u8] = b"\x93NUMPY";

/// The length of the header (magic, version, length field, header text) that `head`, the
/// first bytes of a `.npy` file, announces; `None` when `head` is too short to tell or is not
/// `.npy`. Format 1.0 has a 2-byte length field, 2.0 and 3.0 a 4-byte one.
pub(super) fn header_len(head: &[u8]) -> Option<usize> {
    if !head.starts_with(MAGIC) || head.len() < 12 {
        return None;
    }
    match head[6] {
        1 => Some(10 + u16::from_le_bytes([head[8], head[9]]) as usize),
        2 | 3 => Some(12 + u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize),
        _ => None,
    }
}

/// Validate the header of a file of `len` bytes that `bytes` begins (the header at least) and
/// return the layout, `d` and row count. 1-D arrays are one column
/// (ids) — callers that need vectors check `d` themselves.
pub(super) fn layout(path: &Path, bytes: &[u8], len: usize) -> Result<(Layout, usize, usize)> {
    let header =
        npyz::NpyHeader::from_reader(bytes).map_err(|e| Error::format(path, format!("not a valid .npy file ({e})")))?;
    let descr = match header.dtype() {
        npyz::DType::Plain(ty) => ty.to_string(),
        other => return Err(Error::format(path, format!("structured dtype {} is not supported", other.descr()))),
    };
    let elem = match descr.trim_start_matches(['<', '|', '=']) {
        "f2" => Elem::F16,
        "f4" => Elem::F32,
        "f8" => Elem::F64,
        "u1" => Elem::U8,
        "i1" => Elem::I8,
        "i4" => Elem::I32,
        "i8" => Elem::I64,
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "dtype {descr} is not supported (use little-endian float16/32/64, uint8, int8, int32 or int64)"
                ),
            ))
        }
    };
    if header.order() != npyz::Order::C {
        return Err(Error::format(path, "array is in Fortran order; save it with np.ascontiguousarray first"));
    }
    let shape = header.shape();
    let (n, d) = match shape {
        [n] => (*n as usize, 1),
        [n, d] => (*n as usize, *d as usize),
        _ => return Err(Error::format(path, format!("array has shape {shape:?}; expected 2-D (n × d)"))),
    };
    let data_len = n
        .checked_mul(d)
        .and_then(|x| x.checked_mul(elem.size()))
        .ok_or_else(|| Error::format(path, "shape overflows"))?;
    if data_len > len {
        return Err(Error::format(
            path,
            format!("truncated: shape {shape:?} needs {data_len} data bytes, file has {len}"),
        ));
    }
    // The data always ends the file; the header (padded to 64 bytes) precedes it.
    let offset = len - data_len;
    if offset < 10 {
        return Err(Error::format(path, "truncated header"));
    }
    if d == 0 && n > 0 {
        return Err(Error::format(path, "array has 0 columns"));
    }
    Ok((Layout::Records { offset, header: 0, elem }, d, n))
}
