use super::*;

fn model() -> Model {
    Model::new("ab12cd34", Ports::default()).unwrap()
}

fn local(redirect: bool) -> Local {
    Local {
        host_iface: "csab12cd34".into(),
        gateway: Ipv4Addr::new(10, 77, 0, 1),
        redirect,
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).collect()
}

#[test]
fn ids_that_cannot_name_objects_are_refused() {
    for bad in ["", "AB", "a b", "a;drop", "x".repeat(33).as_str(), "a_b"] {
        assert_eq!(
            Model::new(bad, Ports::default()),
            Err(ModelError::BadId(bad.into()))
        );
    }
    assert_eq!(model().table(), "centaur_ab12cd34");
    assert_eq!(
        Model::new("run-1", Ports::default()).unwrap().table(),
        "centaur_run_1"
    );
}

/// Invariant 6: the sandbox's packets may reach only its gateway's address and ports.
#[test]
fn input_admits_only_the_gateway_ports_then_drops() {
    let s = nftables(&model(), &local(false)).unwrap();
    let l = lines(&s);
    let input = l.iter().position(|x| x.starts_with("chain input")).unwrap();
    assert_eq!(
        &l[input + 2..input + 6],
        &[
            "iifname \"csab12cd34\" ct state established,related accept",
            "iifname \"csab12cd34\" ip daddr 10.77.0.1 tcp dport { 53, 80, 443, 1080 } accept",
            "iifname \"csab12cd34\" ip daddr 10.77.0.1 udp dport 53 accept",
            "iifname \"csab12cd34\" drop",
        ]
    );
    assert!(!s.contains("prerouting"), "no redirect asked for:\n{s}");
}

/// Invariants 1 and 6: nothing from the sandbox is routed (literal IPs, IPv6, other
/// resolvers), and nothing on the host opens a connection into it.
#[test]
fn forward_drops_both_ways_and_output_only_answers() {
    let s = nftables(&model(), &local(true)).unwrap();
    let l = lines(&s);
    assert!(l.contains(&"type filter hook forward priority filter; policy accept;"));
    assert!(l.contains(&"iifname \"csab12cd34\" drop"));
    assert!(l.contains(&"oifname \"csab12cd34\" drop"));
    assert!(l.contains(&"oifname \"csab12cd34\" ct state established,related accept"));
    assert!(l.contains(
        &"iifname \"csab12cd34\" meta nfproto ipv4 tcp dport { 80, 443 } dnat ip to 10.77.0.1"
    ));
    assert_eq!(l.first(), Some(&"table inet centaur_ab12cd34 {"));
    assert_eq!(l.last(), Some(&"}"));
    assert_eq!(s.matches('{').count(), s.matches('}').count());
}

#[test]
fn interface_names_the_kernel_would_refuse_are_refused() {
    for bad in ["", "a\"; drop", "sixteen-chars-xx", "a b"] {
        let mut l = local(false);
        l.host_iface = bad.into();
        assert_eq!(
            nftables(&model(), &l),
            Err(ModelError::BadInterface(bad.into()))
        );
    }
}

fn cluster() -> Cluster {
    Cluster {
        namespace: "agents".into(),
        sandbox_labels: [("centaur.dev/sandbox".to_string(), "ab12cd34".to_string())].into(),
        gateway_labels: [("centaur.dev/gateway".to_string(), "ab12cd34".to_string())].into(),
        control_plane: None,
    }
}

/// Invariant 6 in a cluster: the sandbox pod's only egress is its gateway pod, and it accepts
/// no ingress at all.
#[test]
fn sandbox_policy_denies_ingress_and_allows_egress_only_to_its_gateway() {
    let [sandbox, _] = network_policies(&model(), &cluster());
    assert_eq!(sandbox["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(sandbox["kind"], "NetworkPolicy");
    assert_eq!(sandbox["metadata"]["name"], "centaur-sandbox-ab12cd34");
    assert_eq!(sandbox["metadata"]["namespace"], "agents");
    let spec = &sandbox["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["centaur.dev/sandbox"],
        "ab12cd34"
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(spec["ingress"], json!([]));
    let egress = spec["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 1);
    assert_eq!(
        egress[0]["to"],
        json!([{"podSelector": {"matchLabels": {"centaur.dev/gateway": "ab12cd34"}}}])
    );
    assert_eq!(
        egress[0]["ports"],
        json!([
            {"protocol": "UDP", "port": 53},
            {"protocol": "TCP", "port": 53},
            {"protocol": "TCP", "port": 80},
            {"protocol": "TCP", "port": 443},
            {"protocol": "TCP", "port": 1080},
        ])
    );
}

#[test]
fn gateway_policy_admits_only_its_own_sandbox() {
    let [_, gateway] = network_policies(&model(), &cluster());
    assert_eq!(gateway["metadata"]["name"], "centaur-gateway-ab12cd34");
    let spec = &gateway["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["centaur.dev/gateway"],
        "ab12cd34"
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["from"],
        json!([{"podSelector": {"matchLabels": {"centaur.dev/sandbox": "ab12cd34"}}}])
    );
    assert!(
        spec.get("egress").is_none(),
        "the gateway's policy decides its egress"
    );
}

/// Invariant 6: the management API (which swaps the gateway's grants) is reachable only from
/// the control plane's pods, and only on its own port; the sandbox's rule does not gain it.
#[test]
fn gateway_policy_admits_the_control_plane_only_on_the_management_port() {
    let mut c = cluster();
    c.control_plane = Some(ControlPlane {
        labels: [("app.kubernetes.io/name".to_string(), "centaur".to_string())].into(),
        namespace: None,
        management_port: 9092,
    });
    let [_, gateway] = network_policies(&model(), &c);
    let ingress = gateway["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    assert!(!ingress[0]["ports"].to_string().contains("9092"));
    assert_eq!(
        ingress[1],
        json!({
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "centaur"}}}],
            "ports": [{"protocol": "TCP", "port": 9092}],
        })
    );
    // From another namespace, the peer names it (a bare podSelector means the policy's own).
    c.control_plane.as_mut().unwrap().namespace = Some("centaur".into());
    let [_, gateway] = network_policies(&model(), &c);
    assert_eq!(
        gateway["spec"]["ingress"][1]["from"][0]["namespaceSelector"],
        json!({"matchLabels": {"kubernetes.io/metadata.name": "centaur"}})
    );
    assert_eq!(
        gateway["spec"]["ingress"][1]["from"][0]["podSelector"],
        json!({"matchLabels": {"app.kubernetes.io/name": "centaur"}})
    );
}
