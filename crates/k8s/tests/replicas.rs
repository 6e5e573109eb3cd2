//! Two controller replicas: one leads through the Lease and writes, the other waits; when the
//! leader is killed (kill -9) the other takes over within the lease time and applies what
//! changed. Prints the measured hand-over. No root.

mod common;

use std::time::Instant;

use common::{Env, eventually};

fn ns_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_dies() {
    let env = Env::start("k8s-replicas").await;
    let c = &env.admin;
    let a = env.controller("rep-a", &[]);
    let b = env.controller("rep-b", &[]);
    eventually("a leader", 30, || async { (a.leads().await || b.leads().await).then_some(()) }).await;
    let (mut leader, standby) = if a.leads().await { (a, b) } else { (b, a) };
    assert!(!standby.leads().await, "two leaders at once");
    env.kubectl_f("create", &ns_yaml("first"));
    eventually("tenant first", 30, || async { c.tenant("first").await.ok() }).await;
    // Only the leader wrote.
    let standby_writes = standby.metric("romana_k8s_writes_total{kind=\"tenant\",result=\"ok\"}").await;
    assert_eq!(standby_writes.unwrap_or(0.0), 0.0, "the standby wrote");

    let killed = Instant::now();
    leader.kill9();
    env.kubectl_f("create", &ns_yaml("second"));
    eventually("the standby leads", 30, || async { standby.leads().await.then_some(()) }).await;
    let took_over = killed.elapsed();
    eventually("tenant second through the new leader", 30, || async { c.tenant("second").await.ok() }).await;
    let applied = killed.elapsed();
    let holder = env.kubectl(&[
        "get",
        "lease",
        "-n",
        "romana-system",
        "romana-k8s",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, standby.identity);
    let transitions = env.kubectl(&[
        "get",
        "lease",
        "-n",
        "romana-system",
        "romana-k8s",
        "-o",
        "jsonpath={.spec.leaseTransitions}",
    ]);
    assert_eq!(transitions, "1");
    // Nothing duplicated by the hand-over.
    let names: Vec<String> = c.tenants().await.expect("tenants").into_iter().map(|t| t.name).collect();
    assert_eq!(names.iter().filter(|n| *n == "first").count(), 1);
    println!(
        "hand-over with --lease-duration 2: leadership after {:.2} s, first write after {:.2} s",
        took_over.as_secs_f64(),
        applied.as_secs_f64()
    );
}
