//! Data: scanning an image folder or labels CSV, decoding and resizing every image
//! once into a compact `u8` cache, the stratified split, the synthetic data set, and
//! per-batch augmentation and normalization. No tensors here: batches are `f32` slices.

pub mod augment;
pub mod csv;
pub mod inspect;
pub mod inspect_html;
pub mod preview;
mod synthetic;

pub use augment::{apply_augmentations, brightness_contrast, shift_scale_rotate, AugmentScratch};
pub use synthetic::generate as generate_synthetic;

use std::path::{Path, PathBuf};

use crate::config::{Augmentation, AugmentationSettings, DataConfig, OnBadImage};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Class names, and every image file with its class index.
type Scan = (Vec<String>, Vec<(PathBuf, u32)>);

pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp"];

/// Pixel bytes shared with other holders, such as a read-only memory map of a
/// decoded data-set file that every worker process of a sweep maps at once.
pub type SharedBytes = std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The pixels of a data set: owned, or shared (one copy in memory however many
/// workers read it). Built from a `Vec<u8>` or a [`SharedBytes`].
#[derive(Clone)]
pub enum Pixels {
    Owned(Vec<u8>),
    Shared(SharedBytes),
}

impl From<Vec<u8>> for Pixels {
    fn from(v: Vec<u8>) -> Self {
        Pixels::Owned(v)
    }
}

impl From<SharedBytes> for Pixels {
    fn from(s: SharedBytes) -> Self {
        Pixels::Shared(s)
    }
}

impl Pixels {
    fn bytes(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Shared(s) => (**s).as_ref(),
        }
    }
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Pixels::Owned(_) => "owned",
            Pixels::Shared(_) => "shared",
        };
        write!(f, "Pixels({} bytes, {kind})", self.bytes().len())
    }
}

/// Every image of a data set, decoded and resized once: `len × size × size × channels`
/// bytes in HWC order, and a class index per image.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub classes: Vec<String>,
    pub image_size: usize,
    pub channels: usize,
    pixels: Pixels,
    labels: Vec<u32>,
    /// Where each image came from (a path relative to the root, or `synthetic/N`).
    pub sources: Vec<String>,
    /// Images skipped under `on_bad_image = "skip"`: path and reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Dataset {
    /// Builds a data set from raw parts: owned pixels (the synthetic generator,
    /// tests) or bytes shared with others (a memory-mapped cache file, not copied).
    pub fn from_parts(
        classes: Vec<String>,
        image_size: usize,
        channels: usize,
        pixels: impl Into<Pixels>,
        labels: Vec<u32>,
        sources: Vec<String>,
    ) -> Result<Dataset> {
        let pixels = pixels.into();
        let per = image_size * image_size * channels;
        if pixels.bytes().len() != per * labels.len() || sources.len() != labels.len() {
            return Err(Error::Invalid(format!(
                "dataset parts disagree: {} bytes, {} labels, {} sources for {}×{}×{} images",
                pixels.bytes().len(),
                labels.len(),
                sources.len(),
                image_size,
                image_size,
                channels
            )));
        }
        if let Some(l) = labels.iter().find(|l| **l as usize >= classes.len()) {
            return Err(Error::Invalid(format!(
                "label {l} out of range for {} classes",
                classes.len()
            )));
        }
        Ok(Dataset {
            classes,
            image_size,
            channels,
            pixels,
            labels,
            sources,
            skipped: Vec::new(),
        })
    }

    /// Loads what `cfg` names: a synthetic set, an image folder or a labels CSV.
    pub fn load(cfg: &DataConfig) -> Result<Dataset> {
        if let Some(s) = &cfg.synthetic {
            let raw = synthetic::generate(s, cfg.channels);
            return if s.image_size == cfg.image_size {
                Ok(raw)
            } else {
                raw.resized(cfg.image_size)
            };
        }
        let root = cfg
            .root
            .as_deref()
            .ok_or_else(|| Error::Invalid("data.root is not set".into()))?;
        if !root.is_dir() {
            return Err(Error::dataset(root, "is not a folder (data.root)"));
        }
        let (classes, items) = match &cfg.labels {
            Some(csv) => scan_labels_csv(root, csv, cfg)?,
            None => scan_image_folder(root)?,
        };
        decode_all(root, classes, items, cfg)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    pub fn image_len(&self) -> usize {
        self.image_size * self.image_size * self.channels
    }
    /// Pixels of image `i`, HWC.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels.bytes()[i * n..(i + 1) * n]
    }
    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for l in &self.labels {
            c[*l as usize] += 1;
        }
        c
    }

    /// A copy with every image resized to `size` (bilinear).
    pub fn resized(&self, size: usize) -> Result<Dataset> {
        let mut pixels = Vec::with_capacity(self.len() * size * size * self.channels);
        for i in 0..self.len() {
            pixels.extend(resize_u8(
                self.image(i),
                self.image_size,
                self.channels,
                size,
            ));
        }
        let mut d = Dataset::from_parts(
            self.classes.clone(),
            size,
            self.channels,
            pixels,
            self.labels.clone(),
            self.sources.clone(),
        )?;
        d.skipped = self.skipped.clone();
        Ok(d)
    }

    /// A 64-bit fingerprint of classes, sizes, labels and pixels (FNV-1a), for caching
    /// and for telling data sets apart.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for c in &self.classes {
            feed(c.as_bytes());
            feed(&[0]);
        }
        feed(&(self.image_size as u64).to_le_bytes());
        feed(&(self.channels as u64).to_le_bytes());
        for l in &self.labels {
            feed(&l.to_le_bytes());
        }
        feed(self.pixels.bytes());
        h
    }
}

/// The image files directly in `root`'s image folders (`dirs`, or `root`
/// itself), relative to `root`: what a labels CSV could name.
pub(crate) fn image_files(root: &Path, dirs: &[PathBuf]) -> Vec<String> {
    let dirs: Vec<PathBuf> = if dirs.is_empty() {
        vec![PathBuf::new()]
    } else {
        dirs.to_vec()
    };
    let mut out = Vec::new();
    for d in dirs {
        for p in read_dir_sorted(&root.join(&d)).unwrap_or_default() {
            if p.is_file() && has_image_extension(&p) {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    out
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// `root/<class>/*.{png,jpg,jpeg,bmp}`: classes are the sorted sub-folder names.
fn scan_image_folder(root: &Path) -> Result<Scan> {
    let mut classes = Vec::new();
    let mut items = Vec::new();
    for dir in read_dir_sorted(root)?.into_iter().filter(|p| p.is_dir()) {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::dataset(
                    root,
                    format!("class folder {} is not valid UTF-8", dir.display()),
                )
            })?
            .to_string();
        if name.starts_with('.') {
            continue;
        }
        let files: Vec<PathBuf> = read_dir_sorted(&dir)?
            .into_iter()
            // Not only regular files: a FIFO or a link that leads nowhere (or
            // in a loop) named like an image is reported when decoded, not
            // passed over in silence.
            .filter(|p| has_image_extension(p) && !p.is_dir())
            .collect();
        if files.is_empty() {
            return Err(Error::dataset(
                root,
                format!(
                    "class folder `{name}` has no images (.png, .jpg, .jpeg or .bmp): remove it or add images"
                ),
            ));
        }
        let label = classes.len() as u32;
        classes.push(name);
        items.extend(files.into_iter().map(|f| (f, label)));
    }
    if classes.len() < 2 {
        return Err(Error::dataset(
            root,
            format!(
                "found {} class folder(s); an image folder needs at least 2 sub-folders, one per class, or set data.labels to a CSV",
                classes.len()
            ),
        ));
    }
    Ok((classes, items))
}

/// A CSV naming file and label per row; files are looked up in `image_dirs`, with an
/// image extension appended when the name has none (HAM10000's `image_id`).
fn scan_labels_csv(root: &Path, csv_rel: &Path, cfg: &DataConfig) -> Result<Scan> {
    let csv_path = root.join(csv_rel);
    let bytes = std::fs::read(&csv_path).map_err(|e| Error::io(&csv_path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        Error::dataset(
            &csv_path,
            format!("line {line}: not UTF-8 text (byte {at}); save the labels CSV as UTF-8"),
        )
    })?;
    let rows = csv::parse(&text).map_err(|m| Error::dataset(&csv_path, m))?;
    let Some((_, header)) = rows.first() else {
        return Err(Error::dataset(&csv_path, "labels CSV is empty"));
    };
    let col = |name: &str, key: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::dataset(
                &csv_path,
                format!(
                    "no column `{name}` ({key}); the header has: {}",
                    csv::shown(&header.join(", "))
                ),
            )
        })
    };
    let fc = col(&cfg.file_column, "data.file_column")?;
    let lc = col(&cfg.label_column, "data.label_column")?;
    let mut pairs: Vec<(usize, String, String)> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (line, row) in rows.iter().skip(1) {
        let line = *line;
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let (Some(f), Some(l)) = (row.get(fc), row.get(lc)) else {
            return Err(Error::dataset(
                &csv_path,
                format!(
                    "line {line}: has {} fields, fewer than the header",
                    row.len()
                ),
            ));
        };
        let (f, l) = (f.trim(), l.trim());
        if let Some(c) = f.chars().chain(l.chars()).find(|c| c.is_control()) {
            return Err(Error::dataset(
                &csv_path,
                format!(
                    "line {line}: a control character ({}) in `{}`",
                    c.escape_debug(),
                    csv::shown(if f.contains(c) { f } else { l })
                ),
            ));
        }
        if l.chars().count() > 200 {
            return Err(Error::dataset(
                &csv_path,
                format!(
                    "line {line}: a label of {} characters (at most 200): `{}`",
                    l.chars().count(),
                    csv::shown(l)
                ),
            ));
        }
        // The same file twice would count it twice (and put it on both sides
        // of the split); with two labels it is a contradiction.
        if let Some(first) = seen.insert(f.to_string(), line) {
            let before = &pairs.iter().find(|p| p.0 == first).expect("seen").2;
            return Err(Error::dataset(
                &csv_path,
                if before == l {
                    format!(
                        "line {line}: `{}` is listed again (first on line {first})",
                        csv::shown(f)
                    )
                } else {
                    format!(
                        "line {line}: `{}` is labelled `{}` here and `{}` on line {first}",
                        csv::shown(f),
                        csv::shown(l),
                        csv::shown(before)
                    )
                },
            ));
        }
        pairs.push((line, f.to_string(), l.to_string()));
    }
    let mut classes: Vec<String> = pairs.iter().map(|p| p.2.clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(Error::dataset(
            &csv_path,
            format!("labels name {} class(es); need at least 2", classes.len()),
        ));
    }
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for (line, file, label) in &pairs {
        match resolve_image(root, &cfg.image_dirs, file) {
            Some(p) => items.push((
                p,
                classes.binary_search(label).expect("label listed") as u32,
            )),
            // under `on_bad_image = "skip"` a missing file is one more image
            // that cannot be read: left out, listed with the rest
            None if cfg.on_bad_image == OnBadImage::Skip => items.push((
                root.join(
                    cfg.image_dirs
                        .first()
                        .map(PathBuf::as_path)
                        .unwrap_or(Path::new("")),
                )
                .join(file),
                classes.binary_search(label).expect("label listed") as u32,
            )),
            None => missing.push(format!("line {line}: {}", csv::shown(file))),
        }
    }
    if !missing.is_empty() {
        return Err(Error::dataset(
            &csv_path,
            format!(
                "{} file(s) named in the labels CSV do not exist under {} (data.image_dirs); first: {}",
                missing.len(),
                root.display(),
                missing.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    Ok((classes, items))
}

fn resolve_image(root: &Path, dirs: &[PathBuf], file: &str) -> Option<PathBuf> {
    for d in dirs {
        let p = root.join(d).join(file);
        if p.is_file() {
            return Some(p);
        }
        if Path::new(file).extension().is_none() {
            for ext in IMAGE_EXTENSIONS {
                let p = root.join(d).join(format!("{file}.{ext}"));
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// The largest image file read (a larger one is refused before it is read).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// The most pixels one image may claim: 64 megapixels (8192 × 8192; every
/// camera photo fits). A file that claims more, such as a small PNG whose
/// header says 100,000 × 100,000, is refused before any pixel is decoded, so
/// memory stays bounded (each decoder thread holds at most one image).
pub const MAX_IMAGE_PIXELS: u64 = 64 << 20;

/// The first bytes of a file as readable text, for "it starts with …".
fn preview(bytes: &[u8]) -> String {
    let head: String = bytes
        .iter()
        .take(24)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("\"{head}\"")
}

/// Decodes one file into `size × size × channels` HWC bytes. Refused with a
/// message naming the file: not a regular file (a FIFO, a device, a symbolic
/// link that leads nowhere or in a loop), empty, over
/// [`MAX_IMAGE_FILE_BYTES`], not a PNG, JPEG or BMP, or claiming more than
/// [`MAX_IMAGE_PIXELS`].
pub fn decode_image(path: &Path, size: usize, channels: usize) -> Result<Vec<u8>> {
    let refuse = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a folder, FIFO, socket or device)".into(),
        ));
    }
    if meta.len() == 0 {
        return Err(refuse("an empty file (0 bytes)".into()));
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(refuse(format!(
            "a file of {} MiB, above the {} MiB limit for one image",
            meta.len() >> 20,
            MAX_IMAGE_FILE_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path, size, channels)
}

/// [`decode_image`] of bytes already read (`path` names them in messages).
pub fn decode_bytes(bytes: &[u8], path: &Path, size: usize, channels: usize) -> Result<Vec<u8>> {
    let refuse = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .expect("reading from memory does not fail")
    };
    if reader().format().is_none() {
        return Err(refuse(format!(
            "not a PNG, JPEG or BMP image (it starts with {})",
            preview(bytes)
        )));
    }
    let (w, h) = reader()
        .into_dimensions()
        .map_err(|e| refuse(e.to_string()))?;
    if w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(refuse(format!(
            "claims {w} × {h} pixels, above the limit of {} megapixels for one image",
            MAX_IMAGE_PIXELS >> 20
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // the decoded image in its own format (at most 16-bit RGBA) and one copy
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8 + (16 << 20));
    let mut r = reader();
    r.limits(limits);
    let img = r.decode().map_err(|e| refuse(e.to_string()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        img.to_rgb8().into_raw()
    };
    if w == size && h == size {
        return Ok(raw);
    }
    Ok(resize_rect_u8(&raw, w, h, channels, size))
}

fn resize_u8(src: &[u8], from: usize, channels: usize, to: usize) -> Vec<u8> {
    resize_rect_u8(src, from, from, channels, to)
}

/// Bilinear resize with half-pixel centres (OpenCV's INTER_LINEAR, which
/// Albumentations' `Resize` uses).
fn resize_rect_u8(src: &[u8], w: usize, h: usize, c: usize, to: usize) -> Vec<u8> {
    let mut out = vec![0u8; to * to * c];
    let sx = w as f32 / to as f32;
    let sy = h as f32 / to as f32;
    let coord = |o: usize, scale: f32, n: usize| {
        let f = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (f.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, f - i0 as f32)
    };
    for oy in 0..to {
        let (y0, y1, fy) = coord(oy, sy, h);
        for ox in 0..to {
            let (x0, x1, fx) = coord(ox, sx, w);
            for ch in 0..c {
                let p = |x: usize, y: usize| src[(y * w + x) * c + ch] as f32;
                let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                let bot = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                out[(oy * to + ox) * c + ch] =
                    (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

fn decode_all(
    root: &Path,
    classes: Vec<String>,
    items: Vec<(PathBuf, u32)>,
    cfg: &DataConfig,
) -> Result<Dataset> {
    let size = cfg.image_size;
    let ch = cfg.channels;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let chunk = items.len().div_ceil(threads).max(1);
    let decoded: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(p, _)| decode_image(p, size, ch))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("decoder thread"))
            .collect()
    });
    let mut pixels = Vec::with_capacity(items.len() * size * size * ch);
    let mut labels = Vec::with_capacity(items.len());
    let mut sources = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    for ((path, label), img) in items.into_iter().zip(decoded) {
        match img {
            Ok(px) => {
                pixels.extend_from_slice(&px);
                labels.push(label);
                sources.push(
                    path.strip_prefix(root)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
            Err(e) if cfg.on_bad_image == OnBadImage::Skip => skipped.push((path, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    let mut ds = Dataset::from_parts(classes, size, ch, pixels, labels, sources)?;
    ds.skipped = skipped;
    for (i, n) in ds.class_counts().iter().enumerate() {
        if *n == 0 {
            return Err(Error::dataset(
                root,
                format!("class `{}` has no readable images", ds.classes[i]),
            ));
        }
    }
    Ok(ds)
}

/// Indices of the training and validation images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// A split stratified by class: each class is shuffled with `seed`, cut to
/// `max_per_class`, and `round(n × val_fraction)` of it (at least 1, at most n − 1)
/// goes to validation, so every class is present in both parts.
pub fn stratified_split(
    ds: &Dataset,
    val_fraction: f64,
    max_per_class: Option<usize>,
    seed: u64,
) -> Result<Split> {
    let mut rng = Rng::stream(seed, "split");
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes()];
    for i in 0..ds.len() {
        by_class[ds.label(i) as usize].push(i);
    }
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
    };
    for (c, mut idx) in by_class.into_iter().enumerate() {
        rng.shuffle(&mut idx);
        if let Some(m) = max_per_class {
            idx.truncate(m);
        }
        let n = idx.len();
        if n < 2 {
            return Err(Error::Invalid(format!(
                "class `{}` has {n} image(s); a train/validation split needs at least 2 per class",
                ds.classes[c]
            )));
        }
        let n_val = ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1);
        split.val.extend_from_slice(&idx[..n_val]);
        split.train.extend_from_slice(&idx[n_val..]);
    }
    Ok(split)
}

/// Normalization constants per channel.
#[derive(Clone, Debug)]
pub struct Normalize {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Normalize {
    /// `(x / 255 − mean) / std`, as Albumentations' `Normalize(max_pixel_value=255)`.
    pub fn new(cfg: &DataConfig) -> Self {
        let c = cfg.channels;
        let scale = (0..c).map(|i| 1.0 / (255.0 * cfg.std_for(i))).collect();
        let shift = (0..c).map(|i| -cfg.mean_for(i) / cfg.std_for(i)).collect();
        Normalize { scale, shift }
    }

    /// Writes an HWC `u8` image as normalized CHW `f32`.
    pub fn write_chw(&self, img: &[u8], size: usize, out: &mut [f32]) {
        let c = self.scale.len();
        let hw = size * size;
        assert_eq!(img.len(), c * hw, "a {size}×{size}×{c} image");
        if c == 3 {
            rgb_planes(img, &self.scale, &self.shift, &mut out[..3 * hw]);
            return;
        }
        for ch in 0..c {
            let (s, b) = (self.scale[ch], self.shift[ch]);
            let dst = &mut out[ch * hw..(ch + 1) * hw];
            for (p, d) in dst.iter_mut().enumerate() {
                *d = img[p * c + ch] as f32 * s + b;
            }
        }
    }
}

augment::simd::multiversion! {
    avx512;
    /// RGB pixels into three normalized planes (`out` holds them in turn).
    fn rgb_planes(img: &[u8], scale: &[f32], shift: &[f32], out: &mut [f32]) => rgb_planes_body
}

/// [`rgb_planes`]' body: one pass over the pixels, three planes written
/// (the compiler vectorizes the deinterleave; a pass per channel read every
/// byte thrice).
#[inline(always)]
fn rgb_planes_body(img: &[u8], scale: &[f32], shift: &[f32], out: &mut [f32]) {
    let hw = out.len() / 3;
    let (r, rest) = out.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    let (s, t) = (&scale[..3], &shift[..3]);
    for (((px, r), g), b) in img.as_chunks::<3>().0.iter().zip(r).zip(g).zip(b) {
        *r = px[0] as f32 * s[0] + t[0];
        *g = px[1] as f32 * s[1] + t[1];
        *b = px[2] as f32 * s[2] + t[2];
    }
}

/// Builds batches: augmentation (training only) and normalization, into a reused buffer.
pub struct Batcher {
    norm: Normalize,
    augment: Vec<Augmentation>,
    settings: AugmentationSettings,
}

impl Batcher {
    pub fn new(cfg: &DataConfig) -> Self {
        Batcher {
            norm: Normalize::new(cfg),
            augment: cfg.augment.clone(),
            settings: cfg.augmentation.clone(),
        }
    }

    /// Fills `out` with `indices.len()` normalized CHW images and returns their labels.
    /// With `rng`, the configured augmentations are drawn from it.
    pub fn fill(
        &mut self,
        ds: &Dataset,
        indices: &[usize],
        rng: Option<&mut Rng>,
        out: &mut Vec<f32>,
        labels: &mut Vec<u32>,
    ) {
        let n = ds.image_len();
        out.resize(indices.len() * n, 0.0);
        labels.clear();
        let size = ds.image_size;
        match rng {
            Some(rng) if !self.augment.is_empty() => {
                // One random stream per image, seeded from `rng` in batch order, so
                // images are augmented in parallel and the result does not depend
                // on the number of threads.
                use rayon::prelude::*;
                let seeds: Vec<u64> = indices.iter().map(|_| rng.next_u64()).collect();
                let (augs, settings, norm) = (&self.augment, &self.settings, &self.norm);
                out.par_chunks_mut(n)
                    .zip(indices.par_iter())
                    .zip(seeds.par_iter())
                    .for_each_init(AugmentScratch::default, |scratch, ((o, &i), &seed)| {
                        let mut r = Rng::new(seed);
                        let img = apply_augmentations(
                            ds.image(i),
                            size,
                            ds.channels,
                            augs,
                            settings,
                            &mut r,
                            scratch,
                        );
                        norm.write_chw(img, size, o);
                    });
                labels.extend(indices.iter().map(|&i| ds.label(i)));
            }
            _ => {
                for (k, &i) in indices.iter().enumerate() {
                    self.norm
                        .write_chw(ds.image(i), size, &mut out[k * n..(k + 1) * n]);
                    labels.push(ds.label(i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(counts: &[usize]) -> Dataset {
        let mut labels = Vec::new();
        for (c, n) in counts.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c as u32, *n));
        }
        let n = labels.len();
        Dataset::from_parts(
            (0..counts.len()).map(|c| format!("c{c}")).collect(),
            2,
            1,
            (0..n * 4).map(|i| i as u8).collect::<Vec<u8>>(),
            labels,
            (0..n).map(|i| format!("s{i}")).collect(),
        )
        .unwrap()
    }

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let ds = toy(&[60, 30, 5, 2]);
        let a = stratified_split(&ds, 0.2, None, 1).unwrap();
        let b = stratified_split(&ds, 0.2, None, 1).unwrap();
        let c = stratified_split(&ds, 0.2, None, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let val_counts: Vec<usize> = (0..4)
            .map(|k| a.val.iter().filter(|i| ds.label(**i) == k).count())
            .collect();
        assert_eq!(val_counts, vec![12, 6, 1, 1]);
        let mut all: Vec<usize> = a.train.iter().chain(&a.val).copied().collect();
        all.sort();
        assert_eq!(all, (0..ds.len()).collect::<Vec<_>>());
    }

    #[test]
    fn max_per_class_undersamples() {
        let ds = toy(&[60, 30, 5]);
        let s = stratified_split(&ds, 0.2, Some(10), 3).unwrap();
        assert_eq!(s.train.len() + s.val.len(), 25);
        assert_eq!(s.val.len(), 2 + 2 + 1);
    }

    #[test]
    fn a_class_of_one_image_is_a_clear_error() {
        let e = stratified_split(&toy(&[5, 1]), 0.2, None, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class `c1` has 1 image"), "{e}");
    }

    #[test]
    fn normalize_matches_albumentations() {
        let cfg = DataConfig {
            channels: 3,
            normalize_mean: vec![0.5, 0.4, 0.3],
            normalize_std: vec![0.5, 0.2, 0.1],
            ..DataConfig::default()
        };
        let n = Normalize::new(&cfg);
        let img = [255u8, 0, 51, 0, 255, 102];
        let mut out = [0.0f32; 6];
        // 1×2 image is not square; use size 1 with 2 pixels via manual layout
        n.write_chw(&img[..3], 1, &mut out[..3]);
        assert!((out[0] - 1.0).abs() < 1e-6);
        assert!((out[1] - (-2.0)).abs() < 1e-6);
        assert!((out[2] - (0.2 - 0.3) / 0.1).abs() < 1e-5);
        // a whole image, every channel count: pixel p's channel ch lands at ch·hw + p
        for c in [1usize, 3, 4] {
            let cfg = DataConfig {
                channels: c,
                normalize_mean: vec![0.5, 0.4, 0.3, 0.2][..c].to_vec(),
                normalize_std: vec![0.5, 0.2, 0.1, 0.25][..c].to_vec(),
                ..DataConfig::default()
            };
            let n = Normalize::new(&cfg);
            // (37: the vector loops run, and their remainders)
            for size in [5usize, 37] {
                let hw = size * size;
                let img: Vec<u8> = (0..hw * c).map(|i| (i * 37 % 256) as u8).collect();
                let mut out = vec![0f32; img.len()];
                n.write_chw(&img, size, &mut out);
                for p in 0..hw {
                    for ch in 0..c {
                        let want = img[p * c + ch] as f32 * n.scale[ch] + n.shift[ch];
                        assert_eq!(out[ch * hw + p], want, "c {c} pixel {p} channel {ch}");
                    }
                }
            }
        }
    }

    #[test]
    fn resize_keeps_constant_images_constant() {
        let src = vec![77u8; 10 * 10 * 3];
        assert!(resize_u8(&src, 10, 3, 4).iter().all(|v| *v == 77));
        assert!(resize_u8(&src, 10, 3, 23).iter().all(|v| *v == 77));
    }
}
