//! Layer counts, output shapes and observed-layer lists of the architectures.

use lrid_models::{
    AlexNet, Backprop, KNet, ModelSize, Network, PROJECTION_DIM, Position, ResNet, ResNetVersion,
    SimClr, nt_xent,
};
use tch::{Device, Kind, Tensor};

fn size(resolution: i64, width: f64) -> ModelSize {
    ModelSize {
        resolution,
        channels: 3,
        classes: 10,
        width,
    }
}

fn observed(net: &dyn Network) -> Vec<(String, Position, bool)> {
    net.layers()
        .iter()
        .map(|l| (l.name.clone(), l.position, l.relu))
        .collect()
}

#[test]
fn knet4_and_knet5_with_and_without_lrn() {
    tch::manual_seed(0);
    for (convs, lrn) in [(3, false), (3, true), (4, false), (4, true)] {
        let net = KNet::new(convs, lrn, size(32, 1.0), Device::Cpu).unwrap();
        let names: Vec<String> = observed(&net).into_iter().map(|(n, _, _)| n).collect();
        let positions: Vec<Position> = observed(&net).into_iter().map(|(_, p, _)| p).collect();
        if convs == 3 {
            assert_eq!(names, ["conv1", "conv2", "conv3", "fc4"]);
            assert_eq!(
                positions,
                [
                    Position::Early,
                    Position::Middle,
                    Position::Deep,
                    Position::Deep
                ]
            );
        } else {
            assert_eq!(names, ["conv1", "conv2", "conv3", "conv4", "fc5"]);
            assert_eq!(
                positions,
                [
                    Position::Early,
                    Position::Middle,
                    Position::Deep,
                    Position::Deep,
                    Position::Deep
                ]
            );
        }
        // conv1 owns no ReLU; conv2.. do; the classifier does not.
        let relus: Vec<bool> = observed(&net).into_iter().map(|(_, _, r)| r).collect();
        assert_eq!(relus.first(), Some(&false));
        assert_eq!(relus.last(), Some(&false));
        assert!(relus[1..relus.len() - 1].iter().all(|r| *r));

        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let mut trace = Vec::new();
        let logits = net
            .forward(&x, &mut Backprop, false, Some(&mut trace))
            .unwrap();
        assert_eq!(logits.size(), [2, 10]);
        let outs: Vec<Vec<i64>> = trace.iter().map(|(_, y)| y.size()).collect();
        let mut want = vec![vec![2, 32, 32, 32], vec![2, 32, 16, 16], vec![2, 64, 8, 8]];
        if convs == 4 {
            want.push(vec![2, 128, 4, 4]);
            want.push(vec![2, 10]);
            assert_eq!(trace[4].0.size(), [2, 128 * 2 * 2]);
        } else {
            want.push(vec![2, 10]);
            assert_eq!(trace[3].0.size(), [2, 64 * 4 * 4]);
        }
        assert_eq!(outs, want, "KNet convs={convs} lrn={lrn}");
        // Every observed layer's input is what fed its op: the first is the image itself.
        assert!(trace[0].0.equal(&x));
    }
}

#[test]
fn knet_scales_with_resolution_and_width() {
    tch::manual_seed(1);
    let net = KNet::new(4, true, size(16, 0.5), Device::Cpu).unwrap();
    let x = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
    let mut trace = Vec::new();
    let logits = net
        .forward(&x, &mut Backprop, true, Some(&mut trace))
        .unwrap();
    assert_eq!(logits.size(), [3, 10]);
    assert_eq!(trace[0].1.size(), [3, 16, 16, 16]);
    assert_eq!(trace[3].1.size(), [3, 64, 2, 2]);
    assert_eq!(net.layers()[0].weight.size(), [16, 3, 5, 5]);
    // The loss reaches every kernel.
    logits.sum(Kind::Float).backward();
    for l in net.layers() {
        assert!(l.weight.grad().defined(), "{} got no gradient", l.name);
    }
    let e = KNet::new(5, false, size(32, 1.0), Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("3 (KNet4) or 4 (KNet5)"), "{e}");
}

#[test]
fn alexnet_with_and_without_lrn_at_224_and_small() {
    tch::manual_seed(2);
    for lrn in [false, true] {
        let net = AlexNet::new(lrn, size(224, 1.0), Device::Cpu).unwrap();
        let names: Vec<String> = observed(&net).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(
            names,
            [
                "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"
            ]
        );
        let positions: Vec<Position> = observed(&net).into_iter().map(|(_, p, _)| p).collect();
        use Position::*;
        assert_eq!(
            positions,
            [Early, Early, Middle, Middle, Deep, Deep, Deep, Deep]
        );
        let relus: Vec<bool> = observed(&net).into_iter().map(|(_, _, r)| r).collect();
        assert_eq!(relus, [true, true, true, true, true, true, true, false]);
        assert_eq!(net.layers()[5].weight.size(), [4096, 7 * 7 * 256]);
        let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
        let mut trace = Vec::new();
        let logits =
            tch::no_grad(|| net.forward(&x, &mut Backprop, false, Some(&mut trace))).unwrap();
        assert_eq!(logits.size(), [1, 10]);
        let sides: Vec<i64> = trace[..5].iter().map(|(_, y)| y.size()[2]).collect();
        assert_eq!(
            sides,
            [54, 27, 14, 14, 14],
            "54 → 27 → 27 → 14 → 14 → 14 → 14 → 7"
        );
        // conv4's 4×4 SAME kernel keeps 14×14 with TF's asymmetric padding.
        assert_eq!(trace[3].0.size(), [1, 384, 14, 14]);
        // Evaluation has no dropout: the same input gives the same logits.
        let again = tch::no_grad(|| net.forward(&x, &mut Backprop, false, None)).unwrap();
        assert!(again.equal(&logits));
    }
    // Small and narrow for a CPU.
    let net = AlexNet::new(true, size(64, 0.25), Device::Cpu).unwrap();
    let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
    let logits = net.forward(&x, &mut Backprop, true, None).unwrap();
    assert_eq!(logits.size(), [4, 10]);
    assert!(AlexNet::new(false, size(16, 1.0), Device::Cpu).is_err());
}

#[test]
fn initialisers_follow_the_reference() {
    tch::manual_seed(3);
    let net = AlexNet::new(false, size(64, 1.0), Device::Cpu).unwrap();
    let fc6 = &net.layers()[5];
    // Truncated normal (std 0.01, cut at ±2 std); biases 0.1 on fc6/fc7, 0 on fc8.
    assert!(fc6.weight.abs().max().double_value(&[]) <= 0.02 + 1e-7);
    let std = fc6.weight.std(false).double_value(&[]);
    assert!((std - 0.0088).abs() < 0.0005, "{std}"); // 0.01 · 0.8796
    assert_eq!(fc6.bias.as_ref().unwrap().double_value(&[0]), 0.1f32 as f64);
    assert_eq!(
        net.layers()[7].bias.as_ref().unwrap().double_value(&[0]),
        0.0
    );
    // Glorot uniform on conv2: limit √(6 / (fan_in + fan_out)).
    let conv2 = &net.layers()[1].weight;
    let limit = (6.0f64 / ((96 * 25 + 256 * 25) as f64)).sqrt();
    assert!(conv2.abs().max().double_value(&[]) <= limit);
    assert!(conv2.abs().max().double_value(&[]) > 0.95 * limit);
}

#[test]
fn resnets_18_and_34_v1_and_v2() {
    tch::manual_seed(4);
    for (depth, version, count) in [
        (18, ResNetVersion::V1, 22),
        (18, ResNetVersion::V2, 22),
        (34, ResNetVersion::V1, 38),
        (34, ResNetVersion::V2, 38),
    ] {
        let net = ResNet::new(depth, version, size(64, 0.25), Device::Cpu).unwrap();
        let layers = observed(&net);
        assert_eq!(layers.len(), count, "ResNet-{depth} {version:?}");
        let prefix = if version == ResNetVersion::V1 {
            "block_group"
        } else {
            "block_layer"
        };
        assert_eq!(layers[0].0, "conv0");
        assert_eq!(layers[1].0, format!("{prefix}1_0/conv0"));
        assert_eq!(layers[count - 1].0, "dense");
        // Spec §5.6: the early / middle / deep boundaries.
        let (early_end, middle_end, first_deep) = if depth == 18 {
            (6, 13, format!("{prefix}3_1/conv1"))
        } else {
            (11, 23, format!("{prefix}3_3/conv1"))
        };
        assert_eq!(layers[early_end].1, Position::Early);
        assert_eq!(layers[early_end + 1].1, Position::Middle);
        assert_eq!(layers[middle_end].1, Position::Middle);
        assert_eq!(layers[middle_end + 1].1, Position::Deep);
        assert_eq!(layers[middle_end + 1].0, first_deep);
        if depth == 18 {
            assert_eq!(layers[6].0, format!("{prefix}2_0/conv0"));
        }
        assert!(
            layers.iter().all(|(_, _, relu)| !relu),
            "ResNet convs are observed pre-BN"
        );
        assert!(
            !net.other_parameters().is_empty(),
            "BatchNorm parameters are trainable"
        );

        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let mut trace = Vec::new();
        let logits = net
            .forward(&x, &mut Backprop, true, Some(&mut trace))
            .unwrap();
        assert_eq!(logits.size(), [2, 10]);
        assert_eq!(trace.len(), count);
        // The stem's observed input is the fixed-padded image (3 before, 3 after).
        assert_eq!(trace[0].0.size(), [2, 3, 70, 70]);
        assert_eq!(trace[0].1.size(), [2, 16, 32, 32]);
        assert_eq!(trace[count - 1].0.size(), [2, 128]);
        logits.sum(Kind::Float).backward();
        for l in net.layers() {
            assert!(l.weight.grad().defined(), "{} got no gradient", l.name);
        }
    }
}

#[test]
fn resnet18_at_224_has_the_paper_s_shapes() {
    tch::manual_seed(5);
    let net = ResNet::new(18, ResNetVersion::V1, size(224, 1.0), Device::Cpu).unwrap();
    let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
    let mut trace = Vec::new();
    let logits = tch::no_grad(|| net.forward(&x, &mut Backprop, false, Some(&mut trace))).unwrap();
    assert_eq!(logits.size(), [1, 10]);
    let sides: Vec<i64> = trace[..21].iter().map(|(_, y)| y.size()[2]).collect();
    assert_eq!(
        sides,
        [
            112, 56, 56, 56, 56, 56, 28, 28, 28, 28, 28, 14, 14, 14, 14, 14, 7, 7, 7, 7, 7
        ]
    );
    // A stride-2 3×3 conv sees its fixed-padded input (1 before, 1 after).
    assert_eq!(trace[7].0.size(), [1, 64, 58, 58]);
    assert_eq!(net.layers()[21].weight.size(), [10, 512]);
    assert!(ResNet::new(50, ResNetVersion::V1, size(224, 1.0), Device::Cpu).is_err());
}

#[test]
fn simclr_replaces_the_classifier_with_the_projection_head() {
    tch::manual_seed(6);
    let base = ResNet::new(18, ResNetVersion::V2, size(32, 0.25), Device::Cpu).unwrap();
    let net = SimClr::new(Box::new(base), Device::Cpu);
    let layers = observed(&net);
    // 22 − the classifier + nl_0 + nl_1 (spec §5.6).
    assert_eq!(layers.len(), 23);
    assert_eq!(layers[21].0, "head_contrastive/nl_0");
    assert_eq!(layers[22].0, "head_contrastive/nl_1");
    assert!(layers[21..].iter().all(|l| l.1 == Position::Deep && !l.2));
    let indices: Vec<u32> = net.layers().iter().map(|l| l.spec.index).collect();
    assert_eq!(indices, (0..23).collect::<Vec<u32>>());
    let d = 128; // 512 filters × 0.25
    assert_eq!(net.layers()[21].weight.size(), [d, d]);
    assert_eq!(net.layers()[22].weight.size(), [PROJECTION_DIM, d]);
    assert!(net.layers()[21].bias.is_none());
    let x = Tensor::randn([6, 3, 32, 32], (Kind::Float, Device::Cpu));
    let mut trace = Vec::new();
    let z = net
        .forward(&x, &mut Backprop, true, Some(&mut trace))
        .unwrap();
    assert_eq!(z.size(), [6, PROJECTION_DIM]);
    assert_eq!(trace.len(), 23);
    nt_xent(&z, 0.5).backward();
    for l in net.layers() {
        assert!(l.weight.grad().defined(), "{} got no gradient", l.name);
    }
    // Trainable: the base's BN parameters and the head's BN0 (γ, β) and BN1 (γ only).
    let base_only = ResNet::new(18, ResNetVersion::V2, size(32, 0.25), Device::Cpu).unwrap();
    assert_eq!(
        net.other_parameters().len(),
        base_only.other_parameters().len() + 3
    );
}

#[test]
fn nt_xent_equals_its_definition() {
    tch::manual_seed(7);
    let (b, tau) = (3i64, 0.7);
    let z = Tensor::randn([2 * b, 5], (Kind::Double, Device::Cpu));
    let loss = nt_xent(&z, tau).double_value(&[]);
    let rows: Vec<Vec<f64>> = (0..2 * b)
        .map(|i| {
            let r = Vec::<f64>::try_from(z.get(i)).unwrap();
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let dot = |i: usize, j: usize| -> f64 {
        rows[i]
            .iter()
            .zip(&rows[j])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / tau
    };
    let b = b as usize;
    let mut expected = 0.0;
    for (view, other) in [(0, b), (b, 0)] {
        let mut sum = 0.0;
        for i in 0..b {
            let anchor = view + i;
            // Positive: the same image's other view; negatives: every other row but itself.
            let logits: Vec<f64> = (0..b)
                .map(|j| dot(anchor, other + j))
                .chain((0..b).filter(|&j| j != i).map(|j| dot(anchor, view + j)))
                .collect();
            let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
            sum += lse - dot(anchor, other + i);
        }
        expected += sum / b as f64;
    }
    assert!((loss - expected).abs() < 1e-9, "{loss} vs {expected}");
}
