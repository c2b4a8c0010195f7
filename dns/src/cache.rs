//! The UDP readers' answer cache: the replies hickory encoded for the current snapshot, kept by
//! question and copied for the next client that asks the same.
//!
//! ```text
//! datagram ─▶ hickory parses ─▶ DnsHandler::route ── not Answer (FORMERR, REFUSED, forwarded…) ─▶ udp::reply (uncached)
//!                                   └─ Answer ─▶ key: flags, EDNS payload, question (name lowercased)
//!                                                 ├ hit ─▶ copy one variant, patch ID + the client's spelling ─▶ sent
//!                                                 └ miss ─▶ udp::reply_to × VARIANTS, seeds of our own ─▶ kept, sent
//! ```
//!
//! **Never stale.** A generation of entries belongs to one snapshot (by identity: the cache holds
//! a `Weak` of it, so its address cannot be reused while compared); the first query after the
//! feed swaps a new snapshot in starts an empty generation. An entry is filled from the snapshot
//! its lookup saw, and is kept only if that snapshot is still the current one.
//!
//! **The same bytes as the uncached path.** An entry's replies are made by `udp::reply_to`, the
//! function every uncached UDP datagram goes through (the handler, `answer()`, hickory's UDP
//! encoding), for the request with its name lowercased. Everything else the reply depends on is
//! in the key: the request's header flags (opcode, RD and CD are copied into the reply), its EDNS
//! payload (the UDP budget, and the OPT record echoes it) and the question's type and class; the
//! snapshot and the handler's configuration are fixed for the generation. A hit copies the bytes
//! and patches what differs between two requests with one key: the 16-bit ID, and the name's
//! spelling (0x20 case) in the echoed question and where the first answer record spells the
//! question's name out (hickory never compresses a record against the question, so the first
//! answer owned by the question's name writes it in full right after the question, and later
//! records point to that copy). A client asking in lowercase gets exactly the uncached reply for
//! the variant's seed; one asking in mixed case gets the lowercase reply with its spelling put
//! back (hickory's compression compares bytes, so an uncached mixed-case reply may compress other
//! names differently; the records are the same names, compared case-insensitively, and the
//! reply is the size the budget measured). `fuzzing::check` holds both to those rules.
//!
//! **Shuffling.** Consul shuffles every answer. An entry with more than one answer record keeps
//! [`VARIANTS`] replies shuffled with different seeds, one picked per query; on a hit, with
//! probability 1 / [`RESHUFFLE_EVERY`], the entry is made again with new seeds, so over time
//! every order comes up and each instance is first equally often.
//!
//! **Bounded.** Only names actually asked are kept, at most [`CACHE_BYTES`] of replies per
//! handler (each entry counted with [`ENTRY_OVERHEAD`]). Once full, one miss in
//! [`ADMIT_WHEN_FULL`] makes an entry and the oldest go; the other misses are answered uncached:
//! a working set larger than the cache asked round and round (which FIFO or LRU would miss every
//! time) then costs a miss about what no cache would, not a fill.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll, Waker};

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, MessageType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::server::Request;
use shoal_model::catalog::snapshot::Snapshot;

use crate::server::{DnsHandler, Route};

/// Shuffled replies kept per entry whose answer has more than one record.
pub const VARIANTS: usize = 2;
/// A hit remakes its entry's variants with new seeds once in this many, on average.
pub const RESHUFFLE_EVERY: u64 = 128;
/// The most bytes of replies (and keys, and [`ENTRY_OVERHEAD`] each) kept per handler.
pub const CACHE_BYTES: usize = 4 << 20;
/// What an entry costs beyond its bytes: the map's slot, the key's copy in the eviction queue, the
/// allocations' headers.
pub const ENTRY_OVERHEAD: usize = 160;
/// Once the cache is full, one miss in this many (on average) makes an entry, replacing the oldest;
/// the others are answered uncached.
pub const ADMIT_WHEN_FULL: u64 = 16;
/// The cache counts as full this close to [`CACHE_BYTES`] (about an entry's size).
const FULL_MARGIN: usize = 4096;
/// A DNS header's length: the question starts right after it.
const HEADER_LEN: usize = 12;

/// What makes two requests' replies the same bytes, but for the ID and the name's spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The request header's second 16 bits (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    flags: u16,
    /// The EDNS payload the client advertised; `None`: no EDNS.
    edns: Option<u16>,
    /// The question as sent (name, type, class), the name's ASCII letters lowercased.
    question: Box<[u8]>,
}

impl Key {
    /// The length of the question's name in wire form.
    fn name_len(&self) -> usize {
        self.question.len() - 4
    }
}

/// One encoded reply and the seed it was shuffled with.
#[derive(Debug)]
struct Variant {
    bytes: Box<[u8]>,
    seed: u64,
}

#[derive(Debug)]
struct Entry {
    variants: Vec<Variant>,
    /// How another spelling of the name is put in: `Some(None)`, in the question only;
    /// `Some(Some(at))`, there and at `at`, where the first answer record spells the question's
    /// name out; `None`: it cannot be (a record's name was compressed against the question's),
    /// so only the lowercase spelling is answered from the entry.
    respell: Option<Option<usize>>,
}

impl Entry {
    fn size(&self, key: &Key) -> usize {
        ENTRY_OVERHEAD + key.question.len() + self.variants.iter().map(|v| v.bytes.len()).sum::<usize>()
    }
}

/// The entries of one snapshot.
#[derive(Debug)]
struct Generation {
    snap: Weak<Snapshot>,
    entries: HashMap<Key, Arc<Entry>>,
    /// Keys oldest first, for eviction.
    order: VecDeque<Key>,
    bytes: usize,
}

impl Generation {
    fn new(snap: Weak<Snapshot>) -> Generation {
        Generation { snap, entries: HashMap::new(), order: VecDeque::new(), bytes: 0 }
    }

    fn is_for(&self, snap: &Arc<Snapshot>) -> bool {
        std::ptr::eq(self.snap.as_ptr(), Arc::as_ptr(snap))
    }
}

/// Encoded UDP replies of one handler's current snapshot; see the module's documentation.
#[derive(Debug)]
pub struct AnswerCache {
    generation: RwLock<Generation>,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache { generation: RwLock::new(Generation::new(Weak::new())) }
    }
}

/// What [`AnswerCache::reply`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// The reply is in `out`: the variant shuffled with `seed`; `filled`: the entry was made for it.
    Sent {
        /// The seed the reply's variant was shuffled with.
        seed: u64,
        /// Whether this datagram made (or remade) the entry.
        filled: bool,
    },
    /// Nothing goes back (a response).
    Dropped,
    /// Not the cache's to answer (it does not parse, is not answered by `answer()`, or its reply
    /// could not be kept): the caller answers it uncached.
    Uncached,
}

/// A reader's cheap random numbers (xorshift64*): which variant, when to reshuffle, the seeds.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl AnswerCache {
    /// The reply to the UDP datagram `packet` from `src`, written to `out`, from the cache or
    /// into it; [`Cached::Uncached`] leaves the datagram to `udp::reply`.
    pub fn reply(
        &self,
        handler: &DnsHandler,
        packet: &[u8],
        src: SocketAddr,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Cached {
        if packet.len() < HEADER_LEN {
            return Cached::Uncached;
        }
        let Ok(request) = Request::from_bytes(packet.to_vec(), src, Protocol::Udp) else {
            return Cached::Uncached;
        };
        if request.metadata.message_type == MessageType::Response {
            return Cached::Dropped;
        }
        if !matches!(handler.route(&request), Route::Answer { .. }) {
            return Cached::Uncached;
        }
        let asked = request.queries.as_bytes();
        let mut question: Box<[u8]> = asked.into();
        let name_len = question.len() - 4;
        question[..name_len].make_ascii_lowercase();
        let key = Key {
            flags: u16::from_be_bytes([packet[2], packet[3]]),
            edns: request.edns.as_ref().map(|e| e.max_payload()),
            question,
        };
        let snap = handler.snapshot();
        let (found, full) = self.get(&snap, &key);
        let (entry, filled) = match found {
            Some(e) if e.variants.len() > 1 && rng.next_u64().is_multiple_of(RESHUFFLE_EVERY) => {
                match self.fill(handler, &request, key, &snap, rng) {
                    Some(fresh) => (fresh, true),
                    None => (e, false),
                }
            }
            Some(e) => (e, false),
            // Full: most misses go uncached (one reply, not a fill's several), so a working set
            // larger than the cache, asked round and round, costs little more than no cache;
            // the rest replace the oldest entries, so a new working set still comes in.
            None if full && !rng.next_u64().is_multiple_of(ADMIT_WHEN_FULL) => return Cached::Uncached,
            None => match self.fill(handler, &request, key, &snap, rng) {
                Some(e) => (e, true),
                None => return Cached::Uncached,
            },
        };
        let name = &asked[..name_len];
        let owner_at = match entry.respell {
            Some(at) => at,
            None if name == entry_name(&entry, name_len) => None,
            None => return Cached::Uncached,
        };
        let variant = &entry.variants[(rng.next_u64() % entry.variants.len() as u64) as usize];
        out.clear();
        out.extend_from_slice(&variant.bytes);
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        if !patch(out, id, name, owner_at) {
            return Cached::Uncached;
        }
        Cached::Sent { seed: variant.seed, filled }
    }

    /// The entry for `key` if the cache's generation is `snap`'s, and whether that generation
    /// is full (within [`FULL_MARGIN`] of [`CACHE_BYTES`]).
    fn get(&self, snap: &Arc<Snapshot>, key: &Key) -> (Option<Arc<Entry>>, bool) {
        let generation = self.generation.read().unwrap_or_else(|e| e.into_inner());
        if !generation.is_for(snap) {
            return (None, false);
        }
        (generation.entries.get(key).cloned(), generation.bytes + FULL_MARGIN > CACHE_BYTES)
    }

    /// Makes the entry for `key` from `snap` and keeps it if `snap` is still current; `None` if
    /// its replies cannot be patched (never expected: then the request is answered uncached).
    ///
    /// Each variant is made twice, for the name in lowercase and in uppercase, with one seed: the
    /// patch that turns the first into the second (the question alone, or the question and the
    /// first answer's owner) is the entry's, and if neither does, mixed-case requests are left
    /// uncached. hickory's name compression compares bytes, so a record name that pointed into
    /// the question's name in lowercase would be written differently in another spelling; the
    /// uppercase probe shares no suffix with any other name, so it finds every such case.
    fn fill(
        &self,
        handler: &DnsHandler,
        request: &Request,
        key: Key,
        snap: &Arc<Snapshot>,
        rng: &mut Rng,
    ) -> Option<Arc<Entry>> {
        let name_len = key.name_len();
        let spelled = |upper: bool| {
            let mut packet = request.as_slice().to_vec();
            let name = &mut packet[HEADER_LEN..HEADER_LEN + name_len];
            name.copy_from_slice(&key.question[..name_len]);
            if upper {
                name.make_ascii_uppercase();
            }
            Request::from_bytes(packet, request.src(), Protocol::Udp).ok()
        };
        let (lower, upper) = (spelled(false)?, spelled(true)?);
        let upper_name = &upper.queries.as_bytes()[..name_len];
        let question_end = HEADER_LEN + key.question.len();
        let owner = question_end;
        // The patches that may turn the lowercase reply into another spelling's: the question
        // only, or the question and the first answer's owner.
        let mut candidates = vec![None, Some(owner)];
        let mut variants: Vec<Variant> = Vec::with_capacity(VARIANTS);
        let mut shuffled = true;
        while shuffled && variants.len() < VARIANTS {
            let seed = rng.next_u64();
            let bytes = poll_now(crate::udp::reply_to(handler, &lower, |h| h, snap, seed))??;
            // The question echoed right after the header, as asked (else the patch would be wrong).
            if bytes.get(HEADER_LEN..question_end) != Some(&key.question[..]) {
                return None;
            }
            let probe = poll_now(crate::udp::reply_to(handler, &upper, |h| h, snap, seed))??;
            candidates.retain(|at| {
                let mut respelled = bytes.clone();
                patch(&mut respelled, request.metadata.id, upper_name, *at) && respelled == probe
            });
            // One answer record, or none: nothing to shuffle.
            let header = Header::read(&mut BinDecoder::new(&bytes)).ok()?;
            shuffled = header.counts.answers > 1;
            variants.push(Variant { bytes: bytes.into(), seed });
        }
        let entry = Arc::new(Entry { variants, respell: candidates.first().copied() });
        self.keep(handler, key, entry.clone(), snap);
        Some(entry)
    }

    /// Keeps `entry` in `snap`'s generation (starting it if `snap` is the current snapshot),
    /// evicting the oldest entries past [`CACHE_BYTES`].
    fn keep(&self, handler: &DnsHandler, key: Key, entry: Arc<Entry>, snap: &Arc<Snapshot>) {
        let mut generation = self.generation.write().unwrap_or_else(|e| e.into_inner());
        if !generation.is_for(snap) {
            if !Arc::ptr_eq(&handler.snapshot(), snap) {
                // A newer snapshot came in meanwhile: this entry is already stale.
                return;
            }
            *generation = Generation::new(Arc::downgrade(snap));
        }
        let size = entry.size(&key);
        match generation.entries.insert(key.clone(), entry) {
            Some(old) => generation.bytes -= old.size(&key),
            None => generation.order.push_back(key),
        }
        generation.bytes += size;
        while generation.bytes > CACHE_BYTES {
            let Some(oldest) = generation.order.pop_front() else { break };
            if let Some(e) = generation.entries.remove(&oldest) {
                generation.bytes -= e.size(&oldest);
            }
        }
    }

    /// Entries kept and the bytes they count.
    #[cfg(test)]
    pub fn usage(&self) -> (usize, usize) {
        let generation = self.generation.read().unwrap_or_else(|e| e.into_inner());
        (generation.entries.len(), generation.bytes)
    }
}

/// The name as the entry's replies spell it (lowercase).
fn entry_name(entry: &Entry, name_len: usize) -> &[u8] {
    &entry.variants[0].bytes[HEADER_LEN..HEADER_LEN + name_len]
}

/// Puts `id` and the spelling `name` into the reply `out` (the question right after the header,
/// and at `owner_at` too); `false` if `out` is too short for that (never expected).
fn patch(out: &mut [u8], id: u16, name: &[u8], owner_at: Option<usize>) -> bool {
    let question = HEADER_LEN..HEADER_LEN + name.len();
    let owner = owner_at.map(|at| at..at + name.len());
    if out.len() < question.end || owner.as_ref().is_some_and(|o| out.len() < o.end) {
        return false;
    }
    out[..2].copy_from_slice(&id.to_be_bytes());
    out[question].copy_from_slice(name);
    if let Some(owner) = owner {
        out[owner].copy_from_slice(name);
    }
    true
}

/// Polls `f` once: answering a name under the domains never waits (the fuzz harness checks it).
fn poll_now<F: Future>(f: F) -> Option<F::Output> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests;
