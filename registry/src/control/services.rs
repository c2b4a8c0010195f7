//! Service operations on a manager: validate, then write through Raft. The state machine has the
//! last word (name conflicts and stale versions are checked there, at apply time), so two managers
//! racing on the same name cannot both win.

use crate::cluster::manager::Manager;
use crate::error::Error;
use shoal_model::lookup::{Lookup, find};
use shoal_model::services::{ServiceCommand, ServiceRecord, rfc3339};
use shoal_model::spec::ServiceSpec;
use shoal_model::{Command, CommandResult};

fn now() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    rfc3339(ms)
}

fn parse(spec: &serde_json::Value) -> Result<ServiceSpec, Error> {
    ServiceSpec::parse(spec).map_err(|e| Error::BadRequest(e.to_string()))
}

fn outcome(r: CommandResult) -> Result<(), Error> {
    match r {
        CommandResult::Refused(r) => Err(r.into()),
        _ => Ok(()),
    }
}

/// Finds a service by full ID, name, or unique ID prefix (as Docker does).
pub fn resolve<'a>(
    services: impl Iterator<Item = &'a ServiceRecord> + Clone,
    query: &str,
) -> Result<&'a ServiceRecord, Error> {
    found(find(services, |s| &s.id, Some(&|s: &ServiceRecord| s.name.as_str()), query), "service", query)
}

/// Finds an object by full ID or unique ID prefix; `what` names its kind in the errors.
pub fn by_id_prefix<'a, T>(
    items: impl Iterator<Item = &'a T> + Clone,
    id: impl Fn(&T) -> &str,
    what: &str,
    query: &str,
) -> Result<&'a T, Error> {
    found(find(items, id, None, query), what, query)
}

fn found<'a, T>(lookup: Lookup<'a, T>, what: &str, query: &str) -> Result<&'a T, Error> {
    match lookup {
        Lookup::Found(t) => Ok(t),
        Lookup::Missing => Err(Error::NotFound(format!("{what} {query} not found"))),
        Lookup::AmbiguousName(m) | Lookup::AmbiguousPrefix(m) => {
            Err(Error::BadRequest(format!("{what} {query} is ambiguous ({} {what}s match)", m.len())))
        }
    }
}

impl Manager {
    /// Creates a service from a Docker `ServiceSpec`; returns its ID.
    pub async fn create_service(&self, spec: serde_json::Value) -> Result<String, Error> {
        let parsed = parse(&spec)?;
        let id = crate::ids::object_id();
        let cmd = ServiceCommand::Create { id: id.clone(), name: parsed.name, spec: spec.to_string(), at: now() };
        outcome(self.write(Command::Service(cmd)).await?)?;
        Ok(id)
    }

    /// Replaces a service's spec; `version` must be the one the caller read. With `rollback`, the
    /// previous spec comes back (the body is ignored, as Docker does).
    pub async fn update_service(
        &self,
        query: &str,
        version: u64,
        spec: Option<serde_json::Value>,
        rollback: bool,
    ) -> Result<(), Error> {
        self.linearize().await?;
        let current = self.view().read(|s| resolve(s.services.services.values(), query).cloned())?;
        let spec = if rollback {
            let previous = current.previous_spec.clone().ok_or_else(|| {
                Error::BadRequest(format!("service {} has no previous spec to roll back to", current.name))
            })?;
            serde_json::from_str(&previous).map_err(|e| Error::Internal(e.to_string()))?
        } else {
            spec.ok_or_else(|| Error::BadRequest("an update needs the full service spec as its body".into()))?
        };
        let parsed = parse(&spec)?;
        let cmd = ServiceCommand::Update {
            id: current.id,
            version,
            name: parsed.name,
            spec: spec.to_string(),
            at: now(),
            rollback,
        };
        outcome(self.write(Command::Service(cmd)).await?)
    }

    /// Deletes a service; its tasks are stopped and reaped by the orchestrator.
    pub async fn remove_service(&self, query: &str) -> Result<(), Error> {
        self.linearize().await?;
        let id = self.view().read(|s| resolve(s.services.services.values(), query).map(|s| s.id.clone()))?;
        outcome(self.write(Command::Service(ServiceCommand::Remove { id })).await?)
    }
}
