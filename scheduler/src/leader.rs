//! The control loop on the Raft leader: woken by the registry's watch (or a restart delay that
//! ends), it reconciles, plans and writes the result back in one batched Raft command. It never
//! opens a socket: it reads the registry's state and writes through the small [`Registry`] trait,
//! which the registry's `Manager` implements (this file is the only one of the crate that knows it).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_model::services::{ServiceCommand, rfc3339};
use shoal_model::{Command, CommandResult, State};
use shoal_registry::Manager;
use tokio::time::Instant;

/// What the leader loop needs of the registry: a consistent read of the tables, the one watch on
/// the applied index, a write, and whether this node leads.
pub trait Registry: Send + Sync + 'static {
    /// Runs `f` on the current tables (keep it short: writers wait).
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T;
    /// The applied index now.
    fn index(&self) -> u64;
    /// Waits until the applied index passes `index`, or until `deadline`; the index then.
    fn wait_past(&self, index: u64, deadline: Instant) -> impl Future<Output = u64> + Send;
    /// Whether this node leads now.
    fn is_leader(&self) -> bool;
    /// Waits until this node leads (`true`) or its registry stopped (`false`).
    fn until_leader(&self) -> impl Future<Output = bool> + Send;
    /// Proposes `cmd` through the leader.
    fn write(&self, cmd: Command) -> impl Future<Output = Result<CommandResult, shoal_registry::Error>> + Send;
}

impl Registry for Manager {
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.view().read(f)
    }

    fn index(&self) -> u64 {
        self.view().watch().index()
    }

    async fn wait_past(&self, index: u64, deadline: Instant) -> u64 {
        self.view().watch().wait_past(index, deadline).await
    }

    fn is_leader(&self) -> bool {
        Manager::is_leader(self)
    }

    async fn until_leader(&self) -> bool {
        let id = self.id;
        let mut metrics = self.raft.metrics();
        let leads_or_stopped = metrics
            .wait_for(|m| m.running_state.is_err() || (m.current_leader == Some(id) && m.state.is_leader()))
            .await;
        matches!(leads_or_stopped, Ok(m) if m.running_state.is_ok())
    }

    async fn write(&self, cmd: Command) -> Result<CommandResult, shoal_registry::Error> {
        Manager::write(self, cmd).await
    }
}

use crate::orchestrator::{IdSource, reconcile};
use crate::plan::{Decision, plan};
use crate::snapshot::Snapshot;

/// Random 25-character lowercase IDs, as Docker's (the registry's generator).
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self) -> String {
        shoal_registry::ids::object_id()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One reconciliation on the current state: the commands it wrote (0 when nothing was to do).
pub async fn tick<R: Registry>(manager: &R) -> Result<(usize, Option<u64>), shoal_registry::Error> {
    let now = now_ms();
    // One consistent read: the snapshot, the reconciliation, and the current status of every
    // task to place (so a task pending for the same reason is not rewritten on every tick).
    let (snapshot, r, pending_before) = manager.read(|s| {
        let snapshot = Snapshot::from_state(&s.nodes, &s.services);
        let r = reconcile(&s.services, &snapshot.nodes, now, &mut RandomIds);
        let before: Vec<_> = r
            .to_place
            .iter()
            .map(|t| s.services.tasks.get(&t.task_id).map(|t| (t.status.state, t.status.message.clone())))
            .collect();
        (snapshot, r, before)
    });
    let mut cmds: Vec<Command> = r.commands.into_iter().map(Command::Service).collect();
    // New tasks are not placed yet, so the snapshot's usage is right for planning them.
    let at = rfc3339(now);
    for ((id, d), before) in plan(&snapshot, &r.to_place).decisions.into_iter().zip(pending_before) {
        let (node_id, message) = match d {
            Decision::Place(n) => (Some(n), "assigned".to_string()),
            Decision::Pending(why) => (None, why),
        };
        if node_id.is_none()
            && before
                .as_ref()
                .is_some_and(|(state, msg)| *state == shoal_model::services::TaskState::Pending && *msg == message)
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

/// How long one wait on the watch lasts when nothing is due: as a blocking query's `?wait=`, the
/// loop then looks again (it is how a stopped manager's loop notices it should end).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Runs until the manager stops: acts only while this node leads. It never polls: a follower
/// waits for Raft's metrics to say it leads, a leader for the applied index to move (every
/// change, node liveness included, is a write) or for the earliest restart delay or update step
/// the reconciliation asked to be woken for.
pub async fn run<R: Registry>(manager: Arc<R>) {
    let mut seen = 0;
    loop {
        if !manager.is_leader() {
            if manager.until_leader().await {
                continue;
            }
            return;
        }
        let wake_at = match tick(&*manager).await {
            Ok((_, wake_at)) => wake_at,
            Err(e) => {
                tracing::warn!(error = %e, "orchestrator: cannot write its decisions; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        };
        let until = wake_at.map_or(MAX_WAIT, |at| Duration::from_millis(at.saturating_sub(now_ms())));
        let deadline = Instant::now() + until.min(MAX_WAIT);
        seen = manager.wait_past(seen.max(manager.index()), deadline).await;
    }
}
