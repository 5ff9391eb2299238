//! The systemd units in `dist/`: systemd's own offline checks accept them (`systemd-analyze
//! verify`: no unknown key, no bad value, an executable ExecStart) and rate their sandbox at
//! most 2.0 on its 0-10 exposure scale (`systemd-analyze security --offline`); both reload
//! with SIGHUP (which `tests/reload.rs` of each binary proves the binaries handle); and
//! `systemd-sysusers` makes the group from `dist/warren.sysusers` that may read the configs. No
//! systemd runs as PID 1 on the test machines, so the units are not started here.
//!
//! Needs systemd-analyze; without it the test says so and passes, unless
//! `WARREN_REQUIRE_PACKAGING_TOOLS=1` (set by `.ci/run`, which installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_warren-remote");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;

/// `dist/NAME` copied into a fresh directory as `as_name`, its ExecStart pointed at the built
/// warren-remote (verify checks that the program exists and is executable; which one it is does
/// not matter to it).
fn unit_copy(dir: &Path, name: &str, as_name: &str) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist").join(name)).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/warren-"), "{name}: {text}");
    let text = text
        .replace("/usr/local/bin/warren-remote", BIN)
        .replace("/usr/local/bin/warren-local", BIN);
    let path = dir.join(as_name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn dist_units_pass_systemds_checks_with_a_tight_sandbox() {
    if !cli_harness::have_tool("systemd-analyze", "--version") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let units = [
        unit_copy(&dir, "warren-remote@.service", "warren-remote@vps.service"),
        unit_copy(&dir, "warren-local.service", "warren-local.service"),
    ];
    for unit in &units {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 on an unknown key ("ignoring"), so anything it says is a failure.
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{}: {said}",
            unit.display()
        );
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20"])
            .arg(unit)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: exposure above 2.0:\n{report}",
            unit.display()
        );
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(text.contains("ExecReload=/bin/kill -HUP $MAINPID"), "no reload: {text}");
        for setting in ["DynamicUser=", "NoNewPrivileges=", "ProtectSystem="] {
            assert!(
                report.lines().any(|l| l.starts_with('✓') && l.contains(setting)),
                "{setting} not in force: {report}"
            );
        }
    }
    // The group the units run in, made by systemd's own tool in a scratch root.
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let sysusers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/warren.sysusers");
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(&sysusers)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let groups = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(groups.lines().any(|l| l.starts_with("warren:")), "{groups}");
    std::fs::remove_dir_all(&dir).unwrap();
}
