//! Records where libtorch lives (found by torch-sys) as the run path of this crate's tests, so
//! they start without LD_LIBRARY_PATH; and writes the configuration grids (`grids.json`,
//! NUL-terminated, in OUT_DIR): the paper's 720 configurations are generated, not typed.
use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }

    // Spec §3.5, in its order (learning rate the outer loop, batch size the inner one), so the
    // grid's first configuration has kernel 1 and fits trajectories of any length.
    let mut paper = Vec::new();
    for lr in ["0.001", "0.0001"] {
        for kernel in [1, 2, 6, 11, 21] {
            for stride in [1, 2, 4] {
                for filters in [20, 40] {
                    for pool in ["none", "max", "avg"] {
                        for wd in ["0.0001", "0.0"] {
                            for batch in [512, 1024] {
                                paper.push(format!(
                                    "{{\"lr\":{lr},\"kernel_size\":{kernel},\"stride\":{stride},\
                                     \"num_filters\":{filters},\"pool\":\"{pool}\",\
                                     \"weight_decay\":{wd},\"batch_size\":{batch},\"epochs\":400}}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(paper.len(), 720);
    let fast = [
        "{\"lr\":0.001,\"kernel_size\":6,\"stride\":1,\"num_filters\":20,\"pool\":\"max\",\
         \"weight_decay\":0.0001,\"batch_size\":64,\"epochs\":100}",
    ];
    let mut text = String::new();
    write!(
        text,
        "{{\"paper\":[{}],\"fast\":[{}]}}",
        paper.join(","),
        fast.join(",")
    )
    .unwrap();
    text.push('\0');
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("grids.json");
    std::fs::write(out, text).unwrap();
}
