//! The pictures of `sweep data inspect --html FILE`: one self-contained page
//! (inline PNGs, no scripts) with the summary tables, sample images per class,
//! the mean image per class, the configured augmentations applied to a few
//! training images, and the duplicate pairs side by side.

use std::fmt::Write;

use super::inspect::Inspection;
use super::{AugmentScratch, Dataset};
use crate::config::DataConfig;
use crate::rng::Rng;

/// Samples per class (fewer when there are many classes, to keep the page small).
fn samples_per_class(classes: usize) -> usize {
    if classes > 20 {
        4
    } else {
        8
    }
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(A[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A row of tiles (HWC bytes, `size × size × channels` each) as a PNG, every
/// tile scaled up by an integer factor to at least 48 pixels, 2 pixels apart.
pub fn strip_png(tiles: &[Vec<u8>], size: usize, channels: usize) -> Vec<u8> {
    super::preview::tiles_png(&[tiles], size, channels, 48, 0)
}

fn img_tag(png: &[u8], alt: &str) -> String {
    format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
        esc(alt),
        base64(png)
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}table{border-collapse:collapse;font-size:.88rem}td,th{padding:.2rem .5rem;border-bottom:1px solid #eee;text-align:left}img{image-rendering:pixelated;display:block;margin:.2rem 0}.muted{color:#666}.warn{color:#a40}";

/// The page. `title` names the data (a path).
pub fn html(r: &Inspection, ds: &Dataset, cfg: &DataConfig, title: &str) -> String {
    let (size, ch) = (ds.image_size, ds.channels);
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Data: {t}</title><style>{STYLE}</style></head><body><h1>Data: <code>{t}</code></h1><p class=muted>{} images, {} classes, decoded at {size}×{size}×{ch}; split seed {}, val_fraction {}.</p>",
        r.images,
        r.classes.len(),
        r.split_seed,
        cfg.val_fraction,
        t = esc(title)
    );
    for w in &r.warnings {
        let _ = write!(h, "<p class=warn>warning: {}</p>", esc(w));
    }
    h += "<h2>Classes</h2><table><tr><th>class</th><th>images</th><th>share</th><th>train</th><th>val</th><th>balanced weight</th><th>brightness</th></tr>";
    for c in &r.classes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&c.name),
            c.images,
            100.0 * c.share,
            c.train,
            c.val,
            c.balanced_weight,
            c.mean_brightness
        );
    }
    let _ = write!(
        h,
        "</table><h2>Pixel statistics (training split)</h2><pre>{}</pre>",
        esc(&r.normalize_lines())
    );

    // samples and the mean image per class
    let per = samples_per_class(ds.num_classes());
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes()];
    for i in 0..ds.len() {
        members[ds.label(i) as usize].push(i);
    }
    let _ = write!(
        h,
        "<h2>Samples and mean image per class</h2><p class=muted>{per} images evenly spaced through each class, then (after the gap) the class's mean image.</p><table>"
    );
    for (c, idx) in members.iter().enumerate() {
        let picks = crate::probe::evenly_spaced(idx, per);
        let mut tiles: Vec<Vec<u8>> = picks.iter().map(|&i| ds.image(i).to_vec()).collect();
        if !idx.is_empty() {
            let mut sum = vec![0u64; size * size * ch];
            for &i in idx {
                for (s, v) in sum.iter_mut().zip(ds.image(i)) {
                    *s += *v as u64;
                }
            }
            tiles.push(vec![255u8; size * size * ch]);
            tiles.push(sum.iter().map(|s| (*s / idx.len() as u64) as u8).collect());
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&ds.classes[c]),
            img_tag(&strip_png(&tiles, size, ch), &ds.classes[c])
        );
    }
    h += "</table>";

    // the augmentations, as training applies them
    if !cfg.augment.is_empty() {
        let names: Vec<&str> = crate::config::Augmentation::ORDER
            .into_iter()
            .filter(|a| cfg.augment.contains(a))
            .map(|a| a.name())
            .collect();
        let _ = write!(
            h,
            "<h2>Augmentations</h2><p class=muted>{}, in the order they apply. Each transform alone, always applied with the config's limits: the image, then six draws.</p><table>",
            esc(&names.join(", "))
        );
        let first = crate::probe::evenly_spaced(&(0..ds.len()).collect::<Vec<_>>(), 1);
        let rows = super::preview::augmentation_rows(ds, cfg, first[0], 6, 0);
        // (the last row, all of them together, is the next section's subject)
        for row in &rows[..rows.len() - 1] {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&row.label),
                img_tag(&strip_png(&row.tiles, size, ch), &row.label)
            );
        }
        h += "</table><p class=muted>All of them as training applies them, each with its probability: one training image per row, then six draws.</p>";
        let mut rng = Rng::stream(0, "inspect");
        let mut scratch = AugmentScratch::default();
        for i in crate::probe::evenly_spaced(&(0..ds.len()).collect::<Vec<_>>(), 4) {
            let tiles = super::preview::augmented_tiles(
                ds.image(i),
                size,
                ch,
                cfg,
                6,
                &mut rng,
                &mut scratch,
            );
            h += &img_tag(&strip_png(&tiles, size, ch), &ds.sources[i]);
        }
    }

    // duplicates side by side
    if !r.duplicates.is_empty() {
        let index: std::collections::HashMap<&str, usize> = ds
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        h += "<h2>Duplicates</h2><table><tr><th>pair</th><th>kind</th><th>r</th><th></th></tr>";
        for d in r.duplicates.iter().take(30) {
            let (Some(&a), Some(&b)) = (index.get(d.a.as_str()), index.get(d.b.as_str())) else {
                continue;
            };
            let _ = write!(
                h,
                "<tr><td>{} ↔ {}{}{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
                esc(&d.a),
                esc(&d.b),
                if d.across_split {
                    " <b>[train ↔ val]</b>"
                } else {
                    ""
                },
                if d.same_class {
                    ""
                } else {
                    " <b>[different classes]</b>"
                },
                d.kind,
                d.correlation,
                img_tag(
                    &strip_png(&[ds.image(a).to_vec(), ds.image(b).to_vec()], size, ch),
                    "pair"
                )
            );
        }
        h += "</table>";
        if r.duplicates.len() > 30 {
            let _ = write!(
                h,
                "<p class=muted>… {} more pairs (--format json lists them all).</p>",
                r.duplicates.len() - 30
            );
        }
    }
    if !r.unreadable.is_empty() {
        h += "<h2>Unreadable files</h2><ul>";
        for (p, why) in &r.unreadable {
            let _ = write!(h, "<li><code>{}</code>: {}</li>", esc(p), esc(why));
        }
        h += "</ul>";
    }
    h += "</body></html>\n";
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 4648 §10 test vectors
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn strips_decode_back_to_their_tiles() {
        let a: Vec<u8> = (0..16 * 3).map(|v| v as u8).collect();
        let png = strip_png(&[a.clone(), a.clone()], 4, 3);
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        // 4 px scaled ×12 to 48, two tiles 2 px apart
        assert_eq!(img.dimensions(), (100, 48));
        assert_eq!(img.get_pixel(0, 0).0, [0, 1, 2]);
        assert_eq!(img.get_pixel(50 + 47, 47).0, [45, 46, 47]);
    }
}
