//! The generated task and the CIFAR-10 reader.

use lrid_tasks::{Cifar10, Dataset, Shapes};
use tch::Kind;

#[test]
fn shapes_are_a_pure_function_of_seed_and_index_at_any_resolution() {
    let a = Shapes::new(7, 32, 8).unwrap();
    let (x1, y1) = a.batch(&[0, 5, 9, 1000]);
    let (x2, y2) = Shapes::new(7, 32, 8).unwrap().batch(&[0, 5, 9, 1000]);
    assert_eq!(x1.size(), [4, 3, 32, 32]);
    assert!(x1.equal(&x2) && y1.equal(&y2), "same seed, same examples");
    let (x3, _) = Shapes::new(8, 32, 8).unwrap().batch(&[0, 5, 9, 1000]);
    assert!(!x1.equal(&x3), "another seed, other examples");
    // One example drawn alone equals itself drawn in a batch.
    let (single, _) = a.batch(&[9]);
    assert!(single.get(0).equal(&x1.get(2)));
    // The evaluation set is its own stream, fixed.
    let (e1, _) = a.eval(16);
    let (e2, _) = a.eval(16);
    assert!(e1.equal(&e2));
    assert!(!e1.narrow(0, 0, 4).equal(&x1));
    for r in [8, 17, 64, 224] {
        let (x, _) = Shapes::new(1, r, 4).unwrap().batch(&[3]);
        assert_eq!(x.size(), [1, 3, r, r]);
    }
    assert!(Shapes::new(1, 32, 9).is_err());
    assert!(Shapes::new(1, 4, 4).is_err());
}

#[test]
fn shapes_labels_cover_every_class_and_classes_look_different() {
    let task = Shapes::new(3, 32, 8).unwrap();
    let (x, y) = task.batch(&(0..800).collect::<Vec<_>>());
    let counts = y.bincount(None::<tch::Tensor>, 8);
    let counts: Vec<i64> = Vec::try_from(&counts).unwrap();
    assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
    // Class-mean images differ more between classes than two halves of one class do.
    let mean = |t: tch::Tensor| t.mean_dim(0, false, Kind::Float);
    let class = |c: i64| x.index_select(0, &y.eq(c).nonzero().squeeze_dim(1));
    let disks = class(0);
    let half = disks.size()[0] / 2;
    let within = (mean(disks.narrow(0, 0, half)) - mean(disks.narrow(0, half, half)))
        .abs()
        .mean(Kind::Float)
        .double_value(&[]);
    let between = (mean(class(0)) - mean(class(6)))
        .abs()
        .mean(Kind::Float)
        .double_value(&[]);
    assert!(
        between > 2.0 * within,
        "between {between} vs within {within}"
    );
}

/// Writes `n` CIFAR-10 records: label i % 10, pixels (i + channel + position) % 256.
fn write_cifar(path: &std::path::Path, n: usize) {
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.push((i % 10) as u8);
        for c in 0..3 {
            for p in 0..1024 {
                bytes.push(((i + c * 7 + p) % 256) as u8);
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar10_binary_files_are_read_and_bad_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(&dir.path().join("data_batch_1.bin"), 12);
    write_cifar(&dir.path().join("data_batch_2.bin"), 3);
    write_cifar(&dir.path().join("test_batch.bin"), 5);
    let c = Cifar10::open(dir.path()).unwrap();
    assert_eq!(c.len(), 15);
    let (x, y) = c.batch(&[1, 13]);
    assert_eq!(x.size(), [2, 3, 32, 32]);
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [1, 1]); // record 13 = batch 2's record 1
    // Green plane of record 1, pixel 2: (1 + 7 + 2) / 255.
    assert!((x.double_value(&[0, 1, 0, 2]) - 10.0 / 255.0).abs() < 1e-6);
    let (ex, ey) = c.eval(100);
    assert_eq!(ex.size()[0], 5);
    assert_eq!(Vec::<i64>::try_from(&ey).unwrap(), [0, 1, 2, 3, 4]);

    std::fs::write(dir.path().join("data_batch_3.bin"), vec![0u8; 3073 * 2 + 5]).unwrap();
    let e = Cifar10::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("not a whole number"),
        "{e}"
    );
    let mut bad = vec![0u8; 3073];
    bad[0] = 12;
    std::fs::write(dir.path().join("data_batch_3.bin"), bad).unwrap();
    let e = Cifar10::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("label 12"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = Cifar10::open(empty.path()).unwrap_err().to_string();
    assert!(e.contains("no data_batch_N.bin"), "{e}");
}
