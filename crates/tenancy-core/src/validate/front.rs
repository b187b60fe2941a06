//! The validator's per-thread front: each thread keeps its own copy of the
//! tenants it serves most, so a request on a hot tenant takes no lock and
//! touches no cache line that another core writes (the shared cache's
//! shard lock and the shared record's reference count are the costly
//! part of a hit when every core serves the same tenant).
//!
//! Correctness rests on the validator's generation, which every
//! invalidation bumps *after* removing what it invalidates (and a lookup
//! that raced with one bumps it again after removing what it stored). A
//! copy is filled with the generation read *before* the shared cache was
//! read, and is served only while the generation is unchanged: a copy of
//! anything that an invalidation removed is never served once that
//! invalidation has returned.

use std::cell::RefCell;
use std::sync::Arc;

use quanta::Instant;

use crate::tenant::{MAX_ID_LEN, TenantInfo};

/// Slots per thread (direct-mapped by the reference's hash).
const SLOTS: usize = 64;

struct Slot {
    /// Which validator (and its clones) this copy belongs to.
    owner: usize,
    generation: u64,
    expires: Instant,
    key: arrayvec::ArrayString<MAX_ID_LEN>,
    /// This thread's own copy of the record.
    tenant: Arc<TenantInfo>,
}

#[derive(Default)]
struct Front {
    slots: Vec<Option<Slot>>,
    /// Per slot, the hash of the last reference that missed there: a
    /// reference is copied in only when it misses twice in a row, so
    /// one-off tenants do not evict hot ones (nor cost a copy each).
    candidates: Vec<u64>,
}

thread_local! {
    static FRONT: RefCell<Front> = RefCell::default();
}

/// What the caller knows about the shared cache's entry, to copy it in.
pub(super) struct Fill<'a> {
    pub(super) owner: usize,
    /// Read before the shared cache was.
    pub(super) generation: u64,
    pub(super) expires: Instant,
    pub(super) tenant: &'a Arc<TenantInfo>,
}

/// The hash that places `key` (foldhash, fixed seed: only spreads keys).
pub(super) fn hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7e4a_11c3).hash_one(key)
}

/// This thread's copy for `key`, if it is current: same owner, same
/// generation, not expired.
pub(super) fn get(
    owner: usize,
    key: &str,
    hash: u64,
    generation: u64,
    now: Instant,
) -> Option<Arc<TenantInfo>> {
    FRONT
        .try_with(|front| {
            let mut front = front.try_borrow_mut().ok()?;
            let slot = front.slots.get_mut(index(hash))?;
            let current = slot.as_ref()?;
            if current.owner != owner || current.key.as_str() != key {
                return None;
            }
            if current.generation != generation || current.expires <= now {
                // Stale for good: release the copy now.
                *slot = None;
                return None;
            }
            Some(current.tenant.clone())
        })
        .ok()
        .flatten()
}

/// Notes a miss of `key` (served by the shared cache); copies the entry in
/// when `key` missed here last time too.
pub(super) fn offer(key: &str, hash: u64, fill: Fill<'_>) {
    let Ok(key) = arrayvec::ArrayString::from(key) else {
        return;
    };
    let _ = FRONT.try_with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        if front.slots.is_empty() {
            front.slots.resize_with(SLOTS, || None);
            front.candidates.resize(SLOTS, 0);
        }
        let i = index(hash);
        if front.candidates[i] != hash {
            front.candidates[i] = hash;
            return;
        }
        front.slots[i] = Some(Slot {
            owner: fill.owner,
            generation: fill.generation,
            expires: fill.expires,
            key,
            tenant: Arc::new(TenantInfo::clone(fill.tenant)),
        });
    });
}

fn index(hash: u64) -> usize {
    // Lossless: masked to below SLOTS.
    (hash % SLOTS as u64) as usize
}
