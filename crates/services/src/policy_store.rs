//! Romana policies in the store (`policies/<id>`): list, read, create, and replace or delete
//! exactly the revision whose owner the caller checked, so a policy that changed hands meanwhile
//! is never overwritten or deleted by the wrong tenant. Who may do what is the caller's
//! predicate (`scope::owns_policy`); this file knows nothing of HTTP.

use romana_api::policy::Policy;
use romana_store::{Compare, Op, Store, Txn};

use crate::keys::Keys;
use crate::service_error::{ServiceError, ServiceResult};

/// Attempts at a compare-and-swap before giving up on a policy that keeps changing.
const ATTEMPTS: usize = 5;

fn decode(key: &str, v: &[u8]) -> ServiceResult<Policy> {
    serde_json::from_slice(v)
        .map_err(|e| ServiceError::Internal(format!("stored policy {key} is unreadable: {e}")))
}

fn changing(id: &str) -> ServiceError {
    ServiceError::Conflict(format!("policy {id} keeps changing meanwhile; try again"))
}

/// What a create found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New,
    /// The id was taken: by this policy (`Some` equal to it), another one, or nothing readable.
    Taken(Option<Policy>),
}

/// What a guarded change found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// Done; for a delete, the policy removed.
    Done(Option<Policy>),
    /// The stored policy failed the caller's check (nothing changed).
    Refused,
    /// No such policy (a delete only).
    Missing,
}

#[derive(Clone, Copy)]
pub struct PolicyStore<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a Keys,
}

impl std::fmt::Debug for PolicyStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

impl PolicyStore<'_> {
    pub async fn list(&self) -> ServiceResult<Vec<Policy>> {
        let (kvs, _) = self.store.range(&self.keys.policies()).await?;
        kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
    }

    pub async fn get(&self, id: &str) -> ServiceResult<Option<Policy>> {
        let key = self.keys.policy(id);
        self.store.get(&key).await?.map(|kv| decode(&key, &kv.value)).transpose()
    }

    /// Writes `p` if its id is free.
    pub async fn create(&self, p: &Policy) -> ServiceResult<Created> {
        let key = self.keys.policy(&p.id);
        let body = serde_json::to_vec(p).expect("policies serialize");
        let r = self
            .store
            .txn(Txn {
                compare: vec![Compare::absent(&key)],
                success: vec![Op::put(&key, body)],
                failure: vec![Op::Get { key: key.clone() }],
            })
            .await?;
        if r.succeeded {
            return Ok(Created::New);
        }
        let existing =
            r.reads.first().and_then(|v| v.first()).map(|kv| decode(&kv.key, &kv.value)).transpose()?;
        Ok(Created::Taken(existing))
    }

    /// Writes `p` over what its id holds, if that passes `may` (the check and the write are one
    /// transaction: the policy checked is the one replaced).
    pub async fn replace(&self, p: &Policy, may: impl Fn(&Policy) -> bool) -> ServiceResult<Guarded> {
        let key = self.keys.policy(&p.id);
        let body = serde_json::to_vec(p).expect("policies serialize");
        for _ in 0..ATTEMPTS {
            let compare = match self.store.get(&key).await? {
                Some(kv) if !may(&decode(&key, &kv.value)?) => return Ok(Guarded::Refused),
                Some(kv) => Compare::unchanged(&key, kv.mod_revision),
                None => Compare::absent(&key),
            };
            let r = self.store.txn(Txn::when(vec![compare], vec![Op::put(&key, body.clone())])).await?;
            if r.succeeded {
                return Ok(Guarded::Done(None));
            }
        }
        Err(changing(&p.id))
    }

    /// Deletes policy `id` if it passes `may`, exactly the revision checked.
    pub async fn delete(&self, id: &str, may: impl Fn(&Policy) -> bool) -> ServiceResult<Guarded> {
        let key = self.keys.policy(id);
        for _ in 0..ATTEMPTS {
            let Some(kv) = self.store.get(&key).await? else { return Ok(Guarded::Missing) };
            let p = decode(&key, &kv.value)?;
            if !may(&p) {
                return Ok(Guarded::Refused);
            }
            let r = self
                .store
                .txn(Txn::when(vec![Compare::unchanged(&key, kv.mod_revision)], vec![Op::delete(&key)]))
                .await?;
            if r.succeeded {
                return Ok(Guarded::Done(Some(p)));
            }
        }
        Err(changing(id))
    }
}

#[cfg(test)]
mod tests {
    use romana_store::MemStore;

    use super::*;

    fn policy(id: &str, description: &str) -> Policy {
        Policy { id: id.into(), description: description.into(), ..Policy::default() }
    }

    #[tokio::test]
    async fn writes_are_guarded_by_the_owner_check_on_the_revision_read() {
        let store = MemStore::new();
        let keys = Keys::new("/romana/");
        let ps = PolicyStore { store: &store, keys: &keys };
        let (a, a2) = (policy("p1", "first"), policy("p1", "second"));
        let yes = |_: &Policy| true;
        let no = |_: &Policy| false;
        assert_eq!(ps.create(&a).await.expect("store"), Created::New);
        assert_eq!(ps.create(&a).await.expect("store"), Created::Taken(Some(a.clone())));
        assert_eq!(ps.create(&a2).await.expect("store"), Created::Taken(Some(a.clone())));
        assert_eq!(ps.replace(&a2, no).await.expect("store"), Guarded::Refused);
        assert_eq!(ps.get("p1").await.expect("store"), Some(a.clone()), "a refused replace changes nothing");
        assert_eq!(ps.replace(&a2, yes).await.expect("store"), Guarded::Done(None));
        assert_eq!(ps.list().await.expect("store"), vec![a2.clone()]);
        assert_eq!(ps.delete("p1", no).await.expect("store"), Guarded::Refused);
        assert_eq!(ps.delete("p1", yes).await.expect("store"), Guarded::Done(Some(a2)));
        assert_eq!(ps.delete("p1", yes).await.expect("store"), Guarded::Missing);
        assert_eq!(ps.get("p1").await.expect("store"), None);
    }

    #[tokio::test]
    async fn an_unreadable_record_is_named() {
        let store = MemStore::new();
        let keys = Keys::new("/romana/");
        store.txn(Txn::when(vec![], vec![Op::put(keys.policy("bad"), b"{".to_vec())])).await.expect("store");
        let ps = PolicyStore { store: &store, keys: &keys };
        let e = ps.get("bad").await.expect_err("unreadable");
        assert!(e.to_string().contains("stored policy /romana/policies/bad is unreadable"), "{e}");
    }
}
