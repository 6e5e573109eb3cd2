//! Tests of the client's failover: raw HTTP servers on 127.0.0.1 (ports chosen at run time) that
//! answer one fixed status each, so which endpoint answered is visible.
#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Client, endpoint_list, worth_retrying};

/// A server answering every request with `status` and a body naming `who`.
async fn server(status: u16, who: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body =
                    format!(r#"{{"status_code":{status},"error":"{who}","message":"{who}","details":[]}}"#);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(format!("{head}{body}").as_bytes()).await;
            });
        }
    });
    url
}

/// A URL where nothing listens.
fn closed() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn answered_by(endpoints: Vec<String>) -> (u16, String) {
    let c = Client::new(endpoints);
    let resp = c.send(reqwest::Method::GET, "/x", None).await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_503_or_a_dead_endpoint_moves_to_the_next() {
    let (busy, ok, missing) = (server(503, "busy").await, server(404, "ok").await, closed());
    assert_eq!(answered_by(vec![busy.clone(), ok.clone()]).await, (404, "ok".into()));
    assert_eq!(answered_by(vec![missing.clone(), ok.clone()]).await, (404, "ok".into()));
    assert_eq!(answered_by(vec![missing, busy.clone(), ok]).await, (404, "ok".into()));
    // Nobody else: the 503 itself is the answer.
    let other_busy = server(503, "also busy").await;
    assert_eq!(answered_by(vec![busy, other_busy]).await, (503, "also busy".into()));
}

#[test]
fn endpoint_lists_and_retries() {
    assert_eq!(endpoint_list("http://a:1, http://b:2,,"), vec!["http://a:1", "http://b:2"]);
    assert_eq!(endpoint_list("http://a:1"), vec!["http://a:1"]);
    assert!(endpoint_list(" ").is_empty());
    let api = |status| crate::ClientError::Api {
        status,
        body: romana_api::rest::ErrorBody {
            status_code: status,
            error: "e".into(),
            message: "m".into(),
            details: vec![],
        },
    };
    assert!(worth_retrying(&api(503)));
    assert!(!worth_retrying(&api(401)));
    assert!(worth_retrying(&crate::ClientError::Unreachable {
        endpoints: "a".into(),
        detail: "refused".into()
    }));
    // A certificate our CA does not vouch for stays refused: not worth another try.
    assert!(!worth_retrying(&crate::ClientError::Unreachable {
        endpoints: "https://127.0.0.1:1".into(),
        detail: "https://127.0.0.1:1: error sending request: client error (Connect): invalid peer certificate: UnknownIssuer".into()
    }));
}
