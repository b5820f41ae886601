//! Exploratory analysis of a data set before a sweep spends hours on it
//! (`sweep data inspect`): classes and the split a trial would use, unreadable
//! and missing files, original sizes and colour modes, pixel statistics of the
//! training split (the `normalize_mean` / `normalize_std` to paste), per-class
//! brightness, near-constant images, and exact and near duplicates — above all
//! those that fall on both sides of the train/validation split.
//!
//! Pure: a loaded [`Dataset`] and its [`DataConfig`] in, an [`Inspection`] out.

use std::collections::{BTreeMap, HashMap};

use image::ImageDecoder;
use serde::Serialize;

use super::{stratified_split, Dataset};
use crate::config::DataConfig;
use crate::loss::balanced_weights;

/// Two images whose difference hashes differ in at most this many of 64 bits
/// are candidates for near duplicates ...
pub const NEAR_DUPLICATE_BITS: u32 = 10;

/// ... and near duplicates when their 16 × 16 colour thumbnails correlate at
/// least this well (Pearson, over every pixel and channel). Looked at by eye
/// on the shared sets: on skin, two photographs of the same lesion score 0.986
/// and 0.998, different lesions whose hashes collide (a dark blob on light
/// skin) up to 0.964; on caltech, copies score 0.974–1.000 and a recoloured
/// copy 0.966 (missed).
pub const NEAR_DUPLICATE_CORRELATION: f64 = 0.97;

/// Near duplicates are looked for in images of at least this size (pixels a
/// side, as decoded); smaller ones are checked for exact copies only.
pub const MIN_NEAR_SIZE: usize = 16;

/// Near duplicates are looked for among at most this many distinct images
/// (the search compares every pair); above, only exact copies are checked
/// and a note says so.
pub const MAX_NEAR_IMAGES: usize = 20_000;

/// At most this many duplicate pairs are listed (a group of identical files
/// is listed as pairs with its first file, so 100,000 copies make 99,999
/// pairs, not five billion).
pub const MAX_DUPLICATE_PAIRS: usize = 10_000;

/// An image whose pixel values (0–1) have a standard deviation below this is
/// almost constant.
pub const NEAR_CONSTANT_STD: f64 = 0.01;

/// One class: its images in the set and in the split a trial would use.
#[derive(Clone, Debug, Serialize)]
pub struct ClassRow {
    pub name: String,
    pub images: usize,
    pub share: f64,
    pub train: usize,
    pub val: usize,
    /// What `class_weights = "balanced"` assigns (from the training split).
    pub balanced_weight: f64,
    /// Mean pixel value (0–1, all channels) of the class's images: a class that
    /// differs in brightness alone is a shortcut a model learns.
    pub mean_brightness: f64,
}

/// Two images that are the same file (`exact`) or look alike (`near`).
#[derive(Clone, Debug, Serialize)]
pub struct Duplicate {
    pub kind: &'static str,
    pub a: String,
    pub b: String,
    /// Bits in which their difference hashes differ (0 for `exact`).
    pub distance: u32,
    /// Correlation of their thumbnails (1 for `exact`).
    pub correlation: f64,
    /// One in the training split, the other in validation: it inflates every
    /// validation number.
    pub across_split: bool,
    pub same_class: bool,
}

/// What `sweep data inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub images: usize,
    pub image_size: usize,
    pub channels: usize,
    /// The seed of the split shown (`data.split_seed`, else the given seed).
    pub split_seed: u64,
    pub classes: Vec<ClassRow>,
    /// Largest class over smallest.
    pub imbalance_ratio: f64,
    /// Files that failed to decode or that a labels CSV names but that do not
    /// exist (path relative to the root, the reason).
    pub unreadable: Vec<(String, String)>,
    /// With a labels CSV: image files in its image folders that no row names.
    pub unlisted: Vec<String>,
    /// Original (width, height) and how many images have it, most common first.
    pub sizes: Vec<((u32, u32), usize)>,
    /// Width ÷ height in bins (`< 0.75`, `0.75–0.95`, `0.95–1.05`, `1.05–1.33`, `> 1.33`).
    pub aspect_ratios: Vec<(String, usize)>,
    /// Colour modes of the files (`Rgb8`, `L8`, …) and their counts.
    pub colour_modes: BTreeMap<String, usize>,
    /// Files whose colour mode differs from the set's most common one.
    pub odd_colour: Vec<(String, String)>,
    /// Per channel, over the training split after resizing, pixel values 0–1.
    pub train_mean: Vec<f64>,
    pub train_std: Vec<f64>,
    /// Images whose pixels hardly vary (std < [`NEAR_CONSTANT_STD`]).
    pub near_constant: Vec<String>,
    pub duplicates: Vec<Duplicate>,
    pub warnings: Vec<String>,
    /// What the checks left out, and why (not warnings: `--strict-data`
    /// does not refuse on them).
    pub notes: Vec<String>,
}

impl Inspection {
    /// The lines to paste into `[data]`.
    pub fn normalize_lines(&self) -> String {
        let f = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "normalize_mean = [{}]\nnormalize_std = [{}]",
            f(&self.train_mean),
            f(&self.train_std)
        )
    }

    pub fn across_split(&self) -> impl Iterator<Item = &Duplicate> {
        self.duplicates.iter().filter(|d| d.across_split)
    }
}

/// A 64-bit difference hash of an image (HWC bytes, `size × size × channels`):
/// the image averaged to gray and to 9 × 8 cells (box filter), then one bit per
/// horizontally adjacent pair: is the left cell brighter than the right one.
/// Robust to resizing, recompression and small brightness changes.
pub fn difference_hash(img: &[u8], size: usize, channels: usize) -> u64 {
    let (cols, rows) = (9usize, 8usize);
    let mut cells = [0f64; 72];
    for (r, row) in cells.chunks_exact_mut(cols).enumerate() {
        let (y0, y1) = (
            r * size / rows,
            ((r + 1) * size / rows).max(r * size / rows + 1),
        );
        for (c, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (
                c * size / cols,
                ((c + 1) * size / cols).max(c * size / cols + 1),
            );
            let (mut sum, mut n) = (0f64, 0usize);
            for y in y0..y1.min(size) {
                for x in x0..x1.min(size) {
                    let p = (y * size + x) * channels;
                    sum += img[p..p + channels].iter().map(|v| *v as f64).sum::<f64>();
                    n += channels;
                }
            }
            *cell = sum / n.max(1) as f64;
        }
    }
    let mut h = 0u64;
    for r in 0..rows {
        for c in 0..cols - 1 {
            h = (h << 1) | u64::from(cells[r * cols + c] > cells[r * cols + c + 1]);
        }
    }
    h
}

/// A `t × t` box-filtered thumbnail of an image (HWC bytes) with every
/// channel, centred and scaled to unit length: the dot product of two is their
/// Pearson correlation. `None` for a constant image.
pub fn thumbnail(img: &[u8], size: usize, channels: usize, t: usize) -> Option<Vec<f64>> {
    let t = t.min(size).max(1);
    let mut out = Vec::with_capacity(t * t * channels);
    for r in 0..t {
        let (y0, y1) = (r * size / t, (r + 1) * size / t);
        for c in 0..t {
            let (x0, x1) = (c * size / t, (c + 1) * size / t);
            for ch in 0..channels {
                let (mut sum, mut n) = (0f64, 0usize);
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += img[(y * size + x) * channels + ch] as f64;
                        n += 1;
                    }
                }
                out.push(sum / n.max(1) as f64);
            }
        }
    }
    let mean = out.iter().sum::<f64>() / out.len() as f64;
    out.iter_mut().for_each(|v| *v -= mean);
    let norm = out.iter().map(|v| v * v).sum::<f64>().sqrt();
    (norm > 1e-9).then(|| out.into_iter().map(|v| v / norm).collect())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

fn aspect_bin(w: u32, h: u32) -> &'static str {
    let r = w as f64 / h.max(1) as f64;
    match r {
        r if r < 0.75 => "< 0.75",
        r if r < 0.95 => "0.75–0.95",
        r if r <= 1.05 => "0.95–1.05",
        r if r <= 4.0 / 3.0 + 1e-9 => "1.05–1.33",
        _ => "> 1.33",
    }
}

/// Inspects `ds` (loaded from `cfg`, with `on_bad_image = "skip"` so that
/// unreadable files are listed, not fatal); `seed` splits as `train.seed` would
/// when `data.split_seed` is unset. Files are read again from `cfg.root` for
/// their original size, colour mode and content hash.
pub fn inspect(cfg: &DataConfig, ds: &Dataset, seed: u64) -> Inspection {
    let split_seed = cfg.split_seed.unwrap_or(seed);
    let k = ds.num_classes();
    let counts = ds.class_counts();
    let mut warnings = Vec::new();
    // which side of the split each image is on: Some(true) training
    let mut side: Vec<Option<bool>> = vec![None; ds.len()];
    let (mut train_counts, mut val_counts) = (vec![0usize; k], vec![0usize; k]);
    match stratified_split(ds, cfg.val_fraction, cfg.max_per_class, split_seed) {
        Ok(split) => {
            for &i in &split.train {
                side[i] = Some(true);
                train_counts[ds.label(i) as usize] += 1;
            }
            for &i in &split.val {
                side[i] = Some(false);
                val_counts[ds.label(i) as usize] += 1;
            }
        }
        Err(e) => warnings.push(format!("no train/validation split possible: {e}")),
    }
    let weights = balanced_weights(&train_counts);
    let per = ds.image_size * ds.image_size * ds.channels;
    let c = ds.channels;

    // pixel statistics: training split per channel, brightness per class,
    // near-constant images
    let (mut sum, mut sq, mut n) = (vec![0f64; c], vec![0f64; c], 0usize);
    let (mut class_sum, mut class_n) = (vec![0f64; k], vec![0usize; k]);
    let mut near_constant = Vec::new();
    for i in 0..ds.len() {
        let img = ds.image(i);
        let (mut s1, mut s2) = (0f64, 0f64);
        for px in img.chunks_exact(c) {
            for (ch, v) in px.iter().enumerate() {
                let x = *v as f64 / 255.0;
                s1 += x;
                s2 += x * x;
                if side[i] == Some(true) {
                    sum[ch] += x;
                    sq[ch] += x * x;
                }
            }
        }
        if side[i] == Some(true) {
            n += img.len() / c;
        }
        let m = s1 / per as f64;
        class_sum[ds.label(i) as usize] += m;
        class_n[ds.label(i) as usize] += 1;
        if (s2 / per as f64 - m * m).max(0.0).sqrt() < NEAR_CONSTANT_STD {
            near_constant.push(ds.sources[i].clone());
        }
    }
    let train_mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
    let train_std: Vec<f64> = sq
        .iter()
        .zip(&train_mean)
        .map(|(q, m)| (q / n.max(1) as f64 - m * m).max(0.0).sqrt())
        .collect();

    let total = ds.len().max(1) as f64;
    let classes: Vec<ClassRow> = (0..k)
        .map(|j| ClassRow {
            name: ds.classes[j].clone(),
            images: counts[j],
            share: counts[j] as f64 / total,
            train: train_counts[j],
            val: val_counts[j],
            balanced_weight: weights.get(j).copied().unwrap_or(f32::NAN) as f64,
            mean_brightness: class_sum[j] / class_n[j].max(1) as f64,
        })
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    let few: Vec<&ClassRow> = classes.iter().filter(|r| r.val > 0 && r.val < 5).collect();
    if !few.is_empty() {
        let names: Vec<String> = few
            .iter()
            .take(5)
            .map(|r| format!("`{}` ({})", r.name, r.val))
            .collect();
        warnings.push(format!(
            "{} class(es) have fewer than 5 validation images ({}{}): their recall and F1 move in steps of 20% or more",
            few.len(),
            names.join(", "),
            if few.len() > 5 { ", …" } else { "" }
        ));
    }
    for row in &classes {
        if let Some(m) = cfg.max_per_class {
            if row.images < m {
                warnings.push(format!(
                    "class `{}` has {} images, fewer than max_per_class = {m}: all are kept",
                    row.name, row.images
                ));
            }
        }
    }

    // original files: size, colour mode, content hash
    let root = cfg.root.as_deref().filter(|_| cfg.synthetic.is_none());
    let mut sizes: HashMap<(u32, u32), usize> = HashMap::new();
    let mut aspect: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut modes: Vec<Option<String>> = vec![None; ds.len()];
    let mut by_content: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, src) in ds.sources.iter().enumerate() {
        let Some(root) = root else {
            by_content.entry(fnv1a(ds.image(i))).or_default().push(i);
            continue;
        };
        // one read per file: its content hash and its header
        let Ok(bytes) = std::fs::read(root.join(src)) else {
            continue;
        };
        by_content.entry(fnv1a(&bytes)).or_default().push(i);
        if let Some((w, h, mode)) = header(&bytes) {
            *sizes.entry((w, h)).or_default() += 1;
            *aspect.entry(aspect_bin(w, h)).or_default() += 1;
            modes[i] = Some(mode);
        }
    }
    let mut colour_modes: BTreeMap<String, usize> = BTreeMap::new();
    for m in modes.iter().flatten() {
        *colour_modes.entry(m.clone()).or_default() += 1;
    }
    let common = colour_modes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, _)| m.clone());
    let odd_colour: Vec<(String, String)> = modes
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let m = m.as_ref()?;
            (Some(m) != common.as_ref()).then(|| (ds.sources[i].clone(), m.clone()))
        })
        .collect();
    let mut sizes: Vec<((u32, u32), usize)> = sizes.into_iter().collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    // duplicates: same bytes (confirmed byte for byte), then look-alikes
    let mut duplicates = Vec::new();
    let pair = |kind, a: usize, b: usize, distance, correlation| Duplicate {
        kind,
        a: ds.sources[a].clone(),
        b: ds.sources[b].clone(),
        distance,
        correlation,
        across_split: matches!((side[a], side[b]), (Some(x), Some(y)) if x != y),
        same_class: ds.label(a) == ds.label(b),
    };
    let mut notes = Vec::new();
    // Exact: files of one content hash, confirmed byte for byte against the
    // first of each set of identical files (each file read once); a set of k
    // copies is listed as k − 1 pairs with its first file.
    let content = |i: usize| match root {
        Some(r) => std::fs::read(r.join(&ds.sources[i])).ok(),
        None => Some(ds.image(i).to_vec()),
    };
    let mut copy_of: Vec<Option<usize>> = vec![None; ds.len()];
    let mut groups: Vec<&Vec<usize>> = by_content.values().filter(|g| g.len() > 1).collect();
    groups.sort();
    let mut exact_pairs = 0usize;
    // Pairs across the split are counted over every pair found and listed
    // first: up to the cap of each kind, then cut to the cap after sorting.
    let mut across = 0usize;
    let keep = |list: &mut Vec<Duplicate>, across: &mut usize, p: Duplicate| {
        let listed_across = *across;
        *across += usize::from(p.across_split);
        let listed_other = list.len() - listed_across.min(MAX_DUPLICATE_PAIRS);
        if (p.across_split && listed_across < MAX_DUPLICATE_PAIRS)
            || (!p.across_split && listed_other < MAX_DUPLICATE_PAIRS)
        {
            list.push(p);
        }
    };
    for g in groups {
        let mut firsts: Vec<(usize, Vec<u8>)> = Vec::new();
        for &i in g {
            let Some(bytes) = content(i) else { continue };
            match firsts.iter().find(|(_, b)| *b == bytes) {
                Some(&(first, _)) => {
                    copy_of[i] = Some(first);
                    exact_pairs += 1;
                    let p = pair("exact", first, i, 0, 1.0);
                    keep(&mut duplicates, &mut across, p);
                }
                None => firsts.push((i, bytes)),
            }
        }
    }
    // Near: look-alikes among the distinct images (one of each set of copies).
    let distinct: Vec<usize> = (0..ds.len()).filter(|&i| copy_of[i].is_none()).collect();
    // Below 16 px there is too little picture to tell a copy from a look-alike
    // (at 8 × 8, different writers' 1s correlate at 0.97–0.98).
    let near_checked = ds.image_size >= MIN_NEAR_SIZE && distinct.len() <= MAX_NEAR_IMAGES;
    if ds.image_size >= MIN_NEAR_SIZE && !near_checked {
        notes.push(format!(
            "near duplicates not looked for: {} distinct images, above {MAX_NEAR_IMAGES} (the search compares every pair); exact copies were checked",
            distinct.len()
        ));
    }
    let hashes: Vec<u64> = if near_checked {
        distinct
            .iter()
            .map(|&i| difference_hash(ds.image(i), ds.image_size, ds.channels))
            .collect()
    } else {
        Vec::new()
    };
    // Thumbnails only for images that have a candidate (most have none).
    let mut thumbs: HashMap<usize, Option<Vec<f64>>> = HashMap::new();
    let mut near_pairs = 0usize;
    for x in (0..distinct.len()).filter(|_| near_checked) {
        for y in x + 1..distinct.len() {
            let d = (hashes[x] ^ hashes[y]).count_ones();
            if d > NEAR_DUPLICATE_BITS {
                continue;
            }
            let (a, b) = (distinct[x], distinct[y]);
            for i in [a, b] {
                thumbs
                    .entry(i)
                    .or_insert_with(|| thumbnail(ds.image(i), ds.image_size, ds.channels, 16));
            }
            let (Some(ta), Some(tb)) = (&thumbs[&a], &thumbs[&b]) else {
                continue; // a constant image correlates with nothing
            };
            let r: f64 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
            if r >= NEAR_DUPLICATE_CORRELATION {
                near_pairs += 1;
                let p = pair("near", a, b, d, r);
                keep(&mut duplicates, &mut across, p);
            }
        }
    }
    // across the split first, then exact before near, then by distance
    duplicates.sort_by_key(|d| (!d.across_split, d.kind != "exact", d.distance));
    duplicates.truncate(MAX_DUPLICATE_PAIRS);
    if exact_pairs + near_pairs > duplicates.len() {
        notes.push(format!(
            "{} duplicate pairs found ({exact_pairs} exact, {near_pairs} near, {across} across the split); the first {} are listed",
            exact_pairs + near_pairs,
            duplicates.len()
        ));
    }
    if across > 0 {
        warnings.push(format!(
            "{across} duplicate pair(s) fall on both sides of the train/validation split (seed {split_seed}): validation numbers are inflated"
        ));
    }
    if let Some((first, why)) = ds.skipped.first() {
        let why: String = why.chars().take(200).collect();
        warnings.push(format!(
            "{} file(s) could not be read or decoded and are left out (first: {}: {why})",
            ds.skipped.len(),
            root.and_then(|r| first.strip_prefix(r).ok())
                .unwrap_or(first)
                .display()
        ));
    }
    if !odd_colour.is_empty() {
        warnings.push(format!(
            "{} file(s) are not {} like the rest (converted to {} channel(s) when loaded)",
            odd_colour.len(),
            common.as_deref().unwrap_or("-"),
            ds.channels
        ));
    }
    let unlisted: Vec<String> = match (&cfg.labels, root) {
        (Some(_), Some(r)) => {
            let named: std::collections::HashSet<&str> = ds
                .sources
                .iter()
                .map(String::as_str)
                .chain(
                    ds.skipped
                        .iter()
                        .filter_map(|(p, _)| p.strip_prefix(r).ok()?.to_str()),
                )
                .collect();
            super::image_files(r, &cfg.image_dirs)
                .into_iter()
                .filter(|f| !named.contains(f.as_str()))
                .collect()
        }
        _ => Vec::new(),
    };
    if !unlisted.is_empty() {
        warnings.push(format!(
            "{} image file(s) in the image folders are named by no row of the labels CSV (first: {})",
            unlisted.len(),
            unlisted[0]
        ));
    }
    let unreadable = ds
        .skipped
        .iter()
        .map(|(p, why)| {
            let rel = root
                .and_then(|r| p.strip_prefix(r).ok())
                .unwrap_or(p)
                .display()
                .to_string();
            (rel, why.clone())
        })
        .collect();
    Inspection {
        images: ds.len(),
        image_size: ds.image_size,
        channels: ds.channels,
        split_seed,
        classes,
        imbalance_ratio: if min > 0 {
            max as f64 / min as f64
        } else {
            f64::INFINITY
        },
        unreadable,
        unlisted,
        sizes,
        aspect_ratios: aspect
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        colour_modes,
        odd_colour,
        train_mean,
        train_std,
        near_constant,
        duplicates,
        warnings,
        notes,
    }
}

/// A file's original width, height and colour mode, from its header.
fn header(bytes: &[u8]) -> Option<(u32, u32, String)> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let decoder = reader.into_decoder().ok()?;
    let (w, h) = decoder.dimensions();
    Some((w, h, format!("{:?}", decoder.color_type())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_hashes_see_gradients_and_ignore_brightness() {
        let size = 18;
        // left-to-right falling ramp: every left cell brighter than its right neighbour
        let ramp: Vec<u8> = (0..size * size)
            .map(|i| (250 - (i % size) * 10) as u8)
            .collect();
        assert_eq!(difference_hash(&ramp, size, 1), u64::MAX);
        let brighter: Vec<u8> = ramp.iter().map(|v| v.saturating_add(3)).collect();
        assert_eq!(difference_hash(&brighter, size, 1), u64::MAX);
        let rising: Vec<u8> = (0..size * size).map(|i| ((i % size) * 10) as u8).collect();
        assert_eq!(difference_hash(&rising, size, 1), 0);
        // three channels average to gray
        let rgb: Vec<u8> = ramp.iter().flat_map(|v| [*v, *v, *v]).collect();
        assert_eq!(difference_hash(&rgb, size, 3), u64::MAX);
        assert_eq!(aspect_bin(640, 480), "1.05–1.33");
        assert_eq!(aspect_bin(100, 100), "0.95–1.05");
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        // thumbnails: a brightness shift correlates perfectly, a mirror image
        // of a ramp anti-correlates, a constant image has none
        let t = thumbnail(&ramp, size, 1, 16).unwrap();
        let tb = thumbnail(&brighter, size, 1, 16).unwrap();
        let tr = thumbnail(&rising, size, 1, 16).unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        assert!((dot(&t, &tb) - 1.0).abs() < 1e-9);
        assert!((dot(&t, &tr) + 1.0).abs() < 1e-9);
        assert!(thumbnail(&[7u8; 324], size, 1, 16).is_none());
    }
}
