//! `sweep data inspect` on a real image folder with planted faults: a file
//! copied into both classes' folders, a brightened copy, a corrupt file and a
//! grayscale image in a colour set, each reported with its path; the numbers
//! checked against an independent computation over the decoded files.

mod common;

use common::{stdout, sweep};

use image::{GrayImage, Rgb, RgbImage};

/// A 16×16 picture of its own: stripes whose direction and phase depend on `k`.
fn picture(k: u32) -> RgbImage {
    RgbImage::from_fn(16, 16, |x, y| {
        let v = ((x * (k % 5 + 1) + y * (k / 5 + 1) + k * 7) % 16) as u8 * 15;
        Rgb([v, 255 - v, (v / 2).wrapping_add(((k * 9) % 256) as u8)])
    })
}

#[test]
fn inspect_reports_classes_statistics_and_planted_faults() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    for (c, name) in ["ants", "bees", "cats"].iter().enumerate() {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..12u32 {
            picture(c as u32 * 12 + i)
                .save(root.join(name).join(format!("{i:02}.png")))
                .unwrap();
        }
    }
    // an exact copy in many places of its class (some copies land in each split)
    for i in 0..6 {
        std::fs::copy(
            root.join("ants/00.png"),
            root.join(format!("ants/copy{i}.png")),
        )
        .unwrap();
    }
    // a brightened copy: a near duplicate, in another class
    let mut bright = image::open(root.join("bees/03.png")).unwrap().to_rgb8();
    bright
        .pixels_mut()
        .for_each(|p| p.0 = p.0.map(|v| v.saturating_add(4)));
    bright.save(root.join("cats/bright.png")).unwrap();
    // a corrupt file and a grayscale image
    std::fs::write(
        root.join("bees/broken.png"),
        b"\x89PNG\r\n\x1a\n not really",
    )
    .unwrap();
    GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 16 + y) as u8]))
        .save(root.join("cats/gray.png"))
        .unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        format!(
            "[data]\nroot = {:?}\nimage_size = 16\nval_fraction = 0.5\naugment = [\"hflip\", \"shift_scale_rotate\"]\n[train]\nseed = 4\n",
            root.display().to_string()
        ),
    )
    .unwrap();

    let json = stdout(&sweep(
        dir.path(),
        &["data", "inspect", "t.toml", "--format", "json"],
    ));
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    // counts against the folder listing (the corrupt file is not an image)
    let listed = |c: &str| std::fs::read_dir(root.join(c)).unwrap().count();
    let classes = r["classes"].as_array().unwrap();
    let images: Vec<u64> = classes
        .iter()
        .map(|c| c["images"].as_u64().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            listed("ants") as u64,
            listed("bees") as u64 - 1,
            listed("cats") as u64
        ]
    );
    assert_eq!(r["images"].as_u64().unwrap(), images.iter().sum::<u64>());
    for c in classes {
        assert_eq!(
            c["train"].as_u64().unwrap() + c["val"].as_u64().unwrap(),
            c["images"].as_u64().unwrap()
        );
    }
    // the corrupt file, with its path and the decoder's reason
    let unreadable = r["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0][0], "bees/broken.png");
    // the grayscale file among colour ones
    assert_eq!(
        r["odd_colour"],
        serde_json::json!([["cats/gray.png", "L8"]])
    );
    assert_eq!(
        r["colour_modes"]["Rgb8"].as_u64().unwrap(),
        images.iter().sum::<u64>() - 1
    );
    // duplicates: ants/00.png and its 6 copies are 6 exact pairs, each with
    // the first file, some across the split; the brightened copy is a near
    // duplicate of another class
    let dups = r["duplicates"].as_array().unwrap();
    let exact: Vec<&serde_json::Value> = dups.iter().filter(|d| d["kind"] == "exact").collect();
    assert_eq!(exact.len(), 6, "{dups:?}");
    assert!(exact.iter().all(|d| d["a"] == "ants/00.png"), "{exact:?}");
    assert!(exact.iter().all(|d| d["same_class"] == true));
    assert!(exact.iter().any(|d| d["across_split"] == true));
    assert!(
        dups.iter().any(|d| d["kind"] == "near"
            && d["same_class"] == false
            && ((d["a"] == "bees/03.png" && d["b"] == "cats/bright.png")
                || (d["b"] == "bees/03.png" && d["a"] == "cats/bright.png"))),
        "{dups:?}"
    );
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("both sides of the train/validation split"),
        "{warnings}"
    );

    // channel mean and std of the training split against a direct computation
    // over the decoded files (the split taken from the library, the pixels not)
    let cfg = sweep_train::TrialConfig::from_file(&dir.path().join("t.toml")).unwrap();
    let mut data = cfg.data.clone();
    data.on_bad_image = sweep_train::config::OnBadImage::Skip;
    let ds = sweep_train::Dataset::load(&data).unwrap();
    let split = sweep_train::data::stratified_split(&ds, 0.5, None, 4).unwrap();
    let (mut sum, mut sq, mut n) = ([0f64; 3], [0f64; 3], 0f64);
    for &i in &split.train {
        let img = image::open(root.join(&ds.sources[i])).unwrap().to_rgb8();
        for p in img.pixels() {
            for ch in 0..3 {
                let v = p.0[ch] as f64 / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
            n += 1.0;
        }
    }
    for ch in 0..3 {
        let mean = sum[ch] / n;
        let std = (sq[ch] / n - mean * mean).sqrt();
        let got_mean = r["train_mean"][ch].as_f64().unwrap();
        let got_std = r["train_std"][ch].as_f64().unwrap();
        assert!(
            (got_mean - mean).abs() < 1e-9,
            "channel {ch}: mean {got_mean} vs {mean}"
        );
        assert!(
            (got_std - std).abs() < 1e-9,
            "channel {ch}: std {got_std} vs {std}"
        );
    }

    // the terminal summary: the normalize lines to paste, the planted faults by path
    let text = stdout(&sweep(dir.path(), &["data", "inspect", "t.toml"]));
    for part in [
        "normalize_mean = [",
        "normalize_std = [",
        "bees/broken.png",
        "cats/gray.png: L8",
        "[train ↔ val]",
        "warning:",
    ] {
        assert!(text.contains(part), "no {part} in:\n{text}");
    }
    // the page with the pictures: a strip per class, four augmented images,
    // a strip per duplicate pair, every picture an inline PNG
    let o = sweep(
        dir.path(),
        &["data", "inspect", "t.toml", "--html", "page.html"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(dir.path().join("page.html")).unwrap();
    let pngs = page
        .matches("src=\"data:image/png;base64,iVBORw0KGgo")
        .count();
    let shown_pairs = dups.len().min(30);
    assert_eq!(
        pngs,
        3 + 2 + 4 + shown_pairs,
        "classes + one row per transform + augmented rows + pairs"
    );
    assert_eq!(page.matches("<img").count(), pngs, "every picture inline");
    for part in [
        "Augmentations",
        "hflip, shift_scale_rotate",
        "<td>hflip</td>",
        "bees/broken.png",
        "[train ↔ val]",
        "normalize_mean",
    ] {
        assert!(page.contains(part), "no {part} in the page");
    }
    assert!(!page.contains("<script"), "no scripts");

    // `sweep run` runs the same checks first: --strict-data refuses and
    // records nothing; without it the run warns and goes on
    std::fs::write(
        dir.path().join("s.toml"),
        format!(
            "name = \"planted\"\nseeds = [4]\n[data]\nroot = {:?}\nimage_size = 16\nval_fraction = 0.5\non_bad_image = \"skip\"\n[model]\nhidden = [8]\n[train]\nepochs = 1\n[grid]\nmodel.dropout = [0.0]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    let refused = sweep(dir.path(), &["run", "s.toml", "--strict-data"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("--strict-data") && err.contains("both sides of the train/validation split"),
        "{err}"
    );
    assert!(err.contains("nothing was recorded"), "{err}");
    assert!(
        !dir.path().join("results/sweep.db").exists(),
        "a refused run recorded something"
    );
    let ran = stdout(&sweep(dir.path(), &["run", "s.toml"]));
    assert!(
        ran.contains("warning: data:") && ran.contains("are not Rgb8"),
        "{ran}"
    );
    assert!(ran.contains("1 complete"), "{ran}");

    // a labels CSV: a row naming a file that is not there, a file no row names
    let flat = dir.path().join("flat");
    std::fs::create_dir_all(flat.join("imgs")).unwrap();
    let mut csv = String::from("image_id,dx\n");
    for k in 0..8u32 {
        picture(40 + k)
            .save(flat.join(format!("imgs/p{k}.png")))
            .unwrap();
        if k != 7 {
            csv += &format!("p{k},{}\n", if k % 2 == 0 { "even" } else { "odd" });
        }
    }
    csv += "gone,odd\n";
    std::fs::write(flat.join("labels.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("csv.toml"),
        format!(
            "[data]\nroot = {:?}\nlabels = \"labels.csv\"\nfile_column = \"image_id\"\nlabel_column = \"dx\"\nimage_dirs = [\"imgs\"]\nimage_size = 16\n",
            flat.display().to_string()
        ),
    )
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(&stdout(&sweep(
        dir.path(),
        &["data", "inspect", "csv.toml", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(r["images"], 7);
    assert_eq!(r["unlisted"], serde_json::json!(["imgs/p7.png"]));
    let unreadable = r["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0][0], "imgs/gone");

    // an image folder works directly, with defaults
    let folder = stdout(&sweep(
        dir.path(),
        &["data", "inspect", "set", "--image-size", "16"],
    ));
    assert!(folder.contains("3 classes"), "{folder}");
}

/// `sweep data augment` on the real digits: one row per listed transform in the
/// order they apply, then all of them; the PNG has that many rows of tiles, and
/// a row's first tile is the image itself. Bad requests are refused by name.
#[test]
fn augment_preview_shows_each_transform_on_a_real_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = common::data::digits();
    let all = [
        "coarse_dropout",
        "elastic_transform",
        "gauss_noise",
        "grid_distortion",
        "hflip",
        "hue_saturation_value",
        "random_resized_crop",
        "shift_scale_rotate",
        "vflip",
        "brightness_contrast",
    ];
    let list: Vec<String> = all.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        dir.path().join("t.toml"),
        format!(
            "[data]\nroot = {:?}\nimage_size = 32\naugment = [{}]\n[data.augmentation]\nelastic_alpha = 30\nelastic_sigma = 4\n",
            root.display().to_string(),
            list.join(", ")
        ),
    )
    .unwrap();
    let out = stdout(&sweep(
        dir.path(),
        &[
            "data", "augment", "t.toml", "-o", "grid.png", "--image", "5", "--draws", "4",
        ],
    ));
    let rows: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(". ").nth(1).unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "random_resized_crop",
            "hflip",
            "vflip",
            "brightness_contrast",
            "hue_saturation_value",
            "shift_scale_rotate",
            "grid_distortion",
            "elastic_transform",
            "gauss_noise",
            "coarse_dropout",
            "all, probability 0.5 each"
        ],
        "{out}"
    );
    let png = image::open(dir.path().join("grid.png")).unwrap().to_rgb8();
    // 32-pixel tiles scaled ×2, 2 pixels apart; rows 6 apart (none below the last)
    assert_eq!((png.width(), png.height()), (5 * 66, 11 * 70 - 6));
    // the first tile of the first and last rows is the same (original) image
    for y in 0..64 {
        for x in 0..64 {
            assert_eq!(png.get_pixel(x, y), png.get_pixel(x, 10 * 70 + y));
        }
    }

    let o = sweep(
        dir.path(),
        &[
            "data", "augment", "t.toml", "-o", "g.png", "--image", "99999",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--image 99999") && err.contains("1797 images"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("none.toml"),
        format!("[data]\nroot = {:?}\n", root.display().to_string()),
    )
    .unwrap();
    let o = sweep(dir.path(), &["data", "augment", "none.toml", "-o", "g.png"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("none.toml") && err.contains("data.augment"),
        "{err}"
    );
    assert!(!dir.path().join("g.png").exists());
}
