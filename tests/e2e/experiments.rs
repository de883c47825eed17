//! Virtual experiments end to end: `lrid train` with each built-in rule plugin on a small KNet
//! and a small ResNet into a real daemon; `lrid sweep` with an embedded daemon, a failing cell,
//! resume; a rule dropped into a running daemon's plugins folder used by a sweep; an installed
//! layout (`deploy/install.sh`) whose daemon, started in an empty folder, runs a sweep with its
//! built-in rules, shard by shard; a worker whose rule version differs from the daemon's.

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use lrid_e2e::{Daemon, install, lrid, lrid_command, plugin_lib, text};

const RULES: [(&str, &str); 4] = [
    ("lrid_rule_sgdm", "sgdm"),
    ("lrid_rule_adam", "adam"),
    ("lrid_rule_feedback_alignment", "feedback-alignment"),
    ("lrid_rule_information_alignment", "information-alignment"),
];

/// A plugins folder holding `libs` (library name, file name).
fn plugins_dir(root: &Path, libs: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for (lib, name) in libs {
        std::fs::copy(plugin_lib(lib), dir.join(format!("{name}.so"))).unwrap();
    }
    dir
}

/// `lrid` with the arguments of a command line (split on whitespace: no argument holds a space).
fn lrid_line(line: &str) -> Output {
    lrid(&line.split_whitespace().collect::<Vec<_>>())
}

/// [`lrid_line`] with its temporary folder (`TMPDIR`) in `tmpdir`.
fn lrid_line_in(line: &str, tmpdir: &Path) -> Output {
    lrid_command(&line.split_whitespace().collect::<Vec<_>>())
        .env("TMPDIR", tmpdir)
        .output()
        .expect("run lrid")
}

fn int(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> i64 {
    row[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} in {row:?}"))
}

#[test]
fn every_rule_trains_a_small_knet_and_a_small_resnet_and_every_layer_and_point_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(tmp.path(), &RULES);
    let daemon = Daemon::start(&tmp.path().join("data"), &[]);
    let url = daemon.url();
    // (arch, resolution, width, observed layers)
    let nets = [
        ("knet4", "16", "0.25", 4),
        ("resnet18-v1", "32", "0.125", 22),
    ];
    for (arch, resolution, width, layers) in nets {
        for (_, rule) in RULES {
            let run_id = format!("{arch}-{rule}");
            let out = lrid_line(&format!(
                "train --arch {arch} --task shapes --rule {rule} --batch-size 8 --model-seed 1 \
                 --data-seed 2 --epochs 1 --train-examples 32 --points 3 --eval-examples 8 \
                 --resolution {resolution} --width {width} --device cpu --server {url} \
                 --run-id {run_id} --quiet --plugins-dir {}",
                plugins.display()
            ));
            assert!(out.status.success(), "{run_id}: {}", text(&out));
            assert!(
                text(&out).contains(&format!("run {run_id}: 4 steps, 3 points")),
                "{}",
                text(&out)
            );

            let runs = daemon.sql(&format!(
                "SELECT learning_rule, architecture, task, batch_size, model_seed, data_seed, status, hyperparameters FROM runs WHERE run_id = '{run_id}'"
            ));
            assert_eq!(runs.len(), 1);
            let r = &runs[0];
            assert_eq!(r["learning_rule"], rule);
            assert_eq!(r["architecture"], arch);
            assert_eq!(r["task"], "shapes");
            assert_eq!(
                (
                    int(r, "batch_size"),
                    int(r, "model_seed"),
                    int(r, "data_seed")
                ),
                (8, 1, 2)
            );
            assert_eq!(r["status"], "closed", "the run completed");
            let hyper: serde_json::Value =
                serde_json::from_str(r["hyperparameters"].as_str().unwrap()).unwrap();
            assert_eq!(hyper["steps"], 4);
            let version = if rule == "information-alignment" {
                "1.1.0"
            } else {
                "1.0.0"
            };
            assert_eq!(hyper["rule_version"], version);

            let rows = daemon.sql(&format!(
                "SELECT point, step, layer_index, weightraw_norm, actraw_mean, gradavgraw_id FROM observables WHERE run_id = '{run_id}' ORDER BY point, layer_index"
            ));
            assert_eq!(
                rows.len(),
                3 * layers,
                "{run_id}: every layer at every point"
            );
            for (i, row) in rows.iter().enumerate() {
                let (point, layer) = (i / layers, i % layers);
                assert_eq!(int(row, "point") as usize, point);
                assert_eq!(int(row, "layer_index") as usize, layer);
                // Points at steps 0, 2, 4 of 4.
                assert_eq!(int(row, "step") as usize, 2 * point);
                for key in ["weightraw_norm", "actraw_mean", "gradavgraw_id"] {
                    assert!(
                        row[key].as_f64().unwrap().is_finite(),
                        "{run_id} {key} {row:?}"
                    );
                }
            }
            // Training moved the classifier's kernel.
            let last = |p: usize| {
                rows[p * layers + layers - 1]["weightraw_norm"]
                    .as_f64()
                    .unwrap()
            };
            assert_ne!(last(0), last(2), "{run_id}: the classifier did not change");
            check_diagnostics(&daemon, &run_id, rule, layers);
        }
    }
    // Layer names and positions of the ResNet (spec §5.6).
    let layers = daemon.sql(
        "SELECT layer_index, layer_name, position FROM layers WHERE run_id = 'resnet18-v1-sgdm' ORDER BY layer_index",
    );
    assert_eq!(layers.len(), 22);
    assert_eq!(layers[0]["layer_name"], "conv0");
    assert_eq!(layers[6]["position"], "early");
    assert_eq!(layers[7]["position"], "middle");
    assert_eq!(layers[21]["layer_name"], "dense");
    assert_eq!(layers[21]["position"], "deep");
}

/// The `diagnostics` of a run of 3 points: every layer's `w_change` at every point (0 at
/// initialisation); with feedback weights also `b_change` (always exactly 0 for feedback
/// alignment, whose B is never trained; growing for information alignment) and `angle_bw`.
fn check_diagnostics(daemon: &Daemon, run_id: &str, rule: &str, layers: usize) {
    let names: &[&str] = if rule.ends_with("-alignment") {
        &["angle_bw", "b_change", "w_change"]
    } else {
        &["w_change"]
    };
    let rows = daemon.sql(&format!(
        "SELECT point, step, layer_index, name, value FROM diagnostics WHERE run_id = '{run_id}' ORDER BY point, layer_index, name"
    ));
    assert_eq!(
        rows.len(),
        3 * layers * names.len(),
        "{run_id}: {names:?} of every layer at every point: {rows:?}"
    );
    let mut moved = 0.0;
    for (i, row) in rows.iter().enumerate() {
        let point = i / (layers * names.len());
        let layer = i / names.len() % layers;
        let name = names[i % names.len()];
        assert_eq!(
            (
                int(row, "point") as usize,
                int(row, "step") as usize,
                int(row, "layer_index") as usize
            ),
            (point, 2 * point, layer),
            "{run_id}: {row:?}"
        );
        assert_eq!(row["name"], name, "{run_id}: {row:?}");
        let v = row["value"].as_f64().unwrap();
        match name {
            "w_change" if point == 0 => assert_eq!(v, 0.0, "{run_id}: {row:?}"),
            "w_change" => {
                assert!(v >= 0.0, "{run_id}: {row:?}");
                moved += v;
            }
            "b_change" if point == 0 || rule == "feedback-alignment" => {
                assert_eq!(v, 0.0, "{run_id}: B changed: {row:?}")
            }
            "b_change" => assert!(v > 0.0, "{run_id}: information alignment trains B: {row:?}"),
            _ => assert!((0.0..=180.0).contains(&v), "{run_id}: {row:?}"),
        }
    }
    assert!(moved > 0.0, "{run_id}: no kernel moved");
}

#[test]
fn train_refuses_what_it_cannot_do_with_a_message_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(tmp.path(), &RULES[..1]);
    let daemon = Daemon::start(&tmp.path().join("data"), &[]);
    let url = daemon.url();
    let plugins = plugins.to_str().unwrap().to_string();
    // Every refused run cleans up its temporary files (the plugins' private copies) on the way out.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let base = |arch: &str, rule: &str, server: &str, device: &str| {
        lrid_line_in(
            &format!(
                "train --arch {arch} --task shapes --rule {rule} --batch-size 4 --epochs 1 \
                 --train-examples 8 --points 2 --eval-examples 4 --resolution 16 --width 0.25 \
                 --server {server} --device {device} --plugins-dir {plugins} --quiet"
            ),
            &tmpdir,
        )
    };
    let cases = [
        (
            base("knet4", "hebbian", &url, "cpu"),
            "no learning rule named 'hebbian' is loaded (loaded: sgdm)",
        ),
        (
            base("vgg16", "sgdm", &url, "cpu"),
            "unknown architecture 'vgg16'",
        ),
        (
            base("knet4", "sgdm", "http://127.0.0.1:1", "cpu"),
            "daemon at http://127.0.0.1:1 is unreachable",
        ),
        (
            base("resnet18-v1", "sgdm", &url, "cpu"),
            "resnet18-v1 needs inputs of at least 32×32; the resolution is 16",
        ),
        (base("knet4", "sgdm", &url, "tpu"), "tpu"),
    ];
    for (out, message) in cases {
        assert!(!out.status.success());
        let t = text(&out);
        assert!(
            t.contains("error:") && t.contains(message),
            "expected {message:?} in {t}"
        );
    }
    // CUDA asked for where there is none (skipped on a machine with a GPU).
    let version = text(&lrid(&["--version"]));
    if !version.contains("cuda usable") {
        let out = base("knet4", "sgdm", &url, "cuda");
        assert!(!out.status.success());
        assert!(text(&out).contains("not usable"), "{}", text(&out));
    }
    // Without recording no daemon is needed.
    let out = base("knet4", "sgdm", "http://127.0.0.1:1", "cpu");
    assert!(!out.status.success());
    let out = lrid_line(&format!(
        "train --arch knet4 --task shapes --rule sgdm --batch-size 4 --epochs 1 \
         --train-examples 8 --points 2 --eval-examples 4 --resolution 16 --width 0.25 \
         --server http://127.0.0.1:1 --device cpu --plugins-dir {plugins} --quiet --no-record"
    ));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("run (not recorded): 2 steps, 2 points"),
        "{}",
        text(&out)
    );
    // Nothing was stored by the refused runs, and nothing was left in their temporary folder.
    assert!(daemon.sql("SELECT run_id FROM runs").is_empty());
    let left: Vec<_> = std::fs::read_dir(&tmpdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A sweep file over a small KNet.
fn sweep_file(dir: &Path, name: &str, rules: &[&str], data_seeds: &str) -> std::path::PathBuf {
    let rules = rules
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "{name}"
workers = 2
[[grid]]
architectures = ["knet4"]
tasks = ["shapes"]
rules = [{rules}]
batch_sizes = [8]
model_seeds = [0]
data_seeds = {data_seeds}
[train]
epochs = 1
points = 3
train_examples = 16
eval_examples = 4
resolution = 16
width = 0.25
device = "cpu"
"#
        ),
    )
    .unwrap();
    path
}

fn journal(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_sweep_starts_its_own_daemon_records_a_failing_run_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(
        tmp.path(),
        &[
            ("lrid_rule_sgdm", "sgdm"),
            ("lrid_testing_panicking", "panicking"),
        ],
    );
    let data = tmp.path().join("data");
    let config = tmp.path().join("lrid.toml");
    // Nothing listens on port 1: the sweep starts an embedded daemon with this configuration.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[store]\ndata_dir = \"{}\"\n[plugins]\ndir = \"{}\"\n",
            data.display(),
            plugins.display()
        ),
    )
    .unwrap();
    let file = sweep_file(
        tmp.path(),
        "grid",
        &["sgdm", "testing-panicking"],
        r#"[0, "unseeded"]"#,
    );
    let sweep = |file: &Path| {
        lrid(&[
            "sweep",
            "run",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let state = data.join("sweeps/grid");

    let first = sweep(&file);
    let t = text(&first);
    assert!(!first.status.success(), "{t}");
    assert!(t.contains("starting an embedded one"), "{t}");
    assert!(
        t.contains("4 runs in the grid, 0 already complete, 4 to run"),
        "{t}"
    );
    assert!(
        t.contains("2 completed, 0 skipped (already complete), 2 failed"),
        "{t}"
    );
    assert!(
        t.contains("deliberate panic in forward"),
        "the failure says why: {t}"
    );
    let entries = journal(&state);
    assert_eq!(entries.len(), 4);
    let failed: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| {
        e["run_id"]
            .as_str()
            .unwrap()
            .contains("/testing-panicking/")
    }));
    assert!(Path::new(failed[0]["log"].as_str().unwrap()).exists());

    // Resume: the completed runs are skipped, the failed ones tried again as new attempts.
    let second = sweep(&file);
    let t = text(&second);
    assert!(
        t.contains("4 runs in the grid, 2 already complete, 2 to run"),
        "{t}"
    );
    let entries = journal(&state);
    assert_eq!(entries.len(), 6);
    assert!(
        entries[4..]
            .iter()
            .all(|e| e["run_id"].as_str().unwrap().ends_with(":a2")),
        "{entries:?}"
    );

    // A grid whose runs are all complete runs nothing and succeeds.
    let done = sweep_file(tmp.path(), "grid-done", &["sgdm"], r#"[0, "unseeded"]"#);
    std::fs::write(
        &done,
        std::fs::read_to_string(&done)
            .unwrap()
            .replace("grid-done", "grid"),
    )
    .unwrap();
    let third = sweep(&done);
    let t = text(&third);
    assert!(third.status.success(), "{t}");
    assert!(
        t.contains("2 runs in the grid, 2 already complete, 0 to run"),
        "{t}"
    );

    // The embedded daemons stopped cleanly: the data is all there for a new one.
    let daemon = Daemon::start(&data, &["--plugins-dir", plugins.to_str().unwrap()]);
    let runs = daemon.sql(
        "SELECT run_id, learning_rule, data_seed, status FROM runs WHERE learning_rule = 'sgdm' ORDER BY run_id",
    );
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["run_id"], "grid/knet4/shapes/sgdm/b8/m0/d0");
    assert_eq!(runs[1]["run_id"], "grid/knet4/shapes/sgdm/b8/m0/du");
    // Unseeded is stored as NULL (absent from the JSON rows).
    assert!(
        runs[1].get("data_seed").is_none_or(|v| v.is_null()),
        "{runs:?}"
    );
    assert!(runs.iter().all(|r| r["status"] == "closed"));
    let rows = daemon
        .sql("SELECT count(*) AS n FROM observables WHERE run_id LIKE 'grid/knet4/shapes/sgdm/%'");
    assert_eq!(int(&rows[0], "n"), 2 * 3 * 4);
}

#[test]
fn a_rule_dropped_into_a_running_daemon_is_used_by_a_sweep_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(tmp.path(), &[("lrid_rule_sgdm", "sgdm")]);
    let daemon = Daemon::start(
        &tmp.path().join("data"),
        &["--plugins-dir", plugins.to_str().unwrap()],
    );
    let pid = daemon.child.id();
    let file = sweep_file(tmp.path(), "signs", &["sgdm", "sign-symmetry"], "[0]");
    let sweep = || {
        lrid(&[
            "sweep",
            "run",
            file.to_str().unwrap(),
            "--server",
            &daemon.url(),
            "--state-dir",
            tmp.path().join("state").to_str().unwrap(),
            // The workers' own copy of the rules (the daemon's version is checked).
            "--plugins-dir",
            plugins.to_str().unwrap(),
        ])
    };
    // Not loaded yet: the sweep refuses before starting anything, naming the rule.
    let refused = sweep();
    assert!(!refused.status.success());
    let t = text(&refused);
    assert!(
        t.contains("learning rule(s) sign-symmetry are not loaded by the daemon"),
        "{t}"
    );
    assert!(daemon.sql("SELECT run_id FROM runs").is_empty());

    // Built separately (plugins/examples), dropped into the watched folder the way a slow copy
    // does it: the daemon sees the first tenth (the dynamic loader, given it, kills the process
    // with SIGBUS) and refuses it without loading it; then the rest arrives.
    let library = std::fs::read(plugin_lib("lrid_rule_sign_symmetry")).unwrap();
    let mut dropped = std::fs::File::create(plugins.join("sign-symmetry.so")).unwrap();
    dropped.write_all(&library[..library.len() / 10]).unwrap();
    dropped.sync_all().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refused = daemon.sql(
            "SELECT status FROM plugins WHERE file LIKE '%sign-symmetry.so' AND status LIKE 'refused:%truncated%'",
        );
        if !refused.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not see the partial file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    dropped.write_all(&library[library.len() / 10..]).unwrap();
    drop(dropped);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loaded =
            daemon.sql("SELECT name, version FROM plugins WHERE status = 'loaded' ORDER BY name");
        if loaded.iter().any(|r| r["name"] == "sign-symmetry") {
            assert_eq!(loaded.len(), 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not load the new rule: {loaded:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ran = sweep();
    assert!(ran.status.success(), "{}", text(&ran));
    let runs = daemon.sql("SELECT run_id, learning_rule, status FROM runs ORDER BY run_id");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["run_id"], "signs/knet4/shapes/sgdm/b8/m0/d0");
    assert_eq!(
        runs[1]["run_id"],
        "signs/knet4/shapes/sign-symmetry/b8/m0/d0"
    );
    assert!(runs.iter().all(|r| r["status"] == "closed"));
    let rows = daemon.sql(
        "SELECT count(*) AS n FROM observables WHERE run_id = 'signs/knet4/shapes/sign-symmetry/b8/m0/d0'",
    );
    assert_eq!(int(&rows[0], "n"), 3 * 4);
    // The same daemon process throughout.
    assert_eq!(daemon.child.id(), pid);
    let mut daemon = daemon;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    assert!(daemon.stop().success());
}

#[test]
fn simclr_and_the_audio_task_train_and_record_their_own_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(tmp.path(), &RULES);
    let daemon = Daemon::start(&tmp.path().join("data"), &[]);
    let url = daemon.url();
    let run = |arch: &str, task: &str, rule: &str, resolution: &str, run_id: &str| {
        let out = lrid_line(&format!(
            "train --arch {arch} --task {task} --rule {rule} --batch-size 8 --model-seed 0 \
             --data-seed 0 --epochs 1 --train-examples 16 --points 2 --eval-examples 8 \
             --resolution {resolution} --width 0.125 --device cpu --server {url} \
             --run-id {run_id} --quiet --plugins-dir {}",
            plugins.display()
        ));
        assert!(out.status.success(), "{run_id}: {}", text(&out));
    };
    run(
        "resnet18-v1",
        "simclr",
        "feedback-alignment",
        "32",
        "contrastive",
    );
    run("knet4", "audio", "information-alignment", "16", "words");
    // SimCLR: the base network without its classifier, then the projection head (spec §5.6).
    let layers = daemon.sql(
        "SELECT layer_index, layer_name, position, weight_shape FROM layers WHERE run_id = 'contrastive' ORDER BY layer_index",
    );
    assert_eq!(layers.len(), 23);
    assert_eq!(layers[21]["layer_name"], "head_contrastive/nl_0");
    assert_eq!(layers[22]["layer_name"], "head_contrastive/nl_1");
    assert_eq!(layers[22]["weight_shape"], "[64, 128]");
    assert!(layers[21..].iter().all(|l| l["position"] == "deep"));
    // The audio task: one-channel cochleagrams.
    let layers =
        daemon.sql("SELECT weight_shape FROM layers WHERE run_id = 'words' ORDER BY layer_index");
    assert_eq!(layers.len(), 4);
    assert_eq!(layers[0]["weight_shape"], "[5, 5, 1, 4]");
    for (run_id, count) in [("contrastive", 2 * 23), ("words", 2 * 4)] {
        let rows = daemon.sql(&format!(
            "SELECT count(*) AS n FROM observables WHERE run_id = '{run_id}' AND gradavgraw_id IS NOT NULL"
        ));
        assert_eq!(int(&rows[0], "n") as usize, count, "{run_id}");
    }
}

#[test]
fn an_installed_lrid_in_an_empty_folder_runs_a_sweep_shard_by_shard_with_its_built_in_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = install(&tmp.path().join("prefix"));
    let builtin = tmp.path().join("prefix/lib/lrid/plugins");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let daemon = Daemon::start_installed(&bin, &empty, &tmp.path().join("data"), &[]);
    // Every built-in rule and classifier is loaded from the installed layout.
    let loaded =
        daemon.sql("SELECT name, kind, file FROM plugins WHERE status = 'loaded' ORDER BY name");
    let names: Vec<&str> = loaded.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "adam",
            "conv1d",
            "feedback-alignment",
            "information-alignment",
            "linear-svm",
            "random-forest",
            "sgdm"
        ]
    );
    assert!(
        loaded.iter().all(|r| r["file"]
            .as_str()
            .unwrap()
            .starts_with(builtin.to_str().unwrap())),
        "{loaded:?}"
    );
    let file = sweep_file(tmp.path(), "inst", &["sgdm", "adam"], r#"[0, 1]"#);
    let state = tmp.path().join("state");
    let shard = |index: &str, env: Option<(&str, &str)>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.current_dir(&empty)
            .args(["sweep", "shard", file.to_str().unwrap(), "--count", "3"])
            .args([
                "--server",
                &daemon.url(),
                "--state-dir",
                state.to_str().unwrap(),
            ])
            .env("RUST_LOG", "warn")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX");
        if !index.is_empty() {
            cmd.args(["--index", index]);
        }
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // Index from the flag, from Slurm's variable, from Kubernetes' variable.
    for (index, env) in [
        ("0", None),
        ("", Some(("SLURM_ARRAY_TASK_ID", "1"))),
        ("", Some(("JOB_COMPLETION_INDEX", "2"))),
    ] {
        let out = shard(index, env);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("runs in the shard, 0 already complete"), "{t}");
    }
    // Nothing was written into the empty working folder (no plugins folder, no data).
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let runs = daemon.sql("SELECT run_id, status FROM runs ORDER BY run_id");
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "closed"));
    // Three journals, one per shard, four runs in all.
    let journals = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("journal-shard-")
        })
        .count();
    assert_eq!(journals, 3);
    // A shard again: every cell is complete, nothing runs.
    let again = shard("1", None);
    assert!(text(&again).contains("0 to run"), "{}", text(&again));
    let status = std::process::Command::new(&bin)
        .args(["sweep", "status", file.to_str().unwrap(), "--count", "3"])
        .args([
            "--server",
            &daemon.url(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let t = text(&status);
    assert!(status.status.success(), "{t}");
    assert!(
        t.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["all", "4", "4", "0", "0", "0"]),
        "{t}"
    );
    // Bad shards are refused before anything runs.
    let out = shard("3", None);
    assert!(
        text(&out).contains("shard index 3 is out of range for 3 shard(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_worker_refuses_a_rule_whose_version_is_not_the_daemon_s() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(tmp.path(), &[("lrid_rule_sgdm", "sgdm")]);
    let out = lrid(&[
        "train",
        "--arch",
        "knet4",
        "--task",
        "shapes",
        "--rule",
        "sgdm",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--no-record",
        "--device",
        "cpu",
        "--train-examples",
        "16",
        "--resolution",
        "16",
        "--plugins-dir",
        plugins.to_str().unwrap(),
        "--rule-version",
        "9.9.9",
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("learning rule 'sgdm' is version") && t.contains("the daemon has version 9.9.9"),
        "{t}"
    );
}

#[test]
fn bad_sweep_submissions_and_shards_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sweep_file(tmp.path(), "bad", &["sgdm"], "[0, 1]");
    let f = file.to_str().unwrap();
    // Nothing listens on port 1: every refusal comes before the daemon is needed.
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "sweep",
                "submit",
                f,
                "--slurm",
                "--tasks",
                "0",
                "--server",
                "http://127.0.0.1:1",
            ],
            "shard count must be at least 1 (got 0)",
        ),
        (
            &[
                "sweep",
                "submit",
                f,
                "--slurm",
                "--tasks",
                "3",
                "--server",
                "http://127.0.0.1:1",
            ],
            "--tasks 3 is more than the sweep's 2 cells",
        ),
        (
            &["sweep", "submit", f, "--server", "http://127.0.0.1:1"],
            "--slurm",
        ),
        (
            &[
                "sweep",
                "submit",
                f,
                "--slurm",
                "--k8s",
                "--server",
                "http://127.0.0.1:1",
            ],
            "cannot be used with",
        ),
        (
            &[
                "sweep",
                "submit",
                f,
                "--slurm",
                "--dry-run",
                "--image",
                "x",
                "--server",
                "http://127.0.0.1:1",
            ],
            "--image is a Kubernetes option; --slurm does not use it",
        ),
        (
            &[
                "sweep",
                "submit",
                f,
                "--k8s",
                "--dry-run",
                "--partition",
                "gpu",
                "--server",
                "http://127.0.0.1:1",
            ],
            "--partition is a Slurm option; --k8s does not use it",
        ),
        (
            &[
                "sweep",
                "shard",
                f,
                "--index",
                "2",
                "--count",
                "2",
                "--server",
                "http://127.0.0.1:1",
            ],
            "shard index 2 is out of range for 2 shard(s)",
        ),
    ];
    for (args, expect) in cases {
        let out = lrid_command(args)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX")
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{args:?}: {t}");
        assert!(t.contains(expect), "{args:?}: expected {expect:?} in {t}");
    }
    // A real submission needs the daemon the tasks will record into.
    let out = lrid(&[
        "sweep",
        "submit",
        f,
        "--slurm",
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert!(
        text(&out).contains("the tasks record into that daemon"),
        "{}",
        text(&out)
    );
}
