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

/// Reads a data set written by [`write`].
pub fn read(path: &Path) -> Result<Dataset> {
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
    let file_len = std::fs::metadata(path).map_err(io(path))?.len();
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
    let n = match n {
        Some(n) if n as u64 <= file_len => n,
        _ => {
            return Err(Error::Other(format!(
                "{}: cache is corrupt (sizes do not match the file)",
                path.display()
            )))
        }
    };
    let mut pixels = vec![0u8; n];
    f.read_exact(&mut pixels).map_err(io(path))?;
    let ds = Dataset::from_parts(
        header.classes,
        header.image_size,
        header.channels,
        pixels,
        header.labels,
        header.sources,
    )?;
    if format!("{:016x}", ds.fingerprint()) != header.fingerprint {
        return Err(Error::Other(format!(
            "{}: cache is corrupt (fingerprint mismatch); delete it to rebuild",
            path.display()
        )));
    }
    Ok(ds)
}
