//! The decoded data set, written once per sweep so that every worker reads the
//! pixels instead of decoding every image again. Layout: magic, a JSON header
//! length (u64 LE), the JSON header (classes, size, channels, labels, sources),
//! then the raw HWC pixels.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sweep_train::Dataset;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SWEEPDS1";

#[derive(Serialize, Deserialize)]
struct Header {
    classes: Vec<String>,
    image_size: usize,
    channels: usize,
    labels: Vec<u32>,
    sources: Vec<String>,
    fingerprint: String,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes `ds` to `path` atomically (temporary file, then rename).
pub fn write(ds: &Dataset, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let header = Header {
        classes: ds.classes.clone(),
        image_size: ds.image_size,
        channels: ds.channels,
        labels: ds.labels().to_vec(),
        sources: ds.sources.clone(),
        fingerprint: format!("{:016x}", ds.fingerprint()),
    };
    let h = serde_json::to_vec(&header).expect("header serializes");
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
    f.write_all(MAGIC).map_err(io(&tmp))?;
    f.write_all(&(h.len() as u64).to_le_bytes())
        .map_err(io(&tmp))?;
    f.write_all(&h).map_err(io(&tmp))?;
    for i in 0..ds.len() {
        f.write_all(ds.image(i)).map_err(io(&tmp))?;
    }
    f.into_inner()
        .map_err(|e| Error::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A read-only, shared memory map of a whole file: the page cache holds the
/// pixels once, however many worker processes map them.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
    /// The pixel bytes within the mapping.
    start: usize,
    end: usize,
}

// SAFETY: the mapping is read-only (PROT_READ) and never changed while mapped;
// the cache file is replaced only by rename, which leaves mapped pages intact.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`; start..end lies inside.
        unsafe {
            &std::slice::from_raw_parts(self.ptr as *const u8, self.len)[self.start..self.end]
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` come from a successful mmap and are unmapped once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// An open cache file whose header has been read and checked against its size.
struct Opened {
    header: Header,
    /// Positioned at the first pixel byte.
    reader: std::io::BufReader<std::fs::File>,
    /// The pixel bytes within the file.
    start: usize,
    end: usize,
    file_len: usize,
}

impl Opened {
    /// The data set over `pixels` (owned or shared), with the header's classes,
    /// sizes, labels and sources.
    fn dataset(self, pixels: impl Into<sweep_train::data::Pixels>) -> Result<Dataset> {
        let h = self.header;
        Ok(Dataset::from_parts(
            h.classes,
            h.image_size,
            h.channels,
            pixels,
            h.labels,
            h.sources,
        )?)
    }
}

/// Opens a cache file and reads its header.
fn open(path: &Path) -> Result<Opened> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(io(path))?);
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).map_err(io(path))?;
    if &magic != MAGIC {
        return Err(Error::Other(format!(
            "{}: not a Sweep data-set cache",
            path.display()
        )));
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io(path))?;
    let file_len = f.get_ref().metadata().map_err(io(path))?.len();
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len {
        return Err(Error::Other(format!(
            "{}: cache is corrupt (header longer than the file)",
            path.display()
        )));
    }
    let mut h = vec![0u8; header_len as usize];
    f.read_exact(&mut h).map_err(io(path))?;
    let header: Header = serde_json::from_slice(&h)
        .map_err(|e| Error::Other(format!("{}: bad cache header: {e}", path.display())))?;
    let n = header
        .labels
        .len()
        .checked_mul(header.image_size)
        .and_then(|v| v.checked_mul(header.image_size))
        .and_then(|v| v.checked_mul(header.channels));
    let start = 16 + header_len as usize;
    match n {
        Some(n) if (start + n) as u64 == file_len => Ok(Opened {
            header,
            reader: f,
            start,
            end: start + n,
            file_len: file_len as usize,
        }),
        _ => Err(Error::Other(format!(
            "{}: cache is corrupt (sizes do not match the file)",
            path.display()
        ))),
    }
}

/// Maps a data set written by [`write`] into memory, shared with every other
/// process mapping it (the workers of a sweep), without copying the pixels.
/// The fingerprint is not recomputed (that reads every byte): the orchestrator
/// checks it with [`read`] once per run before any worker starts.
pub fn map(path: &Path) -> Result<Dataset> {
    let opened = open(path)?;
    let (start, end, len) = (opened.start, opened.end, opened.file_len);
    let pixels: sweep_train::data::SharedBytes = if start == end {
        std::sync::Arc::new(Vec::new())
    } else {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only shared mapping of an open file of `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                opened.reader.get_ref().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::last_os_error(),
            });
        }
        std::sync::Arc::new(Mapped {
            ptr,
            len,
            start,
            end,
        })
    };
    opened.dataset(pixels)
}

/// Reads a data set written by [`write`] and checks its fingerprint.
pub fn read(path: &Path) -> Result<Dataset> {
    let mut opened = open(path)?;
    let mut pixels = vec![0u8; opened.end - opened.start];
    opened.reader.read_exact(&mut pixels).map_err(io(path))?;
    let fingerprint = opened.header.fingerprint.clone();
    let ds = opened.dataset(pixels)?;
    if format!("{:016x}", ds.fingerprint()) != fingerprint {
        return Err(Error::Other(format!(
            "{}: cache is corrupt (fingerprint mismatch); delete it to rebuild",
            path.display()
        )));
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dataset {
        let n = 5;
        Dataset::from_parts(
            vec!["a".into(), "b".into()],
            3,
            2,
            (0..n * 3 * 3 * 2)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>(),
            vec![0, 1, 1, 0, 1],
            (0..n).map(|i| format!("img{i}.png")).collect(),
        )
        .unwrap()
    }

    #[test]
    fn read_and_map_give_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache").join("x.dataset");
        let ds = sample();
        write(&ds, &path).unwrap();
        for back in [read(&path).unwrap(), map(&path).unwrap()] {
            assert_eq!(back.classes, ds.classes);
            assert_eq!(back.labels(), ds.labels());
            assert_eq!(back.sources, ds.sources);
            assert_eq!(back.fingerprint(), ds.fingerprint());
            for i in 0..ds.len() {
                assert_eq!(back.image(i), ds.image(i));
            }
        }
        // The mapping stays valid after the file is replaced (rename) or removed.
        let mapped = map(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mapped.image(4), ds.image(4));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dataset");
        write(&sample(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = map(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.dataset") && err.contains("corrupt"),
            "{err}"
        );
        assert!(read(&path).is_err());
        std::fs::write(&path, b"not a cache at all, just text").unwrap();
        let err = map(&path).unwrap_err().to_string();
        assert!(err.contains("not a Sweep data-set cache"), "{err}");
    }
}
