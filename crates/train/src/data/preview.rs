//! Augmentation previews: one image under each configured transform alone
//! (always applied, with the config's limits), then under all of them as
//! training applies them — what `sweep data augment` writes as a PNG grid and
//! `sweep data inspect --html` shows, so the limits can be seen before training.

use super::augment::{apply_one, AugmentScratch};
use super::{apply_augmentations, Dataset};
use crate::config::{AugmentationSettings, DataConfig};
use crate::rng::Rng;

/// One row of a preview: its label and its tiles (the original image first,
/// then `draws` augmented copies; HWC bytes).
pub struct PreviewRow {
    pub label: String,
    pub tiles: Vec<Vec<u8>>,
}

/// Preview rows of image `index` of `ds`: one per transform in `cfg.augment`
/// (in the order they apply), then one of them all at the config's
/// probability. Draws come from `seed`.
pub fn augmentation_rows(
    ds: &Dataset,
    cfg: &DataConfig,
    index: usize,
    draws: usize,
    seed: u64,
) -> Vec<PreviewRow> {
    let (size, ch) = (ds.image_size, ds.channels);
    let original = ds.image(index).to_vec();
    let mut rng = Rng::stream(seed, "preview");
    let mut scratch = AugmentScratch::default();
    let always = AugmentationSettings {
        probability: 1.0,
        ..cfg.augmentation.clone()
    };
    let mut rows = Vec::new();
    for kind in crate::config::Augmentation::ORDER {
        if !cfg.augment.contains(&kind) {
            continue;
        }
        let mut tiles = vec![original.clone()];
        for _ in 0..draws {
            let mut r = Rng::new(rng.next_u64());
            scratch.reset(&original);
            apply_one(kind, size, ch, &always, &mut r, &mut scratch);
            tiles.push(scratch.image().to_vec());
        }
        rows.push(PreviewRow {
            label: kind.name().to_string(),
            tiles,
        });
    }
    if !cfg.augment.is_empty() {
        let tiles = augmented_tiles(&original, size, ch, cfg, draws, &mut rng, &mut scratch);
        rows.push(PreviewRow {
            label: format!("all, probability {} each", cfg.augmentation.probability),
            tiles,
        });
    }
    rows
}

/// `img` then `draws` copies of it augmented as training does (every listed
/// transform with its probability), each from its own stream seeded by `rng`.
pub fn augmented_tiles(
    img: &[u8],
    size: usize,
    channels: usize,
    cfg: &DataConfig,
    draws: usize,
    rng: &mut Rng,
    scratch: &mut AugmentScratch,
) -> Vec<Vec<u8>> {
    let mut tiles = vec![img.to_vec()];
    for _ in 0..draws {
        let mut r = Rng::new(rng.next_u64());
        tiles.push(
            apply_augmentations(
                img,
                size,
                channels,
                &cfg.augment,
                &cfg.augmentation,
                &mut r,
                scratch,
            )
            .to_vec(),
        );
    }
    tiles
}

/// Rows of tiles as one PNG: tiles scaled up by an integer factor to at least
/// 64 pixels, 2 pixels apart, rows 6 pixels apart, on white.
pub fn grid_png(rows: &[PreviewRow], size: usize, channels: usize) -> Vec<u8> {
    let tiles: Vec<&[Vec<u8>]> = rows.iter().map(|r| r.tiles.as_slice()).collect();
    tiles_png(&tiles, size, channels, 64, 6)
}

/// Rows of tiles (HWC bytes, `size × size × channels` each) as one PNG:
/// every tile scaled up by an integer factor to at least `min_side` pixels,
/// tiles 2 pixels apart, rows `row_gap` apart, on white.
pub fn tiles_png(
    rows: &[&[Vec<u8>]],
    size: usize,
    channels: usize,
    min_side: usize,
    row_gap: usize,
) -> Vec<u8> {
    let scale = min_side.div_ceil(size.max(1)).max(1);
    let t = size * scale;
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let (w, h) = ((t + 2) * cols, (t + row_gap) * rows.len().max(1) - row_gap);
    let mut rgb = vec![255u8; w * h * 3];
    for (ri, row) in rows.iter().enumerate() {
        for (k, img) in row.iter().enumerate() {
            for y in 0..t {
                for x in 0..t {
                    let p = ((y / scale) * size + x / scale) * channels;
                    let px = if channels == 1 {
                        [img[p]; 3]
                    } else {
                        [img[p], img[p + 1], img[p + 2]]
                    };
                    let o = ((ri * (t + row_gap) + y) * w + k * (t + 2) + x) * 3;
                    rgb[o..o + 3].copy_from_slice(&px);
                }
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(w as u32, h as u32, rgb)
        .expect("buffer matches size")
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encodes in memory");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Augmentation, SyntheticConfig};

    #[test]
    fn one_row_per_transform_then_all_and_a_png_of_that_size() {
        let cfg = DataConfig {
            synthetic: Some(SyntheticConfig {
                classes: 2,
                per_class: 3,
                image_size: 16,
                seed: 0,
            }),
            image_size: 16,
            augment: vec![Augmentation::CoarseDropout, Augmentation::Hflip],
            ..DataConfig::default()
        };
        let ds = Dataset::load(&cfg).unwrap();
        let rows = augmentation_rows(&ds, &cfg, 1, 4, 0);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            ["hflip", "coarse_dropout", "all, probability 0.5 each"]
        );
        for r in &rows[..2] {
            assert_eq!(r.tiles.len(), 5);
            assert_eq!(r.tiles[0], ds.image(1));
            // applied every time: each draw differs from the original
            assert!(r.tiles[1..].iter().all(|t| t != ds.image(1)), "{}", r.label);
        }
        let png = grid_png(&rows, 16, 3);
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (5 * 66, 3 * 70 - 6));
    }
}
