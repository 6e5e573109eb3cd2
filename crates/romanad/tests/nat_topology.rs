//! Egress NAT's topology settings through romanad (a process on 127.0.0.1, embedded store): a
//! network's `nat_outgoing: false` and the `no_nat` list are stored and shown by `GET /topology`
//! (also after a restart), a topology update changes them, and bad settings are refused with 422
//! naming the field.
#![allow(clippy::unwrap_used)]

mod common;

use romana_api::topology::TopologyRequest;
use romana_test_support::TempDir;

fn topology(nat: &str, no_nat: &str) -> TopologyRequest {
    serde_json::from_str(&format!(
        r#"{{"networks":[{{"name":"pods","cidr":"10.112.0.0/16"{nat}}},{{"name":"more","cidr":"10.113.0.0/16"}}],
            {no_nat}
            "topologies":[{{"networks":["pods","more"],"map":[{{"name":"r1","groups":[]}}]}}]}}"#
    ))
    .unwrap()
}

/// (network "pods"'s `nat_outgoing`, network "more"'s, the `no_nat` list) as romanad shows them.
async fn shown(c: &romana_client::Client) -> (bool, bool, Vec<String>) {
    let t = c.topology().await.unwrap();
    let nat = |n: &str| t.networks.iter().find(|x| x.name == n).unwrap().nat_outgoing;
    (nat("pods"), nat("more"), t.no_nat.clone())
}

#[tokio::test]
async fn nat_settings_round_trip_and_bad_ones_are_refused() {
    let dir = TempDir::new("nat-topology");
    let mut d = common::embedded(&dir, &[]);
    let c = common::admin(&dir).await;
    c.apply_topology(&topology(r#","nat_outgoing":false"#, r#""no_nat":["172.16.0.0/12"],"#)).await.unwrap();
    assert_eq!(shown(&c).await, (false, true, vec!["172.16.0.0/12".to_owned()]));

    d.restart().unwrap();
    let c = common::admin(&dir).await;
    assert_eq!(shown(&c).await, (false, true, vec!["172.16.0.0/12".to_owned()]), "kept across a restart");

    // An update turns NAT back on and empties the list.
    c.apply_topology(&topology("", "")).await.unwrap();
    assert_eq!(shown(&c).await, (true, true, vec![]));

    let e = c.apply_topology(&topology("", r#""no_nat":["10.112.5.0/24","1.2.3.4/8"],"#)).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    let text = e.to_string();
    assert!(text.contains("no_nat[0]: 10.112.5.0/24 lies inside network pods"), "{text}");
    assert!(text.contains("no_nat[1]: CIDR \"1.2.3.4/8\" has host bits set"), "{text}");
    assert_eq!(shown(&c).await, (true, true, vec![]), "a refused update changes nothing");
}
