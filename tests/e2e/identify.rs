//! Live identification end to end: an identifier fitted on a corpus recorded into a real
//! daemon (`lrid identify fit`, stored by `lrid.put_identifier`); new runs of each rule streamed
//! in point by point through the SDK get rows in `identifications` at every point, and their
//! final run-level prediction is their rule; the daemon killed with SIGKILL mid-run and
//! restarted keeps its identifiers and every identification row stored, and identifies the rest
//! of the run; `lrid identify RUN --follow` prints the points as they come; bad inputs are
//! refused with one clear line; a classifier that panics while identifying gives failed rows
//! for its identifier only.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lrid_e2e::{
    Daemon, SyntheticRun, lrid, lrid_bin, plugin_lib, record_synthetic_corpus, synthetic_runs, text,
};

const RULES: [&str; 4] = [
    "adam",
    "feedback-alignment",
    "information-alignment",
    "sgdm",
];
const POINTS: u32 = 21;

fn plugins_folder(root: &Path) -> std::path::PathBuf {
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (lib, name) in [
        ("lrid_classifier_random_forest", "random-forest"),
        ("lrid_testing_failing_classifier", "failing"),
        ("lrid_testing_fragile_classifier", "fragile"),
    ] {
        std::fs::copy(plugin_lib(lib), plugins.join(format!("{name}.so"))).unwrap();
    }
    plugins
}

/// Polls `query` until `done` holds of its rows (at most 60 s).
fn wait_rows(
    daemon: &Daemon,
    query: &str,
    done: impl Fn(&[serde_json::Map<String, serde_json::Value>]) -> bool,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let started = Instant::now();
    loop {
        let rows = daemon.sql(query);
        if done(&rows) {
            return rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting on {query}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(daemon: &Daemon, query: &str) -> u64 {
    daemon.sql(query)[0]["n"].as_u64().unwrap()
}

fn run_level_rows(run: &str, identifier: &str) -> String {
    format!(
        "SELECT point, points_seen, predicted, status, note FROM identifications WHERE run_id = '{run}' AND identifier = '{identifier}' AND layer_index IS NULL ORDER BY point"
    )
}

#[test]
fn identifiers_name_the_rule_of_running_jobs_point_by_point_and_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_folder(tmp.path());
    let data = tmp.path().join("data");
    let plugins_arg = ["--plugins-dir", plugins.to_str().unwrap()];
    let mut daemon = Daemon::start(&data, &plugins_arg);
    let url = daemon.url();
    let corpus = record_synthetic_corpus(&url, "corpus", &RULES, POINTS);
    assert_eq!(corpus.len(), 32);

    // Fit, in the CLI, stored by the daemon.
    let out = lrid(&[
        "identify",
        "fit",
        "--name",
        "synth",
        "--server",
        &url,
        "--where",
        "starts_with(run_id, 'corpus/')",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("identifier 'synth'") && t.contains("held-out accuracy"),
        "{t}"
    );
    let ids = daemon.sql(
        "SELECT name, status, classifier, points, runs, examples, array_length(run_accuracy) AS ks FROM identifiers",
    );
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0]["name"], "synth");
    assert_eq!(ids[0]["status"], "active");
    assert_eq!(ids[0]["classifier"], "random-forest");
    assert_eq!(ids[0]["points"], 21);
    assert_eq!(ids[0]["runs"], 32);
    assert_eq!(ids[0]["examples"], 96);
    assert_eq!(ids[0]["ks"], 21);
    assert!(data.join("identifiers/synth.arrow").exists());
    // The same name again is refused, saying how to replace it.
    let again = lrid(&[
        "identify",
        "fit",
        "--name",
        "synth",
        "--server",
        &url,
        "--where",
        "starts_with(run_id, 'corpus/')",
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("an identifier named 'synth' exists"),
        "{}",
        text(&again)
    );

    // New runs, one per rule, with a data seed the corpus never had; one more on an
    // architecture it never had.
    let mut live: Vec<SyntheticRun> = synthetic_runs("live", &RULES, &["net-a"], &[7])
        .into_iter()
        .filter(|r| r.batch == 32)
        .collect();
    assert_eq!(live.len(), 4);
    let mut unseen = live[3].clone();
    unseen.arch = "net-c".into();
    unseen.run_id = "live/net-c/sgdm/b32/d7".into();
    live.push(unseen.clone());

    // `lrid identify RUN --follow` on the first run, started before it exists in full.
    live[0].record(&url, 0..1, POINTS);
    let mut follow = Command::new(lrid_bin())
        .args(["identify", &live[0].run_id, "--follow", "--server", &url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follow_out = follow.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(follow_out).lines() {
            let line = line.unwrap();
            seen.push((Instant::now(), line));
        }
        seen
    });

    // Every run but the last sgdm one streams in whole; the last stops at point 10.
    let crash_run = live[3].clone();
    let full: Vec<SyntheticRun> = live
        .iter()
        .filter(|r| r.run_id != crash_run.run_id)
        .cloned()
        .collect();
    let recorders: Vec<_> = full
        .iter()
        .cloned()
        .map(|r| {
            let url = url.clone();
            std::thread::spawn(move || {
                let from = if r.rule == "adam" && r.arch == "net-a" {
                    1
                } else {
                    0
                };
                for p in from..POINTS {
                    r.record(&url, p..p + 1, POINTS);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    crash_run.record(&url, 0..11, POINTS);
    for r in recorders {
        r.join().unwrap();
    }

    // Every point of every full run is identified: 3 layers + the run, per point.
    for r in &full {
        let rows = wait_rows(&daemon, &run_level_rows(&r.run_id, "synth"), |rows| {
            rows.len() == POINTS as usize
        });
        for (p, row) in rows.iter().enumerate() {
            assert_eq!(row["point"], p as u64, "{}: {rows:?}", r.run_id);
            assert_eq!(row["points_seen"], (p + 1) as u64);
            assert_eq!(row["status"], "ok");
        }
        let layers = count(
            &daemon,
            &format!(
                "SELECT count(*) AS n FROM identifications WHERE run_id = '{}' AND layer_index IS NOT NULL",
                r.run_id
            ),
        );
        assert_eq!(layers, 3 * u64::from(POINTS), "{}", r.run_id);
        // One probability column per rule; they sum to one.
        let last = daemon.sql(&format!(
            "SELECT p_adam + p_feedback_alignment + p_information_alignment + p_sgdm AS total, predicted FROM identifications WHERE run_id = '{}' AND layer_index IS NULL AND point = 20",
            r.run_id
        ));
        let total = last[0]["total"].as_f64().unwrap();
        assert!((total - 1.0).abs() < 1e-6, "{}: {total}", r.run_id);
        let note = rows[0].get("note").and_then(|v| v.as_str()).unwrap_or("");
        if r.arch == "net-c" {
            assert!(
                note.contains("architecture 'net-c' was not in the identifier's training corpus"),
                "{note}"
            );
        } else {
            assert!(note.is_empty(), "{}: {note}", r.run_id);
        }
    }
    // The runs of the rules that drift least and most (adam, sgdm) are named right at the end
    // (neighbouring rules of the synthetic corpus differ by a quarter of their drift).
    for r in full.iter().filter(|r| r.rule == "adam" || r.rule == "sgdm") {
        let last = daemon.sql(&format!(
            "SELECT predicted FROM identifications WHERE run_id = '{}' AND layer_index IS NULL AND point = 20",
            r.run_id
        ));
        assert_eq!(last[0]["predicted"], r.rule.as_str(), "{}", r.run_id);
    }

    // `--follow` printed one line per point as they came, and exited when the run closed.
    let status = follow.wait().unwrap();
    assert!(status.success());
    let seen = lines.join().unwrap();
    let points: Vec<&(Instant, String)> = seen
        .iter()
        .filter(|(_, l)| l.starts_with("synth "))
        .collect();
    assert_eq!(points.len(), POINTS as usize, "{seen:?}");
    assert!(
        points.last().unwrap().0.duration_since(points[0].0) > Duration::from_millis(200),
        "the points came one by one: {seen:?}"
    );
    assert!(seen.iter().any(|(_, l)| l == "run closed"), "{seen:?}");

    // SIGKILL mid-run: the crash run has points 0..=10 identified.
    let before = wait_rows(
        &daemon,
        &run_level_rows(&crash_run.run_id, "synth"),
        |rows| rows.len() == 11,
    );
    let stored = count(&daemon, "SELECT count(*) AS n FROM identification_rows");
    let addr = daemon.addr.clone();
    daemon.kill();
    let daemon = Daemon::start_at(&data, &addr, &plugins_arg);
    assert_eq!(
        count(&daemon, "SELECT count(*) AS n FROM identification_rows"),
        stored,
        "every stored identification row survives SIGKILL"
    );
    let ids = daemon.sql("SELECT name, status FROM identifiers");
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["status"], "active");
    assert_eq!(
        daemon.sql(&run_level_rows(&crash_run.run_id, "synth")),
        before
    );
    // The run goes on; identification picks it up where it was (points read back with SQL).
    crash_run.record(&url, 11..POINTS, POINTS);
    let rows = wait_rows(
        &daemon,
        &run_level_rows(&crash_run.run_id, "synth"),
        |rows| rows.len() == POINTS as usize,
    );
    assert_eq!(rows[20]["points_seen"], 21);
    assert_eq!(rows[20]["predicted"], "sgdm");

    // `lrid identify --runs`: each run with its current best guess.
    let out = lrid(&["identify", "--runs", "--server", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    for r in &live {
        assert!(t.contains(&r.run_id), "{t}");
    }
}

#[test]
fn bad_identification_inputs_are_refused_and_a_failing_identifier_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins_folder(tmp.path());
    let daemon = Daemon::start(
        &tmp.path().join("data"),
        &["--plugins-dir", plugins.to_str().unwrap()],
    );
    let url = daemon.url();
    record_synthetic_corpus(&url, "corpus", &RULES, 5);
    let fails = |args: &[&str], want: &str| {
        let out = lrid(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let t = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(t.contains(want), "{args:?}: {t}");
        assert_eq!(t.trim().lines().count(), 1, "one line: {t}");
    };
    let fit = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["identify", "fit", "--server", &url, "--points", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>, want: &str| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        fails(&refs, want);
    };
    // A corpus with one rule.
    run(
        fit(&["--name", "one", "--where", "learning_rule = 'adam'"]),
        "the corpus has 1 learning rule (adam); an identifier tells two or more apart",
    );
    // A classifier that cannot save its models.
    run(
        fit(&["--name", "nosave", "--classifier", "testing-failing"]),
        "classifier 'testing-failing' cannot save and load its models, so it cannot back an identifier",
    );
    // Unknown classifier, bad name, bad configuration.
    run(
        fit(&["--name", "x", "--classifier", "boosted"]),
        "unknown classifier 'boosted'",
    );
    run(fit(&["--name", "a b"]), "identifier name \"a b\"");
    run(
        fit(&["--name", "x", "--classifier-config", "{oops"]),
        "--classifier-config is not valid JSON",
    );
    // Unknown run, unknown identifier, deleting what does not exist.
    fails(
        &["identify", "no/such/run", "--server", &url],
        "unknown run 'no/such/run'",
    );
    fails(
        &[
            "identify",
            "corpus/net-a/adam/b32/d0",
            "--identifier",
            "nope",
            "--server",
            &url,
        ],
        "unknown identifier 'nope' (identifiers: none)",
    );
    fails(
        &["identify", "delete", "nope", "--server", &url],
        "no identifier named 'nope' (identifiers: none)",
    );

    // Two identifiers: the forest, and one whose classifier panics when it predicts.
    // (The fragile one is fitted without held-out runs: measuring them would predict.)
    for (name, classifier, held_out) in [
        ("forest", "random-forest", "0.25"),
        ("fragile", "testing-fragile", "0"),
    ] {
        let a = fit(&[
            "--name",
            name,
            "--classifier",
            classifier,
            "--test-fraction",
            held_out,
        ]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = lrid(&refs);
        assert!(out.status.success(), "{}", text(&out));
    }
    let run = SyntheticRun {
        run_id: "live/net-a/sgdm/b32/d9".into(),
        rule_index: 3,
        rule: "sgdm".into(),
        arch: "net-a".into(),
        batch: 32,
        data_seed: 9,
        layers: 3,
    };
    run.record(&url, 0..3, 5);
    let rows = wait_rows(
        &daemon,
        "SELECT identifier, point, status FROM identifications WHERE run_id = 'live/net-a/sgdm/b32/d9' AND layer_index IS NULL ORDER BY identifier, point",
        |rows| rows.len() == 6,
    );
    for r in &rows[..3] {
        assert_eq!(r["identifier"], "forest");
        assert_eq!(r["status"], "ok");
    }
    for r in &rows[3..] {
        assert_eq!(r["identifier"], "fragile");
        let s = r["status"].as_str().unwrap();
        assert!(
            s.starts_with("failed: ") && s.contains("deliberate panic in predict"),
            "{s}"
        );
    }
    // Deleting an identifier in use: it stops, its rows stay, the run goes on.
    let out = lrid(&["identify", "delete", "fragile", "--server", &url]);
    assert!(out.status.success(), "{}", text(&out));
    run.record(&url, 3..5, 5);
    let rows = wait_rows(
        &daemon,
        "SELECT identifier, point FROM identifications WHERE run_id = 'live/net-a/sgdm/b32/d9' AND layer_index IS NULL ORDER BY identifier, point",
        |rows| rows.iter().filter(|r| r["identifier"] == "forest").count() == 5,
    );
    assert_eq!(
        rows.iter().filter(|r| r["identifier"] == "fragile").count(),
        3,
        "the deleted identifier's rows stay, and it adds none: {rows:?}"
    );
    let ids = daemon.sql("SELECT name FROM identifiers");
    assert_eq!(ids.len(), 1);
    // The run closed: ingest never stopped.
    let status = daemon.sql("SELECT status FROM runs WHERE run_id = 'live/net-a/sgdm/b32/d9'");
    assert_eq!(status[0]["status"], "closed");
}
