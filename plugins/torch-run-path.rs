//! Build script of the classifier plugins that need no libtorch (random-forest, linear-svm,
//! examples/knn). Built alone they link none; in a workspace build, cargo unifies lrid-plugin's
//! `torch` feature (the learning rules need it), so their unit-test binaries link libtorch too
//! and must find it. Like the crates that depend on torch-sys directly, they get its folder as
//! run path — found here the way torch-sys finds it with LIBTORCH_USE_PYTORCH: from the
//! Python environment's torch. Without one (a build outside the project venv) nothing is added.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() {
        return;
    }
    let python = std::env::var("VIRTUAL_ENV")
        .map(|v| format!("{v}/bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !dir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
