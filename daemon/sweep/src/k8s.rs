//! The Kubernetes executor: an Indexed Job (completion index I runs shard I of N, the index
//! from `JOB_COMPLETION_INDEX`) and a ConfigMap that carries the resolved sweep file; the
//! daemon's address comes from the options, its token from a Secret.

use serde_json::{Value, json};

use crate::{Error, Result};

/// Where the ConfigMap's sweep file is mounted in each pod.
pub const SWEEP_MOUNT: &str = "/etc/lrid-sweep";
/// The sweep state folder in each pod (journals and worker logs of that pod).
pub const STATE_MOUNT: &str = "/var/lib/lrid/sweep";

/// What goes into the manifest.
#[derive(Debug, Clone)]
pub struct K8sOptions {
    /// The sweep's name (object names `lrid-sweep-<name>`).
    pub name: String,
    /// The resolved sweep file's text (the ConfigMap's `sweep.toml`).
    pub sweep_toml: String,
    /// Completions (N shards).
    pub count: usize,
    /// Pods at once.
    pub parallelism: usize,
    /// Retries of one index before it counts as failed.
    pub backoff_limit_per_index: u32,
    /// The container image with `lrid` and its built-in plugins (`deploy/Containerfile`).
    pub image: String,
    pub namespace: Option<String>,
    /// GPUs per pod (`nvidia.com/gpu` limit).
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// Training processes per pod.
    pub workers_per_task: usize,
    /// The daemon's address as pods reach it (e.g. its Service).
    pub server: String,
    /// The Secret holding the daemon's token under the key `token` (optional: a daemon without a
    /// token needs none).
    pub token_secret: String,
    pub device: Option<String>,
}

/// An object name: lower case, digits and '-', at most 63 characters, alphanumeric at both ends.
fn dns_label(prefix: &str, name: &str) -> Result<String> {
    let mut s: String = format!("{prefix}{name}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.truncate(63);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        return Err(Error::Option(format!(
            "{name:?} gives no Kubernetes object name"
        )));
    }
    Ok(s)
}

/// The manifest: the ConfigMap, then the Job, as one YAML stream for `kubectl apply -f`.
pub fn manifest(o: &K8sOptions) -> Result<String> {
    if o.count == 0 {
        return Err(Error::Option("--tasks must be at least 1 (got 0)".into()));
    }
    if o.parallelism == 0 {
        return Err(Error::Option("--max-parallel must be at least 1".into()));
    }
    if o.image.trim().is_empty() {
        return Err(Error::Option(
            "--image is needed: the container image with lrid and its plugins (deploy/Containerfile)"
                .into(),
        ));
    }
    let name = dns_label("lrid-sweep-", &o.name)?;
    let secret = dns_label("", &o.token_secret)?;
    let labels = json!({
        "app.kubernetes.io/name": "lrid",
        "app.kubernetes.io/component": "sweep",
        "lrid/sweep": dns_label("", &o.name)?,
    });
    let mut metadata = json!({"name": name, "labels": labels});
    if let Some(ns) = &o.namespace {
        metadata["namespace"] = json!(dns_label("", ns)?);
    }
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {"sweep.toml": o.sweep_toml},
    });
    let mut command = vec![
        "lrid".to_string(),
        "sweep".into(),
        "shard".into(),
        format!("{SWEEP_MOUNT}/sweep.toml"),
        "--count".into(),
        o.count.to_string(),
        "--workers".into(),
        o.workers_per_task.max(1).to_string(),
        "--state-dir".into(),
        STATE_MOUNT.into(),
    ];
    if let Some(d) = &o.device {
        command.extend(["--device".into(), d.clone()]);
    }
    let mut limits = serde_json::Map::new();
    let mut requests = serde_json::Map::new();
    if let Some(g) = o.gpus_per_task {
        if g == 0 {
            return Err(Error::Option("--gpus-per-task must be at least 1".into()));
        }
        limits.insert("nvidia.com/gpu".into(), json!(g));
    }
    if let Some(c) = o.cpus_per_task {
        if c == 0 {
            return Err(Error::Option("--cpus-per-task must be at least 1".into()));
        }
        requests.insert("cpu".into(), json!(c.to_string()));
    }
    let mut resources = serde_json::Map::new();
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    if !requests.is_empty() {
        resources.insert("requests".into(), Value::Object(requests));
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": o.count,
            "parallelism": o.parallelism.min(o.count),
            // Each index retries on its own; one failing shard does not fail the others.
            "backoffLimitPerIndex": o.backoff_limit_per_index,
            "maxFailedIndexes": o.count,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "shard",
                        "image": o.image,
                        "command": command,
                        "env": [
                            {"name": "LRID_SERVER", "value": o.server},
                            {"name": "LRID_TOKEN", "valueFrom": {"secretKeyRef": {
                                "name": secret, "key": "token", "optional": true}}},
                        ],
                        "resources": resources,
                        "volumeMounts": [
                            {"name": "sweep", "mountPath": SWEEP_MOUNT, "readOnly": true},
                            {"name": "state", "mountPath": STATE_MOUNT},
                        ],
                    }],
                    "volumes": [
                        {"name": "sweep", "configMap": {"name": name}},
                        {"name": "state", "emptyDir": {}},
                    ],
                },
            },
        },
    });
    let yaml = |v: &Value| serde_norway::to_string(v).map_err(|e| Error::Yaml(e.to_string()));
    Ok(format!(
        "# lrid sweep '{}': a Kubernetes Indexed Job of {} completion(s); index I runs shard I.\n# Written by `lrid sweep submit --k8s`; apply with `kubectl apply -f`.\n---\n{}---\n{}",
        o.name,
        o.count,
        yaml(&config_map)?,
        yaml(&job)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> K8sOptions {
        K8sOptions {
            name: "paper".into(),
            sweep_toml: crate::SweepFile::load(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../config/sweeps/paper.toml"),
            )
            .unwrap()
            .resolved_toml(),
            count: 64,
            parallelism: 8,
            backoff_limit_per_index: 3,
            image: "registry.example/lrid:0.1.0".into(),
            namespace: Some("research".into()),
            gpus_per_task: Some(1),
            cpus_per_task: Some(8),
            workers_per_task: 2,
            server: "http://lrid.research.svc:50051".into(),
            token_secret: "lrid-token".into(),
            device: Some("cuda".into()),
        }
    }

    #[test]
    fn the_manifest_matches_its_golden_file() {
        crate::assert_golden("sweep/paper.k8s.yaml", &manifest(&options()).unwrap());
    }

    #[test]
    fn names_are_made_valid_and_bad_options_refused() {
        assert_eq!(
            dns_label("lrid-sweep-", "My_Sweep.v2").unwrap(),
            "lrid-sweep-my-sweep-v2"
        );
        assert!(dns_label("", "__").is_err());
        for (edit, expect) in [
            (
                Box::new(|o: &mut K8sOptions| o.count = 0) as Box<dyn Fn(&mut K8sOptions)>,
                "at least 1 (got 0)",
            ),
            (Box::new(|o| o.parallelism = 0), "--max-parallel"),
            (Box::new(|o| o.image = String::new()), "--image is needed"),
            (Box::new(|o| o.gpus_per_task = Some(0)), "--gpus-per-task"),
        ] {
            let mut o = options();
            edit(&mut o);
            let e = manifest(&o).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }
}
