//! `lrid plugins` on a folder of real plugin libraries built by the workspace.

use std::process::Command;

use lrid_e2e::{lrid_bin, plugin_lib};

#[test]
fn lrid_plugins_lists_what_loads_and_says_why_the_rest_does_not() {
    let dir = tempfile::tempdir().unwrap();
    for (lib, file) in [
        ("lrid_rule_sgdm", "sgdm.so"),
        ("lrid_rule_feedback_alignment", "fa.so"),
        ("lrid_testing_wrong_abi", "old.so"),
    ] {
        std::fs::copy(plugin_lib(lib), dir.path().join(file)).unwrap();
    }
    let out = Command::new(lrid_bin())
        .args(["plugins", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("name"), "{text}");
    assert!(
        lines[1].starts_with("feedback-alignment")
            && lines[1].contains("learning-rule")
            && lines[1].ends_with("fa.so"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("sgdm") && lines[2].contains("1.0.0"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("refused")
            && lines[3].contains("old.so")
            && lines[3].contains("ABI version 999"),
        "{text}"
    );

    let missing = Command::new(lrid_bin())
        .args(["plugins", "--dir", "/nonexistent/plugins"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("the plugins folder /nonexistent/plugins does not exist")
    );
}

/// User + system CPU seconds a process has used (Linux /proc).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn an_idle_daemon_watching_its_plugins_stays_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin_lib("lrid_rule_sgdm"), plugins.join("sgdm.so")).unwrap();
    let daemon = lrid_e2e::Daemon::start(
        &tmp.path().join("data"),
        &["--plugins-dir", plugins.to_str().unwrap()],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = cpu_seconds(daemon.child.id());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let used = cpu_seconds(daemon.child.id()) - before;
    // Reading a plugin to hash it must not trigger another scan (it once looped on a core).
    assert!(used < 0.3, "the idle daemon used {used:.2} s of CPU in 3 s");
}
