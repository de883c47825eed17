//! Helpers of the end-to-end tests: start the real `lrid serve` on 127.0.0.1:0 and talk to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The profile folder the running test or bench was built into (`target/release`, or the same
/// under `CARGO_TARGET_DIR`): the executable lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

/// The release `lrid` built beside these tests (or `$LRID_BIN`); `make test` builds it first.
pub fn lrid_bin() -> PathBuf {
    let path = std::env::var_os("LRID_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("lrid"));
    assert!(
        path.exists(),
        "{} does not exist: build it first (cargo build --release -p lrid)",
        path.display()
    );
    path
}

/// An example program built beside these tests (`cargo test` builds the workspace's examples).
pub fn example_bin(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    assert!(
        path.exists(),
        "{} does not exist: build it first (cargo build --release --workspace --examples)",
        path.display()
    );
    path
}

/// A plugin library (`lib{name}.so`) built by the workspace beside these tests.
pub fn plugin_lib(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} does not exist: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// Installs the build these tests run from into `prefix` with `deploy/install.sh` (what
/// `make install PREFIX=…` runs): the installed `lrid`.
pub fn install(prefix: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh");
    let out = Command::new(&script)
        .arg(prefix)
        .arg(profile_dir())
        .output()
        .expect("run deploy/install.sh");
    assert!(
        out.status.success(),
        "deploy/install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prefix.join("bin/lrid")
}

/// A running `lrid serve`, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The `--token` it was started with, which `sql` then sends.
    pub token: Option<String>,
    /// `https` when it serves TLS (its first line says so), else `http`.
    pub scheme: &'static str,
}

impl Daemon {
    /// Starts a daemon on a free loopback port with its data in `data_dir`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts a daemon listening on `listen` with its data in `data_dir`.
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
        Daemon::start_with(Command::new(lrid_bin()), data_dir, listen, extra)
    }

    /// Starts a daemon on a free loopback port with extra environment variables (e.g. an
    /// object store's `AWS_*`).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(String, String)]) -> Daemon {
        let mut cmd = Command::new(lrid_bin());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Daemon::start_with(cmd, data_dir, "127.0.0.1:0", extra)
    }

    /// Starts `bin serve` (an installed `lrid`) in the working folder `cwd`, on a free
    /// loopback port, with its data in `data_dir`.
    pub fn start_installed(bin: &Path, cwd: &Path, data_dir: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = Command::new(bin);
        cmd.current_dir(cwd);
        Daemon::start_with(cmd, data_dir, "127.0.0.1:0", extra)
    }

    fn start_with(mut cmd: Command, data_dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
        let mut child = cmd
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lrid serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address line");
        let addr = line
            .split_whitespace()
            .nth(4)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .and_then(|i| extra.get(i + 1))
            .map(|t| t.to_string());
        let scheme = if line.contains("(TLS: https://") {
            "https"
        } else {
            "http"
        };
        Daemon {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            token,
            scheme,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for lrid serve")
    }

    /// `lrid sql QUERY --format json` against this daemon: the rows.
    pub fn sql(&self, query: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut sql = Command::new(lrid_bin());
        sql.args(["sql", query, "--format", "json", "--server", &self.url()]);
        if let Some(t) = &self.token {
            sql.args(["--token", t]);
        }
        let out = sql.output().expect("run lrid sql");
        assert!(
            out.status.success(),
            "lrid sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json rows");
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r.as_object().expect("row").clone())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One run of the synthetic corpus: which rule (its index sets how its statistics drift) and
/// the run's factors.
#[derive(Debug, Clone)]
pub struct SyntheticRun {
    pub run_id: String,
    pub rule_index: usize,
    pub rule: String,
    pub arch: String,
    pub batch: u32,
    pub data_seed: i64,
    /// Observed layers (the first early, the last deep, the rest middle).
    pub layers: u32,
}

impl SyntheticRun {
    pub fn labels(&self) -> lrid_protocol::RunLabels {
        lrid_protocol::RunLabels {
            learning_rule: Some(self.rule.clone()),
            architecture: Some(self.arch.clone()),
            task: Some("synthetic".into()),
            batch_size: Some(self.batch),
            model_seed: Some(0),
            data_seed: Some(self.data_seed),
            hyperparameters: None,
        }
    }

    fn seed(&self) -> u64 {
        (self.rule_index as u64 + 1) * 1_000_003
            + u64::from(self.batch) * 7
            + self.data_seed as u64 * 13
            + self.arch.bytes().fold(0u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
    }

    /// Opens the run (or re-opens it, after a daemon restart) and records points `points` of a
    /// trajectory of `total` points: `layers` layers (early, middle…, deep), every tensor drawn from a
    /// generator seeded by the run and the point, its scale and offset drifting over the
    /// trajectory at a rate that depends on the rule: the rules look alike at the first points
    /// and apart by the last (per-run and per-value noise).
    /// Closes the run when its last point is recorded.
    pub fn record(&self, url: &str, points: std::ops::Range<u32>, total: u32) {
        use lrid_protocol::{LayerInfo, Position};
        use lrid_sdk::{Recorder, RecorderConfig};
        let rec = Recorder::open(
            RecorderConfig::new(url.to_string()),
            &self.run_id,
            self.labels(),
        )
        .expect("open a run");
        let run_scale = 1.0 + 0.05 * SplitMix(self.seed()).normal();
        let r = self.rule_index as f64;
        for p in points {
            let mut rng = SplitMix(self.seed() ^ (u64::from(p) + 1).wrapping_mul(0x9e37_79b9));
            let t = f64::from(p) / f64::from(total.max(2) - 1);
            for l in 0..self.layers {
                let position = if l == 0 {
                    Position::Early
                } else if l + 1 == self.layers {
                    Position::Deep
                } else {
                    Position::Middle
                };
                let layer = LayerInfo {
                    index: l,
                    name: format!("layer{l}"),
                    position,
                    weight_shape: vec![8, 8],
                    activation_shape: vec![16],
                };
                // Rule r grows its scale by 40 % × r over training, shifts by 0.1 × r; the
                // rest is noise (the run's scale varies by 5 %): alike at the start, apart by the end.
                let scale = run_scale * (1.0 + 0.4 * r * t) * (1.0 + 0.05 * f64::from(l));
                let shift = 0.1 * r * t;
                let mut draw = |n: usize| -> Vec<f32> {
                    (0..n)
                        .map(|_| (shift + scale * rng.normal()) as f32)
                        .collect()
                };
                rec.record_weights(p, &layer, &draw(64)).expect("weights");
                rec.record_activations(p, &layer, 0, 4, &draw(64))
                    .expect("activations");
                rec.record_activity_change(p, &layer, 0, &draw(4))
                    .expect("activity change");
            }
            rec.complete_point(p, Some(i64::from(p) * 10))
                .expect("complete");
            if p + 1 == total {
                rec.close().expect("close the run");
            }
        }
    }
}

/// The runs of a synthetic corpus: `rules` × architectures `archs` × batch sizes 32, 64 ×
/// `data_seeds`, ids `<prefix>/<arch>/<rule>/b<batch>/d<seed>`.
pub fn synthetic_runs(
    prefix: &str,
    rules: &[&str],
    archs: &[&str],
    data_seeds: &[i64],
) -> Vec<SyntheticRun> {
    let mut runs = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        for arch in archs {
            for batch in [32u32, 64] {
                for &data_seed in data_seeds {
                    runs.push(SyntheticRun {
                        run_id: format!("{prefix}/{arch}/{rule}/b{batch}/d{data_seed}"),
                        rule_index: r,
                        rule: rule.to_string(),
                        arch: arch.to_string(),
                        batch,
                        data_seed,
                        layers: 3,
                    });
                }
            }
        }
    }
    runs
}

/// A labelled corpus recorded through the SDK into a daemon, as training jobs would (four at a
/// time): the [`synthetic_runs`] of `rules` × `net-a`, `net-b` × batch sizes 32, 64 × data seeds
/// 0, 1, `points` points each. Returns the run ids.
pub fn record_synthetic_corpus(
    url: &str,
    prefix: &str,
    rules: &[&str],
    points: u32,
) -> Vec<String> {
    let runs = synthetic_runs(prefix, rules, &["net-a", "net-b"], &[0, 1]);
    let threads: Vec<_> = runs
        .chunks(runs.len().div_ceil(4))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let url = url.to_string();
            std::thread::spawn(move || {
                for run in &chunk {
                    run.record(&url, 0..points, points);
                }
                chunk.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("a recording thread"))
        .collect()
}

/// A small seeded generator (SplitMix64) with Box–Muller normals.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// The ingest benchmarks' layer: a ResNet-like convolution, 512×512×3×3 weights (9.4 MB) and 64
/// examples of 512×7×7 activations (6.4 MB) per point, with fixed values.
pub fn resnet_like_layer() -> (lrid_protocol::LayerInfo, Vec<f32>, Vec<f32>) {
    let layer = lrid_protocol::LayerInfo {
        index: 0,
        name: "block4_conv".into(),
        position: lrid_protocol::Position::Deep,
        weight_shape: vec![512, 512, 3, 3],
        activation_shape: vec![512, 7, 7],
    };
    let weights: Vec<f32> = (0..512 * 512 * 9)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let acts: Vec<f32> = (0..64 * 512 * 49)
        .map(|i| ((i * 104_729) % 997) as f32 * 1e-3)
        .collect();
    (layer, weights, acts)
}

/// `lrid ARGS` as the tests run it (`RUST_LOG=warn`), not yet started.
pub fn lrid_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(lrid_bin());
    cmd.args(args).env("RUST_LOG", "warn");
    cmd
}

/// Runs `lrid ARGS` to completion.
pub fn lrid(args: &[&str]) -> std::process::Output {
    lrid_command(args).output().expect("run lrid")
}

/// A finished command's stdout then stderr, as text.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Flight SQL client of the daemon at `url` (`http://host:port`).
pub async fn flight_sql_client(
    url: &str,
) -> arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("a valid address")
        .connect()
        .await
        .expect("connect to lrid");
    arrow_flight::sql::client::FlightSqlServiceClient::new(channel)
}

/// PEM files of one CA (`<name>-ca.pem`) and a server certificate it signed for 127.0.0.1 and
/// localhost, made in `dir`: the TLS tests' and benchmarks' certificates.
#[derive(Debug)]
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes the CA and the certificate of [`Pki`] (rcgen, ECDSA P-256).
pub fn make_pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("lrid test CA {name}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "lrid test server");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");

    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-server.pem")),
        key: dir.join(format!("{name}-server.key")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// moto's S3 server (`moto_server` of the project's venv, PyPI) on a free loopback port.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts it and creates `bucket` (boto3 from the same venv).
    pub fn start(bucket: &str) -> S3Server {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(venv.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (make venv installs it)");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let script = format!(
            "import boto3, time\n\
             c = boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n\
             for i in range(150):\n\
             \x20   try:\n\
             \x20       c.create_bucket(Bucket='{bucket}'); break\n\
             \x20   except Exception:\n\
             \x20       time.sleep(0.2)\n\
             else:\n\
             \x20   raise SystemExit('moto_server did not answer')\n",
            server.endpoint
        );
        let status = Command::new(venv.join("python"))
            .args(["-c", &script])
            .status()
            .expect("run the venv's python");
        assert!(status.success(), "cannot create the bucket {bucket}");
        server
    }

    /// The `AWS_*` variables a daemon needs to use it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
