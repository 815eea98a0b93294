use super::*;

pub(super) fn spec() -> Spec {
    Spec {
        id: "rt-0a1b2c3d".into(),
        namespace: "agents".into(),
        thread_key: "slack:C0123:1700000000.0001".into(),
        thread_label: "9f86d081884c7d65".into(),
        deploy: "d41d8cd98f00".into(),
        warm: false,
        image: "ghcr.io/example/centaur-sandbox:1.0".into(),
        gateway_image: "ghcr.io/example/centaur-gateway:1.0".into(),
        workspace: None,
        routes: vec![],
        command: vec!["claude".into(), "-p".into()],
        env: vec![("ANTHROPIC_API_KEY".into(), "ANTHROPIC_API_KEY".into())],
        uid: 1001,
        resources: Resources {
            cpu: "2".into(),
            memory: "4Gi".into(),
            ephemeral_storage: "8Gi".into(),
        },
        gateway_resources: Resources {
            cpu: "500m".into(),
            memory: "128Mi".into(),
            ephemeral_storage: "512Mi".into(),
        },
        runtime_class: None,
        control_plane_labels: [("app.kubernetes.io/name".to_string(), "centaur".to_string())]
            .into(),
        control_plane_namespace: None,
    }
}

pub(super) fn files() -> GatewayFiles {
    GatewayFiles {
        policy: "transforms: []\n".into(),
        ca_cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ca_key: "-----BEGIN PRIVATE KEY-----\nSECRETKEY\n-----END PRIVATE KEY-----\n".into(),
        env: vec![
            ("ANTHROPIC_REAL".into(), "sk-ant-real-value".into()),
            ("IRON_MANAGEMENT_API_KEY".into(), "mgmt-token".into()),
        ],
    }
}

fn owner() -> Owner {
    Owner {
        name: "centaur-rt-0a1b2c3d".into(),
        uid: "5b0c9e54-2f7a-4c51-9d2b-0e1f2a3b4c5d".into(),
    }
}

const GW: Ipv4Addr = Ipv4Addr::new(10, 96, 12, 34);

#[test]
fn every_mistake_in_a_spec_is_reported_at_once() {
    let mut s = spec();
    s.id = "RT_1".into();
    s.deploy = "-bad-".into();
    s.namespace = "Agents".into();
    s.image = "has space".into();
    s.command.clear();
    s.uid = 0;
    s.env.push(("SSL_CERT_FILE".into(), "/elsewhere".into()));
    s.env.push(("1BAD".into(), "x".into()));
    let SpecError(errs) = s.check().unwrap_err();
    assert_eq!(errs.len(), 8, "{errs:#?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("SSL_CERT_FILE is set by the backend"))
    );
    assert!(spec().check().is_ok());
}

/// Every object but the parent is owned by the parent (one delete removes all) and carries
/// the sandbox, thread and deploy labels the reaper and the pool select by.
#[test]
fn every_object_is_owned_by_the_parent_and_labelled() {
    let s = spec();
    let objs = s.owned(&owner(), &files(), GW).unwrap();
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Service",
            "Secret",
            "Secret",
            "ConfigMap",
            "NetworkPolicy",
            "NetworkPolicy",
            "Pod",
            "Pod"
        ]
    );
    let parent = s.parent();
    assert!(parent["metadata"].get("ownerReferences").is_none());
    for o in objs.iter().chain([&parent]) {
        let m = &o["metadata"];
        assert_eq!(m["namespace"], "agents");
        assert_eq!(m["labels"][SANDBOX_LABEL], "rt-0a1b2c3d");
        assert_eq!(m["labels"][THREAD_LABEL], "9f86d081884c7d65");
        assert_eq!(m["labels"][DEPLOY_LABEL], "d41d8cd98f00");
        assert_eq!(m["annotations"]["centaur.dev/thread-key"], s.thread_key);
    }
    for o in &objs {
        let r = &o["metadata"]["ownerReferences"];
        assert_eq!(r[0]["uid"], owner().uid, "{}", o["kind"]);
        assert_eq!(r[0]["name"], "centaur-rt-0a1b2c3d");
        assert_eq!(r[0]["controller"], true);
    }
}

/// Invariant 6: the sandbox pod's only resolver is its own gateway's Service, it gets no
/// service-account token and no Service variables (addresses of other workloads).
#[test]
fn the_sandbox_resolves_only_through_its_gateway() {
    let pod = spec().sandbox_pod(&owner(), GW);
    let p = &pod["spec"];
    assert_eq!(p["dnsPolicy"], "None");
    assert_eq!(p["dnsConfig"]["nameservers"], json!(["10.96.12.34"]));
    assert_eq!(p["automountServiceAccountToken"], false);
    assert_eq!(p["enableServiceLinks"], false);
    assert_eq!(p["restartPolicy"], "Never");
    // Nobody attaches: the server reaches the supervisor through exec.
    assert_eq!(p["containers"][0]["stdin"], Value::Null);
}

#[test]
fn the_sandbox_pod_is_locked_down() {
    let pod = spec().sandbox_pod(&owner(), GW);
    let p = &pod["spec"];
    assert_eq!(p["securityContext"]["runAsNonRoot"], true);
    assert_eq!(p["securityContext"]["runAsUser"], 1001);
    assert_eq!(
        p["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &p["containers"][0];
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["resources"]["limits"]["memory"], "4Gi");
    let writable: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"] != true)
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(writable, [WORKSPACE, HOME, "/tmp", AGENT_DIR]);
}

/// Invariant 3: no real value reaches the sandbox pod: its environment holds the spec's
/// placeholders, the gateway's address and the trust variables only, and no volume of it
/// is a Secret (the CA key and the credentials are mounted into the gateway alone).
#[test]
fn no_secret_reaches_the_sandbox_pod() {
    let s = spec();
    let pod = s.sandbox_pod(&owner(), GW);
    let text = pod.to_string();
    for secret in ["sk-ant-real-value", "mgmt-token", "SECRETKEY"] {
        assert!(!text.contains(secret));
    }
    assert!(!text.contains("\"secret\""), "a Secret volume: {text}");
    assert!(!text.contains("envFrom"));
    let names: Vec<&str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let allowed = reserved_env();
    for n in &names {
        assert!(allowed.contains(n) || *n == "ANTHROPIC_API_KEY", "{n}");
    }
    let gw = s.gateway_pod(&owner());
    let gtext = gw.to_string();
    assert!(gtext.contains("centaur-rt-0a1b2c3d-gateway-ca"));
    assert!(gtext.contains("centaur-rt-0a1b2c3d-gateway-env"));
    let [ca, env] = s.secrets(&owner(), &files());
    assert_eq!(
        ca["data"]["ca.key"],
        base64::engine::general_purpose::STANDARD.encode(files().ca_key)
    );
    assert_eq!(env["data"]["ANTHROPIC_REAL"], "c2stYW50LXJlYWwtdmFsdWU=");
    assert!(!format!("{:?}", files()).contains("SECRETKEY"));
    assert!(!format!("{:?}", files()).contains("sk-ant-real-value"));
}

#[test]
fn the_gateway_pod_is_its_own_pod_without_root_or_capabilities() {
    let gw = spec().gateway_pod(&owner());
    let p = &gw["spec"];
    assert_eq!(p["containers"].as_array().unwrap().len(), 1);
    assert_eq!(p["securityContext"]["runAsUser"], GATEWAY_UID);
    assert_eq!(
        p["securityContext"]["sysctls"][0]["name"],
        "net.ipv4.ip_unprivileged_port_start"
    );
    assert_eq!(
        p["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        p["containers"][0]["args"],
        json!(["run", "--config", POLICY_FILE])
    );
    assert_eq!(p["automountServiceAccountToken"], false);
    // The pods' selectors do not overlap: the sandbox's NetworkPolicy cannot select the
    // gateway and the other way round.
    let s = spec();
    assert_ne!(s.sandbox_selector(), s.gateway_selector());
    assert_eq!(gw["metadata"]["labels"][ROLE_LABEL], "gateway");
}

#[test]
fn the_network_policies_are_netpols_own_selecting_these_pods() {
    let s = spec();
    let [sb, gw] = s.network_policies(&owner()).unwrap();
    assert_eq!(
        sb["spec"]["podSelector"]["matchLabels"],
        json!(s.sandbox_selector())
    );
    assert_eq!(
        sb["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"],
        json!(s.gateway_selector())
    );
    assert_eq!(
        gw["spec"]["ingress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 9092}])
    );
}

#[test]
fn the_gateway_gets_its_routes_as_flags_and_a_malformed_route_is_refused() {
    let mut s = spec();
    assert_eq!(
        s.gateway_pod(&owner())["spec"]["containers"][0]["args"],
        json!(["run", "--config", POLICY_FILE])
    );
    s.routes = vec!["centaur.internal=centaur.centaur.svc:8700".into()];
    assert_eq!(
        s.gateway_pod(&owner())["spec"]["containers"][0]["args"],
        json!([
            "run",
            "--config",
            POLICY_FILE,
            "--route",
            "centaur.internal=centaur.centaur.svc:8700"
        ])
    );
    s.routes = vec!["centaur.internal".into()];
    let e = s.check().unwrap_err().to_string();
    assert!(e.contains("NAME=HOST:PORT"), "{e}");
}

/// The gateway runs as 65532 and the kubelet writes a Secret's files as root: the pod's
/// fsGroup and a group-readable mode are what let it read its CA key.
#[test]
fn the_gateway_can_read_its_ca_key() {
    let pod = spec().gateway_pod(&owner());
    let sc = &pod["spec"]["securityContext"];
    assert_eq!(sc["runAsUser"], GATEWAY_UID);
    assert_eq!(sc["fsGroup"], GATEWAY_UID);
    let ca = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ca")
        .unwrap();
    let mode = ca["secret"]["defaultMode"].as_u64().unwrap();
    assert_eq!(mode & 0o040, 0o040, "group-readable: {mode:o}");
    assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
}
