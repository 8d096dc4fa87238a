//! Result writers: `.npy` (via npyz), `.fvecs`/`.ivecs` (texmex), CSV and JSON Lines. File
//! outputs go through [`super::atomic::AtomicFile`], so a failure leaves no partial file.

pub use super::atomic::AtomicFile;
use crate::engine::error::{Error, IoContext, Result};
use npyz::WriterBuilder;
use std::io::Write;
use std::path::Path;

/// Write an `rows × cols` matrix of `T` (f32 → `<f4`, i64 → `<i8`) as `.npy`, C order, to
/// `path`, atomically.
fn npy<T: npyz::AutoSerialize + Copy>(path: &Path, rows: usize, cols: usize, data: &[T]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    {
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&[rows as u64, cols as u64])
            .writer(f.writer())
            .begin_nd()
            .at(path)?;
        w.extend(data.iter().copied()).at(path)?;
        w.finish().at(path)?;
    }
    f.commit()
}

/// Write an `rows × cols` f32 matrix as `.npy` (`<f4`, C order) to `path`, atomically.
pub fn npy_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    npy(path, rows, cols, data)
}

/// Write an `rows × cols` i64 matrix as `.npy` (`<i8`, C order) to `path`, atomically.
pub fn npy_i64(path: &Path, rows: usize, cols: usize, data: &[i64]) -> Result<()> {
    npy(path, rows, cols, data)
}

/// Write `rows × cols` f32 as `.fvecs` to `path`, atomically.
pub fn fvecs(path: &Path, cols: usize, data: &[f32]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    for row in data.chunks(cols.max(1)) {
        let w = f.writer();
        w.write_all(&(cols as i32).to_le_bytes()).at(path)?;
        for x in row {
            w.write_all(&x.to_le_bytes()).at(path)?;
        }
    }
    f.commit()
}

/// Write `rows × cols` ids as `.ivecs` (i32) to `path`, atomically. Fails if an id does not
/// fit in i32 (ivecs cannot hold it; use `.npy`).
pub fn ivecs(path: &Path, cols: usize, data: &[i64]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    for row in data.chunks(cols.max(1)) {
        let w = f.writer();
        w.write_all(&(cols as i32).to_le_bytes()).at(path)?;
        for &x in row {
            let v = i32::try_from(x).map_err(|_| {
                Error::invalid(format!("{}: id {x} does not fit in .ivecs (int32); write .npy instead", path.display()))
            })?;
            w.write_all(&v.to_le_bytes()).at(path)?;
        }
    }
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::io::{CsvOptions, VectorFile};

    #[test]
    fn npy_and_vecs_round_trip() {
        let dir = std::env::temp_dir().join(format!("faissx-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        for name in ["a.npy", "a.fvecs"] {
            let p = dir.join(name);
            if name.ends_with("npy") {
                npy_f32(&p, 3, 2, &data).unwrap();
            } else {
                fvecs(&p, 2, &data).unwrap();
            }
            let f = VectorFile::open(&p, None, &CsvOptions::default()).unwrap();
            assert_eq!((f.len(), f.dim()), (3, 2));
            assert_eq!(f.read_all().unwrap(), data);
        }
        let ids = vec![1i64, 5, 9, 3];
        let p = dir.join("i.ivecs");
        ivecs(&p, 2, &ids).unwrap();
        let f = VectorFile::open(&p, None, &CsvOptions::default()).unwrap();
        assert_eq!(f.read_int_matrix().unwrap(), ids);
        let p = dir.join("i.npy");
        npy_i64(&p, 2, 2, &ids).unwrap();
        let f = VectorFile::open(&p, None, &CsvOptions::default()).unwrap();
        assert_eq!(f.read_int_matrix().unwrap(), ids);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
