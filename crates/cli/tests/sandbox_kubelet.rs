//! `romana sandbox pod add --from-kubernetes`: the sandbox calls romana-cni as kubelet does, so a
//! pod's labels, named ports and segment come from the pod record romana-k8s writes (written here
//! with the client, as the controller would). A romanad process (embedded store) on 127.0.0.1,
//! a sandbox of one host with its real agent; a guard runs `down` if the test fails half-way.
#![allow(clippy::unwrap_used)]

use romana_api::rest::{Credentials, EndpointPort, PodInfo};
use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_pod_from_kubernetes_takes_its_labels_from_the_pod_record() {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    let dir = TempDir::new("sandbox-kube");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "k");
    // (Two racks: a one-rack sandbox fails to program its spine, a separate problem.)
    sb.ok(&["sandbox", "up", "--racks", "2", "--hosts-per-rack", "1"]);
    let creds: Credentials = serde_json::from_str(&std::fs::read_to_string(&sb.creds).unwrap()).unwrap();
    let admin = romana_client::Client::from_credentials(&creds).await.unwrap();

    // What romana-k8s writes for Pod red/web1 on node r1h1.
    let record = PodInfo {
        namespace: "red".into(),
        name: "web1".into(),
        uid: "u-web1".into(),
        host: "r1h1".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        ports: vec![EndpointPort { name: "http".into(), protocol: "TCP".into(), port: 8080 }],
        segment: String::new(),
    };
    admin.put_pod(&record).await.unwrap();
    let out = sb.ok(&[
        "sandbox",
        "pod",
        "add",
        "--host",
        "r1h1",
        "--tenant",
        "red",
        "--pod",
        "web1",
        "--uid",
        "u-web1",
        "--from-kubernetes",
    ]);
    let ip = out.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let e = admin.endpoint_list().await.unwrap().into_iter().find(|e| e.ip == ip);
    let e = e.unwrap_or_else(|| panic!("no endpoint for {ip:?} ({out})"));
    assert_eq!((e.pod.as_str(), e.tenant.as_str()), ("red/web1", "red"), "{e:?}");
    assert_eq!((&e.labels, &e.ports), (&record.labels, &record.ports));

    // Labels cannot come from both sides.
    let refused = sb.romana(&[
        "sandbox",
        "pod",
        "add",
        "--host",
        "r1h1",
        "--tenant",
        "red",
        "--from-kubernetes",
        "--label",
        "app=x",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--from-kubernetes"), "{refused:?}");
    drop(sb);
}
