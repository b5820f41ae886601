//! Every TOML example in docs/config.md and every file in sweeps/ that is a trial
//! config parses and validates.

mod common;

use sweep_train::TrialConfig;

#[test]
fn every_docs_example_is_a_valid_config() {
    let path = common::repo_root().join("docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut n = 0;
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        let snippet = &body[..end];
        TrialConfig::from_toml_str(snippet, &format!("docs/config.md example {}", n + 1))
            .unwrap_or_else(|e| panic!("{e}\n{snippet}"));
        n += 1;
        rest = &body[end + 3..];
    }
    assert!(n >= 4, "expected at least 4 examples, found {n}");
}

#[test]
fn demo_trial_config_is_valid() {
    let cfg = TrialConfig::from_file(&common::repo_root().join("sweeps/demo-train.toml")).unwrap();
    assert!(
        cfg.data.synthetic.is_some(),
        "the demo must not need downloaded data"
    );
}
