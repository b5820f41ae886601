//! Sweep's augmentations against Albumentations 2.0.8 itself (with the OpenCV
//! 5.0 wheel it installs): `scripts/albumentations-reference.py` calls each
//! transform's `apply` with fixed parameters on small images and records the
//! output, and 2,000 draws of each transform's random parameters with its
//! defaults (`fixtures/albumentations/`). Where the operation is deterministic
//! given its parameters, Sweep's output equals Albumentations' on every value
//! of these images (OpenCV's vector HSV → RGB path, used only for rows of 32
//! pixels or more, truncates where its scalar path rounds: ±1 there). Its
//! parameter draws must have the same distributions.

use serde_json::Value;
use sweep_train::config::{Augmentation, AugmentationSettings};
use sweep_train::data::augment::{geometric, pixel, AugmentScratch};
use sweep_train::rng::Rng;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/albumentations/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["meta"]["albumentations"], "2.0.8", "{path}");
    v
}

/// A case's input image, rebuilt from the formula the generator names.
fn image(case: &Value) -> (Vec<u8>, usize, usize, usize) {
    let im = &case["image"];
    let (h, w, c) = (
        im["height"].as_u64().unwrap() as usize,
        im["width"].as_u64().unwrap() as usize,
        im["channels"].as_u64().unwrap() as usize,
    );
    let mut out = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let v = match im["formula"].as_str().unwrap() {
                    "mod" => (y * 37 + x * 23 + ch * 71) % 256,
                    "gradient" => {
                        let k = if c == 1 { 2 } else { ch };
                        match k {
                            0 => (x * 255) / (w - 1),
                            1 => (y * 255) / (h - 1),
                            _ => ((x + y) * 255) / (w + h - 2),
                        }
                    }
                    f => panic!("unknown formula {f}"),
                };
                out.push(v as u8);
            }
        }
    }
    let sum: u64 = out.iter().map(|v| *v as u64).sum();
    assert_eq!(
        sum,
        im["input_sum"].as_u64().unwrap(),
        "input image of {case}"
    );
    (out, w, h, c)
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as u8)
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A fill given as a number (every channel: numpy slices) or one per channel.
fn fill(v: &Value, c: usize) -> Vec<u8> {
    match v {
        Value::Array(_) => u8s(v),
        n => vec![n.as_f64().unwrap() as u8; c],
    }
}

/// The largest |difference| and how many values differ.
fn compare(got: &[u8], want: &[u8]) -> (i32, usize) {
    assert_eq!(got.len(), want.len());
    let diffs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as i32 - *b as i32).abs());
    (
        diffs.clone().max().unwrap_or(0),
        diffs.filter(|d| *d > 0).count(),
    )
}

#[test]
fn coarse_dropout_fills_the_holes_exactly() {
    for case in fixture("coarse_dropout")["cases"].as_array().unwrap() {
        let (mut img, w, _, c) = image(case);
        let holes: Vec<(usize, usize, usize, usize)> = case["params"]["holes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let h: Vec<usize> = h
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                (h[0], h[1], h[2], h[3])
            })
            .collect();
        pixel::fill_holes(&mut img, w, c, &holes, &fill(&case["params"]["fill"], c));
        assert_eq!(
            compare(&img, &u8s(&case["expected"])),
            (0, 0),
            "{}",
            case["constructor"]
        );
    }
}

#[test]
fn grid_distortion_builds_albumentations_maps_and_remaps_within_one() {
    for case in fixture("grid_distortion")["cases"].as_array().unwrap() {
        let (img, w, h, c) = image(case);
        let p = &case["params"];
        let n = p["num_steps"].as_u64().unwrap() as usize;
        let (mut sx, mut sy) = (f64s(&p["steps_x_raw"]), f64s(&p["steps_y_raw"]));
        if p["normalized"].as_bool().unwrap() {
            geometric::normalize_grid_steps(w, n, &mut sx);
            geometric::normalize_grid_steps(h, n, &mut sy);
        }
        for (got, want) in sx
            .iter()
            .chain(&sy)
            .zip(f64s(&p["steps_x"]).iter().chain(&f64s(&p["steps_y"])))
        {
            assert!((got - want).abs() < 1e-12, "steps {got} vs {want}");
        }
        let (mut lx, mut ly) = (Vec::new(), Vec::new());
        geometric::grid_line(w, n, &sx, &mut lx);
        geometric::grid_line(h, n, &sy, &mut ly);
        let map_x: Vec<f32> = (0..h).flat_map(|_| lx.iter().copied()).collect();
        let map_y: Vec<f32> = (0..h).flat_map(|y| std::iter::repeat_n(ly[y], w)).collect();
        assert_eq!(
            map_x,
            f32s(&case["map_x"]),
            "map_x of {}",
            case["constructor"]
        );
        assert_eq!(
            map_y,
            f32s(&case["map_y"]),
            "map_y of {}",
            case["constructor"]
        );
        let mut out = vec![0; img.len()];
        geometric::remap_linear(
            &img,
            w,
            h,
            c,
            &map_x,
            &map_y,
            &fill(&p["fill"], c),
            &mut out,
        );
        let (max, _) = compare(&out, &u8s(&case["expected"]));
        assert!(
            max == 0,
            "grid distortion {}: off by {max}",
            case["constructor"]
        );
    }
}

#[test]
fn elastic_transform_remaps_its_field_within_one() {
    for case in fixture("elastic_transform")["cases"].as_array().unwrap() {
        let (img, w, h, c) = image(case);
        let (mut mx, mut my) = (Vec::new(), Vec::new());
        geometric::displacement_maps(&f32s(&case["dx"]), &f32s(&case["dy"]), w, &mut mx, &mut my);
        let mut out = vec![0; img.len()];
        geometric::remap_linear(&img, w, h, c, &mx, &my, &vec![0; c], &mut out);
        let (max, _) = compare(&out, &u8s(&case["expected"]));
        assert!(max == 0, "elastic {}: off by {max}", case["constructor"]);
    }
}

#[test]
fn hue_saturation_value_is_within_one() {
    for case in fixture("hue_saturation_value")["cases"].as_array().unwrap() {
        let (mut img, _, _, c) = image(case);
        let p = &case["params"];
        pixel::hue_saturation_value(
            &mut img,
            c,
            p["hue_shift"].as_f64().unwrap(),
            p["sat_shift"].as_f64().unwrap(),
            p["val_shift"].as_f64().unwrap(),
        );
        let (max, n) = compare(&img, &u8s(&case["expected"]));
        assert!(max == 0, "HSV {p}: off by {max} on {n} values");
    }
}

#[test]
fn random_resized_crop_crops_and_resizes_as_opencv() {
    for case in fixture("random_resized_crop")["cases"].as_array().unwrap() {
        let (img, w, _, c) = image(case);
        let p = &case["params"];
        let b: Vec<usize> = p["crop_coords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let size: Vec<usize> = p["size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut cropped = Vec::new();
        geometric::crop(&img, w, c, (b[0], b[1], b[2], b[3]), &mut cropped);
        let mut out = Vec::new();
        geometric::resize_linear(
            &cropped,
            b[2] - b[0],
            b[3] - b[1],
            c,
            size[1],
            size[0],
            &mut out,
        );
        let (max, n) = compare(&out, &u8s(&case["expected"]));
        assert!(
            max == 0,
            "crop {b:?} to {size:?}: off by {max} on {n} values"
        );
    }
}

#[test]
fn gauss_noise_adds_truncated_noise_exactly() {
    for case in fixture("gauss_noise")["cases"].as_array().unwrap() {
        let (mut img, _, _, _) = image(case);
        pixel::add_noise(&mut img, &f32s(&case["noise_map"]));
        assert_eq!(
            compare(&img, &u8s(&case["expected"])),
            (0, 0),
            "{}",
            case["constructor"]
        );
    }
}

/// Mean and standard deviation of `xs`.
fn moments(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Sweep's draws of one quantity against Albumentations' summary of its own
/// 2,000 draws: same range, mean within 4 standard errors, spread within 12%.
fn same_distribution(what: &str, ours: &[f64], theirs: &Value, range_slack: f64) {
    let (m, s) = moments(ours);
    let (tm, ts) = (
        theirs["mean"].as_f64().unwrap(),
        theirs["std"].as_f64().unwrap(),
    );
    let (tmin, tmax) = (
        theirs["min"].as_f64().unwrap(),
        theirs["max"].as_f64().unwrap(),
    );
    let tn = theirs["count"].as_f64().unwrap();
    let se = (ts * ts / tn + s * s / ours.len() as f64).sqrt();
    assert!(
        (m - tm).abs() <= 4.0 * se + 1e-9,
        "{what}: mean {m} vs Albumentations {tm} (se {se})"
    );
    if ts > 0.0 {
        assert!(
            (s / ts - 1.0).abs() < 0.12,
            "{what}: std {s} vs Albumentations {ts}"
        );
    }
    let (lo, hi) = ours
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    let slack = range_slack * (tmax - tmin);
    assert!(
        lo >= tmin - slack && hi <= tmax + slack,
        "{what}: range [{lo}, {hi}] vs [{tmin}, {tmax}]"
    );
}

#[test]
fn parameter_draws_have_albumentations_distributions() {
    let d = fixture("draws");
    let st = AugmentationSettings::default();
    let n = 2000;
    let (w, h) = (64usize, 64usize);
    let mut rng = Rng::new(12345);

    // CoarseDropout
    let (mut count, mut hh, mut ww, mut ys, mut xs) = (vec![], vec![], vec![], vec![], vec![]);
    let mut holes = Vec::new();
    for _ in 0..n {
        pixel::dropout_holes(
            &mut rng,
            w,
            h,
            st.num_holes_range,
            st.hole_height_range,
            st.hole_width_range,
            &mut holes,
        );
        count.push(holes.len() as f64);
        for &(x0, y0, x1, y1) in &holes {
            hh.push((y1 - y0) as f64);
            ww.push((x1 - x0) as f64);
            ys.push(y0 as f64);
            xs.push(x0 as f64);
        }
    }
    let cd = &d["CoarseDropout"];
    same_distribution("coarse_dropout holes", &count, &cd["num_holes"], 0.0);
    same_distribution("coarse_dropout height", &hh, &cd["hole_height"], 0.0);
    same_distribution("coarse_dropout width", &ww, &cd["hole_width"], 0.0);
    same_distribution("coarse_dropout top", &ys, &cd["y_min"], 0.05);
    same_distribution("coarse_dropout left", &xs, &cd["x_min"], 0.05);

    // GridDistortion: raw steps and the largest displacement of the map
    let (mut raw, mut max_disp) = (vec![], vec![]);
    let (mut lx, mut ly) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (mut sx, mut sy) =
            geometric::grid_steps(&mut rng, st.grid_num_steps, st.grid_distort_limit);
        raw.extend(&sx);
        geometric::normalize_grid_steps(w, st.grid_num_steps, &mut sx);
        geometric::normalize_grid_steps(h, st.grid_num_steps, &mut sy);
        geometric::grid_line(w, st.grid_num_steps, &sx, &mut lx);
        geometric::grid_line(h, st.grid_num_steps, &sy, &mut ly);
        let m = lx
            .iter()
            .enumerate()
            .chain(ly.iter().enumerate())
            .map(|(i, v)| (*v as f64 - i as f64).abs())
            .fold(0.0, f64::max);
        max_disp.push(m);
    }
    let gd = &d["GridDistortion"];
    same_distribution("grid steps", &raw, &gd["steps_x_raw"], 0.0);
    same_distribution(
        "grid largest displacement",
        &max_disp,
        &gd["max_abs_displacement"],
        0.1,
    );

    // ElasticTransform (defaults α = 1, σ = 50): per-draw spread and largest displacement
    let mut es = geometric::ElasticScratch::default();
    let (mut dx_std, mut dx_mean, mut max_d) = (vec![], vec![], vec![]);
    for _ in 0..n {
        geometric::elastic_fields(&mut rng, w, h, st.elastic_alpha, st.elastic_sigma, &mut es);
        let dx: Vec<f64> = es.dx().iter().map(|v| *v as f64).collect();
        let (m, s) = moments(&dx);
        dx_mean.push(m);
        dx_std.push(s);
        max_d.push(
            es.dx()
                .iter()
                .chain(es.dy())
                .map(|v| v.abs() as f64)
                .fold(0.0, f64::max),
        );
    }
    let el = &d["ElasticTransform"];
    same_distribution(
        "elastic dx mean per draw",
        &dx_mean,
        &el["dx_mean_per_draw"],
        0.3,
    );
    same_distribution(
        "elastic dx std per draw",
        &dx_std,
        &el["dx_std_per_draw"],
        0.3,
    );
    same_distribution(
        "elastic largest displacement",
        &max_d,
        &el["max_abs_displacement"],
        0.3,
    );

    // HueSaturationValue: apply_one draws "apply?", then the hue, saturation
    // and value shifts, each uniform in ±limit (checked on an image: the same
    // bytes as those draws made by hand), so the uniform draws below are its
    let always = AugmentationSettings {
        probability: 1.0,
        ..st.clone()
    };
    let img: Vec<u8> = (0..16 * 16 * 3).map(|i| ((i * 53) % 256) as u8).collect();
    for seed in 0..20 {
        let mut s = AugmentScratch::default();
        s.reset(&img);
        let mut r = Rng::new(seed);
        let mut by_hand = r.clone();
        sweep_train::data::augment::apply_one(
            Augmentation::HueSaturationValue,
            16,
            3,
            &always,
            &mut r,
            &mut s,
        );
        assert!(by_hand.bernoulli(1.0));
        let mut want = img.clone();
        let (hue, sat, val) = (
            by_hand.uniform(-st.hue_shift_limit, st.hue_shift_limit),
            by_hand.uniform(-st.sat_shift_limit, st.sat_shift_limit),
            by_hand.uniform(-st.val_shift_limit, st.val_shift_limit),
        );
        pixel::hue_saturation_value(&mut want, 3, hue, sat, val);
        assert_eq!(s.image(), &want[..]);
    }
    let hsv = &d["HueSaturationValue"];
    for (key, limit) in [
        ("hue_shift", st.hue_shift_limit),
        ("sat_shift", st.sat_shift_limit),
        ("val_shift", st.val_shift_limit),
    ] {
        let v: Vec<f64> = (0..n).map(|_| rng.uniform(-limit, limit)).collect();
        same_distribution(key, &v, &hsv[key], 0.01);
        assert!(v.iter().all(|x| x.abs() <= limit), "{key} within ±{limit}");
    }

    // RandomResizedCrop
    let (mut cw, mut ch, mut area, mut aspect, mut x0s) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let (x0, y0, x1, y1) =
            geometric::random_resized_crop_box(&mut rng, w, h, st.crop_scale, st.crop_ratio);
        cw.push((x1 - x0) as f64);
        ch.push((y1 - y0) as f64);
        area.push(((x1 - x0) * (y1 - y0)) as f64 / (w * h) as f64);
        aspect.push((x1 - x0) as f64 / (y1 - y0) as f64);
        x0s.push(x0 as f64);
    }
    let rrc = &d["RandomResizedCrop(size=(64, 64))"];
    same_distribution("crop width", &cw, &rrc["crop_width"], 0.05);
    same_distribution("crop height", &ch, &rrc["crop_height"], 0.05);
    same_distribution("crop area", &area, &rrc["crop_area_fraction"], 0.05);
    same_distribution("crop aspect", &aspect, &rrc["crop_aspect_w_over_h"], 0.05);
    same_distribution("crop left", &x0s, &rrc["crop_x_min"], 0.1);

    // GaussNoise: the realized noise's spread per draw, as a fraction of 255
    let gn = &d["GaussNoise"];
    let mut noise = Vec::new();
    let mut spread = vec![];
    for _ in 0..n {
        pixel::gauss_noise(
            &mut rng,
            w * h,
            3,
            st.noise_std_range,
            st.noise_mean_range,
            true,
            &mut noise,
        );
        let v: Vec<f64> = noise.iter().map(|x| *x as f64 / 255.0).collect();
        spread.push(moments(&v).1);
    }
    same_distribution(
        "noise std per draw",
        &spread,
        &gn["noise_std_fraction_per_draw"],
        0.02,
    );
}

/// Every transform, at probability 1, changes a textured image, keeps its
/// size, and gives the same output for the same stream.
#[test]
fn every_transform_applies_and_repeats() {
    let size = 32;
    let img: Vec<u8> = (0..size * size * 3)
        .map(|i| ((i * 37) % 251) as u8)
        .collect();
    let st = AugmentationSettings {
        probability: 1.0,
        elastic_alpha: 30.0,
        elastic_sigma: 4.0,
        ..Default::default()
    };
    for kind in Augmentation::ORDER {
        let run = |seed| {
            let mut s = AugmentScratch::default();
            let mut rng = Rng::new(seed);
            sweep_train::data::apply_augmentations(&img, size, 3, &[kind], &st, &mut rng, &mut s)
                .to_vec()
        };
        let (a, b) = (run(1), run(1));
        assert_eq!(a.len(), img.len(), "{}", kind.name());
        assert_eq!(a, b, "{} repeats", kind.name());
        assert_ne!(a, img, "{} changes the image", kind.name());
    }
}
