//! The control loop on the Raft leader: woken by the registry's watch (or a restart delay that
//! ends), it reconciles, plans and writes the result back in one batched Raft command. It never
//! opens a socket: it reads the registry's state and writes through `Manager::write`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_registry::Manager;
use shoal_registry::services::{ServiceCommand, rfc3339};
use shoal_registry::types::Command;

use crate::orchestrator::{IdSource, reconcile};
use crate::plan::{Decision, plan};
use crate::snapshot::Snapshot;

/// Random 25-character lowercase IDs, as Docker's.
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self) -> String {
        new_id()
    }
}

/// A random 25-character ID of lowercase letters and digits.
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 25];
    getrandom(&mut bytes);
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).is_err() {
        // Not reachable on Linux; fall back to the clock so IDs still differ.
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One reconciliation on the current state: the commands it wrote (0 when nothing was to do).
pub async fn tick(manager: &Manager) -> Result<(usize, Option<u64>), shoal_registry::Error> {
    let now = now_ms();
    let (snapshot, r) = manager.view().read(|s| {
        let snapshot = Snapshot::from_state(&s.nodes, &s.services);
        let r = reconcile(&s.services, &snapshot.nodes, now, &mut RandomIds);
        (snapshot, r)
    });
    let mut cmds: Vec<Command> = r.commands.into_iter().map(Command::Service).collect();
    // Plan against the state as it will be after these commands: only the new tasks matter for
    // usage, and they are not placed yet, so the snapshot is right as it is.
    let at = rfc3339(now);
    let pending_before = manager.view().read(|s| {
        r.to_place
            .iter()
            .map(|t| s.services.tasks.get(&t.task_id).map(|r| (r.status.state, r.status.message.clone())))
            .collect::<Vec<_>>()
    });
    for ((id, d), before) in plan(&snapshot, &r.to_place).decisions.into_iter().zip(pending_before) {
        let (node_id, message) = match d {
            Decision::Place(n) => (Some(n), "assigned".to_string()),
            Decision::Pending(why) => (None, why),
        };
        // A task that stays pending for the same reason is not rewritten on every tick.
        if node_id.is_none()
            && before
                .as_ref()
                .is_some_and(|(state, msg)| *state == shoal_registry::services::TaskState::Pending && *msg == message)
        {
            continue;
        }
        cmds.push(Command::Service(ServiceCommand::Assign { id, node_id, message, at: at.clone() }));
    }
    let n = cmds.len();
    if n > 0 {
        manager.write(Command::Batch(cmds)).await?;
    }
    Ok((n, r.wake_at))
}

/// Runs until the manager stops: acts only while this node leads.
pub async fn run(manager: Arc<Manager>) {
    let watch = manager.view().watch();
    let mut seen = 0;
    loop {
        if !manager.is_leader() {
            if manager.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let wake_at = match tick(&manager).await {
            Ok((_, wake_at)) => wake_at,
            Err(e) => {
                tracing::warn!(error = %e, "orchestrator: cannot write its decisions; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        };
        // Sleep until something is applied, a restart delay ends, or a periodic look (node
        // liveness changes arrive as writes too, so this is only a safety net).
        let until = wake_at.map_or(Duration::from_secs(2), |at| Duration::from_millis(at.saturating_sub(now_ms())));
        let deadline = tokio::time::Instant::now() + until.min(Duration::from_secs(2));
        seen = watch.wait_past(seen.max(watch.index()), deadline).await;
    }
}
