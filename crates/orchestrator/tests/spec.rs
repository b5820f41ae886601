//! Sweep specs: the documented examples, grid expansion and de-duplication, and a
//! table of bad specs with the message each must produce.

use std::path::Path;

use sweep_orchestrator::spec::SweepSpec;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse(text: &str) -> Result<SweepSpec, String> {
    SweepSpec::from_toml_str(text, Path::new("s.toml")).map_err(|e| e.to_string())
}

#[test]
fn docs_examples_load_and_expand() {
    let text = std::fs::read_to_string(repo().join("docs/sweep-spec.md")).unwrap();
    let mut counts = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let spec = parse(&body[..end]).unwrap_or_else(|e| panic!("{e}\n{}", &body[..end]));
        counts.push(if spec.is_search() {
            // a search's trials are proposed as it goes: at most budget × seeds
            spec.search.trials * spec.seeds.len()
        } else {
            spec.expand().unwrap().len()
        });
        rest = &body[end + 3..];
    }
    // 3 dropouts × 2 batch-norm × 3 seeds; the optimizers example says 7; the
    // search: 60 configurations × 3 seeds; the [slurm] example: 2 dropouts × 3 seeds
    assert_eq!(counts, vec![18, 7, 180, 2, 6]);
    let start = text.find("[logging]\nmlflow").unwrap();
    let logged = &text[text[..start].rfind("```toml\n").unwrap() + 8..];
    let spec = parse(&logged[..logged.find("```").unwrap()]).unwrap();
    assert_eq!(
        (
            spec.logging.mlflow.as_deref(),
            spec.logging.mlflow_experiment.as_deref(),
            spec.logging.mlflow_checkpoints
        ),
        (Some("http://127.0.0.1:5000"), Some("skin-study"), false)
    );
    let start = text.find("[slurm]\npartition").unwrap();
    let slurm = &text[text[..start].rfind("```toml\n").unwrap() + 8..];
    let spec = parse(&slurm[..slurm.find("```").unwrap()]).unwrap();
    assert_eq!(spec.slurm.partition.as_deref(), Some("gpu"));
    assert_eq!(
        (
            spec.slurm.array_parallelism,
            spec.slurm.cpus_per_task,
            spec.slurm.gpus_per_task
        ),
        (Some(8), Some(4), Some(1))
    );
}

#[test]
fn shipped_sweeps_are_valid() {
    let demo = SweepSpec::from_file(&repo().join("sweeps/demo.toml")).unwrap();
    assert_eq!(demo.expand().unwrap().len(), 16);
    assert!(
        demo.base.data.synthetic.is_some(),
        "the demo must not need downloads"
    );
    // Its data root is the shared skin set beside the repository: checked on the
    // shared set (SWEEP_TEST_DATA/skin, or ../shared/data/skin) when present or
    // required by SWEEP_REQUIRE_DATA=1, else skipped with a visible line.
    let skin = std::env::var_os("SWEEP_TEST_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"))
        .join("skin");
    if !skin.is_dir() {
        assert!(
            std::env::var_os("SWEEP_REQUIRE_DATA").is_none(),
            "SWEEP_REQUIRE_DATA is set and the shared skin set {} is absent",
            skin.display()
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: shipped_sweeps_are_valid: sweeps/skin-regularization.toml on the shared skin set {} (absent)",
            skin.display()
        );
        return;
    }
    let path = repo().join("sweeps/skin-regularization.toml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    let text = shipped.replace(
        "root = \"../../shared/data/skin\"",
        &format!("root = {:?}", skin.display().to_string()),
    );
    assert_ne!(text, shipped, "the spec's data root line changed");
    let s = SweepSpec::from_toml_str(&text, &path).unwrap();
    let n = s.expand().unwrap().len();
    assert_eq!(n, (2 * 2 * 2 * 3 * 2 * 2 - 2 * 2 * 2 * 2) * 3);

    // the study's other sweeps (docs/study.md): on skin, and on caltech
    for (file, set, trials) in [
        ("skin-init.toml", "skin", 5 * 2 * 3),
        ("caltech-few.toml", "caltech101_100", 2 * 2 * 2 * 2),
        ("caltech-pretrain.toml", "caltech101_100", 1),
        ("skin-finetune.toml", "skin", 2 * 3 * 3),
    ] {
        let path = repo().join("sweeps").join(file);
        let shipped = std::fs::read_to_string(&path).unwrap();
        let root = skin.parent().unwrap().join(set);
        let text = shipped.replace(
            &format!("root = \"../../shared/data/{set}\""),
            &format!("root = {:?}", root.display().to_string()),
        );
        assert_ne!(text, shipped, "{file}: the data root line changed");
        let s = SweepSpec::from_toml_str(&text, &path).unwrap();
        assert_eq!(s.expand().unwrap().len(), trials, "{file}");
    }
}

#[test]
fn inactive_settings_do_not_multiply_trials() {
    let s = parse(
        r#"
name = "x"
seeds = [1, 2]
[data]
[data.synthetic]
[grid]
train.optimizer = ["sgd", "adam"]
train.momentum = [0.0, 0.5, 0.9]
model.init = ["uniform", "kaiming_normal"]
model.init_low = [-0.1, -0.01]
data.augment = [["hflip", "vflip"], ["vflip", "hflip"]]
"#,
    )
    .unwrap();
    let plans = s.expand().unwrap();
    // sgd: 3 momenta × (uniform: 2 lows + kaiming: 1) = 9; adam: 1 × 3 = 3; augment orders are one; × 2 seeds
    assert_eq!(plans.len(), (9 + 3) * 2);
    let mut keys: Vec<String> = plans
        .iter()
        .map(|p| serde_json::to_string(&p.config).unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), plans.len());
    assert!(plans.iter().all(|p| p.config.train.seed == p.seed));
}

#[test]
fn exclusions_drop_matching_combinations() {
    let s = parse(
        "name = \"x\"\n[data]\n[data.synthetic]\n[grid]\nmodel.arch = [\"mlp\", \"cnn\"]\nmodel.batch_norm = [false, true]\n[[exclude]]\nmodel.arch = \"cnn\"\nmodel.batch_norm = true\n",
    )
    .unwrap();
    let plans = s.expand().unwrap();
    assert_eq!(plans.len(), 3);
    assert!(!plans.iter().any(
        |p| p.config.model.arch == sweep_train::config::Arch::Cnn && p.config.model.batch_norm
    ));
}

const BASE: &str = "[data]\n[data.synthetic]\n";

/// The count that `--max-trials` and `--dry-run` give without expanding a grid
/// is the number of trials expanding it gives, on grids over every setting the
/// canonical form reads or resets (so that a new canonical rule that the
/// counting does not know of fails here), with exclusions among them and
/// across them.
#[test]
fn counting_a_grid_agrees_with_expanding_it() {
    let grids = [
        // inactive settings: init parameters of other schemes
        "model.init = [\"uniform\", \"normal\", \"constant\", \"kaiming_normal\"]\nmodel.init_std = [0.01, 0.1]\nmodel.init_low = [-0.1, -0.2]\nmodel.init_value = [0.0, 0.5]\nmodel.dropout = [0.0, 0.5]\n",
        // optimizers: momentum/nesterov for SGD, betas for Adam
        "train.optimizer = [\"sgd\", \"adam\", \"adamw\"]\ntrain.momentum = [0.0, 0.9]\ntrain.beta1 = [0.9, 0.8]\ntrain.epsilon = [1e-8, 1e-6]\ntrain.learning_rate = [0.001, 0.01]\n",
        // schedules, weight decay, architectures
        "train.lr_schedule = [\"constant\", \"step\", \"cosine\"]\ntrain.lr_step_epochs = [5, 10]\ntrain.lr_min = [0.0, 1e-5]\ntrain.weight_decay = [0.0, 1e-4]\ntrain.decay_bias_and_norm = [false, true]\nmodel.arch = [\"mlp\", \"cnn\"]\nmodel.conv_channels = [[8], [8, 16]]\n",
        // early stopping and augmentation
        "train.early_stopping.enabled = [false, true]\ntrain.early_stopping.patience = [3, 5]\ndata.augment = [[], [\"hflip\"], [\"brightness_contrast\", \"hflip\"], [\"hflip\", \"brightness_contrast\"]]\ndata.augmentation.probability = [0.5, 0.8]\ndata.augmentation.brightness_limit = [0.1, 0.2]\nmodel.batch_norm = [false, true]\n",
    ];
    let excludes = [
        "",
        "[[exclude]]\nmodel.dropout = 0.5\n",
        "[[exclude]]\ntrain.learning_rate = 0.01\n[[exclude]]\ntrain.optimizer = \"sgd\"\ntrain.momentum = 0.0\n",
        "[[exclude]]\nmodel.arch = \"cnn\"\ntrain.weight_decay = 0.0\n",
        "[[exclude]]\nmodel.batch_norm = true\n",
    ];
    let mut checked = 0;
    for grid in grids {
        for ex in excludes {
            let text = format!("name = \"c\"\nseeds = [1, 2]\n{BASE}[grid]\n{grid}{ex}");
            let s = match parse(&text) {
                Ok(s) => s,
                // (an exclusion of a setting this grid does not sweep)
                Err(e) if e.contains("is not swept in [grid]") => continue,
                Err(e) => panic!("{e}\n{text}"),
            };
            let expanded = s.expand().unwrap().len() as u64;
            let counted = s.trial_count().unwrap().unwrap();
            assert!(counted.exact, "{text}");
            assert_eq!(counted.trials, expanded, "{text}");
            assert!(
                expanded < s.grid_size().unwrap(),
                "something collapses: {text}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn bad_specs_name_file_line_and_key() {
    let cases: Vec<(String, &str)> = vec![
        (BASE.to_string(), "s.toml: `name` is missing"),
        (format!("name = \"a/b\"\n{BASE}"), "s.toml:1: `name` \"a/b\" is not a safe folder name"),
        (format!("name = \"..\"\n{BASE}"), "s.toml:1: `name` \"..\" is not a safe folder name"),
        (format!("name = \"\"\n{BASE}"), "is not a safe folder name"),
        (format!("name = 3\n{BASE}"), "s.toml:1: `name` must be a string"),
        (format!("name = \"x\"\nseed = [1]\n{BASE}"), "s.toml:2: `seed` is not a sweep spec key"),
        (format!("name = \"x\"\nseeds = []\n{BASE}"), "s.toml:2: `seeds` is empty"),
        (format!("name = \"x\"\nseeds = [1, 1]\n{BASE}"), "s.toml:2: `seeds` lists a seed twice"),
        (format!("name = \"x\"\nseeds = [-1]\n{BASE}"), "s.toml:2: `seeds` must be non-negative integers"),
        (format!("name = \"x\"\nseeds = 3\n{BASE}"), "s.toml:2: `seeds` must be a list of integers"),
        (format!("name = \"x\"\nobjective = \"val.f1\"\n{BASE}"), "s.toml:2: `objective` \"val.f1\" is not a metric"),
        (format!("name = \"x\"\ndirection = \"up\"\n{BASE}"), "s.toml:2: `direction` must be \"maximize\" or \"minimize\""),
        (format!("name = \"x\"\n{BASE}[model]\ndropot = 0.5\n"), "s.toml:5: unknown field `dropot`"),
        (format!("name = \"x\"\n{BASE}[model]\ndropout = 1.5\n"), "s.toml:5: `model.dropout` must be in [0, 1)"),
        (format!("name = \"x\"\n{BASE}[train]\nbatch_size = 0\n"), "s.toml:5: `train.batch_size` must be at least 1"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropot = [0.5]\n"), "s.toml:5: `grid.model.dropot` `model.dropot` is not a trial setting (did you mean `model.dropout`?)"),
        (format!("name = \"x\"\n{BASE}[grid]\ntrain.learning_rat = [0.1]\n"), "(did you mean `train.learning_rate`?)"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropout = []\n"), "s.toml:5: `grid.model.dropout` has no candidates"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropout = 0.5\n"), "s.toml:5: `grid.model.dropout` must be a list of candidates"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropout = [0.1, 0.1]\n"), "s.toml:5: `grid.model.dropout` lists 0.1 twice"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropout = [0.0, 1.0]\n"), "s.toml:5: `grid.model.dropout` must be in [0, 1), got 1 (in the combination model.dropout = 1.0)"),
        (format!("name = \"x\"\n{BASE}[grid]\ntrain.batch_size = [32, \"big\"]\n"), "s.toml:5: `grid.train.batch_size` has a candidate of the wrong type"),
        (format!("name = \"x\"\n{BASE}[grid]\ntrain.learning_rate = [0.1, -1.0]\n"), "`grid.train.learning_rate` must be greater than 0"),
        (format!("name = \"x\"\n{BASE}[grid]\ntrain.seed = [1, 2]\n"), "s.toml:5: `grid.train.seed` seeds are swept with the top-level `seeds` list"),
        (format!("name = \"x\"\n{BASE}[grid]\ndata.augment = [[\"hflip\"], [\"rotate\"]]\n"), "`grid.data.augment` has a candidate of the wrong type"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropout = [0.0]\n[[exclude]]\nmodel.arch = \"cnn\"\n"), "s.toml:7: `exclude.model.arch` `model.arch` is not swept in [grid]"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.dropout = [0.0]\n[[exclude]]\nmodel.dropout = 0.0\n"), "s.toml: the [[exclude]] rules drop every combination"),
        ("name = \"x\"\n[data]\nroot = \"/no/such/data\"\n".to_string(), "s.toml:3: `data.root` /no/such/data is not a folder"),
        ("name = \"x\"\n[data]\n".to_string(), "`data.root` missing"),
        ("name = \"x\"\n[data\n".to_string(), "s.toml:2:"),
        (format!("name = \"x\"\n{BASE}[train]\nbatch_size = \"big\"\n"), "s.toml:5: invalid type: string \"big\", expected usize"),
        (format!("name = \"x\"\n{BASE}[train]\noptimizer = \"adamx\"\n"), "s.toml:5: unknown variant `adamx`"),
        (format!("name = \"x\"\n{BASE}[slurm]\npartitoin = \"gpu\"\n"), "s.toml:5: unknown field `partitoin`"),
        (format!("name = \"x\"\n{BASE}[slurm]\ncpus_per_task = 0\n"), "s.toml:5: `slurm.cpus_per_task` must be at least 1"),
        (format!("name = \"x\"\n{BASE}[slurm]\nmem = 4\n"), "s.toml:5: invalid type: integer `4`, expected a string"),
        (format!("name = \"x\"\n{BASE}[grid]\nmodel.arch = [\"cnn\"]\nmodel.conv_channels = [[8, 8, 8, 8, 8, 8, 8]]\n"), "`grid.model.conv_channels` 7 2×2 max-pools shrink a 64-pixel image"),
        // search: [search], [space], [pruner]
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"bayes\"\n"), "s.toml:5: `search.method` must be \"grid\", \"random\" or \"tpe\""),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 5\n"), "s.toml:5: `search.method` \"tpe\" needs a [space] of distributions"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\n[space]\nmodel.dropout = {{ uniform = [0.0, 0.5] }}\n"), "s.toml:4: `search` method = \"tpe\" needs a budget: trials = N"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"random\"\ntrials = 0\n"), "s.toml:6: `search.trials` must be an integer of at least 1"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"random\"\ntrials = 4\ntrails = 4\n"), "s.toml:7: `search.trails` is not a [search] key"),
        (format!("name = \"x\"\n{BASE}[space]\nmodel.dropout = {{ uniform = [0.0, 0.5] }}\n"), "s.toml:4: `space` is a search space, but [search] method is \"grid\""),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[grid]\nmodel.dropout = [0.1]\n[space]\nmodel.batch_norm = {{ choice = [true, false] }}\n"), "s.toml:7: `grid` cannot be combined with method = \"tpe\""),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\ntrain.learning_rate = {{ log_uniform = [0.0, 0.1] }}\n"), "s.toml:8: `space.train.learning_rate` log_uniform = [0, 0.1]: a log scale needs a low bound above 0"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\nmodel.dropot = {{ uniform = [0.0, 0.5] }}\n"), "s.toml:8: `space.model.dropot` `model.dropot` is not a trial setting (did you mean `model.dropout`?)"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\nmodel.dropout = {{ uniform = [0.0, 1.0] }}\n"), "s.toml:8: `space.model.dropout` must be in [0, 1)"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\ntrain.batch_size = {{ choice = [32, \"big\"] }}\n"), "s.toml:8: `space.train.batch_size` has a value of the wrong type"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\ndata.image_size = {{ int = [8, 32] }}\n"), "s.toml:8: `space.data.image_size` changes how images are decoded, so it must be a { choice = [...] }"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\ntrain.seed = {{ int = [1, 9] }}\n"), "s.toml:8: `space.train.seed` seeds are swept with the top-level `seeds` list"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\n[space]\nmodel.dropout = [0.1, 0.2]\n"), "s.toml:8: `space.model.dropout` must be a distribution"),
        (format!("name = \"x\"\n{BASE}[search]\nmethod = \"tpe\"\ntrials = 4\nmultivariate = \"yes\"\n"), "s.toml:7: `search.multivariate` must be true or false"),
        (format!("name = \"x\"\n{BASE}[pruner]\nmethod = \"hyperband\"\n"), "s.toml:5: `pruner.method` must be \"none\", \"median\" or \"asha\""),
        (format!("name = \"x\"\n{BASE}[pruner]\nmethod = \"asha\"\nreduction_factor = 1\n"), "s.toml:6: `pruner.reduction_factor` must be an integer of at least 2"),
        (format!("name = \"x\"\n{BASE}[logging]\nmlflow = \"http://ann:pw@host:5000\"\n"), "s.toml:5: `logging.mlflow` holds a user name and password: the spec is stored in the results database, so credentials go in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        (format!("name = \"x\"\n{BASE}[logging]\nmlflow = \"file:./mlruns\"\n"), "s.toml:5: `logging.mlflow` MLflow tracking URI: `file:./mlruns` is not an http:// or https:// address"),
        (format!("name = \"x\"\n{BASE}[logging]\nmlflow_experiment = \" \"\n"), "s.toml:5: `logging.mlflow_experiment` is empty"),
        (format!("name = \"x\"\n{BASE}[logging]\nmlflow_checkpoints = \"no\"\n"), "mlflow_checkpoints"),
    ];
    assert!(cases.len() >= 20);
    for (text, want) in cases {
        let got = parse(&text)
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(
            got.contains(want),
            "spec:\n{text}\nwant: {want}\ngot:  {got}"
        );
    }
}

/// A large grid is expanded on every core: the same trials in the same order
/// as one pass, de-duplication and exclusions included, and the same error
/// (the first in grid order) when a combination is invalid.
#[test]
fn a_large_grid_expands_on_every_core_as_in_one_pass() {
    let values = |n: usize, scale: f64| {
        (1..=n)
            .map(|i| format!("{}", i as f64 * scale))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "name = \"big\"\nseeds = [1, 2]\n{BASE}[grid]\ntrain.learning_rate = [{}]\nmodel.dropout = [0.0, 0.25, 0.5]\n\
         data.augmentation.probability = [0.5, 0.75]\nmodel.init = [\"normal\", \"kaiming_normal\"]\nmodel.init_std = [0.01, 0.02]\n\
         [[exclude]]\nmodel.dropout = 0.25\nmodel.init = \"normal\"\n",
        values(400, 1e-5)
    );
    let s = parse(&text).unwrap();
    assert!(s.grid_size().unwrap() > 8192);
    let parallel = s.expand().unwrap();
    let one_pass = s.expand_first(usize::MAX).unwrap();
    let shown = |plans: &[sweep_orchestrator::spec::TrialPlan]| {
        plans
            .iter()
            .map(|p| serde_json::to_string(&p.config).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(shown(&parallel), shown(&one_pass));
    // 400 × (3 dropouts × normal with 2 stds − the excluded 2 + 3 dropouts ×
    // kaiming, its std inactive) × 2 seeds; the probability is inactive
    assert_eq!(parallel.len(), 400 * (6 - 2 + 3) * 2);
    assert_eq!(
        s.trial_count().unwrap().unwrap().trials,
        parallel.len() as u64
    );
}
