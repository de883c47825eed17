//! The plugin host with the real plugin libraries the workspace builds (`plugins/`): loading,
//! refusal, isolation of a panicking plugin, hot reload, and the four built-in rules checked
//! against closed forms and against libtorch's own optimizers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lrid_plugin::LayerSpec;
use lrid_plugins::{PluginHost, RuleInstance};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// A plugin library built by the workspace, beside this test executable.
fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

struct Folder {
    tmp: tempfile::TempDir,
    plugins: PathBuf,
    host: Arc<PluginHost>,
}

fn folder(libs: &[(&str, &str)]) -> Folder {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    let host = Arc::new(PluginHost::new(&plugins, tmp.path().join("cache")).unwrap());
    for (lib, file) in libs {
        std::fs::copy(built(lib), plugins.join(file)).unwrap();
    }
    Folder { tmp, plugins, host }
}

impl Folder {
    /// The private copies are unlinked once mapped (or refused): none is left in the cache.
    fn assert_no_copies_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

fn rule(host: &PluginHost, name: &str, config: serde_json::Value) -> RuleInstance {
    host.rule(name).unwrap().instantiate(&config).unwrap()
}

const DENSE: LayerSpec = LayerSpec::dense(0);

const CONV: LayerSpec = LayerSpec::conv(1, 2, 1);

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-6);
    assert!(
        diff <= 1e-5 * scale,
        "{what}: max difference {diff} (scale {scale})"
    );
}

#[test]
fn built_in_rules_load_and_are_listed() {
    let f = folder(&[
        ("lrid_rule_sgdm", "sgdm.so"),
        ("lrid_rule_adam", "adam.so"),
        ("lrid_rule_feedback_alignment", "fa.so"),
        ("lrid_rule_information_alignment", "ia.so"),
    ]);
    let report = f.host.rescan().unwrap();
    assert_eq!(report.loaded.len(), 4, "{report:?}");
    let names: Vec<_> = f
        .host
        .list()
        .into_iter()
        .map(|l| (l.name, l.kind, l.version))
        .collect();
    assert_eq!(
        names,
        [
            ("adam".to_string(), "learning-rule", "1.0.0".to_string()),
            ("feedback-alignment".into(), "learning-rule", "1.0.0".into()),
            (
                "information-alignment".into(),
                "learning-rule",
                "1.1.0".into()
            ),
            ("sgdm".into(), "learning-rule", "1.0.0".into()),
        ]
    );
    f.assert_no_copies_left();
    // A second scan of unchanged files loads nothing.
    assert_eq!(f.host.rescan().unwrap(), Default::default());
    let e = f.host.rule("nope").unwrap_err().to_string();
    assert!(
        e.contains("no learning rule named 'nope'") && e.contains("sgdm"),
        "{e}"
    );
    // A bad configuration is the rule's error, by name.
    let e = f
        .host
        .rule("sgdm")
        .unwrap()
        .instantiate(&serde_json::json!({"momentum": "high"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'momentum' must be a number"), "{e}");
}

#[test]
fn wrong_abi_and_broken_files_are_refused_and_the_rest_still_loads() {
    let f = folder(&[
        ("lrid_testing_wrong_abi", "future.so"),
        ("lrid_rule_sgdm", "sgdm.so"),
    ]);
    std::fs::write(f.plugins.join("junk.so"), b"this is not an ELF file").unwrap();
    let report = f.host.rescan().unwrap();
    assert_eq!(report.loaded, ["sgdm"]);
    let refused = f.host.refused();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let why = |file: &str| {
        refused
            .iter()
            .find(|(f, _)| f.ends_with(file))
            .map(|(_, w)| w.clone())
            .unwrap()
    };
    assert!(
        why("future.so").contains("plugin ABI version 999")
            && why("future.so").contains("speaks versions 1 to 2"),
        "{}",
        why("future.so")
    );
    assert!(
        why("junk.so").contains("cannot be loaded as a library"),
        "{}",
        why("junk.so")
    );
    f.assert_no_copies_left();
    // The same broken content is not retried on every scan; new content is.
    assert!(f.host.rescan().unwrap().refused.is_empty());
    std::fs::copy(built("lrid_rule_adam"), f.plugins.join("junk.so")).unwrap();
    assert_eq!(f.host.rescan().unwrap().loaded, ["adam"]);
}

#[test]
fn a_truncated_library_is_refused_before_the_loader_sees_it_and_loads_once_whole() {
    // A plugin being copied into the folder is seen part-written. The dynamic loader trusts the
    // headers: given the first 10 % of a library it crashed the process (SIGBUS), given 30 % to
    // 99 % it loaded it with code missing.
    let f = folder(&[]);
    let whole = std::fs::read(built("lrid_rule_sgdm")).unwrap();
    let target = f.plugins.join("sgdm.so");
    for percent in [0, 1, 10, 30, 50, 90, 99] {
        let len = (whole.len() * percent / 100).max(1);
        std::fs::write(&target, &whole[..len]).unwrap();
        let report = f.host.rescan().unwrap();
        assert!(report.loaded.is_empty(), "{percent} %: {report:?}");
        let refused = f.host.refused();
        assert_eq!(refused.len(), 1, "{percent} %: {refused:?}");
        let why = &refused[0].1;
        assert!(
            why.contains("cannot be loaded as a library") && why.contains("truncated"),
            "{percent} %: {why}"
        );
    }
    f.assert_no_copies_left();
    // The rest of the bytes arrive: the same file is loaded.
    std::fs::write(&target, &whole).unwrap();
    assert_eq!(f.host.rescan().unwrap().loaded, ["sgdm"]);
    assert!(f.host.refused().is_empty());
    rule(&f.host, "sgdm", serde_json::json!({}));
}

#[test]
fn a_panicking_plugin_is_an_error_for_its_run_only() {
    let f = folder(&[
        ("lrid_testing_panicking", "panicking.so"),
        ("lrid_rule_sgdm", "sgdm.so"),
    ]);
    f.host.rescan().unwrap();
    let mut bad = rule(
        &f.host,
        "testing-panicking",
        serde_json::json!({"panic_in_step": true}),
    );
    let (x, w) = (randn(&[2, 3]), randn(&[4, 3]));
    let e = bad
        .forward(&DENSE, &x, &w, None, &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'testing-panicking' failed in forward")
            && e.contains("panicked: deliberate panic in forward of layer 0"),
        "{e}"
    );
    let e = bad.step(&[w.shallow_clone()], 0.1).unwrap_err().to_string();
    assert!(e.contains("deliberate panic in step"), "{e}");
    // The host and the other rules carry on.
    let mut good = rule(&f.host, "sgdm", serde_json::json!({}));
    let y = good.forward(&DENSE, &x, &w, None, &[]).unwrap();
    assert_close(
        &y,
        &x.linear(&w, None::<Tensor>),
        "sgdm forward after a panic elsewhere",
    );
}

#[test]
fn a_changed_plugin_is_loaded_beside_the_old_one_while_runs_keep_theirs() {
    let f = folder(&[("lrid_rule_sgdm", "rule.so")]);
    f.host.rescan().unwrap();
    let mut old = rule(&f.host, "sgdm", serde_json::json!({}));
    let watcher = f.host.watch().unwrap();
    // Replace the file's content (as a rebuild would): a new plugin comes from the same path.
    let tmp = f.plugins.join("rule.so.tmp");
    std::fs::copy(built("lrid_rule_adam"), &tmp).unwrap();
    std::fs::rename(&tmp, f.plugins.join("rule.so")).unwrap();
    let start = Instant::now();
    while f.host.rule("adam").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the watcher did not reload the plugin"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(watcher);
    assert!(
        f.host.rule("sgdm").is_err(),
        "the old version is no longer offered to new runs"
    );
    // The run that started with sgdm still trains with it.
    let w = randn(&[3, 2]).set_requires_grad(true);
    (&w * &w).sum(Kind::Float).backward();
    let before = w.detach().copy();
    old.step(&[w.shallow_clone()], 0.5).unwrap();
    // SGD's first step: w - lr·2w = 0.
    assert_close(&w.detach(), &(before * 0.0), "the old rule's step");
    let listing = f.host.list();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].name, "adam");
    assert!(listing[0].file.ends_with("rule.so"));
}

#[test]
fn feedback_alignment_routes_the_input_gradient_through_b_and_never_moves_b() {
    tch::manual_seed(11);
    let f = folder(&[("lrid_rule_feedback_alignment", "fa.so")]);
    f.host.rescan().unwrap();
    let mut fa = rule(&f.host, "feedback-alignment", serde_json::json!({}));

    // Dense.
    let w = randn(&[3, 5]).set_requires_grad(true);
    let bias = randn(&[3]).set_requires_grad(true);
    let extra = fa.init_layer(&DENSE, &w).unwrap();
    assert_eq!(extra.len(), 1);
    let b = &extra[0];
    assert_eq!(b.size(), w.size());
    assert!(
        (b - &w).abs().max().double_value(&[]) > 1e-3,
        "B is drawn independently of W"
    );
    let x = randn(&[4, 5]).set_requires_grad(true);
    let y = fa.forward(&DENSE, &x, &w, Some(&bias), &extra).unwrap();
    assert_close(&y, &x.linear(&w, Some(&bias)), "FA forward value");
    let g = randn(&[4, 3]);
    (&y * &g).sum(Kind::Float).backward();
    assert_close(&x.grad(), &g.matmul(b), "dL/dx = g·B");
    assert_close(
        &w.grad(),
        &g.transpose(0, 1).matmul(&x.detach()),
        "dL/dW = gᵀx",
    );
    assert_close(
        &bias.grad(),
        &g.sum_dim_intlist(0, false, Kind::Float),
        "dL/db",
    );
    assert!(!b.grad().defined(), "no gradient reaches B");

    // Conv (stride 2, padding 1): the input gradient is the transposed conv with B.
    let wc = randn(&[4, 2, 3, 3]).set_requires_grad(true);
    let extra_c = fa.init_layer(&CONV, &wc).unwrap();
    let xc = randn(&[2, 2, 7, 7]).set_requires_grad(true);
    let yc = fa.forward(&CONV, &xc, &wc, None, &extra_c).unwrap();
    let gc = randn(&yc.size());
    (&yc * &gc).sum(Kind::Float).backward();
    let xr = xc.detach().set_requires_grad(true);
    (xr.conv2d(&extra_c[0], None::<Tensor>, [2, 2], [1, 1], [1, 1], 1) * &gc)
        .sum(Kind::Float)
        .backward();
    assert_close(&xc.grad(), &xr.grad(), "conv dL/dx through B");

    // A step moves W, never B.
    let b_before = b.copy();
    let w_before = w.detach().copy();
    fa.step(
        &[w.shallow_clone(), bias.shallow_clone(), b.shallow_clone()],
        0.1,
    )
    .unwrap();
    assert!(b.equal(&b_before), "B moved");
    assert!(!w.detach().equal(&w_before), "W did not move");
}

#[test]
fn information_alignment_gives_b_the_closed_form_gradient_and_w_none() {
    tch::manual_seed(12);
    let f = folder(&[("lrid_rule_information_alignment", "ia.so")]);
    f.host.rescan().unwrap();
    let mut ia = rule(&f.host, "information-alignment", serde_json::json!({}));
    let (alpha, beta, gamma) = (2e-3, 1e-3, 1e-3);
    let w = randn(&[3, 5]).set_requires_grad(true);
    let bias = randn(&[3]).set_requires_grad(true);
    let extra = ia.init_layer(&DENSE, &w).unwrap();
    let b = &extra[0];
    assert!(b.requires_grad());
    let x = randn(&[6, 5]);
    let loss = ia
        .local_loss(&DENSE, &x, &w, Some(&bias), &extra)
        .unwrap()
        .expect("IA has a local loss");
    loss.backward();
    // TF layout of the spec: ∂R/∂B = −(α/N)·rᵀx + (2β/N)·rᵀf + 2γ·B, r = xWᵀ + b, f = r·B.
    let n = 6.0;
    let r = x.linear(&w.detach(), Some(&bias.detach()));
    let fr = r.matmul(&b.detach());
    let want = r.transpose(0, 1).matmul(&x) * (-alpha / n)
        + r.transpose(0, 1).matmul(&fr) * (2.0 * beta / n)
        + b.detach() * (2.0 * gamma);
    assert_close(&b.grad(), &want, "∂R_IA/∂B");
    assert!(!w.grad().defined() || w.grad().abs().max().double_value(&[]) == 0.0);
    assert!(!bias.grad().defined() || bias.grad().abs().max().double_value(&[]) == 0.0);

    // Conv: the reconstruction has the input's shape, and only B gets a gradient.
    let wc = randn(&[4, 2, 3, 3]).set_requires_grad(true);
    let extra_c = ia.init_layer(&CONV, &wc).unwrap();
    let xc = randn(&[2, 2, 8, 8]);
    let lc = ia
        .local_loss(&CONV, &xc, &wc, None, &extra_c)
        .unwrap()
        .unwrap();
    lc.backward();
    assert!(extra_c[0].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(!wc.grad().defined());

    // The value against an independent construction: the reconstruction f is the input gradient
    // of conv(·, B) applied to r (a vector-Jacobian product), on the unpadded input, also for
    // TF's asymmetric SAME padding (4×4 kernel: 1 before, 2 after).
    let asymmetric = LayerSpec {
        padding_extra: [1, 1],
        ..LayerSpec::conv(2, 1, 1)
    };
    for (spec, kernel) in [(CONV, 3), (asymmetric, 4)] {
        let w = randn(&[4, 2, kernel, kernel]);
        let extra = ia.init_layer(&spec, &w).unwrap();
        let b = extra[0].detach();
        let x = randn(&[3, 2, 8, 8]);
        let got = ia
            .local_loss(&spec, &x, &w, None, &extra)
            .unwrap()
            .unwrap()
            .double_value(&[]);
        let conv = |x: &Tensor, k: &Tensor| {
            let [ph, pw] = spec.padding;
            let [eh, ew] = spec.padding_extra;
            x.constant_pad_nd([pw, pw + ew, ph, ph + eh]).conv2d(
                k,
                None::<Tensor>,
                spec.stride,
                [0, 0],
                [1, 1],
                1,
            )
        };
        let r = conv(&x, &w);
        let p = conv(&x, &b);
        let x0 = Tensor::zeros_like(&x).set_requires_grad(true);
        let f = Tensor::run_backward(
            &[(conv(&x0, &b) * &r).sum(Kind::Float)],
            &[&x0],
            false,
            false,
        )
        .remove(0);
        assert_eq!(f.size(), x.size());
        let n = 3.0;
        let want = -(&p * &r).sum(Kind::Float).double_value(&[]) / n * alpha
            + (&f * &f).sum(Kind::Float).double_value(&[]) / n * beta
            + ((&w * &w).sum(Kind::Float) + (&b * &b).sum(Kind::Float)).double_value(&[]) * gamma;
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1e-3),
            "{spec:?}: {got} vs {want}"
        );
    }
}

#[test]
fn information_alignment_can_give_b_its_own_adam() {
    tch::manual_seed(13);
    let f = folder(&[("lrid_rule_information_alignment", "ia.so")]);
    f.host.rescan().unwrap();
    let plugin = f.host.rule("information-alignment").unwrap();
    let refused = |config: serde_json::Value, want: &str| {
        let e = plugin.instantiate(&config).unwrap_err().to_string();
        assert!(e.contains(want), "{config}: {e}");
    };
    refused(
        serde_json::json!({"alignment_lr": 0.01}),
        "alignment_optimizer",
    );
    refused(
        serde_json::json!({"alignment_optimizer": "rmsprop"}),
        "unknown alignment_optimizer 'rmsprop'",
    );
    refused(
        serde_json::json!({"alignment_optimizer": "adam", "alignment_lr": -1.0}),
        "positive",
    );
    refused(
        serde_json::json!({"alhpa": 1.0}),
        "unknown configuration key 'alhpa'",
    );

    let lr_b = 0.01;
    let mut ia = rule(
        &f.host,
        "information-alignment",
        serde_json::json!({"alignment_optimizer": "adam", "alignment_lr": lr_b}),
    );
    let w = randn(&[3, 5]).set_requires_grad(true);
    let bias = randn(&[3]).set_requires_grad(true);
    let extra = ia.init_layer(&DENSE, &w).unwrap();
    let b = extra[0].shallow_clone();
    let x = randn(&[6, 5]);
    let out = ia.forward(&DENSE, &x, &w, Some(&bias), &extra).unwrap();
    let local = ia
        .local_loss(&DENSE, &x, &w, Some(&bias), &extra)
        .unwrap()
        .unwrap();
    (out.sum(Kind::Float) + local).backward();
    let (w0, b0) = (w.detach().copy(), b.detach().copy());
    let (gw, gb) = (w.grad().copy(), b.grad().copy());
    let lr = 0.1;
    ia.step(
        &[w.shallow_clone(), bias.shallow_clone(), b.shallow_clone()],
        lr,
    )
    .unwrap();
    // W: the first SGD-with-momentum step is plain SGD at the run's rate.
    assert_close(&w.detach(), &(&w0 - &gw * lr), "W after one step");
    // B: Adam's first step moves every entry by alignment_lr against its gradient's sign
    // (m̂/√v̂ = g/|g|), whatever the run's rate.
    let want = &b0 - gb.sign() * lr_b;
    assert_close(&b.detach(), &want, "B after Adam's first step");
}

/// Trains one copy with tch's optimizer and one with the plugin, same data, same start.
fn compare_with_tch(plugin_lib: &str, name: &str, make: impl Fn(&nn::VarStore) -> nn::Optimizer) {
    tch::manual_seed(5);
    let f = folder(&[(plugin_lib, "rule.so")]);
    f.host.rescan().unwrap();
    let mut instance = rule(&f.host, name, serde_json::json!({}));
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = nn::linear(vs.root(), 6, 2, Default::default());
    let mut opt = make(&vs);
    let w = layer.ws.detach().copy().set_requires_grad(true);
    let b = layer
        .bs
        .as_ref()
        .unwrap()
        .detach()
        .copy()
        .set_requires_grad(true);
    for step in 0..6 {
        let x = randn(&[8, 6]);
        let target = randn(&[8, 2]);
        let loss = (layer.forward(&x) - &target).square().mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let mut params = [w.shallow_clone(), b.shallow_clone()];
        for p in &mut params {
            p.zero_grad();
        }
        let loss = (x.linear(&w, Some(&b)) - &target)
            .square()
            .mean(Kind::Float);
        loss.backward();
        instance.step(&params, 0.05).unwrap();
        assert_close(
            &w.detach(),
            &layer.ws.detach(),
            &format!("{name} kernel after step {step}"),
        );
        assert_close(
            &b.detach(),
            &layer.bs.as_ref().unwrap().detach(),
            &format!("{name} bias after step {step}"),
        );
    }
}

#[test]
fn sgdm_and_adam_match_libtorch_step_for_step() {
    compare_with_tch("lrid_rule_sgdm", "sgdm", |vs| {
        nn::Sgd {
            momentum: 0.9,
            ..Default::default()
        }
        .build(vs, 0.05)
        .unwrap()
    });
    compare_with_tch("lrid_rule_adam", "adam", |vs| {
        nn::Adam::default().build(vs, 0.05).unwrap()
    });
}

#[test]
fn the_plugins_folder_is_created_and_an_empty_one_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let host = PluginHost::new(tmp.path().join("p"), tmp.path().join("c")).unwrap();
    assert_eq!(host.rescan().unwrap(), Default::default());
    assert!(host.list().is_empty());
    assert!(Path::new(&tmp.path().join("p")).is_dir());
}

#[test]
fn a_rule_dropped_into_a_watched_folder_is_usable_at_once() {
    // The example rule that is not built in: sign symmetry, routed through sign(W).
    tch::manual_seed(13);
    let f = folder(&[("lrid_rule_sgdm", "sgdm.so")]);
    f.host.rescan().unwrap();
    let _watcher = f.host.watch().unwrap();
    let tmp = f.plugins.join(".incoming");
    std::fs::copy(built("lrid_rule_sign_symmetry"), &tmp).unwrap();
    std::fs::rename(&tmp, f.plugins.join("sign-symmetry.so")).unwrap();
    let start = Instant::now();
    let plugin = loop {
        if let Ok(p) = f.host.rule("sign-symmetry") {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not loaded after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(plugin.version, "0.1.0");
    let mut ss = plugin.instantiate(&serde_json::json!({})).unwrap();
    let w = randn(&[3, 4]).set_requires_grad(true);
    let x = randn(&[5, 4]).set_requires_grad(true);
    let y = ss.forward(&DENSE, &x, &w, None, &[]).unwrap();
    assert_close(&y, &x.linear(&w, None::<Tensor>), "forward value");
    let g = randn(&[5, 3]);
    (&y * &g).sum(Kind::Float).backward();
    assert_close(
        &x.grad(),
        &g.matmul(&w.detach().sign()),
        "dL/dx = g·sign(W)",
    );
    assert_eq!(f.host.list().len(), 2);
}

/// A row-major matrix of two well separated classes (8 rows each) over `cols` columns.
fn two_clusters(cols: usize) -> (Vec<f64>, Vec<u32>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..16 {
        let class = (i % 2) as u32;
        for j in 0..cols {
            x.push(f64::from(class) * 10.0 + (i * cols + j) as f64 * 0.01);
        }
        y.push(class);
    }
    (x, y)
}

#[test]
fn classifiers_load_beside_rules_and_are_called_through_arrow_arrays() {
    use lrid_plugin::FeatureLayout;
    let f = folder(&[
        ("lrid_rule_sgdm", "sgdm.so"),
        ("lrid_classifier_knn", "knn.so"),
        ("lrid_classifier_random_forest", "random-forest.so"),
        ("lrid_testing_failing_classifier", "failing.so"),
    ]);
    let report = f.host.rescan().unwrap();
    assert_eq!(report.loaded.len(), 4, "{report:?}");
    let kinds: Vec<(String, &str)> = f
        .host
        .list()
        .into_iter()
        .map(|l| (l.name, l.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("knn".to_string(), "classifier"),
            ("random-forest".into(), "classifier"),
            ("sgdm".into(), "learning-rule"),
            ("testing-failing".into(), "classifier"),
        ]
    );
    // Kinds do not mix: a classifier is not a rule, and the other way round.
    let e = f.host.rule("knn").unwrap_err().to_string();
    assert!(
        e.contains("no learning rule named 'knn'") && e.contains("sgdm"),
        "{e}"
    );
    let e = f.host.classifier("sgdm").unwrap_err().to_string();
    assert!(
        e.contains("no classifier named 'sgdm'")
            && e.contains("knn, random-forest, testing-failing"),
        "{e}"
    );

    let (x, y) = two_clusters(4);
    let layout = FeatureLayout::default();
    for name in ["knn", "random-forest"] {
        let plugin = f.host.classifier(name).unwrap();
        assert!(plugin.can_save(), "{name}");
        assert!(!plugin.grid("fast").unwrap().is_empty());
        let data = plugin.prepare(x.clone(), 4, layout).unwrap();
        let rows: Vec<u32> = (0..16).collect();
        let model = data
            .fit(&serde_json::json!({"seed": 1}), &rows, &y, 2)
            .unwrap();
        // The data can go; the model stands alone.
        drop(data);
        assert_eq!(model.predict(x.clone(), 4, layout).unwrap(), y, "{name}");
        let p = model.predict_proba(x.clone(), 4, layout).unwrap();
        assert_eq!(p.len(), 32);
        let saved = model.save().unwrap();
        let back = plugin.load_model(&saved, 2).unwrap();
        assert_eq!(
            back.predict_proba(x.clone(), 4, layout).unwrap(),
            p,
            "{name}"
        );
        let e = plugin.load_model(b"garbage", 2).unwrap_err().to_string();
        assert!(
            e.contains(&format!("classifier '{name}' failed in load")),
            "{e}"
        );
        // A configuration the plugin does not know is its error, with the key.
        let data = plugin.prepare(x.clone(), 4, layout).unwrap();
        let e = data
            .fit(&serde_json::json!({"bogus": 1}), &rows, &y, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown configuration key 'bogus'"), "{e}");
        // A matrix of the wrong width, or labels out of range, are refused.
        assert!(model.predict(vec![0.0; 6], 3, layout).is_err());
        assert!(
            data.fit(&serde_json::json!({}), &rows, &[5; 16], 2)
                .is_err()
        );
    }
    let rf = f.host.classifier("random-forest").unwrap();
    let model = rf
        .prepare(x.clone(), 4, layout)
        .unwrap()
        .fit(
            &serde_json::json!({"n_estimators": 7}),
            &(0..16).collect::<Vec<_>>(),
            &y,
            2,
        )
        .unwrap();
    let imp = model
        .importances()
        .unwrap()
        .expect("a forest has importances");
    assert_eq!(imp.len(), 7, "one row per tree");
    assert!(imp.iter().all(|t| t.len() == 4));
    let knn = f.host.classifier("knn").unwrap();
    let model = knn
        .prepare(x.clone(), 4, layout)
        .unwrap()
        .fit(&serde_json::json!({}), &(0..16).collect::<Vec<_>>(), &y, 2)
        .unwrap();
    assert!(model.importances().unwrap().is_none(), "knn has none");

    // A panic in a classifier is an error of that call; the host goes on.
    let failing = f.host.classifier("testing-failing").unwrap();
    assert!(!failing.can_save());
    let data = failing.prepare(x.clone(), 4, layout).unwrap();
    let e = data
        .fit(&serde_json::json!({}), &[0, 1], &[0, 1], 2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("classifier 'testing-failing' failed in fit: the plugin panicked: deliberate panic in fit"),
        "{e}"
    );
    let e = data
        .fit(&serde_json::json!({"fail": true}), &[0, 1], &[0, 1], 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("refuses to fit"), "{e}");
    let e = failing.load_model(b"x", 2).unwrap_err().to_string();
    assert!(e.contains("does not support load"), "{e}");
    assert!(f.host.classifier("knn").is_ok(), "the host still serves");
    f.assert_no_copies_left();
}

#[test]
fn built_in_plugins_load_beside_the_folder_and_a_folder_plugin_of_the_same_name_shadows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (plugins, builtin) = (tmp.path().join("plugins"), tmp.path().join("builtin"));
    std::fs::create_dir_all(&builtin).unwrap();
    for (lib, file) in [("lrid_rule_sgdm", "sgdm.so"), ("lrid_rule_adam", "adam.so")] {
        std::fs::copy(built(lib), builtin.join(file)).unwrap();
    }
    let host = PluginHost::new(&plugins, tmp.path().join("cache"))
        .unwrap()
        .with_builtin_dir(Some(builtin.clone()));
    assert_eq!(host.builtin_dir(), Some(builtin.as_path()));
    host.rescan().unwrap();
    let names = |host: &PluginHost| -> Vec<(String, PathBuf)> {
        host.list().into_iter().map(|l| (l.name, l.file)).collect()
    };
    assert_eq!(
        names(&host),
        [
            ("adam".into(), builtin.join("adam.so")),
            ("sgdm".into(), builtin.join("sgdm.so"))
        ]
    );
    // The folder's sgdm (another file name) shadows the built-in one: no duplicate-name refusal.
    std::fs::copy(built("lrid_rule_sgdm"), plugins.join("my-sgdm.so")).unwrap();
    host.rescan().unwrap();
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    assert_eq!(
        names(&host),
        [
            ("adam".into(), builtin.join("adam.so")),
            ("sgdm".into(), plugins.join("my-sgdm.so"))
        ]
    );
    assert_eq!(host.rule("sgdm").unwrap().file, plugins.join("my-sgdm.so"));
    // A scan with nothing changed keeps it so; removing the folder's file brings the built-in back.
    host.rescan().unwrap();
    assert_eq!(host.rule("sgdm").unwrap().file, plugins.join("my-sgdm.so"));
    std::fs::remove_file(plugins.join("my-sgdm.so")).unwrap();
    host.rescan().unwrap();
    assert_eq!(host.rule("sgdm").unwrap().file, builtin.join("sgdm.so"));
    // The plugins folder itself as the built-in folder is not loaded twice.
    let same = PluginHost::new(&builtin, tmp.path().join("cache2"))
        .unwrap()
        .with_builtin_dir(Some(builtin.clone()));
    assert_eq!(same.builtin_dir(), None);
}
