//! The etcd v3 backend: multi-node and HA deployments keep Romana's state in etcd. Maps the store
//! API one to one onto etcd's KV, Watch and Lease services.

pub mod server;

use std::sync::Arc;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse,
    WatchOptions,
};
use romana_store::{
    BoxFut, Cmp, Compare, Event, EventKind, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn,
    TxnResult, WatchStream,
};

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Arc<Vec<String>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).finish()
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        version: k.version(),
        lease: k.lease(),
    }
}

fn compare(c: &Compare) -> EtcdCompare {
    let op = |c: Cmp| match c {
        Cmp::Equal => CompareOp::Equal,
        Cmp::NotEqual => CompareOp::NotEqual,
        Cmp::Less => CompareOp::Less,
        Cmp::Greater => CompareOp::Greater,
    };
    match c {
        Compare::CreateRevision(k, c, r) => EtcdCompare::create_revision(k.as_str(), op(*c), *r),
        Compare::ModRevision(k, c, r) => EtcdCompare::mod_revision(k.as_str(), op(*c), *r),
        Compare::Version(k, c, v) => EtcdCompare::version(k.as_str(), op(*c), *v),
        Compare::Value(k, c, v) => EtcdCompare::value(k.as_str(), op(*c), v.clone()),
    }
}

fn txn_op(o: &Op) -> TxnOp {
    match o {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            TxnOp::put(key.as_str(), value.clone(), opts)
        }
        Op::Delete { key } => TxnOp::delete(key.as_str(), None),
        Op::DeletePrefix { prefix } => {
            TxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
        }
        Op::Get { key } => TxnOp::get(key.as_str(), None),
        Op::Range { prefix } => TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
    }
}

impl EtcdStore {
    /// Connects to the endpoints (`http://127.0.0.1:2379`, ...); fails over between them.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(3))
            .with_timeout(std::time::Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts)).await.map_err(unavailable)?;
        let store = EtcdStore { client, endpoints: Arc::new(endpoints.to_vec()) };
        store.revision().await?;
        Ok(store)
    }
}

impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            let r = self.client.kv_client().get(key, None).await.map_err(unavailable)?;
            Ok(r.kvs().first().map(kv))
        })
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Result<(Vec<KeyValue>, Revision)>> {
        Box::pin(async move {
            let r = self
                .client
                .kv_client()
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(unavailable)?;
            let rev = r.header().map_or(0, |h| h.revision());
            Ok((r.kvs().iter().map(kv).collect(), rev))
        })
    }

    fn txn(&self, txn: Txn) -> BoxFut<'_, Result<TxnResult>> {
        Box::pin(async move {
            let t = etcd_client::Txn::new()
                .when(txn.compare.iter().map(compare).collect::<Vec<_>>())
                .and_then(txn.success.iter().map(txn_op).collect::<Vec<_>>())
                .or_else(txn.failure.iter().map(txn_op).collect::<Vec<_>>());
            let r = self.client.kv_client().txn(t).await.map_err(|e| {
                let text = e.to_string();
                if text.contains("requested lease not found") {
                    StoreError::LeaseNotFound(0)
                } else {
                    unavailable(e)
                }
            })?;
            let reads = r
                .op_responses()
                .into_iter()
                .filter_map(|o| match o {
                    TxnOpResponse::Get(g) => Some(g.kvs().iter().map(kv).collect()),
                    _ => None,
                })
                .collect();
            Ok(TxnResult {
                succeeded: r.succeeded(),
                revision: r.header().map_or(0, |h| h.revision()),
                reads,
            })
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFut<'a, Result<WatchStream>> {
        Box::pin(async move {
            let mut opts = WatchOptions::new().with_prefix();
            if from > 0 {
                opts = opts.with_start_revision(from);
            }
            let mut stream =
                self.client.watch_client().watch(prefix, Some(opts)).await.map_err(unavailable)?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        () = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let _ = tx.send(Err(StoreError::Compacted {
                                    requested: from,
                                    oldest: resp.compact_revision(),
                                }));
                                return;
                            }
                            if resp.canceled() {
                                let _ = tx.send(Err(StoreError::Unavailable(format!(
                                    "etcd cancelled the watch: {}",
                                    resp.cancel_reason()
                                ))));
                                return;
                            }
                            let events: Vec<Event> = resp
                                .events()
                                .iter()
                                .filter_map(|e| {
                                    let k = kv(e.kv()?);
                                    let kind = match e.event_type() {
                                        etcd_client::EventType::Put => EventKind::Put,
                                        etcd_client::EventType::Delete => EventKind::Delete,
                                    };
                                    Some(Event { kind, kv: k })
                                })
                                .collect();
                            // Split by revision so that consumers see one batch per change, as with the other backends.
                            let mut batch: Vec<Event> = Vec::new();
                            for e in events {
                                if batch.last().is_some_and(|l| l.kv.mod_revision != e.kv.mod_revision) {
                                    let _ = tx.send(Ok(std::mem::take(&mut batch)));
                                }
                                batch.push(e);
                            }
                            if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Err(StoreError::Unavailable("etcd closed the watch".into())));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(e)));
                            return;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }

    fn lease_grant(&self, ttl_secs: i64) -> BoxFut<'_, Result<LeaseId>> {
        Box::pin(async move {
            if ttl_secs <= 0 {
                return Err(StoreError::Invalid(format!("lease TTL must be positive, got {ttl_secs}")));
            }
            let r = self.client.lease_client().grant(ttl_secs, None).await.map_err(unavailable)?;
            Ok(r.id())
        })
    }

    fn lease_keepalive(&self, lease: LeaseId) -> BoxFut<'_, Result<i64>> {
        Box::pin(async move {
            let not_found = |e: etcd_client::Error| {
                if e.to_string().contains("not found") {
                    StoreError::LeaseNotFound(lease)
                } else {
                    unavailable(e)
                }
            };
            let (mut keeper, mut stream) =
                self.client.lease_client().keep_alive(lease).await.map_err(not_found)?;
            keeper.keep_alive().await.map_err(not_found)?;
            match stream.message().await.map_err(not_found)? {
                Some(r) if r.ttl() > 0 => Ok(r.ttl()),
                _ => Err(StoreError::LeaseNotFound(lease)),
            }
        })
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            match self.client.lease_client().revoke(lease).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("lease not found") => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn revision(&self) -> BoxFut<'_, Result<Revision>> {
        Box::pin(async move {
            let r = self
                .client
                .kv_client()
                .get("\0", Some(GetOptions::new().with_count_only()))
                .await
                .map_err(unavailable)?;
            Ok(r.header().map_or(0, |h| h.revision()))
        })
    }
}
