//! TLS on the Flight port, end to end: a CA and a server certificate made here, `lrid serve
//! --tls-cert/--tls-key`, a run recorded with the Rust SDK over `https://` (actions through
//! tonic, snapshots through the SDK's own HTTP/2 connections), queried with `lrid sql
//! --ca-file`; clients without the CA, plain `http://` to the TLS port and bad TLS settings are
//! refused with clear errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lrid_e2e::{Daemon, Pki, lrid, lrid_command, make_pki, text};
use lrid_protocol::{LayerInfo, Position, RunLabels};
use lrid_sdk::{Recorder, RecorderConfig};

fn tls_daemon(data: &Path, pki: &Pki) -> Daemon {
    Daemon::start(
        data,
        &[
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
    )
}

/// Records `points` points of a 2-layer run; the weights (300 × 700) span several `DoPut`
/// chunks.
fn record(url: &str, ca: Option<&Path>, run_id: &str, points: u32) -> lrid_sdk::Result<()> {
    let mut config = RecorderConfig::new(url);
    config.ca_file = ca.map(Path::to_path_buf);
    config.give_up_after = Duration::from_secs(20);
    let labels = RunLabels {
        learning_rule: Some("sgdm".into()),
        ..RunLabels::default()
    };
    let rec = Recorder::open(config, run_id, labels)?;
    for p in 0..points {
        for l in 0..2u32 {
            let layer = LayerInfo {
                index: l,
                name: format!("layer{l}"),
                position: if l == 0 {
                    Position::Early
                } else {
                    Position::Deep
                },
                weight_shape: vec![300, 700],
                activation_shape: vec![16],
            };
            rec.record_weights(p, &layer, &weights(p, l))?;
            let a: Vec<f32> = (0..64).map(|i| (i + p) as f32 * 0.1).collect();
            rec.record_activations(p, &layer, 0, 4, &a)?;
            rec.record_activity_change(p, &layer, 0, &[0.1, 0.2, 0.3, 0.4])?;
        }
        rec.complete_point(p, Some(i64::from(p)))?;
    }
    rec.close()
}

/// The weights of layer `l` at point `p`.
fn weights(p: u32, l: u32) -> Vec<f32> {
    (0..300 * 700)
        .map(|i| ((i * 7 + p as usize * 13 + l as usize) % 101) as f32 * 0.01 - 0.5)
        .collect()
}

fn sql(url: &str, ca: Option<&Path>, query: &str) -> std::process::Output {
    let mut cmd = lrid_command(&["sql", query, "--format", "csv", "--server", url]);
    cmd.env_remove("LRID_CA_FILE");
    if let Some(ca) = ca {
        cmd.arg("--ca-file").arg(ca);
    }
    cmd.output().expect("run lrid sql")
}

/// `lrid sql` fails, and what it says holds every one of `said`.
fn sql_refused(url: &str, ca: Option<&Path>, said: &[&str]) {
    let out = sql(url, ca, "SELECT 1");
    assert!(!out.status.success());
    let text = text(&out);
    assert!(said.iter().all(|s| text.contains(s)), "{text}");
}

#[test]
fn a_tls_daemon_records_and_answers_sql_for_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "good");
    let other = make_pki(dir.path(), "other");
    let mut daemon = tls_daemon(&dir.path().join("data"), &pki);
    let url = daemon.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // The Rust SDK over https://, trusting the CA.
    record(&url, Some(&pki.ca), "tls/run", 3).expect("record over TLS");
    let out = sql(
        &url,
        Some(&pki.ca),
        "SELECT count(*) AS n, count(DISTINCT point) AS points, \
         max(CASE WHEN point = 2 AND layer_index = 1 THEN weightraw_norm END) AS norm \
         FROM observables WHERE run_id = 'tls/run' AND model = 'ideal'",
    );
    assert!(out.status.success(), "{}", text(&out));
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    let row: Vec<&str> = csv.lines().nth(1).expect("a row").split(',').collect();
    // 3 points × 2 layers, every value across.
    assert_eq!(row[..2], ["6", "3"], "{csv}");
    let expected = weights(2, 1)
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = row[2].parse().unwrap();
    assert!(
        (norm - expected).abs() < 1e-6 * expected,
        "{norm} vs {expected}"
    );
    // The same through LRID_CA_FILE (how sweep workers inherit it).
    let out = lrid_command(&[
        "sql",
        "SELECT status FROM runs",
        "--format",
        "csv",
        "--server",
        &url,
    ])
    .env("LRID_CA_FILE", &pki.ca)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("closed"));

    // A client that trusts another CA is refused at once (not retried), saying why.
    sql_refused(&url, Some(&other.ca), &["not trusted", "--ca-file"]);
    let started = Instant::now();
    let e = record(&url, Some(&other.ca), "tls/untrusted", 1).unwrap_err();
    assert!(
        e.to_string().contains("not trusted"),
        "the SDK's error: {e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an untrusted certificate is final, not retried: {:?}",
        started.elapsed()
    );
    // Plain HTTP/2 to the TLS port gets nothing.
    let out = sql(&format!("http://{}", daemon.addr), None, "SELECT 1");
    assert!(!out.status.success(), "{}", text(&out));
    // A CA file that is not one.
    sql_refused(&url, Some(&pki.key), &["CA file", "good-server.key"]);

    // Nothing the refused clients did reached the store; the run is whole after a restart.
    assert!(daemon.stop().success());
    let daemon = tls_daemon(&dir.path().join("data"), &pki);
    let out = sql(
        &daemon.url(),
        Some(&pki.ca),
        "SELECT run_id, status FROM runs ORDER BY run_id",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "run_id,status\ntls/run,closed"
    );
}

#[test]
fn bad_tls_settings_are_refused_before_the_port_opens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let other = make_pki(dir.path(), "b");
    let data = dir.path().join("data");
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        args.push(data.to_str().unwrap());
        args.extend_from_slice(extra);
        lrid(&args)
    };
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();

    // A certificate without its key.
    let out = serve(&["--tls-cert", &p(&pki.cert)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--tls-key"), "{}", text(&out));
    // A key that is not the certificate's.
    let out = serve(&["--tls-cert", &p(&pki.cert), "--tls-key", &p(&other.key)]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("cannot be used") && said.contains("a-server.pem"),
        "{said}"
    );
    // A missing file, and a file that is not a certificate.
    let missing = dir.path().join("missing.pem");
    let out = serve(&["--tls-cert", &p(&missing), "--tls-key", &p(&pki.key)]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot read the TLS certificate"),
        "{}",
        text(&out)
    );
    let out = serve(&["--tls-cert", &p(&pki.key), "--tls-key", &p(&pki.key)]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("holds no PEM certificate"),
        "{}",
        text(&out)
    );
    // In the configuration file: half a setting.
    let config = dir.path().join("lrid.toml");
    std::fs::write(
        &config,
        format!("[server]\ntls_cert = {:?}\n", pki.cert.to_str().unwrap()),
    )
    .unwrap();
    let out = serve(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tls_cert is set but tls_key is not"),
        "{}",
        text(&out)
    );
}
