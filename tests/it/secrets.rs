//! `env:` / `file:` option values through the binary: `flagstream validate` resolves them and
//! never prints a secret, and a missing variable is a configuration error naming it.

use std::process::Command;

fn validate(dest: &str, data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .arg("validate")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--dest")
        .arg(dest)
        .env("FLAGSTREAM_IT_AWS_KEY_ID", "AKIA-SECRET-FROM-ENV")
        .env_remove("FLAGSTREAM_IT_UNSET")
        .output()
        .expect("run flagstream validate")
}

#[test]
fn validate_resolves_secrets_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("aws_secret");
    std::fs::write(&secret_file, "SECRET-FROM-FILE\n").unwrap();
    let dest = format!(
        "kinesis://flag-events?region=us-east-1&endpoint=http://127.0.0.1:1\
         &access_key_id=env:FLAGSTREAM_IT_AWS_KEY_ID&secret_access_key=file:{}\
         &session_token=SECRET-INLINE",
        secret_file.display()
    );
    let output = validate(&dest, dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("access_key_id = env:FLAGSTREAM_IT_AWS_KEY_ID"),
        "{stdout}"
    );
    assert!(stdout.contains("session_token = ***"), "{stdout}");
    for secret in ["AKIA-SECRET-FROM-ENV", "SECRET-FROM-FILE", "SECRET-INLINE"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed"
        );
    }

    let missing = validate(
        "kinesis://s?region=us-east-1&secret_access_key=env:FLAGSTREAM_IT_UNSET",
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("secret_access_key") && stderr.contains("FLAGSTREAM_IT_UNSET"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_destination_type_and_unknown_types_are_named() {
    let help = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["serve", "--help"])
        .output()
        .expect("run flagstream serve --help");
    let text = String::from_utf8_lossy(&help.stdout);
    for scheme in ["file", "log", "kinesis", "pubsub", "postgres"] {
        assert!(
            text.contains(&format!("  {scheme} ")),
            "{scheme} missing:\n{text}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let unknown = validate("carrier-pigeon://coop", dir.path());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("carrier-pigeon") && stderr.contains("file, log, kinesis, pubsub"),
        "{stderr}"
    );
}

#[test]
fn test_destination_logs_and_output_never_contain_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the check fails and its reason is printed and logged.
    let dest = "kinesis://flag-events?region=us-east-1&endpoint=http://127.0.0.1:1\
                &access_key_id=env:FLAGSTREAM_IT_AWS_KEY_ID&secret_access_key=SECRET-INLINE";
    let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", "kinesis", "--data-dir"])
        .arg(dir.path())
        .arg("--dest")
        .arg(dest)
        .env("FLAGSTREAM_IT_AWS_KEY_ID", "AKIA-SECRET-FROM-ENV")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run flagstream test-destination");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("check:   FAILED"), "{stdout}\n{stderr}");
    for secret in ["AKIA-SECRET-FROM-ENV", "SECRET-INLINE"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed:\n{stdout}\n{stderr}"
        );
    }
}
