//! Bad input gets a clear error naming the file or class: corrupt images, empty
//! class folders, labels CSVs that name missing files or columns.

use std::path::Path;

use sweep_train::{config::OnBadImage, Dataset, TrialConfig};

fn write_png(path: &Path, value: u8) {
    let img = image::RgbImage::from_pixel(6, 6, image::Rgb([value, value / 2, 255 - value]));
    img.save(path).unwrap();
}

fn folder_with(classes: &[(&str, usize)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (c, n) in classes {
        std::fs::create_dir(dir.path().join(c)).unwrap();
        for i in 0..*n {
            write_png(&dir.path().join(c).join(format!("{i}.png")), (i * 30) as u8);
        }
    }
    dir
}

fn cfg_for(root: &Path, extra: &str) -> TrialConfig {
    TrialConfig::from_toml_str(
        &format!(
            "[data]\nroot = {:?}\nimage_size = 4\n{extra}",
            root.display().to_string()
        ),
        "t.toml",
    )
    .unwrap()
}

#[test]
fn corrupt_image_is_named_or_skipped() {
    let dir = folder_with(&[("a", 3), ("b", 3)]);
    let bad = dir.path().join("b").join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let e = Dataset::load(&cfg_for(dir.path(), "").data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.png") && e.contains("cannot decode"),
        "{e}"
    );
    let mut cfg = cfg_for(dir.path(), "on_bad_image = \"skip\"\n");
    assert_eq!(cfg.data.on_bad_image, OnBadImage::Skip);
    let ds = Dataset::load(&cfg.data).unwrap();
    assert_eq!(ds.len(), 6);
    assert_eq!(ds.skipped.len(), 1);
    assert!(ds.skipped[0].0.ends_with("b/broken.png"));
    cfg.data.image_size = 6;
    assert_eq!(Dataset::load(&cfg.data).unwrap().image_len(), 6 * 6 * 3);
}

#[test]
fn empty_class_folder_is_named() {
    let dir = folder_with(&[("a", 3), ("b", 0)]);
    let e = Dataset::load(&cfg_for(dir.path(), "").data)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class folder `b` has no images"), "{e}");
}

#[test]
fn missing_root_is_named() {
    let e = Dataset::load(&cfg_for(Path::new("/nonexistent/sweep-data"), "").data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/sweep-data") && e.contains("not a folder"),
        "{e}"
    );
}

#[test]
fn labels_csv_problems_are_named() {
    let dir = folder_with(&[("a", 2), ("b", 2)]);
    std::fs::write(
        dir.path().join("meta.csv"),
        "image_id,dx\na/0,a\na/1,a\nb/0,b\nb/7,b\n",
    )
    .unwrap();
    let extra = "labels = \"meta.csv\"\nfile_column = \"image_id\"\nlabel_column = \"dx\"\n";
    let e = Dataset::load(&cfg_for(dir.path(), extra).data)
        .unwrap_err()
        .to_string();
    assert!(e.contains("meta.csv") && e.contains("line 5: b/7"), "{e}");

    std::fs::write(
        dir.path().join("meta.csv"),
        "image_id,dx\na/0,a\na/1,a\nb/0,b\nb/1,b\n",
    )
    .unwrap();
    let ds = Dataset::load(&cfg_for(dir.path(), extra).data).unwrap();
    assert_eq!(ds.class_counts(), vec![2, 2]);

    let e = Dataset::load(&cfg_for(dir.path(), "labels = \"meta.csv\"\n").data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no column `filename`") && e.contains("image_id, dx"),
        "{e}"
    );

    // Hostile CSVs: each refused with the line, values shown short and escaped.
    let long = "z".repeat(10 << 20);
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            b"image_id,dx\na/0,a\n\"a/1,a\nb/0,b\nb/1,b\n".to_vec(),
            "line 3: a quoted field opens here and is never closed".into(),
        ),
        (
            b"image_id,dx\na/0,a\na/1,\xff\xfea\nb/0,b\n".to_vec(),
            "line 3: not UTF-8 text (byte 22)".into(),
        ),
        (
            format!("image_id,dx\na/0,a\na/1,a\nb/0,{long}\nb/1,b\n").into_bytes(),
            "line 4: a label of 10485760 characters (at most 200)".into(),
        ),
        (
            b"image_id,dx\na/0,a\na/1,a\nb/0,b\0x\nb/1,b\n".to_vec(),
            "line 4: a control character (\\0) in `b\\0x`".into(),
        ),
        (
            b"image_id,dx\na/0,a\na/1,a\nb/0,b\nb/1,b\na/0,a\n".to_vec(),
            "line 6: `a/0` is listed again (first on line 2)".into(),
        ),
        (
            b"image_id,dx\na/0,a\na/1,a\nb/0,b\nb/1,b\na/1,b\n".to_vec(),
            "line 6: `a/1` is labelled `b` here and `a` on line 3".into(),
        ),
        (
            format!("image_id,dx\na/0,a\na/1,a\nb/0,b\n{long},b\n").into_bytes(),
            "first: line 5: zzzz".into(),
        ),
    ];
    for (csv, says) in cases {
        std::fs::write(dir.path().join("meta.csv"), &csv).unwrap();
        let e = Dataset::load(&cfg_for(dir.path(), extra).data)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("meta.csv") && e.contains(&says),
            "{says}: {}",
            &e[..e.len().min(500)]
        );
        assert!(e.len() < 1000, "a message of {} bytes", e.len());
    }
}

/// A PNG whose header claims `w × h` pixels of 8-bit grey, with one tiny
/// (wrong-sized) data chunk: what a decoder must refuse before allocating.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        // CRC-32 (ISO-HDLC) of type and data, as PNG wants
        let mut crc = 0xFFFF_FFFFu32;
        for b in &out[start..] {
            crc ^= *b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        out.extend_from_slice(&(!crc).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn hostile_image_files_are_named_or_skipped_without_exhausting_memory() {
    let dir = folder_with(&[("a", 3), ("b", 3)]);
    let b = dir.path().join("b");
    // A header claiming 100,000 × 100,000 pixels (10 gigapixels).
    std::fs::write(b.join("huge.png"), png_claiming(100_000, 100_000)).unwrap();
    // A decompression bomb: a real, valid PNG of 9,000 × 9,000 grey pixels
    // (81 megapixels) that compresses to a few hundred kilobytes.
    let bomb = image::GrayImage::new(9_000, 9_000);
    bomb.save(b.join("bomb.png")).unwrap();
    assert!(std::fs::metadata(b.join("bomb.png")).unwrap().len() < 2 << 20);
    drop(bomb);
    // A JPEG cut in half.
    let photo =
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]));
    let mut jpeg = Vec::new();
    photo
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(b.join("cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    // An empty file and a text file, both named .png.
    std::fs::write(b.join("empty.png"), b"").unwrap();
    std::fs::write(b.join("notes.png"), "hello, this is text\n").unwrap();
    // Symbolic links in a loop, one that leads nowhere, and a FIFO.
    std::os::unix::fs::symlink("loop2.png", b.join("loop1.png")).unwrap();
    std::os::unix::fs::symlink("loop1.png", b.join("loop2.png")).unwrap();
    std::os::unix::fs::symlink("nowhere.png", b.join("dangling.png")).unwrap();
    let fifo = b.join("pipe.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let with_fifo = made.map(|s| s.success()).unwrap_or(false);

    let expected: Vec<(&str, &str)> = vec![
        (
            "huge.png",
            "claims 100000 × 100000 pixels, above the limit of 64 megapixels",
        ),
        (
            "bomb.png",
            "claims 9000 × 9000 pixels, above the limit of 64 megapixels",
        ),
        ("cut.jpg", "cannot decode image"),
        ("empty.png", "an empty file (0 bytes)"),
        (
            "notes.png",
            "not a PNG, JPEG or BMP image (it starts with \"hello, this is text",
        ),
        ("loop1.png", "symbolic links"),
        ("dangling.png", "No such file"),
        ("pipe.png", "not a regular file"),
    ];
    // Each one alone stops the load with a message naming it.
    let hostile: Vec<&str> = expected.iter().map(|(f, _)| *f).collect();
    for (file, says) in &expected {
        if *file == "pipe.png" && !with_fifo {
            continue;
        }
        let solo = folder_with(&[("a", 3), ("b", 3)]);
        let from = b.join(file);
        let to = solo.path().join("b").join(file);
        match std::fs::symlink_metadata(&from) {
            Ok(m) if m.file_type().is_symlink() => {
                std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
                if file.starts_with("loop") {
                    std::os::unix::fs::symlink("loop1.png", solo.path().join("b/loop2.png"))
                        .unwrap();
                }
            }
            _ if *file == "pipe.png" => {
                std::process::Command::new("mkfifo")
                    .arg(&to)
                    .status()
                    .unwrap();
            }
            _ => {
                std::fs::copy(&from, &to).unwrap();
            }
        }
        let e = Dataset::load(&cfg_for(solo.path(), "").data)
            .unwrap_err()
            .to_string();
        assert!(e.contains(file) && e.contains(says), "{file}: {e}");
    }
    // Under on_bad_image = "skip" all are left out and listed; the six good
    // images load.
    let cfg = cfg_for(dir.path(), "on_bad_image = \"skip\"\n");
    let ds = Dataset::load(&cfg.data).unwrap();
    assert_eq!(ds.len(), 6);
    let mut skipped: Vec<String> = ds
        .skipped
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    let mut want: Vec<&str> = hostile
        .iter()
        .copied()
        .chain(std::iter::once("loop2.png"))
        .filter(|f| with_fifo || *f != "pipe.png")
        .collect();
    want.sort();
    assert_eq!(skipped, want);
}

#[test]
fn a_class_folder_of_100000_identical_files_is_inspected_in_bounded_work() {
    let dir = folder_with(&[("a", 20)]);
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let mut one = Vec::new();
    image::RgbImage::from_pixel(1, 1, image::Rgb([9, 99, 199]))
        .write_to(&mut std::io::Cursor::new(&mut one), image::ImageFormat::Png)
        .unwrap();
    for i in 0..100_000 {
        std::fs::write(many.join(format!("{i:06}.png")), &one).unwrap();
    }
    let cfg = cfg_for(dir.path(), "");
    let mut data = cfg.data.clone();
    data.image_size = 16;
    let ds = Dataset::load(&data).unwrap();
    assert_eq!(ds.len(), 100_020);
    let t = std::time::Instant::now();
    let r = sweep_train::data::inspect::inspect(&data, &ds, 1);
    // every copy is one pair with the first file; at most 10,000 listed
    assert_eq!(
        r.duplicates.len(),
        sweep_train::data::inspect::MAX_DUPLICATE_PAIRS
    );
    assert!(
        r.duplicates
            .iter()
            .all(|d| d.kind == "exact" && d.a.ends_with("000000.png")),
        "{:?}",
        &r.duplicates[..3]
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("duplicate pairs found (99999 exact,")),
        "{:?}",
        r.notes
    );
    eprintln!(
        "inspect of 100,020 images: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
