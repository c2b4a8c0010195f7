//! openraft's network: Raft RPCs to peers over the cluster RPC client.
//!
//! It also remembers when each peer last answered, which is what `node ls` reports as reachability
//! on the leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::rpc::{RpcClient, RpcError};
use crate::store::TypeConfig;
use shoal_model::{NodeId, ShoalNode};

/// When each peer last answered a Raft RPC.
#[derive(Clone, Default)]
pub struct Contacts {
    inner: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Contacts {
    fn touch(&self, id: NodeId) {
        self.inner.lock().expect("contacts lock").insert(id, Instant::now());
    }

    /// When `id` last answered, if ever.
    pub fn last(&self, id: NodeId) -> Option<Instant> {
        self.inner.lock().expect("contacts lock").get(&id).copied()
    }
}

/// Creates one [`PeerClient`] per target.
#[derive(Clone)]
pub struct Network {
    rpc: RpcClient,
    contacts: Contacts,
}

impl Network {
    /// A network over `rpc`, recording answers in `contacts`.
    pub fn new(rpc: RpcClient, contacts: Contacts) -> Self {
        Self { rpc, contacts }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ShoalNode) -> PeerClient {
        PeerClient { target, node: node.clone(), rpc: self.rpc.clone(), contacts: self.contacts.clone() }
    }
}

/// The Raft RPC client for one peer.
pub struct PeerClient {
    target: NodeId,
    node: ShoalNode,
    rpc: RpcClient,
    contacts: Contacts,
}

impl PeerClient {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, ShoalNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let res: Result<Result<Resp, RaftError<NodeId, E>>, RpcError> =
            self.rpc.call(&self.node.cluster_addr, path, req, option.hard_ttl()).await;
        match res {
            Ok(Ok(resp)) => {
                self.contacts.touch(self.target);
                Ok(resp)
            }
            Ok(Err(remote)) => {
                self.contacts.touch(self.target);
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), remote)))
            }
            Err(e @ RpcError::NotSent { .. }) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ RpcError::Unknown { .. }) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ShoalNode, RaftError<NodeId>>> {
        self.send("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, ShoalNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.send("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ShoalNode, RaftError<NodeId>>> {
        self.send("/raft/vote", &rpc, &option).await
    }
}
