//! Layer counts, output shapes and observed-layer lists of the architectures.

use lrid_models::{Backprop, KNet, ModelSize, Network, Position};
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
