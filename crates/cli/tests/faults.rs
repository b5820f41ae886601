//! Faults of the machine and of the input, produced for real: a full disk (a
//! small tmpfs in a private mount namespace), a read-only file system, a memory
//! cgroup whose limit calls the kernel's out-of-memory killer, files that are
//! not Sweep databases, a trial that runs past its timeout. Each is a row of
//! docs/RELIABILITY.md. Tests that need root (mounts, cgroups) skip with a
//! notice elsewhere; `.ci/run` runs as root and sets SWEEP_REQUIRE_ROOT=1,
//! which turns such a skip into a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::sweep;

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small grid on generated data: 2 dropouts × `seeds`.
fn spec(name: &str, seeds: &str, hidden: usize, extra: &str) -> String {
    format!(
        r#"
name = "{name}"
seeds = {seeds}
{extra}
[data]
image_size = 16
[data.synthetic]
classes = 3
per_class = 30
image_size = 16
[model]
hidden = [{hidden}]
[train]
epochs = 3
batch_size = 16
[grid]
model.dropout = [0.0, 0.5]
"#
    )
}

/// Rows of a query as CSV lines (header dropped).
fn sql(dir: &Path, db: &Path, query: &str) -> Vec<String> {
    let o = sweep(
        dir,
        &[
            "sql",
            query,
            "--db",
            db.to_str().unwrap(),
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Each trial's objective, by its key (its configuration and seed): what an
/// uninterrupted run and a run that survived a fault must agree on to the
/// last digit.
fn objectives(dir: &Path, db: &Path) -> Vec<String> {
    sql(
        dir,
        db,
        "SELECT t.key, t.seed, t.state, t.attempts, f.value FROM trials t \
         JOIN final_metrics f ON f.trial_id = t.id AND f.name = 'val.macro_f1' ORDER BY t.key",
    )
}

/// The spec run with no fault (a database and results of its own), for the
/// numbers a run that survived a fault must reproduce.
fn reference(d: &Path, spec_file: &str) -> Vec<String> {
    let o = sweep(
        d,
        &[
            "run",
            spec_file,
            "--db",
            "ref.db",
            "--results",
            "ref",
            "--jobs",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    objectives(d, &d.join("ref.db"))
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Whether this process may mount (root in a private mount namespace); when
/// not, a visible notice, or a failure under SWEEP_REQUIRE_ROOT=1.
fn can_mount(test: &str) -> bool {
    let probe = tempfile::tempdir().unwrap();
    let ok = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs '{}'",
            probe.path().display()
        ))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("SWEEP_REQUIRE_ROOT").is_none(),
            "{test}: SWEEP_REQUIRE_ROOT is set but mounting a tmpfs in a private mount namespace failed"
        );
        eprintln!(
            "skipped: {test}: needs root to mount a small tmpfs (`unshare -m`); CI runs it as root"
        );
    }
    ok
}

/// Runs a shell script in a private mount namespace (its mounts vanish with it).
fn in_namespace(script: &str) -> Output {
    Command::new("unshare")
        .args(["-m", "sh", "-euc", script])
        .output()
        .unwrap()
}

#[test]
fn databases_that_are_not_sweeps_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), spec("s", "[1]", 16, "")).unwrap();
    let run = |db: &Path| {
        let t = Instant::now();
        let o = sweep(
            d,
            &[
                "run",
                "s.toml",
                "--db",
                db.to_str().unwrap(),
                "--results",
                "r",
            ],
        );
        (o, t.elapsed())
    };

    // A text file: refused at once (it used to wait 30 s for a pool timeout).
    let notes = d.join("notes.db");
    std::fs::write(&notes, "shopping: milk, eggs\n").unwrap();
    let (o, took) = run(&notes);
    let out = text(&o);
    assert!(
        !o.status.success() && took < Duration::from_secs(10),
        "{out}"
    );
    assert!(
        out.contains("notes.db: not a SQLite database") && out.contains("shopping: milk"),
        "{out}"
    );
    assert_eq!(file_bytes(&notes), b"shopping: milk, eggs\n");

    // Another application's SQLite database.
    let other = d.join("other.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let mut c =
            sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
                .await
                .unwrap();
        c.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5)")
            .await
            .unwrap();
        c.close().await.unwrap();
    });
    let before = file_bytes(&other);
    let (o, _) = run(&other);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("other.db: another application's database (tables: invoices)"),
        "{out}"
    );
    assert_eq!(file_bytes(&other), before);
    // the read commands refuse it the same way
    let o = sweep(d, &["ls", "--db", other.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("another application's database"),
        "{}",
        text(&o)
    );

    // A real Sweep database, then what can happen to it.
    let good = d.join("good.db");
    let (o, _) = run(&good);
    assert!(o.status.success(), "{}", text(&o));
    let pristine = file_bytes(&good);
    assert!(
        !d.join("good.db-wal").exists()
            || std::fs::metadata(d.join("good.db-wal")).unwrap().len() == 0
    );

    // Written by a newer Sweep: a migration this binary does not know.
    let newer = d.join("newer.db");
    std::fs::write(&newer, &pristine).unwrap();
    rt.block_on(async {
        use sqlx::{Connection, Executor};
        let mut c = sqlx::AnyConnection::connect(&format!("sqlite://{}", newer.display()))
            .await
            .unwrap();
        c.execute("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) SELECT 99, 'future', installed_on, success, checksum, 0 FROM _sqlx_migrations WHERE version = 1")
            .await
            .unwrap();
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").await.unwrap();
        c.close().await.unwrap();
    });
    let before = file_bytes(&newer);
    let (o, _) = run(&newer);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains(
            "newer.db: written by a newer Sweep (schema version 99; this Sweep knows up to"
        ) && out.contains("upgrade Sweep"),
        "{out}"
    );
    assert_eq!(
        file_bytes(&newer),
        before,
        "the newer database was written to"
    );

    // Truncated (a copy cut short).
    let cut = d.join("cut.db");
    std::fs::write(&cut, &pristine[..pristine.len() / 2]).unwrap();
    let (o, _) = run(&cut);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("cut.db: a truncated SQLite database"),
        "{out}"
    );
    assert_eq!(file_bytes(&cut).len(), pristine.len() / 2);

    // Damaged inside: a page overwritten with garbage. The writer's page check
    // finds it before anything is added.
    let page = u16::from_be_bytes([pristine[16], pristine[17]]) as usize;
    let pages = pristine.len() / page;
    assert!(pages >= 4, "{pages} pages");
    let mut bad = pristine.clone();
    for b in &mut bad[(pages - 2) * page + 8..(pages - 1) * page] {
        *b = 0xA5;
    }
    let damaged = d.join("damaged.db");
    std::fs::write(&damaged, &bad).unwrap();
    let (o, _) = run(&damaged);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("damaged.db: a damaged SQLite database (quick_check:"),
        "{out}"
    );
    assert_eq!(file_bytes(&damaged), bad);
}

/// The tiny tmpfs a fault test fills: `size` KiB mounted at `mnt`, then filled
/// but for `room` KiB (a ballast file to delete once "space is freed").
fn fill_script(mnt: &Path, room_kib: u64) -> String {
    format!(
        "avail=$(df -k --output=avail '{m}' | tail -1); \
         dd if=/dev/zero of='{m}/ballast' bs=1k count=$((avail - {room_kib})) 2>/dev/null || true",
        m = mnt.display()
    )
}

#[test]
fn a_full_disk_under_the_results_stops_the_sweep_and_the_rerun_completes_it() {
    let name = "a_full_disk_under_the_results_stops_the_sweep_and_the_rerun_completes_it";
    if !can_mount(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = env!("CARGO_BIN_EXE_sweep");
    // hidden 512: each checkpoint is ~1.6 MB, far more than the room left
    std::fs::write(d.join("s.toml"), spec("s", "[1, 2]", 512, "")).unwrap();
    let reference = reference(d, "s.toml");
    assert_eq!(reference.len(), 4, "{reference:?}");

    let mnt = d.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "cd '{d}'; mount -t tmpfs -o size=8m tmpfs '{m}'; \
         {exe} run s.toml --db f.db --results '{m}/r' --jobs 2 --executor none > rec.out 2>&1; \
         {fill}; \
         set +e; {exe} run s.toml --db f.db --results '{m}/r' --jobs 2 > first.out 2>&1; echo $? > first.rc; \
         rm '{m}/ballast'; \
         {exe} run s.toml --db f.db --results '{m}/r' --jobs 2 > second.out 2>&1; echo $? > second.rc; \
         ls -R '{m}/r/s/trials' > files.out",
        d = d.display(),
        m = mnt.display(),
        fill = fill_script(&mnt, 256),
    );
    let o = in_namespace(&script);
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    assert!(o.status.success(), "{}\n{}", text(&o), read("rec.out"));
    let first = read("first.out");
    assert_eq!(read("first.rc").trim(), "3", "{first}");
    assert!(
        first.contains("stopped on a fault of the machine, not of a trial")
            && first.contains("No space left on device")
            && first.contains(&format!("{}/r/s/", mnt.display()))
            && first.contains("used up no attempt"),
        "{first}"
    );
    let second = read("second.out");
    assert_eq!(read("second.rc").trim(), "0", "{second}");
    // Every trial complete, once, with the numbers of the uninterrupted run;
    // the faulted starts are recorded as given back, none as failed.
    let db = d.join("f.db");
    let after = objectives(d, &db);
    assert_eq!(after, reference);
    assert!(
        after.iter().all(|r| r.contains(",complete,1,")),
        "{after:?}"
    );
    let faulted = sql(
        d,
        &db,
        "SELECT outcome, error FROM trial_attempts WHERE error LIKE 'fault of the machine:%'",
    );
    assert!(!faulted.is_empty());
    assert!(
        faulted
            .iter()
            .all(|r| r.starts_with("interrupted,") && r.contains("(os error 28)")),
        "{faulted:?}"
    );
    assert!(sql(
        d,
        &db,
        "SELECT 1 FROM trial_attempts WHERE outcome = 'failed'"
    )
    .is_empty());
    // the finished attempts' folders hold the checkpoints the database names
    let files = read("files.out");
    for (kind, path) in sql(
        d,
        &db,
        "SELECT a.kind, a.path FROM artifacts a WHERE a.kind = 'folder' ORDER BY a.path",
    )
    .iter()
    .map(|r| r.split_once(',').unwrap())
    {
        assert_eq!(kind, "folder");
        let leaf = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert!(
            leaf.starts_with("attempt-") && files.contains(leaf),
            "{path}: {files}"
        );
    }
}

#[test]
fn a_full_disk_under_the_database_stops_the_sweep_and_loses_nothing() {
    let name = "a_full_disk_under_the_database_stops_the_sweep_and_loses_nothing";
    if !can_mount(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = env!("CARGO_BIN_EXE_sweep");
    std::fs::write(d.join("one.toml"), spec("s", "[1]", 16, "")).unwrap();
    std::fs::write(d.join("two.toml"), spec("s", "[1, 2, 3]", 16, "")).unwrap();
    let reference = reference(d, "two.toml");

    let mnt = d.join("small");
    std::fs::create_dir(&mnt).unwrap();
    // One seed runs; the disk under the database fills; the spec grows to
    // three seeds; then space is freed.
    let script = format!(
        "cd '{d}'; mount -t tmpfs -o size=2m tmpfs '{m}'; \
         {exe} run one.toml --db '{m}/s.db' --results r --jobs 2 > one.out 2>&1; \
         {fill}; \
         set +e; {exe} run two.toml --db '{m}/s.db' --results r --jobs 2 > first.out 2>&1; echo $? > first.rc; \
         rm '{m}/ballast'; \
         {exe} run two.toml --db '{m}/s.db' --results r --jobs 2 > second.out 2>&1; echo $? > second.rc; \
         cp '{m}/s.db' kept.db; \
         if [ -f '{m}/s.db-wal' ]; then cp '{m}/s.db-wal' kept.db-wal; fi",
        d = d.display(),
        m = mnt.display(),
        fill = fill_script(&mnt, 0),
    );
    let o = in_namespace(&script);
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    assert!(o.status.success(), "{}\n{}", text(&o), read("one.out"));
    let first = read("first.out");
    assert_eq!(read("first.rc").trim(), "3", "{first}");
    assert!(
        first.contains(&format!("results database {}/s.db", mnt.display()))
            && (first.contains("full") || first.contains("No space left")),
        "{first}"
    );
    let second = read("second.out");
    assert_eq!(read("second.rc").trim(), "0", "{second}");
    // (kept.db is the database file and, when a checkpoint had not folded it
    // in, its write-ahead log: a WAL database is the two files together)
    let db = d.join("kept.db");
    assert_eq!(objectives(d, &db), reference);
    assert_eq!(
        sql(d, &db, "PRAGMA integrity_check"),
        vec!["ok".to_string()]
    );
}

#[test]
fn a_read_only_results_folder_stops_the_sweep_until_it_is_writable() {
    let name = "a_read_only_results_folder_stops_the_sweep_until_it_is_writable";
    if !can_mount(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = env!("CARGO_BIN_EXE_sweep");
    std::fs::write(d.join("s.toml"), spec("s", "[1]", 16, "")).unwrap();
    let r = d.join("r");
    let script = format!(
        "cd '{d}'; {exe} run s.toml --db s.db --results r --executor none > rec.out 2>&1; \
         mkdir -p '{r}/s/trials'; mount --bind '{r}/s/trials' '{r}/s/trials'; mount -o remount,bind,ro '{r}/s/trials'; \
         set +e; {exe} run s.toml --db s.db --results r > first.out 2>&1; echo $? > first.rc; \
         mount -o remount,bind,rw '{r}/s/trials'; \
         {exe} run s.toml --db s.db --results r > second.out 2>&1; echo $? > second.rc; \
         mkdir ro; cp s.db ro/; mount --bind ro ro; mount -o remount,bind,ro ro; \
         {exe} run s.toml --db ro/s.db --results r2 > third.out 2>&1; echo $? > third.rc; \
         {exe} compare s --db ro/s.db > fourth.out 2>&1; echo $? > fourth.rc",
        d = d.display(),
        r = r.display(),
    );
    let o = in_namespace(&script);
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    assert!(o.status.success(), "{}\n{}", text(&o), read("rec.out"));
    let first = read("first.out");
    assert_eq!(read("first.rc").trim(), "3", "{first}");
    assert!(
        first.contains("stopped on a fault of the machine, not of a trial")
            && first.contains("Read-only file system")
            && first.contains("r/s/trials/000"),
        "{first}"
    );
    assert_eq!(read("second.rc").trim(), "0", "{}", read("second.out"));
    // the database itself on a read-only file system: a fault, exit 3
    let third = read("third.out");
    assert_eq!(read("third.rc").trim(), "3", "{third}");
    assert!(
        third.contains("results database") && third.contains("ro/s.db"),
        "{third}"
    );
    // while reading it there works (immutable: no -shm file can be made)
    assert_eq!(read("fourth.rc").trim(), "0", "{}", read("fourth.out"));
    assert!(
        read("fourth.out").contains("best"),
        "{}",
        read("fourth.out")
    );
    let rows = objectives(d, &d.join("s.db"));
    assert!(
        rows.len() == 2 && rows.iter().all(|r| r.contains(",complete,1,")),
        "{rows:?}"
    );
}

#[test]
fn a_trial_past_its_timeout_fails_and_its_slot_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One configuration trains for a very long time; the timeout stops it.
    let s = spec("s", "[1]", 16, r#"trial_timeout = "1h""#)
        .replace("model.dropout = [0.0, 0.5]", "train.epochs = [2, 1000000]");
    std::fs::write(d.join("s.toml"), s).unwrap();
    let t = Instant::now();
    let o = sweep(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            "s.db",
            "--results",
            "r",
            "--jobs",
            "1",
            "--max-attempts",
            "1",
            "--trial-timeout",
            "2s",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(t.elapsed() < Duration::from_secs(60), "{out}");
    let db = d.join("s.db");
    let rows = sql(
        d,
        &db,
        "SELECT number, state, error FROM trials ORDER BY number",
    );
    assert!(rows[0].starts_with("1,complete,"), "{rows:?}");
    assert!(
        rows[1].starts_with("2,failed,stopped by the trial timeout of 2s")
            && rows[1].contains("of 1000000 epochs"),
        "{rows:?}"
    );

    // --retry-failed gives it fresh attempts (the earlier one stays on
    // record); the complete trial is not run again.
    let o = sweep(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            "s.db",
            "--results",
            "r",
            "--jobs",
            "1",
            "--max-attempts",
            "1",
            "--trial-timeout",
            "1s",
            "--retry-failed",
        ],
    );
    let out = text(&o);
    assert!(out.contains("1 failed ones retried"), "{out}");
    let starts = sql(
        d,
        &db,
        "SELECT t.number, a.attempt, a.outcome FROM trial_attempts a JOIN trials t ON t.id = a.trial_id ORDER BY t.number, a.attempt",
    );
    assert_eq!(
        starts,
        vec!["1,1,complete", "2,1,failed", "2,2,failed"],
        "{out}"
    );
    let show = text(&sweep(d, &["show", "s", "2", "--db", "s.db"]));
    assert!(
        show.contains("attempts (2):") && show.contains("trial timeout of 1s"),
        "{show}"
    );
}

#[test]
fn a_failed_trial_retried_finishes_in_its_own_attempt_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), spec("s", "[1, 2]", 16, "")).unwrap();
    let run = |extra: &[&str], panic_seed: Option<&str>| {
        let mut args = vec![
            "run",
            "s.toml",
            "--db",
            "s.db",
            "--results",
            "r",
            "--jobs",
            "2",
            "--max-attempts",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
        c.args(&args).current_dir(d).env_remove("SWEEP_DB");
        if let Some(s) = panic_seed {
            c.env("SWEEP_FAULT_PANIC_SEED", s);
        }
        c.output().unwrap()
    };
    // seed 2's trials crash (an injected panic): a trial failure, attempts used
    let o = run(&[], Some("2"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let db = d.join("s.db");
    let states = |d: &Path| {
        sql(
            d,
            &db,
            "SELECT seed, state, attempts FROM trials ORDER BY number",
        )
    };
    assert_eq!(
        states(d),
        vec!["1,complete,1", "2,failed,1", "1,complete,1", "2,failed,1"]
    );
    // a plain rerun leaves them failed (their attempts are used up)
    let o = run(&[], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(states(d)[1], "2,failed,1");
    // --retry-failed: they run again and finish
    let o = run(&["--retry-failed"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        states(d),
        vec![
            "1,complete,1",
            "2,complete,1",
            "1,complete,1",
            "2,complete,1"
        ]
    );
    // each start wrote into its own folder; the artifacts name the one that finished
    let arts = sql(
        d,
        &db,
        "SELECT t.number, a.kind, a.path FROM artifacts a JOIN trials t ON t.id = a.trial_id \
         WHERE a.kind IN ('folder', 'checkpoint') AND t.seed = 2 ORDER BY t.number, a.kind",
    );
    let sweep_dir: PathBuf = d.join("r/s");
    for row in &arts {
        let parts: Vec<&str> = row.splitn(3, ',').collect();
        assert!(parts[2].contains("/attempt-2"), "{arts:?}");
        assert!(sweep_dir.join(parts[2]).exists(), "{row}");
    }
    assert!(sweep_dir.join("trials/0002/attempt-1/worker.log").is_file());
    let show = text(&sweep(d, &["show", "s", "2", "--db", "s.db"]));
    assert!(
        show.contains("attempts (2):")
            && show.contains("injected fault")
            && show.contains("trials/0002/attempt-2"),
        "{show}"
    );
}

/// The memory cgroup a test may create under this process's own (v1 or v2),
/// with its limit file.
fn child_memory_cgroup(name: &str) -> Option<(PathBuf, &'static str, &'static str)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let (base, limit) = if controllers.split(',').any(|c| c == "memory") {
            (
                Path::new("/sys/fs/cgroup/memory").join(path),
                "memory.limit_in_bytes",
            )
        } else if controllers.is_empty() {
            (Path::new("/sys/fs/cgroup").join(path), "memory.max")
        } else {
            continue;
        };
        let dir = base.join(name);
        if std::fs::create_dir_all(&dir).is_ok() && dir.join(limit).exists() {
            return Some((dir, limit, "cgroup.procs"));
        }
    }
    None
}

#[test]
fn a_trial_killed_for_memory_is_reported_as_out_of_memory_with_its_peak() {
    let name = "a_trial_killed_for_memory_is_reported_as_out_of_memory_with_its_peak";
    let Some((cg, limit, procs)) =
        child_memory_cgroup(&format!("sweep-oom-{}", std::process::id()))
    else {
        assert!(
            std::env::var_os("SWEEP_REQUIRE_ROOT").is_none(),
            "{name}: SWEEP_REQUIRE_ROOT is set but no memory cgroup could be created"
        );
        eprintln!("skipped: {name}: needs root to create a memory cgroup; CI runs it as root");
        return;
    };
    std::fs::write(cg.join(limit), "400M").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // hidden 40,000 × 40,000: 6.4 GB of weights, far past the 400 MB limit
    let s = spec("s", "[1]", 16, "")
        .replace("hidden = [16]", "")
        .replace(
            "model.dropout = [0.0, 0.5]",
            "model.hidden = [[16], [40000, 40000]]",
        );
    std::fs::write(d.join("s.toml"), s).unwrap();
    let o = Command::new("sh")
        .args(["-c"])
        .arg(format!(
            "echo $$ > '{}' && exec '{}' run s.toml --db s.db --results r --jobs 1 --max-attempts 1",
            cg.join(procs).display(),
            env!("CARGO_BIN_EXE_sweep")
        ))
        .current_dir(d)
        .env_remove("SWEEP_DB")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&cg);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let rows = sql(
        d,
        &d.join("s.db"),
        "SELECT number, state, error FROM trials ORDER BY number",
    );
    assert!(rows[0].starts_with("1,complete,"), "{rows:?}");
    assert!(
        rows[1].contains("killed by the kernel's out-of-memory killer (peak memory "),
        "{rows:?}"
    );
    // the peak is what it reached under the limit: hundreds of MiB
    let peak: f64 = rows[1]
        .split("peak memory ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!((100.0..=600.0).contains(&peak), "{rows:?}");
}
