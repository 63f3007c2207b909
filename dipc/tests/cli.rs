//! The command line as a user drives it: settings precedence (flags over
//! environment over the TOML file) and clean shutdown on SIGTERM.

use std::process::Command;
use std::time::Duration;

use dipc_testkit::Cluster;
use nix::sys::signal::Signal;

fn cluster() -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(1)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster did not start: {e:#}"),
    }
}

/// `dipc status` with nothing but what the test sets.
fn status(c: &Cluster) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dipc"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DIPC_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("status").env("DIPC_REFEREE", c.referee_addr());
    cmd
}

#[test]
fn flags_win_over_env_and_env_over_the_config_file() {
    let c = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dipc.toml");
    let good = c.cluster_name().to_string();
    let secret = c.secret_file().display().to_string();

    // The file alone: right cluster and secret.
    std::fs::write(
        &file,
        format!("cluster = \"{good}\"\nsecret_file = \"{secret}\"\n"),
    )
    .unwrap();
    let out = status(&c).arg("--config").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "file alone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 up"));

    // The environment wins over the file: a wrong cluster in the env is refused.
    let out = status(&c)
        .arg("--config")
        .arg(&file)
        .env("DIPC_CLUSTER", "elsewhere")
        .output()
        .unwrap();
    assert!(!out.status.success(), "env must win over the file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong cluster \"elsewhere\""), "{err}");

    // A flag wins over the environment.
    let out = status(&c)
        .arg("--config")
        .arg(&file)
        .env("DIPC_CLUSTER", "elsewhere")
        .args(["--cluster", &good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flag must win: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A file with an unknown key is a clear error, not a silent default.
    std::fs::write(&file, "clustr = \"typo\"\n").unwrap();
    let out = status(&c).arg("--config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad config file"));
}

#[test]
fn missing_secret_file_says_how_to_make_one() {
    let c = cluster();
    let out = status(&c)
        .args([
            "--cluster",
            "x",
            "--secret-file",
            "/nonexistent/dipc-secret",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dipc keygen"), "{err}");
}

#[test]
fn sigterm_stops_a_node_cleanly_and_removes_its_socket() {
    let mut c = cluster();
    let sock = c.node_socket(0);
    assert!(sock.exists());
    let p = c.node_process(0);
    p.signal(Signal::SIGTERM).unwrap();
    let st = p
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("node did not stop within 5 s of SIGTERM");
    assert!(st.success(), "node exit status {st:?}");
    assert!(!sock.exists(), "socket {} left behind", sock.display());
    assert!(c.node_log(0).contains("SIGTERM"));
}
