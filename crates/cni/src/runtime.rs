//! The other side of the protocol: calling a CNI plugin as a container
//! runtime does (the lab, the tests and the benchmarks all do).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use strait_linux::NetNs;

/// One plugin call.
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// Path of the pod's network namespace (`/run/netns/…`).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// The network configuration, sent on stdin.
    pub conf: &'a str,
    /// More environment (e.g. `CNI_ARGS`), or overrides.
    pub env: &'a [(&'a str, &'a str)],
}

/// What the plugin said: its exit code and its stdout as JSON (`Null` when empty).
pub struct Reply {
    pub code: i32,
    pub json: serde_json::Value,
}

/// Run `plugin` for `call` inside the node namespace `node`, with a clean
/// environment: only PATH and the CNI variables.
pub fn invoke(plugin: &Path, node: &NetNs, call: &Call<'_>) -> std::io::Result<Reply> {
    let plugin = plugin.to_owned();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("CNI_COMMAND".into(), call.command.into()),
        ("CNI_CONTAINERID".into(), call.container_id.into()),
        ("CNI_NETNS".into(), call.netns.into()),
        ("CNI_IFNAME".into(), call.ifname.into()),
        ("CNI_PATH".into(), "/usr/lib/cni:/opt/cni/bin".into()),
    ];
    for (k, v) in call.env {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let conf = call.conf.to_owned();
    let out = node
        .run(move || -> std::io::Result<std::process::Output> {
            let mut child = Command::new(plugin)
                .env_clear()
                .envs(env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(conf.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let text = String::from_utf8_lossy(&out.stdout);
    let json = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.into_owned()))
    };
    Ok(Reply {
        code: out.status.code().unwrap_or(-1),
        json,
    })
}
