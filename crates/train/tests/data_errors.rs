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
}
