//! Property tests over what the binaries read from disk and the environment:
//! config files and variables of the coordinator and the worker, and the
//! admin token file. Whatever the text, loading either succeeds or names what
//! is wrong; nothing panics.
//!
//! `HIVE_FUZZ_CASES` sets the cases per property (default 256).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("HIVE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
}

/// TOML lines that reach the keys' parsers, and noise.
fn toml_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("slots"),
        Just("coordinator"),
        Just("token_file"),
        Just("shutdown_grace"),
        Just("[leases]\nttl"),
        Just("[auth]\nadmin_token_file"),
        Just("[auth]\ninsecure"),
        Just("[limits]\nmax_message_size"),
        Just("[database]\nmax_connections"),
        Just("[agents.a]\ncommand"),
        Just("[agents.a]\ntimeout"),
        Just("[agents.a]\npass_env"),
        Just("[agents.a]\nenv"),
    ];
    let value = prop_oneof![
        Just("\"0.0.0.0:1\"".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("\"1000000000000h\"".to_owned()),
        Just("\"16EiB\"".to_owned()),
        Just("[\"HIVE_TOKEN\"]".to_owned()),
        Just("{ HIVE_X = \"1\" }".to_owned()),
        Just("nan".to_owned()),
        Just("true".to_owned()),
        any::<String>().prop_map(|text| format!("{text:?}")),
    ];
    prop_oneof![
        4 => (key, value).prop_map(|(key, value)| format!("{key} = {value}\n")),
        1 => any::<String>(),
    ]
}

fn env_pairs(prefix: &'static str) -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![Just("LEASES__TTL"), Just("SLOTS"), Just("AUTH__INSECURE"), Just("LISTEN"), Just("X")];
    proptest::collection::vec((key, any::<String>()), 0..4)
        .prop_map(move |pairs| pairs.into_iter().map(|(key, value)| (format!("{prefix}{key}"), value)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn coordinator_configs_load_or_name_their_problems(
        lines in proptest::collection::vec(toml_line(), 0..8),
        env in env_pairs("HIVE_COORDINATOR__"),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("coordinator.toml");
        std::fs::write(&file, lines.concat()).unwrap();
        if let Err(err) = hive_coordinator::config::Config::load(Some(&file), env, Default::default()) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn worker_configs_load_or_name_their_problems(
        lines in proptest::collection::vec(toml_line(), 0..8),
        env in env_pairs("HIVE_WORKER__"),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.toml");
        std::fs::write(&file, lines.concat()).unwrap();
        if let Err(err) = hive_worker::config::Config::load(Some(&file), env, Default::default()) {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}

#[tokio::test]
async fn a_bad_admin_token_file_stops_the_coordinator_naming_the_file_not_its_text() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, says) in [
        ("empty", "", "Hive role prefix"),
        ("password", "hunter2", "Hive role prefix"),
        ("viewer", &hive_shared::tokens::generate(hive_shared::tokens::Role::Viewer), "another role"),
        ("short", "hive_a_abc", "64 hex digits"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let output = tokio::process::Command::new(hive_tests::procs::binary("hive-coordinator"))
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE", &file)
            .env("HIVE_COORDINATOR__DATABASE__CONNECT_TIMEOUT", "1s")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains(&file.display().to_string()), "{name}: {stderr}");
        assert!(!stderr.contains("hunter2"), "the file's text is never shown: {stderr}");
    }
}
