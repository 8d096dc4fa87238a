//! The scheduler examples of a split build (issue 17): `deploy/kubernetes/build-job.yaml`
//! validates against the Kubernetes API schemas (kubernetes-validate, offline) and its task
//! count agrees across its three Jobs; `deploy/slurm/build.sbatch` is run as local processes,
//! one per array task number, and its parts merge into what one `add` gives.
//!
//! Serving on Kubernetes (issue 16): the kustomize base in `deploy/kubernetes/` validates,
//! its objects refer to each other consistently, and its command lines (NATS, two shards of
//! two replicas, a router) run as local processes on loopback and answer as one server does.

use crate::object_store::S3;
use crate::python_compat::python;
use crate::serve::Server;
use crate::util::*;
use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::protocol::{Msg, Value as WireValue};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubernetes_validate(file: &std::path::Path) -> std::process::Output {
    // kubernetes-validate sits beside the venv's python (scripts/python-env.sh installs it).
    let bin = PathBuf::from(python()).parent().unwrap().join("kubernetes-validate");
    std::process::Command::new(&bin)
        .args(["--strict", "--kubernetes-version", "1.33"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

#[test]
fn build_job_manifests_validate_and_agree_on_the_task_count() {
    let path = repo_root().join("deploy/kubernetes/build-job.yaml");
    let out = kubernetes_validate(&path);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(&path).unwrap();
    for kind in ["completionMode: Indexed", "kind: PersistentVolumeClaim", "name: faissx-train", "name: faissx-merge"] {
        assert!(yaml.contains(kind), "{kind}");
    }
    // One task count everywhere: the Indexed Job's completions, the tasks' --task-count and
    // the parts the merge waits for and merges.
    let n: usize = yaml.split("completions: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(yaml.contains(&format!("parallelism: {n}")));
    assert!(yaml.contains(&format!("{{name: TASKS, value: \"{n}\"}}")), "TASKS = completions");
    assert_eq!(yaml.matches(&format!("part-*-of-{n}.index")).count(), 2, "the merge waits for and merges N parts");
    // The validator does reject a broken manifest.
    let env = TestEnv::new("deploy_k8s");
    std::fs::write(env.path("bad.yaml"), yaml.replace(&format!("completions: {n}"), "completions: four")).unwrap();
    assert!(!kubernetes_validate(&env.path("bad.yaml")).status.success(), "a wrong type must fail validation");
}

#[test]
fn bucket_build_manifests_validate_and_agree_on_the_task_count() {
    let path = repo_root().join("deploy/kubernetes/build-job-s3.yaml");
    let out = kubernetes_validate(&path);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(&path).unwrap();
    for want in ["completionMode: Indexed", "secretRef: {name: faissx-s3}", "s3://idx/trained.index", "s3://idx/parts/"]
    {
        assert!(yaml.contains(want), "{want}");
    }
    // Each step carries the label the documented `kubectl apply -l step=…` selects.
    for (job, step) in [("faissx-s3-train", "train"), ("faissx-s3-add", "add"), ("faissx-s3-merge", "merge")] {
        assert!(yaml.contains(&format!("name: {job}\n  labels: {{step: {step}}}")), "{job}");
    }
    let n: usize = yaml.split("completions: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(yaml.contains(&format!("parallelism: {n}")));
    assert!(yaml.contains(&format!("{{name: TASKS, value: \"{n}\"}}")), "TASKS = completions");
    assert!(yaml.contains(&format!("s3://idx/parts/part-*-of-{n}.index")), "the merge takes N parts");
}

#[test]
fn slurm_array_script_runs_as_local_tasks() {
    let script = repo_root().join("deploy/slurm/build.sbatch");
    let syntax = std::process::Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(syntax.success());
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-63") && text.contains("TASKS=\"${TASKS:-64}\""), "array size = TASKS");
    let env = TestEnv::new("deploy_slurm");
    let d = 8;
    std::fs::create_dir_all(env.path("emb")).unwrap();
    for (i, n) in [400usize, 300].into_iter().enumerate() {
        write_npy_f32(&env.path(&format!("emb/e{i}.npy")), n, d, &lcg_vectors(n, d, 70 + i as u64));
    }
    write_npy_f32(&env.path("q.npy"), 20, d, &lcg_vectors(20, d, 77));
    env.ok(&["train", "emb/e0.npy", "emb/e1.npy", "-o", "trained.index", "--factory", "IVF8,Flat", "-q"]);
    // What Slurm would run: the script once per array task number, here 3 tasks.
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new("bash")
                .arg(&script)
                .env("FAISSX_DATA", &env.dir)
                .env("FAISSX_BIN", env!("CARGO_BIN_EXE_faissx"))
                .env("TASKS", "3")
                .env("SLURM_ARRAY_TASK_ID", i.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "an array task failed");
    }
    env.ok(&[
        "merge",
        "parts/part-0-of-3.index",
        "parts/part-1-of-3.index",
        "parts/part-2-of-3.index",
        "-o",
        "m.index",
        "-q",
    ]);
    std::fs::copy(env.path("trained.index"), env.path("one.index")).unwrap();
    std::fs::copy(env.path("trained.index.meta.json"), env.path("one.index.meta.json")).unwrap();
    env.ok(&["add", "one.index", "emb/e0.npy", "-q"]);
    env.ok(&["add", "one.index", "emb/e1.npy", "-q"]);
    let search = |ix: &str| env.ok(&["search", ix, "q.npy", "-k", "5", "--nprobe", "8", "--format", "jsonl"]);
    assert_eq!(search("m.index"), search("one.index"));
}

// ---- Serving on Kubernetes (issue 16): deploy/kubernetes/ as a kustomize base. ----

const K8S: &str = "deploy/kubernetes";

/// The YAML documents of `file` as JSON values, read by PyYAML in the test Python (a
/// dependency of kubernetes-validate, so it is there whenever the validator is).
fn yaml_docs(py: &str, file: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let out = Command::new(py).args(["-c", script]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The files `kustomization.yaml` lists, in its order.
fn kustomize_resources(py: &str) -> Vec<String> {
    let k = yaml_docs(py, &repo_root().join(K8S).join("kustomization.yaml"));
    assert_eq!(k.len(), 1, "one Kustomization");
    assert_eq!(k[0]["kind"], "Kustomization");
    k[0]["resources"].as_array().expect("resources").iter().map(|r| r.as_str().unwrap().to_string()).collect()
}

/// Every object of the serving manifests (the files the kustomization lists).
fn serving_objects(py: &str) -> Vec<Value> {
    kustomize_resources(py).iter().flat_map(|f| yaml_docs(py, &repo_root().join(K8S).join(f))).collect()
}

fn object<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the serving manifests"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    &args[i + 1]
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

/// A ConfigMap's or Secret's entries (`data` and `stringData`; test manifests only hold text).
fn entries(o: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for field in ["data", "stringData"] {
        if let Some(m) = o[field].as_object() {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())));
        }
    }
    out
}

/// The container port named `name` (or numbered so).
fn container_port(c: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let ports = c["ports"].as_array().expect("container ports");
    let p = ports.iter().find(|p| p["name"] == *port).unwrap_or_else(|| panic!("no container port {port}"));
    p["containerPort"].as_u64().unwrap() as u16
}

fn workloads(objs: &[Value]) -> impl Iterator<Item = &Value> {
    objs.iter().filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment")
}

#[test]
fn serving_manifests_validate_and_refer_to_each_other() {
    let py = python();
    let dir = repo_root().join(K8S);
    // The kustomization lists every serving file, and no build job (applied on their own).
    let listed = kustomize_resources(&py);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml" && !f.starts_with("build-job"))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    on_disk.sort();
    assert_eq!(sorted, on_disk, "kustomization.yaml lists every serving file of {K8S}");
    for f in ["config.yaml", "nats.yaml", "shard-s0.yaml", "shard-s1.yaml", "router.yaml"] {
        assert!(listed.iter().any(|l| l == f), "{f} is listed");
    }

    // Every object validates (strict, Kubernetes 1.33); one it has no schema for would only be
    // a warning, so each must be reported as passed.
    for f in &listed {
        let path = dir.join(f);
        let out = kubernetes_validate(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{f}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        for o in yaml_docs(&py, &path) {
            let kind = o["kind"].as_str().unwrap().to_lowercase();
            let want = format!("passed for resource {kind}/{}", o["metadata"]["name"].as_str().unwrap());
            assert!(stdout.contains(&want), "{f}: {want:?} not in\n{stdout}");
        }
    }
    // Broken copies fail: a misspelt field (strict) and a wrong type.
    let env = TestEnv::new("deploy_k8s_serving");
    let shard = std::fs::read_to_string(dir.join("shard-s0.yaml")).unwrap();
    let nats = std::fs::read_to_string(dir.join("nats.yaml")).unwrap();
    for (name, good, text) in [
        ("misspelt.yaml", &shard, shard.replacen("readinessProbe:", "readynessProbe:", 1)),
        ("wrong-type.yaml", &nats, nats.replacen("replicas: 3", "replicas: three", 1)),
    ] {
        assert_ne!(&text, good, "{name}: nothing replaced");
        std::fs::write(env.path(name), text).unwrap();
        assert!(!kubernetes_validate(&env.path(name)).status.success(), "{name} must fail validation");
    }
    // A second shard is the first with its name replaced, nothing else.
    assert_eq!(std::fs::read_to_string(dir.join("shard-s1.yaml")).unwrap(), shard.replace("s0", "s1"));

    let objs = serving_objects(&py);
    let names = |kind: &str| -> Vec<&Value> { objs.iter().filter(|o| o["kind"] == kind).collect() };
    // References resolve: selectors, Services of StatefulSets, ConfigMaps, Secrets, volumes,
    // named ports, $(VAR)s; every container has probes, requests and limits.
    for w in workloads(&objs) {
        let name = w["metadata"]["name"].as_str().unwrap();
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(selects(&w["spec"]["selector"]["matchLabels"], labels), "{name}: selector");
        let spec = &w["spec"]["template"]["spec"];
        if w["kind"] == "StatefulSet" {
            let svc = object(&objs, "Service", w["spec"]["serviceName"].as_str().unwrap());
            assert_eq!(svc["spec"]["clusterIP"], "None", "{name}: a headless Service");
            assert!(selects(&svc["spec"]["selector"], labels), "{name}: its Service selects its pods");
        }
        let pdbs: Vec<_> = names("PodDisruptionBudget")
            .into_iter()
            .filter(|p| selects(&p["spec"]["selector"]["matchLabels"], labels))
            .collect();
        assert_eq!(pdbs.len(), 1, "{name}: one PodDisruptionBudget");
        assert_eq!(pdbs[0]["spec"]["maxUnavailable"], 1, "{name}");
        let claims: Vec<String> = w["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|a| a.iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        for v in &volumes {
            if let Some(c) = v["configMap"]["name"].as_str() {
                object(&objs, "ConfigMap", c);
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                object(&objs, "Secret", s);
            }
        }
        for c in spec["containers"].as_array().unwrap() {
            for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
                let v = m["name"].as_str().unwrap();
                assert!(claims.iter().any(|c| c == v) || volumes.iter().any(|x| x["name"] == v), "{name}: volume {v}");
            }
            for e in c["envFrom"].as_array().cloned().unwrap_or_default() {
                if let Some(n) = e["configMapRef"]["name"].as_str() {
                    object(&objs, "ConfigMap", n);
                }
                if let Some(n) = e["secretRef"]["name"].as_str() {
                    object(&objs, "Secret", n);
                }
            }
            let env_names: Vec<&str> = c["env"]
                .as_array()
                .map(|a| a.iter().map(|e| e["name"].as_str().unwrap()).collect())
                .unwrap_or_default();
            for a in strings(&c["args"]) {
                if let Some((_, rest)) = a.split_once("$(") {
                    let var = rest.split(')').next().unwrap();
                    assert!(env_names.contains(&var), "{name}: $({var}) is not in the container's env");
                }
            }
            for p in ["readinessProbe", "livenessProbe"] {
                let probe = &c[p];
                assert!(probe.is_object(), "{name}: {p}");
                container_port(
                    c,
                    if probe["httpGet"].is_object() { &probe["httpGet"]["port"] } else { &probe["tcpSocket"]["port"] },
                );
            }
            for r in ["requests", "limits"] {
                assert!(c["resources"][r]["cpu"].is_string() && c["resources"][r]["memory"].is_string(), "{name}: {r}");
            }
        }
    }
    for svc in names("Service") {
        let name = svc["metadata"]["name"].as_str().unwrap();
        let w = workloads(&objs)
            .find(|w| selects(&svc["spec"]["selector"], &w["spec"]["template"]["metadata"]["labels"]))
            .unwrap_or_else(|| panic!("Service {name} selects no workload"));
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert_eq!(container_port(c, &p["targetPort"]) as u64, p["port"].as_u64().unwrap(), "Service {name}");
        }
    }

    // NATS: nats.conf parses (nats-server -t), routes to every node of the StatefulSet, and
    // every faissx process names the same nodes with the replication they give.
    let sts = object(&objs, "StatefulSet", "nats");
    let n = sts["spec"]["replicas"].as_u64().unwrap();
    let conf =
        entries(object(&objs, "ConfigMap", "nats-config")).into_iter().find(|(k, _)| k == "nats.conf").unwrap().1;
    std::fs::write(env.path("nats.conf"), &conf).unwrap();
    let t = Command::new(crate::cluster::nats_server())
        .args(["-t", "-c"])
        .arg(env.path("nats.conf"))
        .env("POD_NAME", "nats-0")
        .output()
        .unwrap();
    assert!(t.status.success(), "nats-server -t: {}", String::from_utf8_lossy(&t.stderr));
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert!(strings(&c["command"]).iter().any(|a| a == "/etc/nats/nats.conf"));
    assert!(conf.contains("jetstream {") && conf.contains("store_dir: /data"), "JetStream on the volume");
    for i in 0..n {
        assert!(conf.contains(&format!("nats://nats-{i}.nats:6222")), "route to nats-{i}");
    }
    let client = container_port(c, &Value::from("client"));
    let urls = (0..n).map(|i| format!("nats://nats-{i}.nats:{client}")).collect::<Vec<_>>().join(",");
    let faissx: Vec<&Value> = workloads(&objs).filter(|w| w["metadata"]["name"] != "nats").collect();
    assert_eq!(faissx.len(), 3, "two shards and the routers");
    for w in &faissx {
        let args = strings(&w["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert_eq!(flag(&args, "--cluster"), urls, "{}", w["metadata"]["name"]);
        assert_eq!(flag(&args, "--cluster-replicas"), n.to_string());
    }
    // The replicas: a shard each, reachable at their stable names on the port they bind,
    // probed on the port of their --http-port, reading the keys the Secret holds.
    for s in ["s0", "s1"] {
        let w = object(&objs, "StatefulSet", &format!("faissx-{s}"));
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        let args = strings(&c["args"]);
        assert_eq!(flag(&args, "--shard"), s);
        assert_eq!(flag(&args, "--snapshots"), "s3://faissx/snap");
        let port = flag(&args, "--port");
        assert_eq!(
            flag(&args, "--advertise"),
            format!("tcp://$(POD_NAME).{}:{port}", w["spec"]["serviceName"].as_str().unwrap())
        );
        assert_eq!(container_port(c, &Value::from("faissx")).to_string(), port);
        let http = flag(&args, "--http-port");
        assert_eq!(container_port(c, &c["readinessProbe"]["httpGet"]["port"]).to_string(), http);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
        assert!(args.iter().any(|a| a == "--enable-auth"));
        let keys = flag(&args, "--auth-file");
        let (dir, file) = keys.rsplit_once('/').unwrap();
        let m = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == dir).expect("keys mounted");
        let vol = w["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        let secret = object(&objs, "Secret", vol["secret"]["secretName"].as_str().unwrap());
        let json = entries(secret).into_iter().find(|(k, _)| k == file).expect("keys.json in the Secret").1;
        let parsed: serde_json::Map<String, Value> = serde_json::from_str(&json).expect("keys.json is a JSON object");
        assert!(!parsed.is_empty() && parsed.values().all(Value::is_string));
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    }
    // The routers: --port is the Service's, probed on their --http-port.
    let r = &object(&objs, "Deployment", "faissx-router")["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&r["args"]);
    assert!(args.iter().any(|a| a == "--router"));
    assert_eq!(object(&objs, "Service", "faissx")["spec"]["ports"][0]["port"].to_string(), flag(&args, "--port"));
    for (p, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        assert_eq!(container_port(r, &r[p]["httpGet"]["port"]).to_string(), flag(&args, "--http-port"));
        assert_eq!(r[p]["httpGet"]["path"], path);
    }
    // The object-storage example gives the variables the S3 client reads, nothing else.
    let mut aws: Vec<String> = [object(&objs, "ConfigMap", "faissx-config"), object(&objs, "Secret", "faissx-s3")]
        .into_iter()
        .flat_map(|o| entries(o).into_iter().map(|(k, _)| k))
        .collect();
    aws.sort();
    let want =
        ["AWS_ACCESS_KEY_ID", "AWS_ALLOW_HTTP", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY"];
    assert_eq!(aws, want);
}

/// What the image (the repository's Dockerfile) gives every container: `ENV`, `EXPOSE`d
/// ports and `ENTRYPOINT`.
struct Image {
    env: Vec<(String, String)>,
    expose: Vec<u16>,
    entrypoint: Vec<String>,
}

impl Image {
    fn from_dockerfile() -> Image {
        let d = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
        let (mut env, mut expose, mut entrypoint, mut in_env) = (Vec::new(), Vec::new(), Vec::new(), false);
        for line in d.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("EXPOSE ") {
                expose.extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap()));
            }
            if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
                entrypoint = serde_json::from_str(rest).unwrap();
            }
            let body = match line.strip_prefix("ENV ") {
                Some(rest) => rest,
                None if in_env => line,
                None => continue,
            };
            in_env = body.ends_with('\\');
            for kv in body.trim_end_matches('\\').split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("Dockerfile ENV {kv:?}"));
                env.push((k.to_string(), v.to_string()));
            }
        }
        assert_eq!(entrypoint, ["faissx", "serve"], "the manifests give the arguments of `faissx serve`");
        assert!(!env.is_empty() && !expose.is_empty());
        Image { env, expose, entrypoint }
    }
}

/// One pod of the serving manifests run as a local process (killed on drop).
struct Pod {
    server: Server,
    /// The pod's ports (the image's and its container's) → the free loopback ports used instead.
    ports: HashMap<u16, u16>,
    /// Mount paths → the local directories standing in for the volumes.
    mounts: Vec<(String, PathBuf)>,
    container: Value,
}

impl Pod {
    /// Run pod `pod` of workload `w` as Kubernetes would run its first container, on
    /// loopback: the image's entrypoint with the container's `args` (`$(VAR)` expanded from
    /// its environment), the image's `ENV` then `envFrom` then `env` (`fieldRef:
    /// metadata.name` is the pod name), each volume a directory (Secrets and ConfigMaps
    /// written into it), every port of the pod a free loopback port, the cluster's DNS names
    /// (`dns`: `host:port` → `127.0.0.1:port`, plus this pod's own `POD.SERVICE`) resolved,
    /// and the example object-storage settings replaced by `s3`'s. Returns once the process
    /// printed its endpoint.
    fn start(
        env: &TestEnv,
        objs: &[Value],
        w: &Value,
        pod: &str,
        dns: &[(String, String)],
        image: &Image,
        s3: &[(String, String)],
    ) -> Pod {
        let spec = &w["spec"]["template"]["spec"];
        let c = spec["containers"][0].clone();
        let mut ports: HashMap<u16, u16> = image.expose.iter().map(|&p| (p, crate::cluster::free_port())).collect();
        for p in c["ports"].as_array().cloned().unwrap_or_default() {
            ports.insert(p["containerPort"].as_u64().unwrap() as u16, crate::cluster::free_port());
        }
        let mut dns = dns.to_vec();
        if let Some(svc) = w["spec"]["serviceName"].as_str() {
            dns.extend(ports.iter().map(|(p, l)| (format!("{pod}.{svc}:{p}"), format!("127.0.0.1:{l}"))));
        }
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
            let at = m["mountPath"].as_str().unwrap().to_string();
            let local = env.path(&format!("{pod}{at}"));
            std::fs::create_dir_all(&local).unwrap();
            if let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) {
                let src = match (v["secret"]["secretName"].as_str(), v["configMap"]["name"].as_str()) {
                    (Some(s), _) => Some(object(objs, "Secret", s)),
                    (_, Some(c)) => Some(object(objs, "ConfigMap", c)),
                    _ => None,
                };
                for (k, text) in src.map(entries).unwrap_or_default() {
                    std::fs::write(local.join(k), text).unwrap();
                }
            }
            mounts.push((at, local));
        }
        let map = |v: &str| -> String {
            if let Some(l) = v.parse::<u16>().ok().and_then(|p| ports.get(&p)) {
                return l.to_string();
            }
            let mut v = v.to_string();
            for (from, to) in &dns {
                v = v.replace(from.as_str(), to);
            }
            for (at, local) in &mounts {
                if v == *at || v.starts_with(&format!("{at}/")) {
                    return format!("{}{}", local.display(), &v[at.len()..]);
                }
            }
            v
        };
        // The container's own environment (what $(VAR) may name), then the process's.
        let mut own: Vec<(String, String)> = Vec::new();
        for e in c["envFrom"].as_array().cloned().unwrap_or_default() {
            let src = match (e["configMapRef"]["name"].as_str(), e["secretRef"]["name"].as_str()) {
                (Some(n), _) => object(objs, "ConfigMap", n),
                (_, Some(n)) => object(objs, "Secret", n),
                _ => panic!("{pod}: envFrom {e}"),
            };
            for (k, _) in entries(src) {
                // The example endpoint and keys are placeholders: the local S3 API's instead.
                let v = s3
                    .iter()
                    .find(|(s, _)| *s == k)
                    .unwrap_or_else(|| panic!("{pod}: {k} is not an S3 setting"))
                    .1
                    .clone();
                own.push((k, v));
            }
        }
        for e in c["env"].as_array().cloned().unwrap_or_default() {
            let v = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                (Some(v), _) => v.to_string(),
                (_, Some("metadata.name")) => pod.to_string(),
                _ => panic!("{pod}: env {e}"),
            };
            own.push((e["name"].as_str().unwrap().to_string(), v));
        }
        let mut args: Vec<String> = image.entrypoint[1..].to_vec();
        for a in strings(&c["args"]) {
            let mut a = a;
            for (k, v) in &own {
                a = a.replace(&format!("$({k})"), v);
            }
            args.push(map(&a));
        }
        let mut vars: Vec<(String, String)> = image.env.iter().map(|(k, v)| (k.clone(), map(v))).collect();
        // The container binds 0.0.0.0 in a network namespace of its own: here, loopback.
        for (k, v) in vars.iter_mut() {
            if k == "FAISSX_BIND_ADDRESS" {
                *v = "127.0.0.1".into();
            }
        }
        vars.extend(own.iter().map(|(k, v)| (k.clone(), map(v))));
        vars.extend(s3.iter().filter(|(k, _)| k == "TMPDIR").cloned());
        let log = std::fs::File::create(env.path(&format!("{pod}.log"))).unwrap();
        let mut child = env.cmd().args(&args).envs(vars).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let endpoint = line.trim().to_string();
        let server = Server { child, endpoint };
        assert!(
            server.endpoint.starts_with("tcp://127.0.0.1:"),
            "{pod} did not start ({args:?}): {line:?}\n{}",
            std::fs::read_to_string(env.path(&format!("{pod}.log"))).unwrap_or_default()
        );
        Pod { server, ports, mounts, container: c }
    }

    /// Whether the container's probe `which` passes now (HTTP 200, or a TCP connection).
    fn probe(&self, which: &str) -> bool {
        let p = &self.container[which];
        if p["httpGet"].is_object() {
            let port = self.ports[&container_port(&self.container, &p["httpGet"]["port"])];
            matches!(crate::cluster::http_get(port, p["httpGet"]["path"].as_str().unwrap()), Some((200, _)))
        } else {
            let port = self.ports[&container_port(&self.container, &p["tcpSocket"]["port"])];
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }
    }

    /// The local path standing for `path` inside the container.
    fn file(&self, path: &str) -> PathBuf {
        let (at, local) =
            self.mounts.iter().find(|(at, _)| path.starts_with(&format!("{at}/"))).expect("a mounted path");
        local.join(&path[at.len() + 1..])
    }
}

/// A client of `endpoint` with `key`.
fn keyed_client(endpoint: &str, key: &str) -> Client {
    Client::connect(ClientConfig {
        server: endpoint.to_string(),
        api_key: Some(key.to_string()),
        tenant: None,
        timeout: Duration::from_secs(30),
        server_public_key: None,
    })
    .unwrap()
}

/// Poll `f` every 100 ms until it is true; panics with `what` after 60 s.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serving_manifests_command_lines_run_on_loopback() {
    let py = python();
    let objs = serving_objects(&py);
    let image = Image::from_dockerfile();
    let env = TestEnv::new("deploy_k8s_loopback");
    // NATS: the manifests' three nodes as a local 3-node JetStream cluster, their names
    // (nats-N.nats:4222) resolved to it.
    let nats_sts = object(&objs, "StatefulSet", "nats");
    let client_port = container_port(&nats_sts["spec"]["template"]["spec"]["containers"][0], &Value::from("client"));
    let nodes = crate::cluster::nats_cluster(&env);
    assert_eq!(nats_sts["spec"]["replicas"].as_u64(), Some(nodes.len() as u64));
    let dns: Vec<(String, String)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("nats-{i}.nats:{client_port}"), format!("127.0.0.1:{}", n.port)))
        .collect();
    // Object storage: a local S3 API holding the bucket of --snapshots.
    let shard_args =
        strings(&object(&objs, "StatefulSet", "faissx-s0")["spec"]["template"]["spec"]["containers"][0]["args"]);
    let bucket = flag(&shard_args, "--snapshots").strip_prefix("s3://").unwrap().split('/').next().unwrap().to_string();
    let s3 = S3::start(&env, std::slice::from_ref(&bucket));
    let s3_vars = s3.vars();

    // Both shards' replicas, as their StatefulSets name them; each ready by its probe.
    let mut replicas: Vec<(String, Pod)> = Vec::new();
    for s in ["s0", "s1"] {
        let w = object(&objs, "StatefulSet", &format!("faissx-{s}"));
        for i in 0..w["spec"]["replicas"].as_u64().unwrap() {
            replicas
                .push((s.to_string(), Pod::start(&env, &objs, w, &format!("faissx-{s}-{i}"), &dns, &image, &s3_vars)));
        }
    }
    assert_eq!(replicas.len(), 4, "2 shards × 2 replicas");
    for (s, p) in &replicas {
        wait_for(&format!("{s} replica {} ready", p.server.endpoint), || p.probe("readinessProbe"));
        assert!(p.probe("livenessProbe"));
    }
    // A router, as its Deployment runs it; its TCP probe passes once it serves.
    let router = Pod::start(
        &env,
        &objs,
        object(&objs, "Deployment", "faissx-router"),
        "faissx-router-0",
        &dns,
        &image,
        &s3_vars,
    );
    assert!(router.probe("readinessProbe") && router.probe("livenessProbe"));
    // It learns the shards and their replicas (at the endpoints they advertise) from NATS.
    let mut want: Vec<(String, Vec<String>)> = Vec::new();
    for (s, p) in &replicas {
        match want.iter_mut().find(|(n, _)| n == s) {
            Some((_, eps)) => eps.push(p.server.endpoint.clone()),
            None => want.push((s.clone(), vec![p.server.endpoint.clone()])),
        }
    }
    for (_, eps) in want.iter_mut() {
        eps.sort();
    }
    let topology = |h: &Msg| -> Vec<(String, Vec<String>)> {
        let Some(WireValue::Array(shards)) = h.get("shards") else { return Vec::new() };
        shards
            .iter()
            .map(|s| {
                let s = Msg::from_value(s.clone()).unwrap();
                let Some(WireValue::Array(rs)) = s.get("replicas") else { panic!("{s:?}") };
                let mut eps: Vec<String> = rs
                    .iter()
                    .map(|r| Msg::from_value(r.clone()).unwrap().str("endpoint").unwrap().unwrap().to_string())
                    .collect();
                eps.sort();
                (s.str("name").unwrap().unwrap().to_string(), eps)
            })
            .collect()
    };
    let keys_file = replicas[0].1.file(flag(&shard_args, "--auth-file"));
    let keys: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&keys_file).unwrap()).unwrap();
    let key = keys.keys().next().unwrap().clone();
    let mut rc = keyed_client(&router.server.endpoint, &key);
    wait_for("the router to see 2 shards × 2 replicas", || topology(&rc.health().unwrap()) == want);

    // The same vectors and ids through the router and into one plain server (same keys).
    let single = Server::start(&env, &["--enable-auth", "--auth-file", keys_file.to_str().unwrap()]);
    let (n, nq, d) = (600, 25, 8);
    write_npy_f32(&env.path("base.npy"), n, d, &lcg_vectors(n, d, 160));
    write_npy_f32(&env.path("q.npy"), nq, d, &lcg_vectors(nq, d, 161));
    let ids: String = (0..n).map(|i| format!("{}\n", 10_000 + 7 * i)).collect();
    std::fs::write(env.path("ids.txt"), ids).unwrap();
    let remote = |ep: &str, args: &[&str]| {
        let mut v = vec!["query-remote", "--server", ep, "--api-key", key.as_str(), "-q"];
        v.extend_from_slice(args);
        env.ok(&v)
    };
    for ep in [&router.server.endpoint, &single.endpoint] {
        remote(ep, &["create", "docs", "--dimension", "8", "--index-type", "IDMap2:Flat"]);
        remote(ep, &["add", "docs", "base.npy", "--ids", "ids.txt"]);
    }
    // Spread over both shards, every replica of a shard holding its share (once applied: the
    // router has no read-your-writes across shards, so wait for the replicas).
    let mut clients: Vec<(String, Client)> =
        replicas.iter().map(|(s, p)| (s.clone(), keyed_client(&p.server.endpoint, &key))).collect();
    let mut per_shard: HashMap<String, u64> = HashMap::new();
    wait_for("every replica to apply the adds", || {
        per_shard.clear();
        let mut agree = true;
        for (s, c) in clients.iter_mut() {
            let ntotal = c.get_index_status("docs").map(|st| st.ntotal).unwrap_or(0);
            agree &= *per_shard.entry(s.clone()).or_insert(ntotal) == ntotal;
        }
        agree && per_shard.values().sum::<u64>() == n as u64
    });
    assert!(per_shard.len() == 2 && per_shard.values().all(|&c| c > 0), "{per_shard:?}");
    let search = |ep: &str| remote(ep, &["search", "docs", "q.npy", "-k", "10", "--format", "jsonl"]);
    let one = search(&single.endpoint);
    let rows = parse_jsonl(&one);
    assert_eq!(rows.len(), nq);
    assert!(rows.iter().all(|(_, ids, _)| ids.len() == 10 && ids.iter().all(|&i| i >= 10_000)), "{one}");
    // Same ids and distances through the router, whichever replica of each shard answers.
    for _ in 0..4 {
        assert_eq!(search(&router.server.endpoint), one);
    }
    let h = rc.health().unwrap();
    let Some(WireValue::Array(shards)) = h.get("shards") else { panic!("{h:?}") };
    for s in shards {
        let Some(WireValue::Array(rs)) = Msg::from_value(s.clone()).unwrap().get("replicas").cloned() else { panic!() };
        for r in rs {
            let r = Msg::from_value(r).unwrap();
            assert!(r.uint("replies").unwrap().unwrap() >= 1, "every replica answered the router: {r:?}");
        }
    }
    // Snapshots land in the bucket the manifests name, a folder per shard: the object-storage
    // settings reach the replicas.
    remote(&router.server.endpoint, &["snapshot"]);
    let keys_in_bucket: Vec<String> = s3.ls(&bucket).into_iter().map(|(k, _)| k).collect();
    for s in ["s0", "s1"] {
        assert!(keys_in_bucket.iter().any(|k| k.starts_with(&format!("snap/{s}/"))), "{s}: {keys_in_bucket:?}");
    }
    // A replica added to s0 (the StatefulSet scaled up) restores from there and catches up.
    let s0 = object(&objs, "StatefulSet", "faissx-s0");
    let extra = Pod::start(&env, &objs, s0, "faissx-s0-2", &dns, &image, &s3_vars);
    wait_for("the added replica ready", || extra.probe("readinessProbe"));
    let st = keyed_client(&extra.server.endpoint, &key).get_index_status("docs").unwrap();
    assert_eq!(st.ntotal, per_shard["s0"]);
}
